// OnAir live chat (templates/chat/panel.html) over the page's signaling WebSocket
// (docs/SIGNALING.md, Chat). Text is only ever set with textContent: a message is never
// read as HTML.
"use strict";

const MAX_SHOWN = 300; // messages kept on the page; older ones scroll away for good

export function setupChat(signaling) {
  const $ = (id) => document.getElementById(id);
  const panel = $("chat");
  if (!panel) return null;
  const list = $("chat-messages");
  const form = $("chat-form");
  const input = $("chat-input");
  const nameInput = $("chat-name");
  const chat = {
    joined: false,
    you: null,
    settings: null,
    startedAt: undefined, // the broadcast the chat shown belongs to
    waitForAuth: false,
    joining: false,
  };
  nameInput.value = localStorage.getItem("onair-chat-name") || "";

  function setStatus(text) {
    $("chat-status").textContent = text;
    $("chat-status").hidden = !text;
  }

  function showError(text) {
    $("chat-error").textContent = text;
    $("chat-error").hidden = !text;
  }

  function atBottom() {
    return list.scrollHeight - list.scrollTop - list.clientHeight < 24;
  }

  function tool(label, title, action) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = label;
    button.setAttribute("aria-label", title);
    button.addEventListener("click", action);
    return button;
  }

  const authors = new Map(); // message id → its author, for the moderation note

  function render(message) {
    authors.set(message.id, message.author);
    if (authors.size > MAX_SHOWN * 2) authors.delete(authors.keys().next().value);
    const item = document.createElement("li");
    item.className = "chat-message";
    item.dataset.id = String(message.id);
    const author = document.createElement("span");
    author.className = "chat-author";
    author.textContent = message.author;
    item.append(author);
    if (message.owner || message.guest) {
      const badge = document.createElement("span");
      badge.className = `chat-badge ${message.owner ? "owner" : "guest"}`;
      badge.textContent = message.owner ? "host" : "guest";
      item.append(badge);
    }
    const text = document.createElement("span");
    text.className = "chat-text";
    text.textContent = message.text;
    item.append(text);
    if (chat.you && chat.you.moderator) {
      const tools = document.createElement("span");
      tools.className = "chat-tools";
      const who = message.author;
      tools.append(tool("Delete", `Delete this message from ${who}`, () => signaling.send("chat_delete", { id: message.id })));
      if (!message.owner) {
        tools.append(tool("Time out", `Time out ${who} for 5 minutes`, () => signaling.send("chat_moderate", { action: "timeout", id: message.id, seconds: 300 })));
        tools.append(tool("Ban", `Ban ${who} from this chat`, () => signaling.send("chat_moderate", { action: "ban", id: message.id })));
      }
      item.append(tools);
    }
    return item;
  }

  function append(message, announce) {
    const follow = atBottom();
    list.append(render(message));
    while (list.children.length > MAX_SHOWN) list.firstElementChild.remove();
    if (follow) list.scrollTop = list.scrollHeight;
    if (announce) $("chat-announcer").textContent = `${message.author}: ${message.text}`;
  }

  function renderSettings() {
    const settings = chat.settings;
    const you = chat.you;
    if (!settings || !you) return;
    const mayPost = settings.enabled && (!you.guest || settings.guests_allowed);
    form.hidden = !mayPost;
    $("chat-name-row").hidden = !you.guest;
    $("chat-login").hidden = !(settings.enabled && you.guest && !settings.guests_allowed);
    const notes = [];
    if (!settings.enabled) notes.push("The chat is off.");
    else if (settings.slow_mode_seconds) notes.push(`Slow mode: one message every ${settings.slow_mode_seconds} s.`);
    setStatus(notes.join(" "));
    const moderation = $("chat-moderation");
    moderation.hidden = !you.moderator;
    if (you.moderator) {
      $("chat-enabled").checked = settings.enabled;
      $("chat-guests").checked = settings.guests_allowed;
      const slow = $("chat-slow");
      const value = String(settings.slow_mode_seconds);
      if (![...slow.options].some((option) => option.value === value)) {
        slow.append(new Option(`${value} s`, value));
      }
      slow.value = value;
    }
  }

  function join() {
    chat.joining = signaling.send("chat_join");
    if (chat.joining) setStatus("Loading the chat…");
  }

  signaling.on("welcome", (msg) => {
    chat.startedAt = msg.stream ? msg.stream.started_at : undefined;
    // A studio opened by someone else joins once the stream key let it in.
    chat.waitForAuth = msg.authorized === false;
    if (!chat.waitForAuth) join();
  });
  signaling.on("state", (msg) => {
    const startedAt = msg.stream.started_at;
    if (chat.waitForAuth) {
      chat.waitForAuth = false;
      chat.startedAt = startedAt;
      join();
    } else if (chat.joined && startedAt && startedAt !== chat.startedAt) {
      chat.startedAt = startedAt; // a new broadcast, a new chat
      join();
    }
  });
  signaling.on("chat_history", (msg) => {
    chat.joined = true;
    chat.joining = false;
    chat.you = msg.you;
    chat.settings = msg.settings;
    input.maxLength = msg.max_chars;
    list.replaceChildren();
    for (const message of msg.messages) append(message, false);
    list.scrollTop = list.scrollHeight;
    renderSettings();
  });
  signaling.on("chat_message", (msg) => append(msg.message, true));
  signaling.on("chat_deleted", (msg) => {
    const item = list.querySelector(`li[data-id="${Number(msg.id)}"]`);
    if (item) item.remove();
  });
  signaling.on("chat_settings", (msg) => {
    chat.settings = msg.settings;
    renderSettings();
  });
  signaling.on("chat_moderated", (msg) => {
    const done = { ban: "Banned.", timeout: "Timed out for 5 minutes.", lift: "Let back in." };
    const author = authors.get(msg.id);
    const note = $("chat-note");
    note.textContent = `${author ? `${author}: ` : ""}${done[msg.action] || ""}`;
    note.hidden = false;
    $("chat-announcer").textContent = done[msg.action] || "";
  });
  signaling.on("chat_error", (msg) => {
    // A join right after another (a broadcast starting as the page opened): join again.
    if (chat.joining && msg.code === "chat_rate_limited") {
      setTimeout(join, (msg.retry_after || 2) * 1000);
      return;
    }
    showError(msg.message);
  });
  signaling.addEventListener("close", () => {
    chat.joined = false;
    chat.joining = false;
    setStatus("Reconnecting to the chat…");
  });

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    const fields = { text };
    if (chat.you && chat.you.guest) {
      fields.name = nameInput.value.trim();
      localStorage.setItem("onair-chat-name", fields.name);
    }
    if (!signaling.send("chat", fields)) {
      showError("Not connected to the chat; try again in a moment.");
      return;
    }
    showError("");
    input.value = "";
  });

  const configure = (fields) => signaling.send("chat_settings", fields);
  $("chat-enabled").addEventListener("change", (event) => configure({ enabled: event.target.checked }));
  $("chat-guests").addEventListener("change", (event) => configure({ guests_allowed: event.target.checked }));
  $("chat-slow").addEventListener("change", (event) => configure({ slow_mode_seconds: Number(event.target.value) }));
  return chat;
}
