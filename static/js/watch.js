// OnAir watch and embed pages: plays a broadcast from the SFU. The server offers (it knows
// the tracks), the page answers; it starts by itself when the broadcast goes live, resumes
// after reconnects, shows when the broadcast has ended and what the broadcaster turned off.
"use strict";
import { setupChat } from "./chat.js";
import { setupPastBroadcasts } from "./past_broadcasts.js";
import { setupPlayer } from "./player.js";
import { setupQuality } from "./quality.js";
import { SignalingClient, formatBitrate, trickle } from "./signaling.js";

const config = JSON.parse(document.getElementById("onair-config").textContent);
const $ = (id) => document.getElementById(id);
const video = $("player");

const state = {
  pc: null,
  streamState: config.stream_state,
  publisher: null, // "connected" | "reconnecting" while live (docs/SIGNALING.md)
  lastStats: null,
  makingAnswer: false,
  signalingUp: false, // a page cut off from the server (restarting, network gone) claims no LIVE
  media: { mic_muted: false, camera_off: false }, // what the broadcaster sends (`media`)
};

function setText(id, text) {
  const el = $(id);
  if (el) el.textContent = text;
}

function showStatus(kind, text) {
  document.body.dataset.playback = kind;
  setText("playback-status", text);
  $("playback-overlay").hidden = kind === "playing";
  renderMedia();
}

// Over the playing video: "camera off" (the broadcaster's black frames), "microphone muted".
function renderMedia() {
  const playing = state.streamState === "live" && !broadcasterAway();
  $("camera-off").hidden = !(playing && state.media.camera_off);
  $("mic-muted").hidden = !(playing && state.media.mic_muted);
  document.body.dataset.cameraOff = String(playing && state.media.camera_off);
  document.body.dataset.micMuted = String(playing && state.media.mic_muted);
  player.setLive(playing);
}

function setMedia(media) {
  if (!media) return;
  state.media = { mic_muted: media.mic_muted === true, camera_off: media.camera_off === true };
  renderMedia();
}

// The broadcast is live but its broadcaster is away (closed the tab, lost the network):
// the last frame stays, under a "reconnecting" notice and without the LIVE badge.
function broadcasterAway() {
  return state.streamState === "live" && state.publisher === "reconnecting";
}

function renderLiveBadge() {
  const down = !state.signalingUp && signaling.socket !== null; // not before the first connect
  $("live-badge").hidden = state.streamState !== "live" || broadcasterAway() || down;
  renderMedia();
}

function renderPublisher(status) {
  state.publisher = status;
  document.body.dataset.publisher = status || "";
  renderLiveBadge();
  if (broadcasterAway()) showStatus("reconnecting", "The broadcaster is reconnecting…");
}

function renderStream(stream) {
  if (!stream) return;
  if (stream.state !== "live") state.publisher = null; // a new broadcast starts afresh
  state.streamState = stream.state;
  setMedia(stream.media);
  setText("viewer-count", String(stream.viewers));
  setText("stream-title", stream.title);
  renderLiveBadge();
  document.body.dataset.streamState = stream.state;
  pastBroadcasts.render(stream);
  if (stream.state === "idle") showStatus("offline", "Offline — the broadcast starts soon. This page will start playing by itself.");
  if (stream.state === "ended") {
    closePeer();
    clearStats("ended");
    showStatus("ended", "The broadcast has ended. Thanks for watching!");
  }
}

// After the end, the figures of the last connection are no longer true.
function clearStats(connection) {
  state.lastStats = null;
  setText("connection-state", connection);
  for (const id of ["in-bitrate", "in-resolution", "in-fps", "latency", "rtt", "frames-decoded", "packets-lost"]) {
    setText(id, "–");
  }
}

function closePeer() {
  if (state.pc) state.pc.close();
  state.pc = null;
  quality.reset();
}

function newPeer() {
  closePeer();
  const pc = new RTCPeerConnection({
    iceServers: config.ice_servers,
    iceTransportPolicy: config.ice_transport_policy || "all",
  });
  state.pc = pc;
  trickle(pc, signaling);
  pc.addEventListener("track", (event) => {
    // The player's stream keeps the live tracks of the other kind; this track replaces any
    // of its own kind (a new session after a reconnect: the old one ended, and a <video>
    // given an ended and a live video track stays frozen on the ended one).
    const kept = video.srcObject instanceof MediaStream
      ? video.srcObject.getTracks().filter(
        (track) => track.kind !== event.track.kind && track.readyState === "live")
      : [];
    video.srcObject = new MediaStream([...kept, event.track]);
    play();
  });
  pc.addEventListener("connectionstatechange", () => {
    setText("connection-state", pc.connectionState);
    if (pc.connectionState === "failed" && state.pc === pc) {
      showStatus("reconnecting", "Connection lost — reconnecting…");
      signaling.send("restart");
    }
  });
  return pc;
}

