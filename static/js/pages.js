// Small page helpers: copy-to-clipboard buttons and confirmations for destructive forms.
"use strict";

// A copy button names what it copies (`data-copy`: a selector; an input's value, or an
// element's text) and says "Copied" (or its `data-copied`) for a moment, also to screen
// readers. Without the Clipboard API (a page not in a secure context, permission refused)
// the text is selected and copied with execCommand, or left selected for Ctrl+C.
async function copyText(source) {
  const field = source instanceof HTMLInputElement || source instanceof HTMLTextAreaElement;
  const text = field ? source.value : source.textContent.trim();
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    if (field) {
      source.select();
    } else {
      const range = document.createRange();
      range.selectNodeContents(source);
      window.getSelection().removeAllRanges();
      window.getSelection().addRange(range);
    }
    return document.execCommand("copy");
  }
}

for (const button of document.querySelectorAll("[data-copy]")) {
  const label = button.innerHTML;
  let restore = null;
  button.addEventListener("click", async () => {
    const source = document.querySelector(button.dataset.copy);
    if (!source) return;
    const copied = await copyText(source);
    button.textContent = copied ? "Copied" : "Selected — press Ctrl+C";
    button.dataset.copyState = copied ? "copied" : "selected";
    announce(copied ? button.dataset.copied || "Copied" : "Selected: press Ctrl+C to copy");
    clearTimeout(restore);
    restore = setTimeout(() => { button.innerHTML = label; button.dataset.copyState = ""; }, 2500);
  });
}

function announce(text) {
  let status = document.getElementById("copy-status");
  if (!status) {
    status = document.createElement("p");
    status.id = "copy-status";
    status.className = "visually-hidden";
    status.setAttribute("role", "status");
    document.body.append(status);
  }
  status.textContent = text;
}

for (const form of document.querySelectorAll("form[data-confirm]")) {
  form.addEventListener("submit", (event) => {
    if (!window.confirm(form.dataset.confirm)) event.preventDefault();
  });
}
