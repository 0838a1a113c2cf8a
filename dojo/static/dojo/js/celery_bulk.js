/* The bulk operations page: Preview (POST /api/v2/celery/bulk/preview/: the exact count, the first
 * 20 matches and the filter as the server applies it), a Confirm step that repeats the count and the
 * filter and starts the operation with the preview's fingerprint (a 409 shows the new preview and
 * asks again), then a progress bar polling GET /api/v2/celery/bulk/<id>/ with a Cancel button.
 * The filter is the form's, written back into the URL on Preview so a reload shows the same set;
 * after a reload the newest operation still running is followed again.
 * The API checks the permission, the read-only mode and the task-data right again.
 */
(function (window) {
  "use strict";

  var document = window.document;
  var root = document.getElementById("bulk");
  if (!root) { return; }
  var form = document.getElementById("bulk-filter");
  var previewButton = document.getElementById("bulk-preview-button");
  if (!form || !previewButton) { return; }
  var csrfToken = root.querySelector("input[name=csrfmiddlewaretoken]").value;
  var messages = root.querySelector("[data-messages]");
  // The field errors beside the API's "Invalid input: ..." detail say what to fix; else celery_api.js's reason.
  function reason(response, body) {
    if (body && typeof body === "object" && /^Invalid input/.test(body.detail || "")) {
      var fields = Object.keys(body).filter(function (name) { return name !== "detail"; });
      if (fields.length) {
        return fields.map(function (name) { return name + ": " + [].concat(body[name]).join(" "); }).join("; ");
      }
    }
    return window.DojoCeleryApi.reason(response, body);
  }
  var previewBox = document.getElementById("bulk-preview");
  var confirmBox = document.getElementById("bulk-confirm");
  var progressBox = document.getElementById("bulk-progress");
  var ACTIVE = { pending: true, running: true };
  var current = null;  // { request: {...}, preview: {...} }
  var operationId = null;
  var timer = null;

  function say(text, kind) {
    messages.textContent = "";
    if (!text) { return; }
    var item = document.createElement("li");
    item.className = kind || "error";
    item.textContent = text;
    messages.appendChild(item);
  }

  function call(url, body) {
    var options = {
      method: body === undefined ? "GET" : "POST",
      credentials: "same-origin",
      headers: { "Accept": "application/json", "X-CSRFToken": csrfToken }
    };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    return window.fetch(url, options).then(function (response) {
      return response.json().catch(function () { return null; }).then(function (answer) {
        return { response: response, body: answer };
      });
    });
  }

  function asked() {
    var data = new window.FormData(form);
    var filter = {};
    var query = new window.URLSearchParams();
    data.forEach(function (value, name) {
      value = String(value).trim();
      if (!value) { return; }
      query.append(name, value);
      if (name !== "action" && name !== "all" && name !== "include_retried") { filter[name] = value; }
    });
    return {
      query: query.toString(),
      body: {
        action: data.get("action"),
        filter: filter,
        all: data.get("all") === "1",
        include_retried: data.get("include_retried") === "1"
      }
    };
  }

  function filterText(filter) {
    var names = Object.keys(filter || {});
    if (!names.length) { return "all (no condition)"; }
    return names.map(function (name) { return name + "=" + filter[name]; }).join(" · ");
  }

  // What an action acts on: stored results, or (revoke, purge) messages waiting in a queue.
  var LABELS = {
    retry: ["Retry", "stored result(s)"],
    delete_results: ["Delete the stored results of", "stored result(s)"],
    revoke: ["Revoke", "queued message(s)"],
    purge: ["Remove from the queue", "queued message(s)"]
  };

  function showPreview(preview) {
    current.preview = preview;
    document.getElementById("bulk-preview-count").textContent = String(preview.count);
    document.getElementById("bulk-preview-what").textContent = LABELS[preview.action][1];
    document.getElementById("bulk-preview-filter").textContent = filterText(preview.filter);
    var body = document.querySelector("#bulk-sample tbody");
    body.textContent = "";
    preview.sample.forEach(function (row) {
      var line = document.createElement("tr");
      [row.task_id, row.task_name || "-", row.state, row.date_done || "-"].forEach(function (value) {
        var cell = document.createElement("td");
        cell.textContent = value;
        line.appendChild(cell);
      });
      body.appendChild(line);
    });
    previewBox.hidden = false;
    confirmBox.hidden = true;
    document.getElementById("bulk-continue").disabled = preview.count === 0;
  }

  previewButton.addEventListener("click", function () {
    var request = asked();
    window.history.replaceState(null, "", "?" + request.query);
    document.getElementById("bulk-url-filter").textContent = request.query || "(empty: nothing narrows the set)";
    current = { request: request.body, preview: null };
    previewButton.disabled = true;
    say("");
    call(root.dataset.previewUrl, request.body).then(function (result) {
      if (!result.response.ok) { throw new Error(reason(result.response, result.body)); }
      showPreview(result.body);
    }).catch(function (error) {
      previewBox.hidden = true;
      say("Preview refused: " + error.message);
    }).then(function () { previewButton.disabled = false; });
  });

  function askConfirm(note) {
    var preview = current.preview;
    var label = LABELS[preview.action];
    document.getElementById("bulk-confirm-text").textContent = (note ? note + " " : "") + label[0] + " " +
      preview.count + " " + label[1] + " matching " + filterText(preview.filter) + "?";
    confirmBox.hidden = false;
  }

  document.getElementById("bulk-continue").addEventListener("click", function () { askConfirm(""); });
  document.getElementById("bulk-confirm-back").addEventListener("click", function () { confirmBox.hidden = true; });

  document.getElementById("bulk-confirm-button").addEventListener("click", function () {
    var button = this;
    var preview = current.preview;
    var body = Object.assign({}, current.request, {
      confirmed_count: preview.count,
      fingerprint: preview.fingerprint
    });
    button.disabled = true;
    call(root.dataset.startUrl, body).then(function (result) {
      if (result.response.status === 409 && result.body && result.body.preview) {
        showPreview(result.body.preview);
        askConfirm("The set changed since the preview (" + result.body.detail + "). Here is the new one:");
        return;
      }
      if (!result.response.ok) { throw new Error(reason(result.response, result.body)); }
      confirmBox.hidden = true;
      previewBox.hidden = true;
      say("Operation " + result.body.id + " started.", "success");
      follow(result.body);
    }).catch(function (error) {
      say("Could not start the operation: " + error.message);
    }).then(function () { button.disabled = false; });
  });

  function showProgress(operation) {
    var progress = operation.progress;
    var link = document.getElementById("bulk-progress-link");
    link.textContent = String(operation.id);
    link.href = root.dataset.detailUrl + operation.id + "/";
    document.getElementById("bulk-progress-state").textContent = operation.state +
      (operation.cancel_requested && ACTIVE[operation.state] ? " (cancel asked)" : "");
    document.getElementById("bulk-progress-done").textContent = String(progress.processed);
    document.getElementById("bulk-progress-total").textContent = String(progress.total);
    document.getElementById("bulk-progress-percent").textContent = String(progress.percent);
    document.getElementById("bulk-progress-rate").textContent =
      progress.rate_per_second === null ? "-" : String(progress.rate_per_second);
    document.getElementById("bulk-progress-left").textContent =
      progress.seconds_left === null ? "-" : String(progress.seconds_left);
    document.getElementById("bulk-progress-failed").textContent = String(operation.failed_count);
    var bar = document.getElementById("bulk-progress-bar");
    bar.setAttribute("aria-valuenow", String(progress.percent));
    bar.firstElementChild.style.width = Math.min(100, progress.percent) + "%";
    document.getElementById("bulk-cancel").hidden = !ACTIVE[operation.state];
    progressBox.hidden = false;
  }

  function follow(operation) {
    operationId = operation.id;
    showProgress(operation);
    if (timer) { window.clearTimeout(timer); }
    if (!ACTIVE[operation.state]) { return; }
    timer = window.setTimeout(function () {
      call(root.dataset.operationUrl + operationId + "/").then(function (result) {
        if (!result.response.ok) { throw new Error(reason(result.response, result.body)); }
        follow(result.body);
      }).catch(function (error) {
        say("Progress not read (retrying): " + error.message);
        follow(operation);
      });
    }, 1000);
  }

  // After a reload, the progress of the newest operation still running (the audit list's).
  var active = root.querySelector("tr.bulk-operation[data-active]");
  if (active) {
    call(root.dataset.operationUrl + active.dataset.operationId + "/").then(function (result) {
      if (result.response.ok) { follow(result.body); }
    });
  }

  document.getElementById("bulk-cancel").addEventListener("click", function () {
    if (operationId === null || !window.confirm("Cancel operation " + operationId + "? It stops before its next batch.")) {
      return;
    }
    var button = this;
    button.disabled = true;
    call(root.dataset.operationUrl + operationId + "/cancel/", {}).then(function (result) {
      if (!result.response.ok) { throw new Error(reason(result.response, result.body)); }
      say("Cancel asked for operation " + operationId + ".", "success");
      follow(result.body);
    }).catch(function (error) {
      say("Could not cancel: " + error.message);
    }).then(function () { button.disabled = false; });
  });
})(window);
