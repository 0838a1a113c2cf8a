/* The Celery controls of the dashboard and of a task's page (the element with data-celery-controls,
 * which holds the backend and the CSRF token): each button POSTs to the REST API (URL, queue, key
 * or task id in its data attributes), asks for confirmation first (the question is its
 * data-confirm), and reloads the page on success so it shows the change. "Break down" opens a
 * panel under its queue's row, with a Revoke button per message when the root has data-revoke-url.
 *
 * What comes from the API is inserted with textContent, never as markup: task names and
 * arguments may hold anything.
 */
(function (window) {
  "use strict";

  var document = window.document;
  var root = document.querySelector("[data-celery-controls]");
  if (!root) { return; }
  var backend = root.dataset.backend;
  var csrfToken = root.querySelector("input[name=csrfmiddlewaretoken]").value;
  var messages = root.querySelector("[data-messages]");
  var FLASH_KEY = "dojo.celeryControls.flash";

  function say(text, level) {
    var item = document.createElement("li");
    item.className = level;
    item.textContent = text;
    messages.appendChild(item);
  }

  var reason = window.DojoCeleryApi.reason;  // celery_api.js

  function readJson(response) {
    return response.json().catch(function () { return null; }).then(function (body) {
      if (!response.ok) { throw new Error(reason(response, body)); }
      return body;
    });
  }

  function describe(control, target, body) {
    if (control === "purge") { return "Purged " + body.purged + " message(s) from " + target + "."; }
    if (control === "run") { return "Sent " + target + " as task " + body.task_id + "."; }
    if (control === "retry") { return "Retried " + target + " as task " + body.task_id + " on " + body.queue + "."; }
    var done = {
      pause: "Paused", resume: "Resumed", enable: "Enabled", disable: "Disabled",
      revoke: "Revoked", terminate: "Terminated"
    }[control] || "Done";
    return done + " " + target + ".";
  }

  function runControl(button) {
    var data = button.dataset;
    var target = data.queue || data.key || data.taskId;
    if (!window.confirm(data.confirm || "Really " + data.control + "?")) { return; }
    var body = { backend: backend };
    if (data.queue !== undefined) { body.queue = data.queue; }
    if (data.key !== undefined) { body.key = data.key; }
    if (data.enabled !== undefined) { body.enabled = data.enabled === "true"; }
    if (data.taskId !== undefined) { body.task_id = data.taskId; }
    if (data.signal !== undefined) { body.signal = data.signal; }
    button.disabled = true;
    window.fetch(data.url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json", "X-CSRFToken": csrfToken },
      body: JSON.stringify(body)
    }).then(readJson).then(function (answer) {
      window.sessionStorage.setItem(FLASH_KEY, describe(data.control, target, answer));
      window.location.reload();
    }).catch(function (error) {
      say("Could not " + data.control + " " + target + ": " + error.message, "error");
      button.disabled = false;
    });
  }

  function cell(row, text, className) {
    var td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "-" : String(text);
    if (className) { td.className = className; }
    row.appendChild(td);
  }

  function table(caption, headers, rows) {
    var element = document.createElement("table");
    var cap = document.createElement("caption");
    cap.textContent = caption;
    element.appendChild(cap);
    var head = element.createTHead().insertRow();
    headers.forEach(function (label) {
      var th = document.createElement("th");
      th.textContent = label;
      head.appendChild(th);
    });
    var body = element.createTBody();
    rows.forEach(function (values) {
      var row = body.insertRow();
      values.forEach(function (value, i) { cell(row, value, i === values.length - 1 ? "args" : ""); });
    });
    return element;
  }

  function showBreakdown(target, found) {
    target.textContent = "";
    var byTask = Object.keys(found.by_task).sort(function (a, b) { return found.by_task[b] - found.by_task[a]; });
    target.appendChild(table(
      found.complete
        ? found.total + " ready message(s) in " + found.queue + ", by task"
        : "Partial: the first " + found.total + " ready message(s) of " + found.queue +
          " scanned before the time limit (DD_CELERY_BREAKDOWN_SECONDS), by task",
      ["Task", "Messages"],
      byTask.map(function (name) { return [name, found.by_task[name]]; })
    ));
    var listed = table(
      "The first " + found.messages.length + " message(s), in the order workers take them",
      ["Id", "Task", "Priority", "ETA", "Age", "Arguments (truncated)"],
      found.messages.map(function (m) {
        var age = m.age_seconds === null ? null : m.age_seconds.toFixed(1) + " s";
        return [m.id, m.task, m.priority, m.eta, age, found.arguments_hidden ? "hidden" : m.args_preview];
      })
    );
    if (root.dataset.revokeUrl) { addRevokeButtons(listed, found.messages); }
    target.appendChild(listed);
  }

  /* A Revoke button per listed message: workers discard a revoked task when it reaches them. */
  function addRevokeButtons(listed, summaries) {
    var th = document.createElement("th");
    th.textContent = "Controls";
    listed.tHead.rows[0].appendChild(th);
    Array.prototype.forEach.call(listed.tBodies[0].rows, function (row, i) {
      var cell = row.insertCell();
      var message = summaries[i];
      if (!message.id) { return; }
      var button = document.createElement("button");
      button.type = "button";
      button.className = "button control";
      button.textContent = "Revoke";
      button.dataset.control = "revoke";
      button.dataset.url = root.dataset.revokeUrl;
      button.dataset.taskId = message.id;
      button.dataset.confirm = "Revoke task " + message.id + " (" + message.task + ")? Workers discard it when it reaches them.";
      cell.appendChild(button);
    });
  }

  function toggleBreakdown(button) {
    var row = document.getElementById(button.dataset.target);
    if (!row.hidden) { row.hidden = true; return; }
    var target = row.querySelector("td");
    target.textContent = "Reading " + button.dataset.queue + "…";
    row.hidden = false;
    var query = new window.URLSearchParams({ queue: button.dataset.queue, backend: backend });
    window.fetch(button.dataset.url + "?" + query.toString(), {
      credentials: "same-origin",
      headers: { "Accept": "application/json" }
    }).then(readJson).then(function (found) {
      showBreakdown(target, found);
    }).catch(function (error) {
      row.hidden = true;
      say("Could not break down " + button.dataset.queue + ": " + error.message, "error");
    });
  }

  root.addEventListener("click", function (event) {
    var button = event.target.closest("button");
    if (!button || !root.contains(button)) { return; }
    if (button.classList.contains("control")) { runControl(button); }
    if (button.classList.contains("breakdown-toggle")) { toggleBreakdown(button); }
  });

  var flash = window.sessionStorage.getItem(FLASH_KEY);
  if (flash) {
    window.sessionStorage.removeItem(FLASH_KEY);
    say(flash, "success");
  }
}(window));
