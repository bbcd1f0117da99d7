// qwen-sft's line chart: SVG lines, axes, legend, hover read-out, smoothing. Written for this page (no library).
//
//   const chart = new LineChart(element, {yLabel: "loss"});
//   chart.set([{name: "train loss", points: [[step, value], ...], color: "#1f77b4", dashed: false, markers: false}]);
//   chart.setSmoothing(0.6);   // 0: raw; otherwise an exponential moving average, debiased (as TensorBoard's)
//
// Each series is one <path data-series="NAME" data-n="POINTS">; the legend lists the series by name.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const PALETTE = ["#1f6feb", "#d9480f", "#2b8a3e", "#ae3ec9", "#e8590c", "#0c8599", "#c2255c", "#5c940d"];

function svgEl(tag, attrs) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  return el;
}

// Round tick values (1, 2, 5 x 10^k) covering [lo, hi]; at most about `count` + 2 of them.
function niceTicks(lo, hi, count, integer) {
  // A flat (or all but flat: float noise) range gets some room around it, else the step would be ~0.
  if (!(hi - lo > Math.max(Math.abs(lo), Math.abs(hi)) * 1e-9)) {
    const d = integer ? 1 : Math.abs(lo) * 0.05 || 1;
    lo -= d; hi += d;
  }
  const raw = Math.max((hi - lo) / Math.max(count, 1), integer ? 1 : 0);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  // The axis runs from the tick at or below lo to the tick at or above hi: every point lies between two ticks.
  const first = Math.floor(lo / step + 1e-9), last = Math.ceil(hi / step - 1e-9);
  const ticks = [];
  for (let i = first; i <= last; i++) ticks.push(Number((i * step).toPrecision(12)));
  return {lo: first * step, hi: last * step, ticks};
}

// One number format for all the ticks of an axis: a common power of ten when the values are tiny or huge (the axis
// label then says "×1e-4"), and as many decimals on every tick as the step between ticks needs.
function axisFormat(ticks, allowPower) {
  const big = Math.max(...ticks.map(Math.abs));
  const exp = allowPower && big !== 0 && (big < 1e-2 || big >= 1e5) ? Math.floor(Math.log10(big)) : 0;
  const scale = Math.pow(10, exp);
  const step = ticks.length > 1 ? Math.abs(ticks[1] - ticks[0]) / scale : 1;
  const decimals = Math.max(0, Math.min(10, -Math.floor(Math.log10(step) + 1e-9)));
  return {labels: ticks.map((t) => (t / scale).toFixed(decimals)), suffix: exp ? ` (×1e${exp})` : ""};
}

function formatNumber(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(2);
  if (a >= 1000) return v.toFixed(0);
  return Number(v.toPrecision(4)).toString();
}

// Debiased exponential moving average: the first values are not pulled towards 0.
function smooth(points, weight) {
  if (!weight) return points;
  let last = 0, n = 0;
  return points.map(([x, y]) => {
    last = last * weight + (1 - weight) * y;
    n += 1;
    return [x, last / (1 - Math.pow(weight, n))];
  });
}

class LineChart {
  constructor(container, options) {
    this.options = Object.assign({xLabel: "step", yLabel: "", height: 220}, options || {});
    this.series = [];
    this.smoothing = 0;
    this.root = document.createElement("div");
    this.root.className = "chart";
    this.svg = svgEl("svg", {class: "chart-svg", role: "img"});
    this.tip = document.createElement("div");
    this.tip.className = "chart-tip";
    this.legend = document.createElement("div");
    this.legend.className = "chart-legend";
    this.root.append(this.svg, this.tip, this.legend);
    container.append(this.root);
    this.svg.addEventListener("mousemove", (e) => this.hover(e));
    this.svg.addEventListener("mouseleave", () => this.hover(null));
    if (window.ResizeObserver) new ResizeObserver(() => this.render()).observe(this.root);
  }