async function play() {
  video.muted = !player.wantsSound; // muted until the viewer unmutes
  try {
    await video.play();
  } catch (error) {
    // Only NotAllowedError is the browser's autoplay policy; an AbortError is a newer
    // srcObject (the other track of the session) interrupting this play(), which goes on.
    if (error.name === "NotAllowedError" && !broadcasterAway()) {
      showStatus("blocked", "Click to start playback.");
    }
    return;
  }
  if (state.streamState === "live" && !broadcasterAway()) showStatus("playing", "");
}

const signaling = new SignalingClient(config.ws_path);
setupChat(signaling); // (none on the embed page)
const player = setupPlayer($);
const quality = setupQuality(signaling, $);
// (the embed page has no list of past broadcasts)
const pastBroadcasts = $("past-broadcasts") ? setupPastBroadcasts(signaling, $) : { render() {} };

signaling.on("welcome", (msg) => {
  state.signalingUp = true;
  // Fresh per-session ICE servers (short-lived TURN credentials) replace the page's.
  config.ice_servers = msg.ice_servers;
  config.ice_transport_policy = msg.ice_transport_policy;
  renderStream(msg.stream);
  if (msg.stream.state === "live") showStatus("starting", "Connecting to the broadcast…");
  renderPublisher(msg.publisher);
  signaling.send("watch"); // the server makes a peer connection only when asked
});
signaling.on("state", (msg) => renderStream(msg.stream));
signaling.on("viewers", (msg) => setText("viewer-count", String(msg.count)));
signaling.on("media", setMedia);
signaling.on("offer", async (msg) => {
  // Perfect negotiation: the page is the polite side. A fresh offer with a new
  // session replaces the peer connection; an offer on the current one renegotiates.
  const pc = msg.renegotiate && state.pc ? state.pc : newPeer();
  state.makingAnswer = true;
  try {
    await pc.setRemoteDescription({ type: "offer", sdp: msg.sdp });
    await pc.setLocalDescription(await pc.createAnswer());
    signaling.send("answer", { sdp: pc.localDescription.sdp });
  } finally {
    state.makingAnswer = false;
  }
  if (!broadcasterAway()) showStatus("starting", "Starting video…");
});
// Many viewers are joining at once: this page waits its turn, and its offer follows.
signaling.on("queued", () => {
  if (!broadcasterAway()) showStatus("joining", "Joining…");
});
signaling.on("publisher", (msg) => {
  renderPublisher(msg.status);
  if (msg.status === "connected" && video.srcObject) play();
});
signaling.on("error", (msg) => {
  setText("error-detail", `${msg.message} (${msg.code})`);
  if (msg.code === "forbidden" || msg.code === "not_found") showStatus("error", msg.message);
  // The server gave up on a connection that never came up: ask for a fresh one.
  if (msg.code === "connect_timeout") signaling.send("restart");
});
signaling.addEventListener("close", (event) => {
  state.signalingUp = false;
  renderLiveBadge();
  if (event.detail.code >= 4000 && event.detail.code < 4100) return;
  if (state.streamState !== "ended") showStatus("reconnecting", "Reconnecting…");
});

video.addEventListener("playing", () => {
  if (state.streamState === "live" && !broadcasterAway()) showStatus("playing", "");
});
video.addEventListener("pause", () => {
  // The viewer paused (a live broadcast goes on without them): a click plays it again.
  if (state.streamState === "live" && !broadcasterAway() && state.pc) showStatus("paused", "Paused — click to play");
});
$("playback-overlay").addEventListener("click", play);
$("stats-toggle").addEventListener("click", () => {
  $("stats").hidden = !$("stats").hidden;
  $("stats-toggle").setAttribute("aria-expanded", String(!$("stats").hidden));
});

async function pollStats() {
  const pc = state.pc;
  if (!pc) return;
  const report = await pc.getStats();
  if (state.pc !== pc) return; // closed meanwhile
  report.forEach((s) => {
    if (s.type !== "inbound-rtp" || s.kind !== "video") return;
    if (state.lastStats) {
      const seconds = (s.timestamp - state.lastStats.timestamp) / 1000;
      setText("in-bitrate", formatBitrate(((s.bytesReceived - state.lastStats.bytesReceived) * 8) / seconds));
    }
    state.lastStats = { timestamp: s.timestamp, bytesReceived: s.bytesReceived };
    setText("frames-decoded", String(s.framesDecoded ?? 0));
    setText("in-resolution", s.frameWidth ? `${s.frameWidth}×${s.frameHeight}` : "–");
    setText("in-fps", s.framesPerSecond ? String(Math.round(s.framesPerSecond)) : "–");
    setText("packets-lost", String(s.packetsLost ?? 0));
    // Playout delay: time a frame waits in the jitter buffer before it is shown.
    if (s.jitterBufferEmittedCount) {
      setText("latency", `${Math.round((s.jitterBufferDelay / s.jitterBufferEmittedCount) * 1000)} ms buffer`);
    }
  });
  report.forEach((s) => {
    if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded" && s.currentRoundTripTime) {
      setText("rtt", `${Math.round(s.currentRoundTripTime * 1000)} ms`);
    }
  });
}
setInterval(pollStats, 1000);

renderStream({ state: config.stream_state, viewers: config.viewers, title: config.title });
signaling.connect();
window.onairWatch = { state, signaling }; // for debugging and the browser tests
