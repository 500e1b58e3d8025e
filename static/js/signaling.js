// OnAir signaling client: one WebSocket, JSON messages with a `type` (docs/SIGNALING.md).
// Reconnects with backoff and re-announces itself; callers react to messages by type.
"use strict";

export class SignalingClient extends EventTarget {
  constructor(path) {
    super();
    this.path = path;
    this.socket = null;
    this.closedByUser = false;
    this.retryDelay = 500;
  }

  get url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}${this.path}`;
  }

  connect() {
    this.closedByUser = false;
    const socket = new WebSocket(this.url);
    this.socket = socket;
    socket.addEventListener("open", () => {
      this.retryDelay = 500;
      this.dispatchEvent(new CustomEvent("open"));
    });
    socket.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        console.warn("onair: dropped a non-JSON message", event.data);
        return;
      }
      this.dispatchEvent(new CustomEvent("message", { detail: message }));
      this.dispatchEvent(new CustomEvent(`msg:${message.type}`, { detail: message }));
    });
    socket.addEventListener("close", (event) => {
      this.dispatchEvent(new CustomEvent("close", { detail: event }));
      // 4000-4099: the server refused us for a reason retrying cannot fix.
      if (this.closedByUser || (event.code >= 4000 && event.code < 4100)) return;
      setTimeout(() => this.connect(), this.retryDelay);
      this.retryDelay = Math.min(this.retryDelay * 2, 8000);
    });
  }

  get open() {
    return this.socket !== null && this.socket.readyState === WebSocket.OPEN;
  }

  send(type, fields = {}) {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) return false;
    this.socket.send(JSON.stringify({ type, ...fields }));
    return true;
  }

  on(type, handler) {
    this.addEventListener(`msg:${type}`, (event) => handler(event.detail));
  }

  close() {
    this.closedByUser = true;
    if (this.socket) this.socket.close(1000);
  }
}

export function formatBitrate(bitsPerSecond) {
  if (!Number.isFinite(bitsPerSecond)) return "–";
  if (bitsPerSecond >= 1e6) return `${(bitsPerSecond / 1e6).toFixed(2)} Mbps`;
  return `${Math.round(bitsPerSecond / 1e3)} kbps`;
}

export function formatDuration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const hh = String(Math.floor(s / 3600)).padStart(2, "0");
  const mm = String(Math.floor((s % 3600) / 60)).padStart(2, "0");
  const ss = String(s % 60).padStart(2, "0");
  return `${hh}:${mm}:${ss}`;
}

// Sends trickled candidates; the SFU (aiortc) puts all of its own in the SDP.
export function trickle(pc, signaling) {
  pc.addEventListener("icecandidate", ({ candidate }) => {
    signaling.send("candidate", { candidate: candidate ? candidate.toJSON() : null });
  });
}