  set(series) {
    this.series = series.map((s, i) => Object.assign({color: PALETTE[i % PALETTE.length]}, s, {
      points: s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y)).sort((a, b) => a[0] - b[0]),
    }));
    this.render();
  }

  setSmoothing(weight) {
    this.smoothing = Math.min(Math.max(Number(weight) || 0, 0), 0.99);
    this.render();
  }

  render() {
    const width = Math.max(this.root.clientWidth || 600, 240), height = this.options.height;
    const m = {left: 56, right: 12, top: 10, bottom: 34};
    const svg = this.svg;
    svg.replaceChildren();
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("width", width);
    svg.setAttribute("height", height);
    const drawn = this.series.map((s) => Object.assign({}, s, {shown: s.smooth === false ? s.points : smooth(s.points, this.smoothing)}));
    const all = drawn.flatMap((s) => s.shown.concat(this.smoothing && s.smooth !== false ? s.points : []));
    this.legendRender(drawn);
    if (!all.length) {
      const t = svgEl("text", {x: width / 2, y: height / 2, "text-anchor": "middle", class: "chart-empty"});
      t.textContent = "no points yet";
      svg.append(t);
      this.geometry = null;
      return;
    }
    const xs = niceTicks(Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0])), 6, true);  // steps: whole numbers
    const ys = niceTicks(Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1])), 4);
    const fx = axisFormat(xs.ticks, false), fy = axisFormat(ys.ticks, true);
    // The y axis label sits left of the widest tick label, never over it.
    const tickWidth = Math.max(...fy.labels.map((l) => this.textWidth(l)));
    m.left = Math.max(44, Math.ceil(tickWidth) + 30);
    const px = (x) => m.left + (x - xs.lo) / (xs.hi - xs.lo) * (width - m.left - m.right);
    const py = (y) => height - m.bottom - (y - ys.lo) / (ys.hi - ys.lo) * (height - m.top - m.bottom);
    this.geometry = {px, py, m, width, height, drawn};
    const axes = svgEl("g", {class: "chart-axes"});
    ys.ticks.forEach((y, i) => {
      axes.append(svgEl("line", {x1: m.left, x2: width - m.right, y1: py(y), y2: py(y), class: "chart-grid"}));
      const t = svgEl("text", {x: m.left - 6, y: py(y) + 4, "text-anchor": "end", class: "tick-y"});
      t.textContent = fy.labels[i];
      axes.append(t);
    });
    xs.ticks.forEach((x, i) => {
      const t = svgEl("text", {x: px(x), y: height - m.bottom + 16, "text-anchor": "middle", class: "tick-x"});
      t.textContent = fx.labels[i];
      axes.append(t);
    });
    axes.append(svgEl("line", {x1: m.left, x2: width - m.right, y1: height - m.bottom, y2: height - m.bottom, class: "chart-axis"}));
    axes.append(svgEl("line", {x1: m.left, x2: m.left, y1: m.top, y2: height - m.bottom, class: "chart-axis"}));
    const xl = svgEl("text", {x: (m.left + width - m.right) / 2, y: height - 4, "text-anchor": "middle", class: "chart-label"});
    xl.textContent = this.options.xLabel;
    const yl = svgEl("text", {x: 12, y: m.top + (height - m.top - m.bottom) / 2, "text-anchor": "middle", class: "chart-label y-label",
      transform: `rotate(-90 12 ${m.top + (height - m.top - m.bottom) / 2})`});
    yl.textContent = this.options.yLabel + fy.suffix;
    axes.append(xl, yl);
    svg.append(axes);
    const path = (pts) => pts.map(([x, y], i) => `${i ? "L" : "M"}${px(x).toFixed(1)},${py(y).toFixed(1)}`).join("");
    for (const s of drawn) {
      const g = svgEl("g", {class: "chart-series"});
      if (this.smoothing && s.smooth !== false && s.points.length > 1) {
        g.append(svgEl("path", {d: path(s.points), stroke: s.color, class: "chart-raw"}));
      }
      g.append(svgEl("path", {d: path(s.shown), stroke: s.color, class: "chart-line" + (s.dashed ? " dashed" : ""),
        "data-series": s.name, "data-n": s.points.length}));
      if (s.markers || s.shown.length === 1) {
        for (const [x, y] of s.shown) g.append(svgEl("circle", {cx: px(x), cy: py(y), r: 3, fill: s.color}));
      }
      svg.append(g);
    }
    this.cursor = svgEl("line", {y1: m.top, y2: height - m.bottom, class: "chart-cursor", visibility: "hidden"});
    svg.append(this.cursor);
  }

  // The width a tick label takes (measured in the page; estimated while the chart is not displayed).
  textWidth(text) {
    const t = svgEl("text", {});
    t.textContent = text;
    this.svg.append(t);
    const w = t.getComputedTextLength ? t.getComputedTextLength() : 0;
    t.remove();
    return w || text.length * 6.5;
  }

  legendRender(drawn) {
    this.legend.replaceChildren(...drawn.map((s) => {
      const item = document.createElement("span");
      item.className = "legend-item";
      const sw = document.createElement("i");
      sw.className = "swatch" + (s.dashed ? " dashed" : "");
      sw.style.borderColor = s.color;
      const label = document.createElement("span");
      label.textContent = s.name;
      item.append(sw, label);
      return item;
    }));
  }

  // Read-out at the step under the mouse: each series' (smoothed) value at its nearest point.
  hover(event) {
    const g = this.geometry;
    if (!event || !g) { this.tip.style.display = "none"; if (this.cursor) this.cursor.setAttribute("visibility", "hidden"); return; }
    const box = this.svg.getBoundingClientRect();
    const mx = (event.clientX - box.left) * (g.width / box.width);
    let best = null;
    for (const s of g.drawn) for (const [x] of s.shown) {
      const d = Math.abs(g.px(x) - mx);
      if (!best || d < best.d) best = {d, x};
    }
    if (!best) return;
    this.cursor.setAttribute("x1", g.px(best.x));
    this.cursor.setAttribute("x2", g.px(best.x));
    this.cursor.setAttribute("visibility", "visible");
    const rows = [`${this.options.xLabel} ${formatNumber(best.x)}`];
    for (const s of g.drawn) {
      const near = s.shown.reduce((a, p) => (!a || Math.abs(p[0] - best.x) < Math.abs(a[0] - best.x) ? p : a), null);
      if (near && near[0] === best.x) rows.push(`${s.name}: ${formatNumber(near[1])}`);
    }
    this.tip.textContent = rows.join("\n");
    this.tip.style.display = "block";
    const left = g.px(best.x) * (box.width / g.width);
    this.tip.style.left = `${Math.min(left + 12, box.width - 180)}px`;
    this.tip.style.top = "8px";
  }
}

window.LineChart = LineChart;
window.niceTicks = niceTicks;
window.formatNumber = formatNumber;
window.axisFormat = axisFormat;
