// OnAir studio: pick devices, preview, go live over WebRTC, switch sources with
// replaceTrack (viewers never renegotiate), watch live stats, record locally.
"use strict";
import { setupChat } from "./chat.js";
import { setupPastBroadcasts } from "./past_broadcasts.js";
import { setupServerRecording } from "./server_recording.js";
import { SignalingClient, formatBitrate, formatDuration, trickle } from "./signaling.js";

const config = JSON.parse(document.getElementById("onair-config").textContent);
const $ = (id) => document.getElementById(id);

const RESOLUTIONS = { "360p": [640, 360], "720p": [1280, 720], "1080p": [1920, 1080] };

// Simulcast: the camera or screen goes out as up to three VP8 encodings, ¼, ½ and full size
// (rids q, h, f, lowest first), each at most 180 lines high at its smallest, and the SFU
// sends each viewer the one that fits their connection. `?simulcast=0` sends one encoding.
const SIMULCAST = new URLSearchParams(location.search).get("simulcast") !== "0";
const RIDS = { 4: "q", 2: "h", 1: "f" };
const MIN_LAYER_LINES = 180;
// An encoding's bitrate cap by its lines (the shorter side), for VP8 at up to 30 fps...
const LAYER_BITRATES = [[180, 150_000], [270, 300_000], [360, 500_000], [540, 900_000], [720, 1_700_000], [Infinity, 3_000_000]];
// ... scaled down together where they would not fit, with audio, in what the SFU lets a
// publisher send (config.publish_max_bitrate): it says so from the first packet on, and
// the encoders start at these caps at once.
const AUDIO_BITRATE = 64_000;

const state = {
  camera: null,        // MediaStream from getUserMedia
  screen: null,        // MediaStream from getDisplayMedia, while sharing
  source: "camera",
  pc: null,
  starting: false,     // goLive is making its peer connection and offer
  welcomed: false,     // the server's welcome came on the signaling connection open now
  live: false,
  startedAt: null,
  lastStats: null,
  recorder: null,
  recordedChunks: [],
  key: "",             // a stream key typed by a non-owner, re-sent after reconnects
  cameraAsked: null,   // the camera's width, height and frameRate last asked for
  stream: null,        // the stream as the server last described it
  publisher: "none",   // "connected" while someone publishes (here or elsewhere)
};

function showError(text) {
  const box = $("studio-error");
  box.textContent = text;
  box.hidden = !text;
}

function showNotice(text) {
  const box = $("studio-notice");
  box.textContent = text;
  box.hidden = !text;
}

function setText(id, text) {
  const el = $(id);
  if (el) el.textContent = text;
}

function constraints() {
  const [width, height] = RESOLUTIONS[$("resolution").value] || RESOLUTIONS["720p"];
  const frameRate = Number($("framerate").value) || 30;
  const cameraId = $("camera").value;
  const micId = $("microphone").value;
  return {
    video: {
      deviceId: cameraId ? { exact: cameraId } : undefined,
      width: { ideal: width },
      height: { ideal: height },
      frameRate: { ideal: frameRate },
    },
    audio: {
      deviceId: micId ? { exact: micId } : undefined,
      echoCancellation: $("echo-cancellation").checked,
      noiseSuppression: $("noise-suppression").checked,
      autoGainControl: true,
    },
  };
}

async function listDevices() {
  const devices = await navigator.mediaDevices.enumerateDevices();
  for (const [selectId, kind] of [["camera", "videoinput"], ["microphone", "audioinput"]]) {
    const select = $(selectId);
    const previous = select.value;
    select.replaceChildren();
    devices.filter((d) => d.kind === kind).forEach((device, index) => {
      const option = new Option(device.label || `${kind} ${index + 1}`, device.deviceId);
      select.add(option);
    });
    if ([...select.options].some((o) => o.value === previous)) select.value = previous;
  }
  const outputs = devices.filter((d) => d.kind === "audiooutput").length;
  setText("device-summary", `${$("camera").options.length} camera(s), ` +
    `${$("microphone").options.length} microphone(s), ${outputs} output(s)`);
}

function currentVideoTrack() {
  const stream = state.source === "screen" && state.screen ? state.screen : state.camera;
  return stream ? stream.getVideoTracks()[0] || null : null;
}

function currentAudioTrack() {
  return state.camera ? state.camera.getAudioTracks()[0] || null : null;
}

