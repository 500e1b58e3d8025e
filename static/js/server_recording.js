// The studio's server recording: "● REC" and its running time while the server records the
// broadcast, and why it stopped when that was before the broadcast's end (a size, duration
// or disk limit, a failure). The broadcast itself goes on either way.
"use strict";

// Stops nobody needs telling about (unless nothing playable was left): the broadcast ended,
// or the owner turned recording off.
const EXPECTED_STOPS = new Set(["ended", "stopped"]);

function clock(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const [h, m] = [Math.floor(s / 3600), Math.floor((s % 3600) / 60)];
  const mmss = `${String(m).padStart(h ? 2 : 1, "0")}:${String(s % 60).padStart(2, "0")}`;
  return h ? `${h}:${mmss}` : mmss;
}

// The server's detail ("the recording reached its 100000 byte limit") as a sentence.
function sentence(text) {
  const trimmed = text.trim();
  const capital = trimmed.charAt(0).toUpperCase() + trimmed.slice(1);
  return /[.!?]$/.test(capital) ? capital : `${capital}.`;
}

export function setupServerRecording(signaling, $) {
  const config = JSON.parse(document.getElementById("onair-recording").textContent);
  const state = { startedAt: config.active ? Date.parse(config.active.started_at) : null };

  function render() {
    const recording = state.startedAt !== null;
    $("rec-indicator").hidden = !recording;
    if (recording) $("rec-elapsed").textContent = clock((Date.now() - state.startedAt) / 1000);
    const known = config.record === null ? "–" : config.record ? "on" : "off"; // null: not the owner
    $("server-recording").textContent = recording ? "recording" : known;
    document.body.dataset.serverRecording = recording ? "recording" : "";
  }

  function stoppedText({ state: ended, reason, detail }, live = document.body.dataset.streamState === "live") {
    const why = ended === "failed"
      ? "Recording failed"
      : `Recording stopped: ${(config.stop_reasons[reason] || reason).toLowerCase()}`;
    const goesOn = live ? " The broadcast goes on." : "";
    return `${why}.${detail ? ` ${sentence(detail)}` : ""}${goesOn}`;
  }

  function notice(text) {
    const box = $("recording-notice");
    box.textContent = text;
    box.hidden = !text;
  }

  // A studio that connects (or reconnects) is told the recording running now, if any.
  signaling.on("welcome", (msg) => {
    if (!("recording" in msg)) return; // not authorized (yet)
    state.startedAt = msg.recording?.state === "recording" ? Date.parse(msg.recording.started_at) : null;
    render();
  });
  signaling.on("recording", (msg) => {
    if (msg.state === "recording") {
      state.startedAt = Date.parse(msg.started_at) || Date.now();
      notice("");
      $("recording-announcement").textContent = "The server is recording this broadcast.";
    } else if (state.startedAt !== null || msg.state === "failed") {
      state.startedAt = null;
      if (msg.state !== "failed" && EXPECTED_STOPS.has(msg.reason)) {
        $("recording-announcement").textContent = "The server stopped recording.";
      } else {
        notice(stoppedText(msg));
      }
    }
    render();
  });
  setInterval(render, 1000);
  render();
  if (config.stopped) notice(stoppedText(config.stopped, true)); // given while live only
  return state;
}
