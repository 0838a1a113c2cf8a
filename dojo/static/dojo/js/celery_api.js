/* What the Celery panel's scripts share when they call the REST API: the reason of a refusal as
 * the API gives it ({"detail": "..."} or {"field": ["..."]}). Loaded before the page's own script. */
(function (window) {
  "use strict";

  function reason(response, body) {
    if (body && typeof body === "object") {
      if (body.detail) { return String(body.detail); }
      return Object.keys(body).map(function (field) {
        return field + ": " + [].concat(body[field]).join(" ");
      }).join("; ");
    }
    return "HTTP " + response.status;
  }

  window.DojoCeleryApi = { reason: reason };
})(window);