function showPreview() {
  const preview = $("preview");
  const tracks = [currentVideoTrack(), currentAudioTrack()].filter(Boolean);
  preview.srcObject = new MediaStream(tracks);
  const video = currentVideoTrack();
  if (video) {
    const s = video.getSettings();
    setText("capture-settings", `${s.width || "?"}×${s.height || "?"} @ ${Math.round(s.frameRate || 0)} fps`);
  }
  renderCaptureNote();
}

// The camera's constraints are "ideal" ones: a camera that cannot deliver the resolution or
// frame rate picked opens with less, which the studio says rather than ignores.
function captureShortfall(track, { width, height, frameRate }) {
  const s = track.getSettings();
  const fps = Math.round(s.frameRate || 0);
  const short = (s.width && s.height && s.width * s.height < width * height) || (fps && fps < frameRate);
  if (!short) return "";
  return `Camera delivers ${s.width}×${s.height} at ${fps} fps (asked ${width}×${height} at ${frameRate} fps).`;
}

function renderCaptureNote() {
  const video = currentVideoTrack();
  const asked = state.cameraAsked;
  const note = state.source === "camera" && video && asked ? captureShortfall(video, asked) : "";
  const box = $("capture-note");
  box.textContent = note;
  box.hidden = !note;
}

async function openCamera() {
  showError("");
  const previous = state.camera;
  const wanted = constraints();
  state.cameraAsked = {
    width: wanted.video.width.ideal,
    height: wanted.video.height.ideal,
    frameRate: wanted.video.frameRate.ideal,
  };
  try {
    state.camera = await navigator.mediaDevices.getUserMedia(wanted);
  } catch (error) {
    // No camera, or no microphone: broadcast what there is, and say what is missing.
    const videoOnly = await navigator.mediaDevices.getUserMedia({ video: wanted.video }).catch(() => null);
    const fallback = videoOnly || await navigator.mediaDevices.getUserMedia({ audio: wanted.audio }).catch(() => null);
    if (!fallback) {
      showError(`Could not open camera/microphone: ${error.name}: ${error.message}`);
      return;
    }
    state.camera = fallback;
    showError(`Broadcasting ${videoOnly ? "without sound" : "sound only"}: ${error.name}: ${error.message}`);
  }
  if (previous) previous.getTracks().forEach((t) => t.stop());
  applyMutes();
  await listDevices(); // labels are only visible after permission
  showPreview();
  await replaceOutgoingTracks();
}

async function replaceOutgoingTracks() {
  if (!state.pc || state.starting) return; // goLive sends what is chosen once its offer is out
  const sending = state.pc.getTransceivers().map((t) => t.sender.track?.kind || t.receiver.track?.kind);
  const added = [currentVideoTrack(), currentAudioTrack()].some((t) => t && !sending.includes(t.kind));
  if (added) {
    // A new kind of track (e.g. a microphone plugged in): publish again on a new peer
    // connection. The SFU moves every viewer to it without renegotiating them.
    restartPublishing();
    return;
  }
  for (const transceiver of state.pc.getTransceivers()) {
    const kind = transceiver.sender.track?.kind || transceiver.receiver.track?.kind;
    const track = kind === "video" ? currentVideoTrack() : currentAudioTrack();
    if (track && transceiver.sender.track !== track) await transceiver.sender.replaceTrack(track);
  }
}

async function shareScreen() {
  showError("");
  try {
    state.screen = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: 30 }, audio: false });
  } catch (error) {
    showError(`Screen sharing was not started: ${error.name}: ${error.message}`);
    return;
  }
  const track = state.screen.getVideoTracks()[0];
  track.addEventListener("ended", () => useCamera());
  state.source = "screen";
  updateSourceButtons();
  showPreview();
  await replaceOutgoingTracks();
  sendMedia();
}

async function useCamera() {
  if (state.screen) state.screen.getTracks().forEach((t) => t.stop());
  state.screen = null;
  state.source = "camera";
  updateSourceButtons();
  showPreview();
  await replaceOutgoingTracks();
  sendMedia();
}

function updateSourceButtons() {
  $("source-camera").setAttribute("aria-pressed", String(state.source === "camera"));
  $("source-screen").setAttribute("aria-pressed", String(state.source === "screen"));
  setText("source-label", state.source === "screen" ? "Screen" : "Camera");
}

