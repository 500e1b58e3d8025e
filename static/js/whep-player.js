// A minimal WHEP player: recvonly offer by POST, trickle ICE by PATCH, ICE restart by
// PATCH with If-Match: "*", DELETE on stop or when the page goes away. A session the
// server dropped (a restart) or cannot be reached for is "reconnecting": the player asks
// for the stream's state with backoff and POSTs again once it is live, until it ended.
const config = JSON.parse(document.getElementById("whep-config").textContent);
const video = document.getElementById("player");
const status = document.getElementById("whep-status");
const tokenInput = document.getElementById("whep-token");
const playButton = document.getElementById("whep-play");
const stopButton = document.getElementById("whep-stop");
const SDPFRAG = "application/trickle-ice-sdpfrag";

const RETRY_FIRST_MS = 500;
const RETRY_MAX_MS = 4000;

const state = {
  pc: null, location: null, etag: null, token: "", pending: [], answer: null, endedAt: null,
  reconnecting: false, retryTimer: null, retryDelay: RETRY_FIRST_MS,
};
window.onairWhep = { state, play, stop, restartIce };

function show(text) {
  status.textContent = text;
}

function headers(extra = {}) {
  return state.token ? { ...extra, Authorization: `Bearer ${state.token}` } : extra;
}

async function errorText(response) {
  try {
    return (await response.json()).error.message;
  } catch {
    return response.statusText;
  }
}

function fragment(candidates, { ufrag, pwd, end = false }) {
  const lines = [`a=ice-ufrag:${ufrag}`, `a=ice-pwd:${pwd}`];
  const mid = state.pc.getTransceivers()[0].mid ?? "0";
  lines.push("m=audio 9 UDP/TLS/RTP/SAVPF 0", `a=mid:${mid}`);
  for (const candidate of candidates) lines.push(`a=${candidate.candidate}`);
  if (end) lines.push("a=end-of-candidates");
  return lines.join("\r\n") + "\r\n";
}

function localCredentials() {
  const sdp = state.pc.localDescription.sdp;
  return {
    ufrag: sdp.match(/a=ice-ufrag:(\S+)/)[1],
    pwd: sdp.match(/a=ice-pwd:(\S+)/)[1],
  };
}

async function trickle(candidates, end) {
  if (!state.location || (!candidates.length && !end)) return;
  const response = await fetch(state.location, {
    method: "PATCH",
    headers: headers({ "Content-Type": SDPFRAG, "If-Match": state.etag }),
    body: fragment(candidates, { ...localCredentials(), end }),
  });
  if (!response.ok && response.status !== 204) console.warn("trickle", response.status);
}

async function play() {
  await stop();
  state.token = tokenInput.value.trim();
  await connect();
}

// POSTs an offer; true once the session is up (201), false when refused or unreachable.
async function connect() {
  const pc = new RTCPeerConnection({
    iceServers: config.ice_servers,
    iceTransportPolicy: config.ice_transport_policy,
  });
  state.pc = pc;
  pc.addTransceiver("audio", { direction: "recvonly" });
  pc.addTransceiver("video", { direction: "recvonly" });
  const stream = new MediaStream();
  video.srcObject = stream;
  pc.addEventListener("track", ({ track, receiver }) => {
    stream.addTrack(track);
    // The server closing the connection (the broadcast ended, or the server stops) closes
    // DTLS at once, while ICE takes seconds to notice: ask why when DTLS closes.
    const dtls = receiver.transport;
    if (dtls && !watched.has(dtls)) {
      watched.add(dtls);
      dtls.addEventListener("statechange", () => {
        if (["closed", "failed"].includes(dtls.state) && state.pc === pc) checkEnded(pc, { gone: true });
      });
    }
  });
  const watched = new Set();
  pc.addEventListener("connectionstatechange", () => {
    if (state.pc !== pc) return;
    show(pc.connectionState);
    if (pc.connectionState === "connected") state.retryDelay = RETRY_FIRST_MS;
    // No signaling socket says the broadcast ended: the server closing this connection
    // does. Ask whether that is what happened ("disconnected" may yet recover).
    if (["disconnected", "failed", "closed"].includes(pc.connectionState)) {
      checkEnded(pc, { gone: pc.connectionState !== "disconnected" });
    }
  });
  pc.addEventListener("icecandidate", ({ candidate }) => {
    if (state.location) trickle(candidate ? [candidate] : [], !candidate);
    else if (candidate) state.pending.push(candidate);
  });
  await pc.setLocalDescription(await pc.createOffer());
  show("connecting");
  let response;
  try {
    response = await fetch(config.endpoint, {
      method: "POST",
      headers: headers({ "Content-Type": "application/sdp" }),
      body: pc.localDescription.sdp,
    });
  } catch {
    show("server unreachable");
    pc.close();
    state.pc = null;
    return false;
  }
  if (response.status !== 201) {
    show(`refused (${response.status}): ${await errorText(response)}`);
    pc.close();
    state.pc = null;
    return false;
  }
  state.location = new URL(response.headers.get("Location"), location.href).href;
  state.etag = response.headers.get("ETag");
  state.answer = await response.text();
  await pc.setRemoteDescription({ type: "answer", sdp: state.answer });
  const pending = state.pending.splice(0);
  await trickle(pending, pc.iceGatheringState === "complete");
  stopButton.disabled = false;
  return true;
}

