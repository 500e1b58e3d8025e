// OnAir watch page: the quality menu (Auto / each video layer) and the "video paused"
// notice, from the server's `quality` messages (docs/SIGNALING.md). Kept apart from
// watch.js, which only wires it to its signaling client.
"use strict";

const NAMES = ["Low", "Medium", "High"];

// A layer's name: its picture height ("720p") once known, else its rank.
function layerName(heights, index) {
  if (heights[index]) return `${heights[index]}p`;
  if (heights.length === NAMES.length) return NAMES[index];
  return `Layer ${index + 1}`;
}

export function setupQuality(signaling, $) {
  const select = $("quality-select");
  const current = $("quality-current");
  const menu = $("quality-menu");
  const paused = $("video-paused");
  let heights = [];

  function renderOptions(newHeights) {
    if (newHeights.join() === heights.join()) return;
    heights = newHeights;
    select.replaceChildren(new Option("Auto", "auto"));
    // best first, as players list them
    for (let index = heights.length - 1; index >= 0; index -= 1) {
      select.append(new Option(layerName(heights, index), String(index)));
    }
  }

  signaling.on("quality", (msg) => {
    renderOptions(msg.heights);
    menu.hidden = msg.heights.length < 2;
    select.value = msg.auto ? "auto" : String(msg.layer);
    const shown = msg.paused ? "paused" : layerName(heights, msg.layer);
    current.textContent = msg.auto ? `Auto (${shown})` : shown;
    paused.hidden = !msg.paused;
    document.body.dataset.videoPaused = msg.paused ? "true" : "";
  });

  select.addEventListener("change", () => {
    const layer = select.value === "auto" ? null : Number(select.value);
    signaling.send("quality", { layer });
  });

  // The session is gone (ended, reconnecting): nothing is sent, so nothing to choose. A
  // new session starts on Auto, and the server says so with its first `quality`.
  return {
    reset() {
      menu.hidden = true;
      current.textContent = "";
      heights = [];
      paused.hidden = true;
      document.body.dataset.videoPaused = "";
    },
  };
}