function applyMutes() {
  const micMuted = $("mute-mic").getAttribute("aria-pressed") === "true";
  const camMuted = $("mute-camera").getAttribute("aria-pressed") === "true";
  state.camera?.getAudioTracks().forEach((t) => { t.enabled = !micMuted; });
  state.camera?.getVideoTracks().forEach((t) => { t.enabled = !camMuted; });
}

function toggle(button) {
  const pressed = button.getAttribute("aria-pressed") === "true";
  button.setAttribute("aria-pressed", String(!pressed));
  button.textContent = button.dataset[pressed ? "off" : "on"];
  applyMutes();
  sendMedia();
}

// What viewers are told of this page's media (docs/SIGNALING.md, `media`): a muted track
// still sends (silence, black), so without it they would see plain black. A shared screen
// goes out whatever the camera's switch says.
function mediaState() {
  return {
    mic_muted: $("mute-mic").getAttribute("aria-pressed") === "true",
    camera_off: $("mute-camera").getAttribute("aria-pressed") === "true" && state.source === "camera",
  };
}

function sendMedia() {
  if (state.live && state.pc) signaling.send("media", mediaState());
}

// --- Going live ---------------------------------------------------------

// What the video track is sent as (RTCRtpEncodingParameters): one encoding, or (simulcast)
// one per size whose short side still has MIN_LAYER_LINES lines.
function videoEncodings(track, simulcast = SIMULCAST) {
  const { width = 1280, height = 720 } = track.getSettings();
  const lines = Math.min(width, height);
  const scales = simulcast ? [4, 2, 1].filter((scale) => scale === 1 || lines / scale >= MIN_LAYER_LINES) : [1];
  const encodings = scales.map((scale) => ({
    rid: RIDS[scale],
    scaleResolutionDownBy: scale,
    maxBitrate: LAYER_BITRATES.find(([upTo]) => lines / scale <= upTo)[1],
  }));
  const budget = (config.publish_max_bitrate || 0) - AUDIO_BITRATE;
  const total = encodings.reduce((sum, e) => sum + e.maxBitrate, 0);
  if (budget > 0 && total > budget) {
    for (const e of encodings) e.maxBitrate = Math.floor((e.maxBitrate * budget) / total);
  }
  if (encodings.length === 1) delete encodings[0].rid;
  return encodings;
}

// Each encoding keeps its picture size (a busy CPU lowers the frame rate instead): the SFU
// picks each viewer's encoding by size and bitrate. Left to itself, Chromium often shrinks
// a 720p camera to 540p on its first keyframes (a "bandwidth" limit, whatever the
// estimate) and takes tens of seconds to grow it back.
async function keepResolution(sender) {
  const parameters = sender.getParameters();
  parameters.degradationPreference = "maintain-resolution";
  await sender.setParameters(parameters).catch((error) => console.warn("degradationPreference", error));
}

// A server that does not take simulcast (no a=simulcast in its answer) gets the first
// encoding only, the smallest: make that one the full picture.
async function fitEncodingsToAnswer(pc) {
  for (const sender of pc.getSenders()) {
    if (sender.track?.kind !== "video") continue;
    const parameters = sender.getParameters();
    const [only] = parameters.encodings;
    if (parameters.encodings.length !== 1 || (only.scaleResolutionDownBy ?? 1) === 1) continue;
    const [full] = videoEncodings(sender.track, false);
    only.scaleResolutionDownBy = 1;
    only.maxBitrate = full.maxBitrate;
    await sender.setParameters(parameters);
  }
}

const signaling = new SignalingClient(config.ws_path);
setupChat(signaling);

async function goLive() {
  showError("");
  showNotice("");
  if (!state.camera) await openCamera();
  if (!state.camera) return;
  $("go-live").disabled = true;
  setStatus("connecting");
  state.starting = true;
  try {
    await publish();
  } catch (error) {
    closePeer();
    setStatus("idle");
    showError(`Could not go live: ${error.message}`);
  } finally {
    state.starting = false;
    renderGoLive();
  }
  // a camera or microphone changed while the offer was made: send what is chosen now
  await replaceOutgoingTracks();
}