// RFC 9725 §4.3.2: new local credentials go out in a PATCH with If-Match: "*"; the
// session's new credentials come back and replace those of the answer.
async function restartIce() {
  const pc = state.pc;
  if (!pc || !state.location) return 0;
  pc.restartIce();
  await pc.setLocalDescription(await pc.createOffer());
  const response = await fetch(state.location, {
    method: "PATCH",
    headers: headers({ "Content-Type": SDPFRAG, "If-Match": "*" }),
    body: fragment([], localCredentials()),
  });
  if (response.status !== 200) return response.status;
  state.etag = response.headers.get("ETag");
  const remote = await response.text();
  const ufrag = remote.match(/a=ice-ufrag:(\S+)/)[1];
  const pwd = remote.match(/a=ice-pwd:(\S+)/)[1];
  state.answer = state.answer
    .replace(/a=ice-ufrag:\S+/g, `a=ice-ufrag:${ufrag}`)
    .replace(/a=ice-pwd:\S+/g, `a=ice-pwd:${pwd}`);
  await pc.setRemoteDescription({ type: "answer", sdp: state.answer });
  return response.status;
}

// The stream as the server describes it; null while the server cannot be reached.
async function fetchStream() {
  try {
    const response = await fetch(config.state_url, { headers: headers(), cache: "no-store" });
    return response.ok ? await response.json() : null;
  } catch {
    return null;
  }
}

// The connection to the server went (``gone``) or falters: ended, or reconnecting.
async function checkEnded(pc, { gone }) {
  const stream = await fetchStream();
  if (state.pc !== pc) return;
  if (stream?.state === "live" && !gone) return; // ICE may yet recover
  // The session went with the broadcast or the server: nothing to DELETE.
  state.pc = null;
  state.location = null;
  pc.close();
  if (stream && stream.state !== "live") showEnded(stream);
  else reconnectLater();
}

function showEnded(stream) {
  state.reconnecting = false;
  stopButton.disabled = true;
  const reason = config.end_reasons[stream.end_reason];
  const at = stream.ended_at ? ` at ${new Date(stream.ended_at).toLocaleTimeString()}` : "";
  state.endedAt = Date.now();
  show(stream.state === "ended" ? `ended${reason ? ` (${reason}${at})` : ""}` : "offline");
}

function reconnectLater() {
  state.reconnecting = true;
  show("reconnecting");
  stopButton.disabled = false;
  clearTimeout(state.retryTimer);
  state.retryTimer = setTimeout(reconnect, state.retryDelay);
  state.retryDelay = Math.min(state.retryDelay * 2, RETRY_MAX_MS);
}

async function reconnect() {
  state.retryTimer = null;
  const stream = await fetchStream();
  if (!state.reconnecting || state.retryTimer !== null || state.pc !== null) {
    return; // stopped or played meanwhile
  }
  if (stream && stream.state !== "live") {
    showEnded(stream);
    return;
  }
  // Live (its publisher may not be back yet: the POST is refused until it is), or the
  // server is still away.
  if (!stream || !(await connect())) {
    if (state.reconnecting && state.pc === null) reconnectLater();
    return;
  }
  state.reconnecting = false;
}

async function stop() {
  state.reconnecting = false;
  clearTimeout(state.retryTimer);
  state.retryTimer = null;
  state.retryDelay = RETRY_FIRST_MS;
  const { pc, location: session } = state;
  state.pc = null;
  state.location = null;
  state.pending = [];
  if (pc) pc.close();
  if (session) await fetch(session, { method: "DELETE", headers: headers() });
  stopButton.disabled = true;
  show("stopped");
}

document.getElementById("whep-form").addEventListener("submit", (event) => {
  event.preventDefault();
  play();
});
stopButton.addEventListener("click", () => stop());
window.addEventListener("pagehide", () => {
  if (state.location) fetch(state.location, { method: "DELETE", headers: headers(), keepalive: true });
});
