// The watch page's "Past broadcasts": shown while the stream is not live and reloaded when
// a recording becomes ready; once a broadcast has ended, its recording is a link over the
// player ("Watch the recording").
"use strict";

// A recording starts as its broadcast goes live, a moment after the stream's started_at.
const SAME_BROADCAST_SLACK_MS = 5000;
const RELOAD_SPREAD_MS = 1000;

export function setupPastBroadcasts(signaling, $) {
  const section = $("past-broadcasts");
  const link = $("replay-link");
  let stream = null;

  // The newest recording of the broadcast that has just ended, if the user may watch it.
  function lastBroadcastRecording() {
    if (stream?.state !== "ended" || !stream.started_at) return null;
    const since = Date.parse(stream.started_at) - SAME_BROADCAST_SLACK_MS;
    return [...section.querySelectorAll(".recording-item")]
      .find((item) => Date.parse(item.dataset.startedAt) >= since) || null;
  }

  function renderLink() {
    const item = lastBroadcastRecording();
    if (!link) return item; // the studio's list has no player to put it over
    link.hidden = item === null;
    if (item) link.href = item.querySelector("a").href;
    return item;
  }

  async function reload() {
    const response = await fetch(section.dataset.url, { headers: { Accept: "text/html" } });
    if (!response.ok) return;
    $("past-broadcasts-list").innerHTML = await response.text();
  }

  signaling.on("recording", async (msg) => {
    if (msg.state !== "ready") return;
    // Every viewer hears it at once: spread their requests over a second.
    await new Promise((resolve) => setTimeout(resolve, Math.random() * RELOAD_SPREAD_MS));
    await reload();
    if (renderLink() && link) $("recording-announcement").textContent = "The recording of this broadcast is ready to watch.";
  });

  return {
    render(next) {
      stream = next;
      section.hidden = next.state === "live";
      renderLink();
    },
  };
}