// A peer connection sending the current tracks, and its offer to the server.
async function publish() {
  const pc = new RTCPeerConnection({
    iceServers: config.ice_servers,
    iceTransportPolicy: config.ice_transport_policy || "all",
  });
  state.pc = pc;
  trickle(pc, signaling);
  pc.addEventListener("connectionstatechange", () => {
    setStatus(pc.connectionState);
    if (pc.connectionState === "failed" && state.live) {
      showError("The connection to the server failed; reconnecting…");
      restartPublishing();
    }
  });
  pc.addEventListener("iceconnectionstatechange", () => setText("ice-state", pc.iceConnectionState));
  for (const track of [currentVideoTrack(), currentAudioTrack()]) {
    if (!track) continue;
    const init = { direction: "sendonly", streams: [new MediaStream([track])] };
    // a replaceTrack (camera ↔ screen) keeps these encodings; the browser scales the new
    // source as they say
    if (track.kind === "video") init.sendEncodings = videoEncodings(track);
    const transceiver = pc.addTransceiver(track, init);
    if (track.kind === "video") await keepResolution(transceiver.sender);
  }
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  if (!signaling.send("offer", { sdp: pc.localDescription.sdp, media: mediaState() })) {
    throw new Error("not connected to the server; try again once it is back");
  }
}

function restartPublishing() {
  closePeer();
  if (state.live) goLive();
}

function closePeer() {
  if (state.pc) state.pc.close();
  state.pc = null;
}

function endBroadcast() {
  if (!confirm("End the broadcast for every viewer?")) return;
  signaling.send("end");
  stopPublishing("ended");
}

// This page no longer broadcasts (ended, or taken over elsewhere): no connection, no
// camera or microphone left on, no figures that are no longer true.
function stopPublishing(status) {
  state.live = false;
  closePeer();
  if (state.recorder?.state === "recording") stopRecording();
  for (const stream of [state.camera, state.screen]) stream?.getTracks().forEach((t) => t.stop());
  state.camera = null;
  state.screen = null;
  state.source = "camera";
  updateSourceButtons();
  $("preview").srcObject = null;
  renderCaptureNote();
  state.lastStats = null;
  for (const id of ["ice-state", "candidate-type", "rtt", "out-bitrate", "out-layers", "out-fps", "out-resolution", "frames-sent", "capture-settings"]) {
    setText(id, "–");
  }
  setStatus(status);
  renderGoLive();
}

// The Go live button says what it will do: start, resume, or take over from elsewhere.
function renderGoLive() {
  const stream = state.stream;
  const button = $("go-live");
  // (not while this page is going live itself: its publisher is the one to come)
  const goingLive = state.pc !== null || state.starting;
  const liveElsewhere = stream?.state === "live" && !state.live && !goingLive && state.publisher === "connected";
  button.textContent = liveElsewhere ? "Take over" : stream?.state === "ended" ? "Go live again" : "Go live";
  // an offer needs the server's welcome (its ICE servers) on an open connection first
  button.disabled = !(state.welcomed && signaling.open && !state.live && state.pc === null && !state.starting);
  // While this page broadcasts, End is the one thing to do; while nobody does, Go live.
  button.hidden = state.live;
  $("end-broadcast").hidden = stream?.state !== "live";
  if (liveElsewhere && $("studio-notice").dataset.kind !== "replaced") {
    showNotice("Live from another tab or device: Take over to broadcast from here.");
    $("studio-notice").dataset.kind = "elsewhere";
  } else if (!liveElsewhere && $("studio-notice").dataset.kind === "elsewhere") {
    showNotice("");
  }
}

function setStatus(status) {
  setText("connection-state", status);
  document.body.dataset.connection = status;
}

signaling.on("welcome", (msg) => {
  state.welcomed = true;
  $("key-form").hidden = msg.authorized;
  if (!msg.authorized && state.key) signaling.send("auth", { key: state.key });
  // Fresh per-session ICE servers (short-lived TURN credentials) replace the page's.
  config.ice_servers = msg.ice_servers;
  config.ice_transport_policy = msg.ice_transport_policy;
  if (msg.publisher) state.publisher = msg.publisher;
  renderStream(msg.stream);
  renderGoLive();
  // After a signaling reconnect while live, publish again: the SFU keeps viewers
  // attached for a grace period, so they resume without renegotiating. Unless someone
  // else went live meanwhile (this page's own publisher went with its socket): taking
  // the broadcast back from them is for the Take over button.
  if (state.live && state.pc === null) {
    if (msg.publisher === "connected") wasReplaced("You went live from another tab or device.");
    else goLive();
  }
});
signaling.on("answer", async (msg) => {
  if (!state.pc) return;
  const pc = state.pc;
  await pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
  fitEncodingsToAnswer(pc).catch((error) => console.warn("could not resize the encoding", error));
  state.live = true;
  sendMedia(); // a switch flipped while the offer was out (the server ignores no news)
  state.startedAt ??= Date.now();
  $("studio-notice").dataset.kind = "";
  renderGoLive();
});
// A newer publish for this stream (another tab or device, an encoder) took over.
signaling.on("replaced", (msg) => wasReplaced(msg.message || "You went live from another tab or device."));

