(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";

  // ---- sortable tables: click a header; numbers sort by data-v or parsed text
  function cellKey(td) {
    if (!td) return "";
    var raw = td.hasAttribute("data-v") ? td.getAttribute("data-v") : td.textContent.trim();
    var num = parseFloat(String(raw).replace(/[,%×x\s]/g, ""));
    return raw !== "" && isFinite(num) && /^[-+\d.]/.test(String(raw).trim()) ? num : String(raw).toLowerCase();
  }
  function sortBy(table, th, idx) {
    var asc = th.getAttribute("aria-sort") !== "ascending";
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.forEach(function (r, i) { r._i = i; });
    rows.sort(function (a, b) {
      var x = cellKey(a.cells[idx]), y = cellKey(b.cells[idx]);
      var c;
      if (typeof x === "number" && typeof y === "number") c = x - y;
      else if (typeof x === "number") c = -1;
      else if (typeof y === "number") c = 1;
      else c = x < y ? -1 : x > y ? 1 : 0;
      return (asc ? c : -c) || a._i - b._i;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    if (!table.tHead || !table.tBodies.length) return;
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, idx) {
      th.title = "sort";
      th.addEventListener("click", function () { sortBy(table, th, idx); });
    });
  });

  // ---- chart helpers (inline SVG; text goes in via textContent, never as markup)
  var dataEl = document.getElementById("profdiag-chart-data");
  if (!dataEl) return;
  var D;
  try { D = JSON.parse(dataEl.textContent); } catch (e) { return; }

  function el(tag, attrs, parent, text) {
    var n = document.createElementNS(NS, tag);
    for (var k in attrs) if (Object.prototype.hasOwnProperty.call(attrs, k)) n.setAttribute(k, attrs[k]);
    if (text !== undefined) n.textContent = text;
    if (parent) parent.appendChild(n);
    return n;
  }
  function tip(node, text) { el("title", {}, node, text); return node; }
  function svg(container, w, h) {
    var s = el("svg", { viewBox: "0 0 " + w + " " + h, width: w, height: h, role: "img" });
    container.appendChild(s);
    return s;
  }
  function fmtNs(ns) {
    if (ns === null || ns === undefined) return "-";
    if (ns < 1e3) return ns.toFixed(0) + " ns";
    if (ns < 1e6) return (ns / 1e3).toFixed(2) + " µs";
    if (ns < 1e9) return (ns / 1e6).toFixed(3) + " ms";
    return (ns / 1e9).toFixed(2) + " s";
  }
  function fmtTick(ns) {
    var u = ns >= 1e9 ? [1e9, " s"] : ns >= 1e6 ? [1e6, " ms"] : ns >= 1e3 ? [1e3, " µs"] : [1, " ns"];
    return (ns ? +(ns / u[0]).toPrecision(3) : 0) + (ns ? u[1] : "");
  }
  function si(v, unit) {
    var p = [[1e15, "P"], [1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]];
    for (var i = 0; i < p.length; i++) if (Math.abs(v) >= p[i][0]) return +(v / p[i][0]).toPrecision(3) + " " + p[i][1] + unit;
    return +v.toPrecision(3) + " " + unit;
  }
  function niceStep(max, n) {
    var raw = max / n, mag = Math.pow(10, Math.floor(Math.log10(raw))), r = raw / mag;
    return (r <= 1 ? 1 : r <= 2 ? 2 : r <= 5 ? 5 : 10) * mag;
  }
  function phaseColor(p) { return D.phase_colors[p] || D.phase_colors.unknown || "#5f6b7a"; }
  function legend(s, x, y, items) {
    items.forEach(function (it) {
      if (it.text) { el("text", { x: x, y: y, "class": "tick" }, s, it.label); x += 20 + it.label.length * 6.2; return; }
      if (it.line) el("line", { x1: x, y1: y - 4, x2: x + 14, y2: y - 4, stroke: it.color, "stroke-width": 2, "stroke-dasharray": it.dash || "" }, s);
      else el("rect", { x: x, y: y - 10, width: 12, height: 12, fill: it.color, opacity: it.opacity || 1 }, s);
      el("text", { x: x + 18, y: y }, s, it.label);
      x += 26 + it.label.length * 6.2;
    });
  }
  function linearAxis(s, L, T, W, H, maxV, fmt) {
    var step = niceStep(maxV || 1, 5);
    var g = el("g", { "class": "grid" }, s);
    for (var v = 0; v <= maxV * 1.0001; v += step) {
      var y = T + H - (v / maxV) * H;
      el("line", { x1: L, x2: L + W, y1: y, y2: y }, g);
      el("text", { x: L - 6, y: y + 4, "text-anchor": "end", "class": "tick" }, s, fmt(v));
    }
  }

  // ---- per-step bars: wall (light) and GPU busy (dark) per step, ideal as a marker.
  // A log scale is the default when the small values (busy, ideal) would vanish on a linear one.
  function drawSteps(logScale) {
    var box = document.getElementById("chart-steps");
    var steps = D.steps || [];
    if (!box || !steps.length) return;
    var maxV = 0, minV = Infinity;
    steps.forEach(function (d) {
      [d.wall_ns, d.gpu_busy_ns, d.ideal_ns].forEach(function (v) {
        if (v > 0) { maxV = Math.max(maxV, v); minV = Math.min(minV, v); }
      });
    });
    if (!maxV) return;
    if (logScale === undefined) logScale = minV < maxV / 40;
    box.textContent = "";
    var btn = document.createElement("button");
    btn.type = "button";
    btn.textContent = logScale ? "log scale: switch to linear" : "linear scale: switch to log";
    btn.addEventListener("click", function () { drawSteps(!logScale); });
    box.appendChild(btn);
    var L = 76, R = 16, T = 28, B = 38, W0 = Math.min(1100, Math.max(560, L + R + steps.length * 90)), H0 = 260;
    var W = W0 - L - R, H = H0 - T - B;
    var s = svg(box, W0, H0);
    var y;
    if (logScale) {
      var lo = Math.pow(10, Math.floor(Math.log10(minV / 1.5))), hi = Math.pow(10, Math.ceil(Math.log10(maxV * 1.05)));
      y = function (v) { return T + H - (Math.log10(Math.max(v, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo)) * H; };
      var g = el("g", { "class": "grid" }, s);
      for (var e = Math.round(Math.log10(lo)); e <= Math.round(Math.log10(hi)); e++) {
        var v = Math.pow(10, e);
        el("line", { x1: L, x2: L + W, y1: y(v), y2: y(v) }, g);
        el("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", "class": "tick" }, s, fmtTick(v));
      }
    } else {
      maxV = niceStep(maxV, 5) * Math.ceil(maxV / niceStep(maxV, 5));
      y = function (v) { return T + H - (v / maxV) * H; };
      linearAxis(s, L, T, W, H, maxV, fmtTick);
    }
    var bw = W / steps.length, pad = Math.min(bw * 0.15, 6);
    var labelEvery = Math.max(1, Math.ceil(steps.length / 30));
    var phases = {};
    steps.forEach(function (d, i) {
      var x = L + i * bw + pad, w = Math.max(bw - 2 * pad, 1), c = phaseColor(d.phase);
      phases[d.phase || "unknown"] = c;
      var g = el("g", {}, s);
      tip(g, (d.name || ("step " + d.step)) + " (" + (d.phase || "?") + ")\nwall " + fmtNs(d.wall_ns) +
        "\n" + (D.dev || "GPU") + " busy " + fmtNs(d.gpu_busy_ns) + (d.wall_ns ? " (" + (100 * d.gpu_busy_ns / d.wall_ns).toFixed(1) + "%)" : "") +
        (d.ideal_ns ? "\nspeed of light " + fmtNs(d.ideal_ns) + " (" + d.ratio + "× ideal)" : "") +
        (d.outlier ? "\noutlier: +" + fmtNs(d.outlier.extra_ns) + " over a typical " + fmtNs(d.outlier.typical_ns) + ", " + (d.outlier.op || d.outlier.cause) : ""));
      if (d.wall_ns) el("rect", { x: x, y: y(d.wall_ns), width: w, height: T + H - y(d.wall_ns), fill: c, opacity: 0.35 }, g);
      if (d.gpu_busy_ns) el("rect", { x: x + w * 0.2, y: y(d.gpu_busy_ns), width: w * 0.6, height: T + H - y(d.gpu_busy_ns), fill: c }, g);
      if (d.ideal_ns) {
        var yi = Math.min(y(d.ideal_ns), T + H - 1.5);
        el("line", { x1: x - pad * 0.5, x2: x + w + pad * 0.5, y1: yi, y2: yi, stroke: "#111", "stroke-width": 2 }, g);
      }
      if (d.outlier && d.wall_ns) {
        var yo = Math.max(y(d.wall_ns) - 4, T + 2);
        el("path", { d: "M" + (x + w / 2 - 5) + " " + (yo - 8) + " L" + (x + w / 2 + 5) + " " + (yo - 8) + " L" + (x + w / 2) + " " + yo + " Z", fill: "#c0392b", "class": "outlier" }, g);
      }
      if (i % labelEvery === 0) el("text", { x: x + w / 2, y: T + H + 14, "text-anchor": "middle", "class": "tick" }, s, String(d.step !== undefined ? d.step : i));
    });
    el("text", { x: L + W / 2, y: H0 - 4, "text-anchor": "middle", "class": "tick" }, s, "step" + (logScale ? " (time on a log scale)" : ""));
    var items = Object.keys(phases).sort().map(function (p) { return { color: phases[p], label: p }; });
    // The bars are drawn in the phase colour: the swatches use it too (the first phase's).
    var barColor = items.length ? items[0].color : phaseColor("unknown");
    items.push({ color: barColor, opacity: 0.35, label: "wall time" });
    items.push({ color: barColor, label: (D.dev || "GPU") + " busy" });
    if (steps.some(function (d) { return d.ideal_ns; })) items.push({ color: "#111", line: true, label: "speed of light (ideal)" });
    if (steps.some(function (d) { return d.outlier; })) items.push({ color: "#c0392b", label: "outlier step (▼)" });
    legend(s, L, 16, items);
  }

  // ---- GPU time per layer, slow layers in red, median dashed
  function drawLayers() {
    var box = document.getElementById("chart-layers");
    var rows = (D.per_layer && D.per_layer.layers) || [];
    if (!box || !rows.length) return;
    var slow = {};
    (D.per_layer.slow || []).forEach(function (l) { slow[l] = true; });
    var L = 76, R = 16, T = 22, B = 34, W0 = Math.min(1100, Math.max(420, L + R + rows.length * 70)), H0 = 200;
    var W = W0 - L - R, H = H0 - T - B;
    var s = svg(box, W0, H0);
    var vals = rows.map(function (r) { return r.gpu_ns || 0; });
    var maxV = Math.max.apply(null, vals);
    if (!maxV) return;
    maxV = niceStep(maxV, 5) * Math.ceil(maxV / niceStep(maxV, 5));
    linearAxis(s, L, T, W, H, maxV, fmtTick);
    var sorted = vals.slice().sort(function (a, b) { return a - b; });
    var mid = sorted.length % 2 ? sorted[(sorted.length - 1) / 2] : (sorted[sorted.length / 2 - 1] + sorted[sorted.length / 2]) / 2;
    var bw = W / rows.length, pad = Math.min(bw * 0.15, 6);
    var every = Math.max(1, Math.ceil(rows.length / 40));
    rows.forEach(function (r, i) {
      var x = L + i * bw + pad, w = Math.max(bw - 2 * pad, 1), h = (r.gpu_ns / maxV) * H;
      var isSlow = !!slow[r.layer];
      tip(el("rect", { x: x, y: T + H - h, width: w, height: h, fill: isSlow ? "#cf222e" : D.category_colors.compute }, s),
        "layer " + r.layer + ": " + fmtNs(r.gpu_ns) + ", " + r.gemm_calls + " GEMM calls" + (isSlow ? " (slow)" : ""));
      if (i % every === 0) el("text", { x: x + w / 2, y: T + H + 14, "text-anchor": "middle", "class": "tick" }, s, String(r.layer));
    });
    var ym = T + H - (mid / maxV) * H;
    el("line", { x1: L, x2: L + W, y1: ym, y2: ym, stroke: "#111", "stroke-dasharray": "5 4" }, s);
    el("text", { x: L + W / 2, y: H0 - 4, "text-anchor": "middle", "class": "tick" }, s, "layer");
    legend(s, L, 14, [{ color: D.category_colors.compute, label: (D.dev || "GPU") + " time, total over all forwards" }, { color: "#cf222e", label: "slow layer" },
      { color: "#111", line: true, dash: "5 4", label: "median " + fmtNs(mid) }]);
  }

  // ---- roofline: log-log, memory roof (slope = bandwidth) and compute roof meet at the ridge
  function drawRoofline() {
    var box = document.getElementById("chart-roofline");
    var R0 = D.roofline || {};
    var pts = R0.points || [];
    if (!box || !pts.length) return;
    var bwd = R0.bandwidth_bytes_s, peak = R0.peak_flops_s;
    var ridge = bwd && peak ? peak / bwd : null;
    var xs = pts.map(function (p) { return p.intensity; }), ys = pts.map(function (p) { return p.achieved_flops_s; });
    if (ridge) xs.push(ridge);
    var xmin = Math.pow(10, Math.floor(Math.log10(Math.min.apply(null, xs) / 2)));
    var xmax = Math.pow(10, Math.ceil(Math.log10(Math.max.apply(null, xs) * 3)));
    if (bwd) ys.push(bwd * xmin);
    if (peak) ys.push(peak);
    var ymin = Math.pow(10, Math.floor(Math.log10(Math.min.apply(null, ys) / 2)));
    var ymax = Math.pow(10, Math.ceil(Math.log10(Math.max.apply(null, ys) * 1.5)));
    var W0 = 1100, H0 = 460, L = 96, Rm = 20, T = 28, B = 44, W = W0 - L - Rm, H = H0 - T - B;
    var s = svg(box, W0, H0);
    var lx0 = Math.log10(xmin), lx1 = Math.log10(xmax), ly0 = Math.log10(ymin), ly1 = Math.log10(ymax);
    function X(v) { return L + (Math.log10(v) - lx0) / (lx1 - lx0) * W; }
    function Y(v) { return T + H - (Math.log10(v) - ly0) / (ly1 - ly0) * H; }
    var g = el("g", { "class": "grid" }, s);
    for (var e = Math.round(lx0); e <= Math.round(lx1); e++) {
      var xv = Math.pow(10, e);
      el("line", { x1: X(xv), x2: X(xv), y1: T, y2: T + H, "class": "major" }, g);
      el("text", { x: X(xv), y: T + H + 14, "text-anchor": "middle", "class": "tick" }, s, xv >= 1 ? si(xv, "") : String(+xv.toPrecision(1)));
    }
    for (var f = Math.round(ly0); f <= Math.round(ly1); f++) {
      var yv = Math.pow(10, f);
      el("line", { x1: L, x2: L + W, y1: Y(yv), y2: Y(yv), "class": "major" }, g);
      el("text", { x: L - 6, y: Y(yv) + 4, "text-anchor": "end", "class": "tick" }, s, si(yv, "FLOP/s"));
    }
    el("text", { x: L + W / 2, y: H0 - 6, "text-anchor": "middle" }, s, "arithmetic intensity (FLOP/byte)");
    el("text", { x: 14, y: T + H / 2, "text-anchor": "middle", transform: "rotate(-90 14 " + (T + H / 2) + ")" }, s, "achieved FLOP/s");
    if (bwd && peak) {
      var clip = el("clipPath", { id: "roof-clip" }, el("defs", {}, s));
      el("rect", { x: L, y: T, width: W, height: H }, clip);
      var x0 = Math.max(xmin, ymin / bwd);
      var d = "M" + X(x0) + "," + Y(bwd * x0) + " L" + X(ridge) + "," + Y(peak) + " L" + X(xmax) + "," + Y(peak);
      el("path", { d: d, fill: "none", stroke: "#111", "stroke-width": 2, "clip-path": "url(#roof-clip)" }, s);
      el("line", { x1: X(ridge), x2: X(ridge), y1: Y(peak), y2: T + H, stroke: "#111", "stroke-dasharray": "3 4" }, s);
      el("text", { x: X(ridge) + 6, y: T + H - 6, "class": "tick" }, s, "ridge " + (+ridge.toPrecision(3)) + " FLOP/byte");
      el("text", { x: X(xmax) - 4, y: Y(peak) - 6, "text-anchor": "end" }, s, "compute roof " + si(peak, "FLOP/s") + " (bf16)");
      var mx = Math.pow(10, (Math.log10(x0) + Math.log10(ridge)) / 2);
      var ang = Math.atan2(Y(bwd * mx * 10) - Y(bwd * mx), X(mx * 10) - X(mx)) * 180 / Math.PI;
      el("text", { x: X(mx), y: Y(bwd * mx) - 8, transform: "rotate(" + ang + " " + X(mx) + " " + (Y(bwd * mx) - 8) + ")", "text-anchor": "middle" }, s,
        "memory roof " + si(bwd, "B/s"));
    }
    var maxT = Math.max.apply(null, pts.map(function (p) { return p.time_ns || 0; })) || 1;
    var phases = {};
    pts.slice().sort(function (a, b) { return (b.time_ns || 0) - (a.time_ns || 0); }).forEach(function (p) {
      var c = phaseColor(p.phase), r = 3 + 8 * Math.sqrt((p.time_ns || 0) / maxT);
      phases[p.phase || "unknown"] = c;
      var cx = X(p.intensity), cy = Y(p.achieved_flops_s);
      var node = p.op_class === "attention"
        ? el("rect", { x: cx - r, y: cy - r, width: 2 * r, height: 2 * r, fill: c, "fill-opacity": 0.6, stroke: c }, s)
        : el("circle", { cx: cx, cy: cy, r: r, fill: c, "fill-opacity": 0.6, stroke: c }, s);
      tip(node, (p.op_name || p.op_class) + " [" + p.op_class + ", " + (p.phase || "?") + "]  m=" + p.m + " k=" + p.k + " n=" + p.n +
        "\ncalls " + p.calls + ", total " + fmtNs(p.time_ns) + "\nintensity " + (+p.intensity.toPrecision(4)) + " FLOP/byte, achieved " +
        si(p.achieved_flops_s, "FLOP/s") + "\nefficiency " + (p.efficiency !== null && p.efficiency !== undefined ? (100 * p.efficiency).toFixed(1) + "% of the roof" : "-") +
        " (" + (p.bound || "?") + "-bound)" + (p.kernel ? "\nkernel " + p.kernel : ""));
    });
    var items = Object.keys(phases).sort().map(function (p) { return { color: phases[p], label: p }; });
    items.push({ text: true, label: "circle = GEMM, square = attention; area ~ GPU time" });
    legend(s, L, 16, items);
  }

  [drawSteps, drawLayers, drawRoofline].forEach(function (f) {
    try { f(undefined); } catch (e) { if (window.console) console.error(e); }
  });
})();
