// My streams: each stream's "Record" switch changes the stream's `record` through the API
// (PATCH), from its next broadcast on; a refusal puts the switch back and says why.
"use strict";

const csrfToken = () => document.querySelector("input[name=csrfmiddlewaretoken]")?.value || "";

for (const toggle of document.querySelectorAll("input[data-record-url]")) {
  toggle.addEventListener("change", async () => {
    const wanted = toggle.checked;
    const status = toggle.closest("td").querySelector("[data-recording-state]");
    toggle.disabled = true;
    let error = null;
    try {
      const response = await fetch(toggle.dataset.recordUrl, {
        method: "PATCH",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
        body: JSON.stringify({ record: wanted }),
      });
      if (!response.ok) error = (await response.json().catch(() => null))?.error?.message || `HTTP ${response.status}`;
    } catch (failure) {
      error = failure.message;
    }
    toggle.disabled = false;
    if (error) {
      toggle.checked = !wanted;
      status.setAttribute("role", "alert");
      status.textContent = `Could not change recording: ${error}`;
      return;
    }
    toggle.dataset.saved = String(wanted);
  });
}