function wasReplaced(notice) {
  stopPublishing("replaced");
  state.publisher = "connected";
  showNotice(notice);
  $("studio-notice").dataset.kind = "replaced";
  renderGoLive();
}
signaling.on("publisher", (msg) => {
  state.publisher = msg.status;
  renderGoLive();
});
// Cluster mode: the media server holding this broadcast died; publish again on another.
signaling.on("restart", () => {
  if (state.live) restartPublishing();
});
signaling.on("state", (msg) => {
  if (state.key) $("key-form").hidden = true; // the key was accepted
  renderStream(msg.stream);
});
signaling.on("viewers", (msg) => {
  setText("viewer-count", String(msg.count));
  setText("stage-viewer-count", String(msg.count));
  setText("peak-viewers", String(msg.peak));
});
signaling.on("error", (msg) => {
  showError(`${msg.message} (${msg.code})`);
  if (msg.code === "forbidden" || msg.code === "key_revoked") state.key = "";
  if (msg.code === "key_revoked") {
    // The key was revoked or replaced: the server ended this broadcast and closes the socket.
    if (state.live || state.pc) stopPublishing("ended");
    $("key-form").hidden = false;
  }
  if (["not_live", "forbidden", "bad_sdp", "sfu_error", "closing"].includes(msg.code) && !state.live) {
    closePeer();
    setStatus("idle");
    renderGoLive();
  }
});
signaling.addEventListener("close", () => setStatus(state.live ? "reconnecting" : "offline"));
signaling.addEventListener("close", () => {
  state.welcomed = false;
  if (state.live) closePeer();
  renderGoLive();
});

function renderStream(stream) {
  if (!stream || !stream.state) return; // strangers learn nothing before their key is accepted
  state.stream = stream;
  setText("stream-state", stream.state);
  setText("viewer-count", String(stream.viewers));
  setText("stage-viewer-count", String(stream.viewers));
  setText("peak-viewers", String(stream.peak_viewers));
  document.body.dataset.streamState = stream.state;
  if (stream.state === "live" && stream.started_at) state.startedAt = Date.parse(stream.started_at);
  if (stream.state === "ended") {
    state.startedAt = null;
    if (state.live || state.pc) stopPublishing("ended");
    showNotice(endedText(stream));
    $("studio-notice").dataset.kind = "ended";
  } else if ($("studio-notice").dataset.kind === "ended") {
    showNotice("");
    $("studio-notice").dataset.kind = "";
  }
  renderElapsed();
  renderGoLive();
}

function endedText(stream) {
  const reason = config.end_reasons[stream.end_reason] || "The broadcast has ended";
  const at = stream.ended_at ? ` at ${new Date(stream.ended_at).toLocaleTimeString()}` : "";
  return `${reason}${at}.`;
}

// On the preview: LIVE and the time since the broadcast began (the server's start, so a
// reload or another tab shows the same), and how many watch; "Preview" while not live.
function renderElapsed() {
  const live = state.stream?.state === "live";
  const elapsed = live && state.startedAt ? formatDuration((Date.now() - state.startedAt) / 1000) : "00:00:00";
  setText("elapsed", elapsed);
  setText("live-elapsed", elapsed);
  $("live-pill").hidden = !live;
  $("stage-viewers").hidden = !live;
  $("preview-pill").hidden = live;
}

// --- Live stats -----------------------------------------------------------

