/* "Revoke selected" of the scheduled tasks page: the ticked rows' ids in one POST to
 * /api/v2/celery/tasks/revoke-many/ (the root's data-revoke-many-url), after a confirmation that
 * repeats the count. On success the page reloads and shows the outcome (the flash message
 * celery_controls.js shows); on failure the API's reason is shown and nothing is reloaded.
 * "Select all on this page" ticks every row shown (or unticks them when all are ticked).
 * One task's own Revoke button is celery_controls.js's.
 */
(function (window) {
  "use strict";

  var document = window.document;
  var root = document.querySelector("[data-revoke-many-url]");
  if (!root) { return; }
  var button = root.querySelector("[data-revoke-selected]");
  if (!button) { return; }
  var counter = button.querySelector("[data-selected-count]");
  var messages = root.querySelector("[data-messages]");
  var csrfToken = root.querySelector("input[name=csrfmiddlewaretoken]").value;
  var FLASH_KEY = "dojo.celeryControls.flash";

  function selected() {
    return Array.prototype.map.call(root.querySelectorAll("input.select-task:checked"), function (box) {
      return box.value;
    });
  }

  function update() {
    var count = selected().length;
    counter.textContent = String(count);
    button.disabled = count === 0;
  }

  function say(text) {
    var item = document.createElement("li");
    item.className = "error";
    item.textContent = text;
    messages.appendChild(item);
  }

  var reason = window.DojoCeleryApi.reason;  // celery_api.js

  root.addEventListener("change", function (event) {
    if (event.target.classList.contains("select-task")) { update(); }
  });

  var selectAll = root.querySelector("[data-select-all]");
  if (selectAll) {
    selectAll.addEventListener("click", function () {
      var boxes = root.querySelectorAll("input.select-task");
      var every = Array.prototype.every.call(boxes, function (box) { return box.checked; });
      Array.prototype.forEach.call(boxes, function (box) { box.checked = !every; });
      update();
    });
  }

  button.addEventListener("click", function () {
    var ids = selected();
    if (!ids.length) { return; }
    var question = "Revoke " + ids.length + " selected task" + (ids.length === 1 ? "" : "s") +
      " on backend " + root.dataset.backend + "? The workers discard them when they fall due.";
    if (!window.confirm(question)) { return; }
    button.disabled = true;
    window.fetch(root.dataset.revokeManyUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json", "X-CSRFToken": csrfToken },
      body: JSON.stringify({ task_ids: ids, backend: root.dataset.backend })
    }).then(function (response) {
      return response.json().catch(function () { return null; }).then(function (body) {
        if (!response.ok) { throw new Error(reason(response, body)); }
        return body;
      });
    }).then(function (answer) {
      window.sessionStorage.setItem(FLASH_KEY, "Revoked " + answer.revoked + " task(s), acknowledged by " +
        answer.workers.length + " worker(s).");
      window.location.reload();
    }).catch(function (error) {
      say("Could not revoke the " + ids.length + " selected task(s): " + error.message);
      update();
    });
  });

  update();
}(window));
