/* Small line charts drawn as inline SVG without any library.
 *
 * DojoCeleryChart.lines(container, options) replaces the container's content with one line per
 * series (path.series, one "M"/"L" command per point, a gap where a value is unknown), a time
 * axis, a left axis and, for series marked `right`, a right axis, and a legend.
 * DojoCeleryChart.draw(container, points, options) is the recorded queue history's chart (queue
 * length, all queues, workers on the right axis); the analytics pages call lines() directly.
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

  /* A step of 1, 2 or 5 times a power of ten giving about `count` intervals up to `max` (at least 1 if `integer`). */
  function niceStep(max, count, integer) {
    if (!(max > 0)) { return 1; }
    var raw = max / count;
    var power = Math.pow(10, Math.floor(Math.log(raw) / Math.LN10));
    var fraction = raw / power;
    var nice = (fraction <= 1 ? 1 : fraction <= 2 ? 2 : fraction <= 5 ? 5 : 10) * power;
    return integer ? Math.max(1, Math.round(nice)) : nice;
  }

  function valueScale(values, top, bottom, integer) {
    var max = 0;
    values.forEach(function (v) { if (v !== null && v !== undefined && v > max) { max = v; } });
    var step = niceStep(max, 4, integer);
    var count = Math.max(1, Math.ceil(max / step - 1e-9));
    var end = count * step;
    var ticks = [];
    for (var i = 0; i <= count; i++) { ticks.push(+(i * step).toPrecision(12)); }
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
   * options: times (ms, one per point, oldest first), start and end (ms, the span shown),
   * series [{key, cls, label, values (one per time, null where unknown), right (on the right axis)}],
   * title, left / right (the axes' labels), format / rightFormat (a tick's text; String by default),
   * integer / rightInteger (whole-number ticks), empty (the text shown when there are no times).
   * Returns the SVG element, or null when there is nothing to draw (the container then says so).
   */
  function lines(container, options) {
    while (container.firstChild) { container.removeChild(container.firstChild); }
    var times = options.times;
    if (!times.length) {
      var empty = window.document.createElement("p");
      empty.className = "muted chart-empty";
      empty.textContent = options.empty || "No data";
      container.appendChild(empty);
      return null;
    }
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

    function valuesOf(onRight) {
      var values = [];
      options.series.forEach(function (s) { if (!s.right === !onRight) { values = values.concat(s.values); } });
      return values;
    }
    var leftScale = valueScale(valuesOf(false), top, bottom, options.integer);
    var rightScale = options.right ? valueScale(valuesOf(true), top, bottom, options.rightInteger) : null;
    var format = options.format || String;

    var svg = el("svg", { "class": "chart", viewBox: "0 0 " + width + " " + HEIGHT, role: "img",
      "aria-label": options.title });
    svg.appendChild(el("title", {}, options.title));

    var axes = el("g", { "class": "axes" });
    leftScale.ticks.forEach(function (v) {
      var y = leftScale.y(v);
      axes.appendChild(el("line", { "class": "grid", x1: left, y1: y, x2: right, y2: y }));
      axes.appendChild(el("text", { "class": "tick", x: left - 6, y: y + 4, "text-anchor": "end" }, format(v)));
    });
    if (rightScale) {
      var rightFormat = options.rightFormat || String;
      rightScale.ticks.forEach(function (v) {
        var y = rightScale.y(v);
        axes.appendChild(el("line", { "class": "tick-mark", x1: right, y1: y, x2: right + 4, y2: y }));
        axes.appendChild(el("text", { "class": "tick", x: right + 7, y: y + 4, "text-anchor": "start" },
          rightFormat(v)));
      });
      axes.appendChild(el("line", { "class": "axis", x1: right, y1: top, x2: right, y2: bottom }));
      axes.appendChild(el("text", { "class": "axis-label", x: width - 2, y: top - 10, "text-anchor": "end" },
        options.right));
    }
    timeTicks(start, end).forEach(function (tick) {
      var x = left + (tick.time - start) / (end - start) * (right - left);
      axes.appendChild(el("line", { "class": "tick-mark", x1: x, y1: bottom, x2: x, y2: bottom + 4 }));
      axes.appendChild(el("text", { "class": "tick", x: x, y: bottom + 17, "text-anchor": "middle" }, tick.label));
    });
    axes.appendChild(el("line", { "class": "axis", x1: left, y1: top, x2: left, y2: bottom }));
    axes.appendChild(el("line", { "class": "axis", x1: left, y1: bottom, x2: right, y2: bottom }));
    axes.appendChild(el("text", { "class": "axis-label", x: 2, y: top - 10, "text-anchor": "start" }, options.left));
    svg.appendChild(axes);

    var group = el("g", { "class": "lines" });
    options.series.forEach(function (s) { seriesPath(group, s, xs, s.right ? rightScale.y : leftScale.y); });
    svg.appendChild(group);

    container.appendChild(svg);
    legend(svg, options.series);  // in the document, so the labels can be measured
    return svg;
  }

  /* The queue history: points oldest first; options: {start, end (ms), queue (default queue name)}. */
  function draw(container, points, options) {
    var queue = options.queue;
    var names = {};
    points.forEach(function (p) {
      Object.keys(p.queue_lengths || {}).forEach(function (name) { names[name] = true; });
    });
    var series = [{
      key: "queue", cls: "series-queue", label: "Queue " + queue,
      values: points.map(function (p) {
        var v = (p.queue_lengths || {})[queue];
        return v === undefined ? null : v;
      })
    }];
    if (Object.keys(names).length > 1) {
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
    series.push({
      key: "workers", cls: "series-workers", label: "Workers (right axis)", right: true,
      values: points.map(function (p) { return p.workers; })
    });
    return lines(container, {
      times: points.map(function (p) { return parseTime(p.created_at); }),
      start: options.start, end: options.end, series: series,
      title: "Queue length and workers over time", left: "messages", right: "workers",
      integer: true, rightInteger: true, empty: "No history recorded yet"
    });
  }

  window.DojoCeleryChart = { draw: draw, lines: lines, parseTime: parseTime };
}(window));
