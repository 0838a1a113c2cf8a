/* The "Enqueue a task" page: sends the form as JSON to the REST API (its data-url) with the
 * CSRF token, and shows the new task's id with a link, or the API's reason. Args and kwargs are
 * parsed here first only to say early which field is not JSON; the API validates again. */
(function (window) {
  "use strict";

  var document = window.document;
  var root = document.querySelector("[data-apply-task]");
  if (!root) { return; }
  var form = root.querySelector("#apply-form");
  var messages = root.querySelector("[data-messages]");
  var csrfToken = root.querySelector("input[name=csrfmiddlewaretoken]").value;

  function say(text) {
    messages.textContent = "";
    var item = document.createElement("li");
    item.className = "error";
    item.textContent = text;
    messages.appendChild(item);
  }

  var reason = window.DojoCeleryApi.reason;  // celery_api.js

  function json(field) {
    try { return JSON.parse(form.elements[field].value || (field === "args" ? "[]" : "{}")); }
    catch (error) { throw new Error(field + " is not JSON: " + error.message); }
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var body = { backend: root.dataset.backend, task_name: form.elements.task_name.value };
    try { body.args = json("args"); body.kwargs = json("kwargs"); }
    catch (error) { say(error.message); return; }
    body.queue = form.elements.queue.value;
    if (form.elements.countdown.value !== "") { body.countdown = Number(form.elements.countdown.value); }
    if (form.elements.eta.value !== "") { body.eta = new Date(form.elements.eta.value).toISOString(); }
    if (form.elements.priority.value !== "") { body.priority = Number(form.elements.priority.value); }
    window.fetch(root.dataset.url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json", "X-CSRFToken": csrfToken },
      body: JSON.stringify(body)
    }).then(function (response) {
      return response.json().catch(function () { return null; }).then(function (answer) {
        if (!response.ok) { throw new Error(reason(response, answer)); }
        return answer;
      });
    }).then(function (answer) {
      messages.textContent = "";
      var link = root.querySelector("[data-new-task]");
      link.textContent = answer.task_id;
      link.href = root.dataset.taskUrl.replace("TASK_ID", encodeURIComponent(answer.task_id));
      root.querySelector("[data-new-queue]").textContent = answer.queue;
      root.querySelector("#apply-result").hidden = false;
    }).catch(function (error) { say("Not enqueued: " + error.message); });
  });
}(window));
