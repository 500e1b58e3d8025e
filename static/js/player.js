// OnAir player controls (watch and embed pages): play/pause, mute and volume, Unmute on the
// video, fullscreen (the player box, so overlays and controls come along), picture in
// picture, and the keyboard shortcuts f, m, p, k. The page (watch.js) says whether the
// broadcast plays (`setLive`); what plays is its business.
"use strict";

// Keys typed into these are text, not shortcuts.
const NOT_TEXT_INPUTS = new Set(["range", "checkbox", "radio", "button", "submit", "reset"]);
function typing(target) {
  if (target.tagName === "INPUT") return !NOT_TEXT_INPUTS.has(target.type);
  return target.tagName === "TEXTAREA" || target.tagName === "SELECT" || target.isContentEditable;
}

export function setupPlayer($) {
  const video = $("player");
  const box = $("player-box");
  const unmute = $("unmute");
  const playToggle = $("play-toggle");
  const muteToggle = $("mute-toggle");
  const volume = $("volume");
  const fullscreenToggle = $("fullscreen-toggle");
  const pipToggle = $("pip-toggle");
  let live = false;
  // Playback starts muted (browsers allow no sound before a click); the viewer's choice
  // then holds for every new session of the page.
  let wantsSound = false;

  function label(button, text, key) {
    button.setAttribute("aria-label", text);
    button.title = `${text} (${key})`;
  }

  function render() {
    const muted = video.muted || video.volume === 0;
    unmute.hidden = !(live && video.muted);
    box.dataset.muted = String(muted);
    label(muteToggle, muted ? "Unmute" : "Mute", "m");
    volume.value = String(video.muted ? 0 : video.volume);
    volume.setAttribute("aria-valuetext", `${Math.round(Number(volume.value) * 100)}%`);
    playToggle.hidden = !live;
    box.dataset.paused = String(video.paused);
    label(playToggle, video.paused ? "Play" : "Pause", "k");
    const fullscreen = document.fullscreenElement === box;
    box.dataset.fullscreen = String(fullscreen);
    label(fullscreenToggle, fullscreen ? "Exit fullscreen" : "Fullscreen", "f");
    fullscreenToggle.hidden = !document.fullscreenEnabled;
    pipToggle.hidden = !document.pictureInPictureEnabled || video.disablePictureInPicture;
    label(pipToggle, document.pictureInPictureElement === video ? "Exit picture in picture" : "Picture in picture", "p");
  }

  function setSound(on) {
    wantsSound = on;
    video.muted = !on;
    if (on && video.volume === 0) video.volume = 0.5;
    if (on && live) video.play().catch(() => {});
  }

  async function togglePlay() {
    if (video.paused) await video.play().catch(() => {});
    else video.pause();
  }

  async function toggleFullscreen() {
    if (document.fullscreenElement) await document.exitFullscreen();
    else await box.requestFullscreen();
  }

  async function togglePip() {
    if (document.pictureInPictureElement) await document.exitPictureInPicture();
    else await video.requestPictureInPicture();
  }

  // A refused request (no video yet, no user gesture) changes nothing: say so, quietly.
  const safely = (action) => () => action().catch((error) => console.warn(error.name, error.message));

  unmute.addEventListener("click", () => setSound(true));
  muteToggle.addEventListener("click", () => setSound(video.muted || video.volume === 0));
  volume.addEventListener("input", () => {
    const level = Number(volume.value);
    if (level > 0) video.volume = level;
    setSound(level > 0);
  });
  playToggle.addEventListener("click", safely(togglePlay));
  fullscreenToggle.addEventListener("click", safely(toggleFullscreen));
  pipToggle.addEventListener("click", safely(togglePip));
  for (const event of ["volumechange", "play", "pause", "playing", "enterpictureinpicture", "leavepictureinpicture"]) {
    video.addEventListener(event, render);
  }
  document.addEventListener("fullscreenchange", render);
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    if (typing(event.target)) return;
    const action = { f: toggleFullscreen, m: async () => muteToggle.click(), p: togglePip, k: togglePlay }[event.key.toLowerCase()];
    if (!action || (event.key.toLowerCase() === "p" && pipToggle.hidden)) return;
    event.preventDefault();
    safely(action)();
  });
  render();

  return {
    get wantsSound() {
      return wantsSound;
    },
    // The broadcast plays (live, not ended or offline): Unmute and pause make sense.
    setLive(value) {
      live = value;
      render();
    },
    render,
  };
}
