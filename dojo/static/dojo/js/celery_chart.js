/* A small line chart of the recorded Celery history, drawn as inline SVG without any library.
 *
 * DojoCeleryChart.draw(container, points, options) replaces the container's content with:
 * one line per series (path.series, one "M"/"L" command per point, a gap where a value is
 * unknown), a time axis, a left axis (messages) and a right axis (workers), and a legend.
 * Every text is set with textContent: nothing from the data is parsed as markup.
 */
(function (window) {
  "use strict";

  var SVG_NS = "http://www.w3.org/2000/svg";
  var DEFAULT_WIDTH = 720;  // when the container has no layout width (hidden)
  var MIN_WIDTH = 420;
  var HEIGHT = 280;
  var MARGIN = { top: 44, right: 44, bottom: 30, left: 48 };
  var MINUTE = 60000;
  var HOUR = 60 * MINUTE;
  var DAY = 24 * HOUR;
  var TIME_STEPS = [MINUTE, 2 * MINUTE, 5 * MINUTE, 10 * MINUTE, 15 * MINUTE, 30 * MINUTE,
    HOUR, 2 * HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR, DAY, 2 * DAY, 7 * DAY];
  var MAX_TIME_TICKS = 7;
  var MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

  function el(name, attrs, text) {
    var node = window.document.createElementNS(SVG_NS, name);
    var key;
    for (key in attrs) {
      if (Object.prototype.hasOwnProperty.call(attrs, key)) { node.setAttribute(key, attrs[key]); }
    }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function pad2(n) { return (n < 10 ? "0" : "") + n; }

  /* Django REST framework writes microseconds; keep milliseconds so every browser parses it. */
  function parseTime(iso) {
    return Date.parse(String(iso).replace(/(\.\d{3})\d+/, "$1"));
  }

  /* A step of 1, 2 or 5 times a power of ten (at least 1) giving about `count` intervals up to `max`. */
  function integerStep(max, count) {
    if (!(max > 0)) { return 1; }
    var raw = max / count;
    var power = Math.pow(10, Math.floor(Math.log(raw) / Math.LN10));
    var fraction = raw / power;
    var nice = fraction <= 1 ? 1 : fraction <= 2 ? 2 : fraction <= 5 ? 5 : 10;
    return Math.max(1, Math.round(nice * power));
  }

  function valueScale(values, top, bottom) {
    var max = 0;
    values.forEach(function (v) { if (v !== null && v > max) { max = v; } });
    var step = integerStep(max, 4);
    var end = Math.max(step, Math.ceil(max / step) * step);
    var ticks = [];
    for (var v = 0; v <= end; v += step) { ticks.push(v); }
    return {
      ticks: ticks,
      y: function (value) { return bottom - (value / end) * (bottom - top); }
    };
  }

  function timeLabel(time, step) {
    var d = new Date(time);
    var midnight = d.getHours() === 0 && d.getMinutes() === 0;
    if (step >= DAY || midnight) { return MONTHS[d.getMonth()] + " " + d.getDate(); }
    return pad2(d.getHours()) + ":" + pad2(d.getMinutes());
  }

  /* Ticks on round local times (every 10 min, every hour, at midnight...). */
  function timeTicks(start, end) {
    var span = end - start;
    var step = TIME_STEPS[TIME_STEPS.length - 1];
    for (var i = 0; i < TIME_STEPS.length; i++) {
      if (span / TIME_STEPS[i] <= MAX_TIME_TICKS) { step = TIME_STEPS[i]; break; }
    }
    var offset = -new Date(start).getTimezoneOffset() * MINUTE;
    var ticks = [];
    for (var t = Math.ceil((start + offset) / step) * step - offset; t <= end; t += step) {
      ticks.push({ time: t, label: timeLabel(t, step) });
    }
    return ticks;
  }

  /* One path per series: "M" starts a run of known values, "L" continues it; lone points also get a dot. */
  function seriesPath(group, series, xs, y) {
    var d = [];
    var run = [];
    function endRun() {
      if (run.length === 1) {
        group.appendChild(el("circle", { "class": "dot " + series.cls, cx: run[0][0], cy: run[0][1], r: 2.5 }));
      }
      run = [];
    }
    series.values.forEach(function (value, i) {
      if (value === null || value === undefined) { endRun(); return; }
      var px = xs[i].toFixed(1);
      var py = y(value).toFixed(1);
      d.push((run.length ? "L" : "M") + px + " " + py);
      run.push([px, py]);
    });
    endRun();
    group.appendChild(el("path", { "class": "series " + series.cls, d: d.join(" "), "data-series": series.key }));
  }

  function legend(svg, series) {
    var x = MARGIN.left;
    series.forEach(function (s) {
      var item = el("g", { "class": "legend-item", transform: "translate(" + x + ",14)" });
      item.appendChild(el("line", { "class": "series " + s.cls, x1: 0, y1: 0, x2: 22, y2: 0 }));
      var text = el("text", { x: 28, y: 4 }, s.label);
      item.appendChild(text);
      svg.appendChild(item);
      x += 44 + (text.getComputedTextLength() || s.label.length * 6.5);
    });
  }

  /*
   * points: the history points, oldest first; options: {start, end (ms), queue (default queue name)}.
   * Returns the SVG element, or null when there is nothing to draw (the container then says so).
   */
  function draw(container, points, options) {
    while (container.firstChild) { container.removeChild(container.firstChild); }
    if (!points.length) {
      var empty = window.document.createElement("p");
      empty.className = "muted chart-empty";
      empty.textContent = "No history recorded yet";
      container.appendChild(empty);
      return null;
    }
    var queue = options.queue;
    var names = {};
    points.forEach(function (p) {
      Object.keys(p.queue_lengths || {}).forEach(function (name) { names[name] = true; });
    });
    var several = Object.keys(names).length > 1;
    var times = points.map(function (p) { return parseTime(p.created_at); });
    var start = Math.min(options.start, times[0]);
    var end = Math.max(options.end, times[times.length - 1]);
    if (end <= start) { end = start + MINUTE; }

    // Drawn at the container's width, so the labels keep their CSS size; the SVG still scales if it changes.
    var width = Math.max(MIN_WIDTH, Math.round(container.clientWidth) || DEFAULT_WIDTH);
    var left = MARGIN.left;
    var right = width - MARGIN.right;
    var top = MARGIN.top;
    var bottom = HEIGHT - MARGIN.bottom;
    var xs = times.map(function (t) { return left + (t - start) / (end - start) * (right - left); });

    var series = [{
      key: "queue", cls: "series-queue", label: "Queue " + queue,
      values: points.map(function (p) {
        var v = (p.queue_lengths || {})[queue];
        return v === undefined ? null : v;
      })
    }];
    if (several) {
      series.push({
        key: "total", cls: "series-total", label: "All queues",
        values: points.map(function (p) {
          var total = null;
          Object.keys(p.queue_lengths || {}).forEach(function (name) {
            var v = p.queue_lengths[name];
            if (v !== null) { total = (total || 0) + v; }
          });
          return total;
        })
      });
    }
    var workers = {
      key: "workers", cls: "series-workers", label: "Workers (right axis)",
      values: points.map(function (p) { return p.workers; })
    };

    var messageValues = [];
    series.forEach(function (s) { messageValues = messageValues.concat(s.values); });
    var messages = valueScale(messageValues, top, bottom);
    var workerScale = valueScale(workers.values, top, bottom);

    var svg = el("svg", {
      "class": "chart", viewBox: "0 0 " + width + " " + HEIGHT, role: "img",
      "aria-label": "Queue length and workers over time"
    });
    svg.appendChild(el("title", {}, "Queue length and workers over time"));

    var axes = el("g", { "class": "axes" });
    messages.ticks.forEach(function (v) {
      var y = messages.y(v);
      axes.appendChild(el("line", { "class": "grid", x1: left, y1: y, x2: right, y2: y }));
      axes.appendChild(el("text", { "class": "tick", x: left - 6, y: y + 4, "text-anchor": "end" }, String(v)));
    });
    workerScale.ticks.forEach(function (v) {
      var y = workerScale.y(v);
      axes.appendChild(el("line", { "class": "tick-mark", x1: right, y1: y, x2: right + 4, y2: y }));
      axes.appendChild(el("text", { "class": "tick", x: right + 7, y: y + 4, "text-anchor": "start" }, String(v)));
    });
    timeTicks(start, end).forEach(function (tick) {
      var x = left + (tick.time - start) / (end - start) * (right - left);
      axes.appendChild(el("line", { "class": "tick-mark", x1: x, y1: bottom, x2: x, y2: bottom + 4 }));
      axes.appendChild(el("text", { "class": "tick", x: x, y: bottom + 17, "text-anchor": "middle" }, tick.label));
    });
    axes.appendChild(el("line", { "class": "axis", x1: left, y1: top, x2: left, y2: bottom }));
    axes.appendChild(el("line", { "class": "axis", x1: right, y1: top, x2: right, y2: bottom }));
    axes.appendChild(el("line", { "class": "axis", x1: left, y1: bottom, x2: right, y2: bottom }));
    axes.appendChild(el("text", { "class": "axis-label", x: 2, y: top - 10, "text-anchor": "start" }, "messages"));
    axes.appendChild(el("text", { "class": "axis-label", x: width - 2, y: top - 10, "text-anchor": "end" }, "workers"));
    svg.appendChild(axes);

    var lines = el("g", { "class": "lines" });
    series.forEach(function (s) { seriesPath(lines, s, xs, messages.y); });
    seriesPath(lines, workers, xs, workerScale.y);
    svg.appendChild(lines);

    container.appendChild(svg);
    legend(svg, series.concat([workers]));  // in the document, so the labels can be measured
    return svg;
  }

  window.DojoCeleryChart = { draw: draw, parseTime: parseTime };
}(window));
