// The chat of a recorded broadcast on its replay page: each message appears as the video
// reaches its offset, and the list follows seeking. Text is set with textContent only.
"use strict";

const video = document.getElementById("replay");
const list = document.getElementById("chat-messages");
const messages = JSON.parse(document.getElementById("chat-replay-data").textContent);
let shown = 0; // messages[0..shown) are on the page

function clock(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const minutes = Math.floor(s / 60);
  return `${minutes}:${String(s % 60).padStart(2, "0")}`;
}

function render(message) {
  const item = document.createElement("li");
  item.className = "chat-message";
  item.dataset.id = String(message.id);
  const offset = document.createElement("span");
  offset.className = "chat-offset";
  offset.textContent = clock(message.offset);
  const author = document.createElement("span");
  author.className = "chat-author";
  author.textContent = message.author;
  const text = document.createElement("span");
  text.className = "chat-text";
  text.textContent = message.text;
  item.append(offset, author, text);
  return item;
}

function follow() {
  const now = video.currentTime;
  if (shown > 0 && messages[shown - 1].offset > now) {
    // Seeked back: start again from the top.
    list.replaceChildren();
    shown = 0;
  }
  let added = false;
  while (shown < messages.length && messages[shown].offset <= now) {
    list.append(render(messages[shown]));
    shown += 1;
    added = true;
  }
  if (added) list.scrollTop = list.scrollHeight;
}

for (const event of ["timeupdate", "seeked", "loadedmetadata"]) video.addEventListener(event, follow);
follow();