async function pollStats() {
  renderElapsed();
  const pc = state.pc;
  if (!pc) return;
  const report = await pc.getStats();
  if (state.pc !== pc) return; // stopped meanwhile: its figures are no longer true
  let video = null; // the largest encoding (simulcast sends several)
  let bytesSent = 0; // by every encoding
  let transport = null;
  report.forEach((s) => {
    if (s.type === "outbound-rtp" && s.kind === "video") {
      bytesSent += s.bytesSent || 0;
      if (!video || (s.frameWidth || 0) > (video.frameWidth || 0)) video = s;
    }
    if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") transport = s;
  });
  if (video) {
    const now = video.timestamp;
    if (state.lastStats) {
      const seconds = (now - state.lastStats.timestamp) / 1000;
      const bits = (bytesSent - state.lastStats.bytesSent) * 8;
      setText("out-bitrate", formatBitrate(bits / seconds));
    }
    state.lastStats = { timestamp: now, bytesSent };
    // what is sent, not the statistics: Chromium keeps those of encodings the answer refused
    const sender = pc.getSenders().find((t) => t.track?.kind === "video");
    const encodings = sender ? sender.getParameters().encodings.filter((e) => e.active !== false) : [];
    setText("out-layers", String(encodings.length));
    setText("out-fps", video.framesPerSecond ? String(Math.round(video.framesPerSecond)) : "–");
    setText("out-resolution", video.frameWidth ? `${video.frameWidth}×${video.frameHeight}` : "–");
    setText("frames-sent", String(video.framesEncoded ?? 0));
  }
  if (transport) {
    const local = report.get(transport.localCandidateId);
    setText("candidate-type", local ? local.candidateType : "–");
    setText("rtt", transport.currentRoundTripTime ? `${Math.round(transport.currentRoundTripTime * 1000)} ms` : "–");
  }
}

// --- Local recording (MediaRecorder) ----------------------------------------

function startRecording() {
  const stream = new MediaStream([currentVideoTrack(), currentAudioTrack()].filter(Boolean));
  const mimeType = ["video/webm;codecs=vp8,opus", "video/webm"].find((t) => MediaRecorder.isTypeSupported(t));
  state.recordedChunks = [];
  state.recorder = new MediaRecorder(stream, mimeType ? { mimeType } : {});
  state.recorder.addEventListener("dataavailable", (e) => { if (e.data.size) state.recordedChunks.push(e.data); });
  state.recorder.addEventListener("stop", () => {
    const blob = new Blob(state.recordedChunks, { type: state.recorder.mimeType || "video/webm" });
    const link = $("recording-download");
    if (link.href) URL.revokeObjectURL(link.href);
    link.href = URL.createObjectURL(blob);
    link.download = `${config.slug}-${new Date().toISOString().replace(/[:.]/g, "-")}.webm`;
    link.hidden = false;
    setText("recording-state", `recorded ${(blob.size / 1e6).toFixed(2)} MB`);
  });
  state.recorder.start(1000);
  $("record-start").disabled = true;
  $("record-stop").disabled = false;
  setText("recording-state", `recording ${state.source}…`);
}

function stopRecording() {
  state.recorder?.stop();
  $("record-start").disabled = false;
  $("record-stop").disabled = true;
}

// --- Wiring -----------------------------------------------------------------

for (const id of ["camera", "microphone", "resolution", "framerate", "echo-cancellation", "noise-suppression"]) {
  $(id).addEventListener("change", openCamera);
}
$("source-camera").addEventListener("click", useCamera);
$("source-screen").addEventListener("click", shareScreen);
$("mute-mic").addEventListener("click", (e) => toggle(e.currentTarget));
$("mute-camera").addEventListener("click", (e) => toggle(e.currentTarget));
$("go-live").addEventListener("click", goLive);
$("end-broadcast").addEventListener("click", endBroadcast);
$("record-start").addEventListener("click", startRecording);
$("record-stop").addEventListener("click", stopRecording);
$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  showError("");
  state.key = $("stream-key").value.trim();
  // Closed after a revoked key: reconnect; the welcome sends the new key.
  if (!signaling.send("auth", { key: state.key })) signaling.connect();
});
navigator.mediaDevices.addEventListener("devicechange", listDevices);
setInterval(pollStats, 1000);

const serverRecording = setupServerRecording(signaling, $);
if ($("past-broadcasts")) setupPastBroadcasts(signaling, $);

signaling.connect();
listDevices().then(openCamera);

window.onairStudio = { state, signaling, serverRecording }; // for debugging and the browser tests
