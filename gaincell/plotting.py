"""The plotting layer: a `Figure` of panels and traces, rendered to PNG (matplotlib) or to a self-contained
interactive HTML page (inline SVG + JavaScript, no network: zoom with the wheel, pan by dragging, double
click to reset, click a legend entry to hide or show its trace). Axes carry SI units in engineering
notation (decibels and degrees as plain numbers); the x axis may be logarithmic (Bode plots). Waveforms,
sweeps, fit reports and energy breakdowns all go through it.
"""
from __future__ import annotations

import html
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import EngFormatter  # noqa: E402

from .outputs import atomic_path, utf8_text  # noqa: E402
from .sweep_data import unit_of  # noqa: E402

MAX_POINTS_PER_TRACE = 4000
DB, DEGREES, PERCENT = "dB", "°", "%"
PLAIN_UNITS = (DB, DEGREES, PERCENT)  # drawn as plain numbers: no SI prefix (not "-500 mdB")


@dataclass
class Trace:
    """One curve: x and y values, a name, and a style ("line", "markers" or "bars"); `color`: an index into
    the colour cycle (traces of one quantity, e.g. data and its fit, share it; default: the trace's position)."""

    name: str
    x: np.ndarray
    y: np.ndarray
    style: str = "line"
    color: int | None = None


@dataclass
class Panel:
    """Traces sharing a y axis (one unit)."""

    traces: list[Trace]
    y_unit: str = ""
    y_label: str = ""
    title: str = ""
    x_unit: str = ""
    x_label: str = ""


@dataclass
class Figure:
    """Panels stacked vertically; with `share_x` they zoom and pan together."""

    title: str
    panels: list[Panel] = field(default_factory=list)
    share_x: bool = True
    categories: list[str] | None = None  # x tick labels for bar charts
    x_log: bool = False  # logarithmic x axis (frequency in a Bode plot)


def waveform_figure(time_s: np.ndarray | dict[str, np.ndarray], signals: dict[str, np.ndarray], title: str = "",
                    units: dict[str, str] | None = None, x_label: str = "time", x_unit: str = "s") -> Figure:
    """One panel per unit (V, A, ...) of signals against time (or another x axis: `x_label`, `x_unit`).
    `time_s` may be one array or one per signal."""
    units = units or {}
    by_unit: dict[str, list[str]] = {}
    for name in signals:
        by_unit.setdefault(units.get(name) or unit_of(name), []).append(name)
    panels = []
    for unit, names in by_unit.items():
        traces = [Trace(name, np.asarray(time_s[name] if isinstance(time_s, dict) else time_s), np.asarray(signals[name]))
                  for name in names]
        panels.append(Panel(traces, unit, x_unit=x_unit, x_label=x_label))
    return Figure(title, panels)


def plot_waveforms(path: str | Path, time_s: np.ndarray, signals: dict[str, np.ndarray], title: str = "",
                   units: dict[str, str] | None = None) -> Path:
    """One panel per unit of signals against time, written to `path` as PNG (or HTML for *.html)."""
    return save_figure(waveform_figure(time_s, signals, title, units), path)


def _writable_text(figure: Figure) -> Figure:
    """The figure with every title, label and name writable as UTF-8 (a title may hold a file name whose
    bytes are not UTF-8, which neither matplotlib nor the page can draw)."""
    panels = [replace(panel, title=utf8_text(panel.title), y_label=utf8_text(panel.y_label),
                      x_label=utf8_text(panel.x_label),
                      traces=[replace(trace, name=utf8_text(trace.name)) for trace in panel.traces])
              for panel in figure.panels]
    categories = None if figure.categories is None else [utf8_text(str(c)) for c in figure.categories]
    return replace(figure, title=utf8_text(figure.title), panels=panels, categories=categories)


def save_figure(figure: Figure, path: str | Path) -> Path:
    """Render by suffix: .html -> interactive page, anything else -> PNG."""
    path = Path(path)
    return render_html(figure, path) if path.suffix.lower() in (".html", ".htm") else render_png(figure, path)


def save_png_and_html(figure: Figure, stem: str | Path) -> tuple[Path, Path]:
    """STEM.png and STEM.html of the same figure."""
    stem = Path(stem)
    return render_png(figure, stem.with_suffix(".png")), render_html(figure, stem.with_suffix(".html"))


def render_png(figure: Figure, path: str | Path) -> Path:
    """Matplotlib rendering of a Figure."""
    figure = _writable_text(figure)
    n = max(1, len(figure.panels))
    fig, axes = plt.subplots(n, 1, figsize=(8, 2.8 * n), sharex=figure.share_x and not figure.categories,
                             squeeze=False)
    for ax, panel in zip(axes[:, 0], figure.panels):
        bars = [t for t in panel.traces if t.style == "bars"]  # side by side, as in the HTML page
        for index, trace in enumerate(panel.traces):
            color = f"C{(index if trace.color is None else trace.color) % 10}"
            if trace.style == "bars":
                width = 0.8 / len(bars)
                offset = -0.4 + width * ([t is trace for t in bars].index(True) + 0.5)
                ax.bar(np.asarray(trace.x, float) + offset, trace.y, width=width, label=trace.name, color=color)
            elif trace.style == "markers":
                ax.plot(trace.x, trace.y, "o", ms=3, label=trace.name, color=color)
            else:
                ax.plot(trace.x, trace.y, lw=1.2, label=trace.name, color=color)
        if not panel.y_unit:  # a dimensionless quantity: plain numbers, no SI prefix ("0.1", not "100 m")
            ax.yaxis.set_major_formatter(lambda value, _: f"{value:g}")
        elif panel.y_unit in PLAIN_UNITS:
            ax.yaxis.set_major_formatter(lambda value, _, unit=panel.y_unit: f"{value:g} {unit}")
        else:
            ax.yaxis.set_major_formatter(EngFormatter(unit=panel.y_unit))
        if panel.y_label:
            ax.set_ylabel(panel.y_label)
        if figure.categories:
            ax.set_xticks(range(len(figure.categories)), figure.categories, rotation=20, fontsize=8)
        else:
            if figure.x_log:
                ax.set_xscale("log")
            ax.xaxis.set_major_formatter(EngFormatter(unit=panel.x_unit) if panel.x_unit else (lambda value, _: f"{value:g}"))
        if panel.x_label:
            ax.set_xlabel(panel.x_label)
        if panel.title:
            ax.set_title(panel.title, fontsize=9)
        ax.grid(alpha=0.3)
        if len(panel.traces) > 6:  # many series: the legend beside the axes, never over the curves
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, borderaxespad=0.0)
        elif len(panel.traces) > 1 or panel.traces and panel.traces[0].name:
            ax.legend(loc="best", fontsize=8)
    if figure.title:
        fig.suptitle(figure.title, fontsize=10)
    return write_png(fig, path, dpi=120)


def write_png(fig, path: str | Path, dpi: int) -> Path:
    """Lay out a matplotlib figure, write it atomically as PNG and close it."""
    path = Path(path)
    try:
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        plt.close(fig)
    return path


def _decimate(x: np.ndarray, y: np.ndarray, limit: int = MAX_POINTS_PER_TRACE):
    """Min/max per bucket so that long waveforms keep their peaks in a small page."""
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = np.asarray(x, float)[keep], np.asarray(y, float)[keep]
    if len(x) <= limit:
        return x, y
    buckets = np.array_split(np.arange(len(x)), limit // 2)
    index = np.unique(np.concatenate([[b[np.argmin(y[b])], b[np.argmax(y[b])]] for b in buckets if len(b)]))
    return x[index], y[index]


def figure_data(figure: Figure) -> dict:
    """The JSON the HTML page draws from; with a logarithmic x axis the page gets log10(x) (and labels
    the ticks with 10^value)."""
    panels = []
    for panel in figure.panels:
        traces = []
        for trace in panel.traces:
            x = np.asarray(trace.x, float)
            if figure.x_log:
                with np.errstate(divide="ignore", invalid="ignore"):
                    x = np.where(x > 0, np.log10(np.where(x > 0, x, 1.0)), np.nan)
            x, y = _decimate(x, trace.y)
            traces.append({"name": trace.name, "x": [float(v) for v in x], "y": [float(v) for v in y],
                           "style": trace.style, "color": trace.color})
        panels.append({"traces": traces, "yUnit": panel.y_unit, "yLabel": panel.y_label, "title": panel.title,
                       "xUnit": panel.x_unit, "xLabel": panel.x_label})
    return {"title": figure.title, "panels": panels, "shareX": figure.share_x, "categories": figure.categories,
            "xLog": figure.x_log}


def render_html(figure: Figure, path: str | Path) -> Path:
    """A self-contained interactive page (works offline from the file; the page forbids any request)."""
    figure = _writable_text(figure)
    data = json.dumps(figure_data(figure)).replace("</", "<\\/")
    page = _PAGE.replace("%TITLE%", html.escape(figure.title or "gaincell figure")).replace("%DATA%", data)
    page = page.replace("%SCRIPT%", _SCRIPT)
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="generator" content="gaincell">
<meta http-equiv="Content-Security-Policy"
      content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:">
<title>%TITLE%</title>
<style>
body { font: 13px sans-serif; margin: 12px; color: #222; }
.panel { margin-bottom: 10px; } svg { background: #fff; border: 1px solid #ddd; cursor: grab; }
.legend span { margin-right: 14px; cursor: pointer; user-select: none; }
.legend span.off { opacity: 0.35; text-decoration: line-through; }
.hint { color: #777; font-size: 11px; }
</style></head>
<body>
<h3>%TITLE%</h3>
<div class="hint">wheel: zoom (x; with shift: y) &middot; drag: pan &middot; double click: reset &middot;
click a legend entry: hide/show</div>
<div id="figure"></div>
<script id="figure-data" type="application/json">%DATA%</script>
<script>%SCRIPT%</script>
</body></html>
"""

_SCRIPT = r"""
(function () {
  const fig = JSON.parse(document.getElementById('figure-data').textContent);
  const W = 900, H = 260, M = {l: 70, r: 15, t: 22, b: 34};
  const colors = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf'];
  const NS = 'http://www.w3.org/2000/svg';
  const prefixes = {'-15': 'f', '-12': 'p', '-9': 'n', '-6': 'u', '-3': 'm', '0': '', '3': 'k', '6': 'M', '9': 'G'};
  document.addEventListener('securitypolicyviolation', function (e) {
    document.body.dataset.violations = (parseInt(document.body.dataset.violations || '0') + 1).toString();
  });
  function eng(v, unit) {
    if (unit === 'dB' || unit === '\u00b0') return parseFloat(v.toPrecision(4)) + ' ' + unit;
    if (v === 0 || !isFinite(v)) return '0' + (unit ? ' ' + unit : '');
    let e = Math.floor(Math.log10(Math.abs(v)) / 3) * 3;
    e = Math.max(-15, Math.min(9, e));
    const m = v / Math.pow(10, e);
    return parseFloat(m.toPrecision(4)) + ' ' + prefixes[e] + unit;
  }
  function ticks(lo, hi, n) {
    const span = hi - lo, step0 = span / n, mag = Math.pow(10, Math.floor(Math.log10(step0)));
    const step = [1, 2, 5, 10].map(f => f * mag).find(s => s >= step0) || step0;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    return out;
  }
  function extent(values) {
    let lo = Infinity, hi = -Infinity;
    values.forEach(v => { if (isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); } });
    if (!isFinite(lo)) return [0, 1];
    if (lo === hi) { lo -= Math.abs(lo) * 0.05 + 1e-15; hi += Math.abs(hi) * 0.05 + 1e-15; }
    return [lo, hi];
  }
  const views = [];
  const allX = [];
  fig.panels.forEach(p => p.traces.forEach(t => allX.push(...t.x)));
  const xFull = fig.categories ? [-0.6, fig.categories.length - 0.4] : extent(allX);
  fig.panels.forEach(function (panel, pi) {
    const div = document.createElement('div'); div.className = 'panel';
    if (panel.title) { const h = document.createElement('div'); h.textContent = panel.title; div.appendChild(h); }
    const svg = document.createElementNS(NS, 'svg');
    svg.setAttribute('width', W); svg.setAttribute('height', H); svg.dataset.panel = pi;
    const legend = document.createElement('div'); legend.className = 'legend';
    div.appendChild(svg); div.appendChild(legend);
    document.getElementById('figure').appendChild(div);
    const yValues = [];
    panel.traces.forEach(t => yValues.push(...t.y));
    const yFull = extent(fig.categories ? yValues.concat([0]) : yValues);
    const pad = (yFull[1] - yFull[0]) * 0.05;
    const view = {svg: svg, panel: panel, x: fig.shareX ? null : extent(panel.traces.flatMap(t => t.x)),
                  y: [yFull[0] - pad, yFull[1] + pad], yFull: [yFull[0] - pad, yFull[1] + pad], hidden: {}};
    if (!view.x) view.x = xFull.slice();
    view.xFull = view.x.slice();
    views.push(view);
    panel.traces.forEach(function (t, ti) {
      const item = document.createElement('span');
      item.style.color = colors[(t.color === null ? ti : t.color) % colors.length];
      item.textContent = '\u25A0 ' + t.name; item.dataset.trace = t.name;
      item.addEventListener('click', function () {
        view.hidden[ti] = !view.hidden[ti]; item.classList.toggle('off'); draw(view);
      });
      legend.appendChild(item);
    });
    svg.addEventListener('wheel', function (e) {
      e.preventDefault();
      const f = e.deltaY > 0 ? 1.25 : 0.8, r = svg.getBoundingClientRect();
      if (e.shiftKey) {
        const c = view.y[1] - (e.clientY - r.top - M.t) / (H - M.t - M.b) * (view.y[1] - view.y[0]);
        view.y = [c - (c - view.y[0]) * f, c + (view.y[1] - c) * f]; draw(view);
      } else {
        const c = view.x[0] + (e.clientX - r.left - M.l) / (W - M.l - M.r) * (view.x[1] - view.x[0]);
        setX(view, [c - (c - view.x[0]) * f, c + (view.x[1] - c) * f]);
      }
    }, {passive: false});
    let drag = null;
    svg.addEventListener('mousedown', e => { drag = {x: e.clientX, y: e.clientY, vx: view.x.slice(), vy: view.y.slice()}; });
    window.addEventListener('mouseup', () => { drag = null; });
    svg.addEventListener('mousemove', function (e) {
      if (!drag) return;
      const dx = (e.clientX - drag.x) / (W - M.l - M.r) * (drag.vx[1] - drag.vx[0]);
      const dy = (e.clientY - drag.y) / (H - M.t - M.b) * (drag.vy[1] - drag.vy[0]);
      view.y = [drag.vy[0] + dy, drag.vy[1] + dy];
      setX(view, [drag.vx[0] - dx, drag.vx[1] - dx]);
    });
    svg.addEventListener('dblclick', function () { view.y = view.yFull.slice(); setX(view, view.xFull.slice()); });
  });
  function setX(view, x) {
    (fig.shareX ? views : [view]).forEach(v => { v.x = x.slice(); draw(v); });
  }
  function draw(view) {
    const svg = view.svg, panel = view.panel;
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const sx = v => M.l + (v - view.x[0]) / (view.x[1] - view.x[0]) * (W - M.l - M.r);
    const sy = v => H - M.b - (v - view.y[0]) / (view.y[1] - view.y[0]) * (H - M.t - M.b);
    function el(name, attrs, text) {
      const e = document.createElementNS(NS, name);
      Object.keys(attrs).forEach(k => e.setAttribute(k, attrs[k]));
      if (text !== undefined) e.textContent = text;
      svg.appendChild(e); return e;
    }
    const clip = 'clip' + svg.dataset.panel;
    const defs = el('defs', {});
    const cp = document.createElementNS(NS, 'clipPath'); cp.setAttribute('id', clip);
    const rect = document.createElementNS(NS, 'rect');
    [['x', M.l], ['y', M.t], ['width', W - M.l - M.r], ['height', H - M.t - M.b]].forEach(a => rect.setAttribute(a[0], a[1]));
    cp.appendChild(rect); defs.appendChild(cp);
    ticks(view.y[0], view.y[1], 5).forEach(function (v) {
      el('line', {x1: M.l, x2: W - M.r, y1: sy(v), y2: sy(v), stroke: '#eee'});
      el('text', {x: M.l - 5, y: sy(v) + 4, 'text-anchor': 'end', 'font-size': 10}, eng(v, panel.yUnit));
    });
    if (fig.categories) {
      fig.categories.forEach((c, i) => el('text', {x: sx(i), y: H - M.b + 14, 'text-anchor': 'middle', 'font-size': 10}, c));
    } else {
      ticks(view.x[0], view.x[1], 8).forEach(function (v) {
        el('line', {x1: sx(v), x2: sx(v), y1: M.t, y2: H - M.b, stroke: '#eee'});
        el('text', {x: sx(v), y: H - M.b + 14, 'text-anchor': 'middle', 'font-size': 10},
           eng(fig.xLog ? Math.pow(10, v) : v, panel.xUnit));
      });
    }
    el('rect', {x: M.l, y: M.t, width: W - M.l - M.r, height: H - M.t - M.b, fill: 'none', stroke: '#999'});
    if (panel.xLabel) el('text', {x: (W + M.l) / 2, y: H - 4, 'text-anchor': 'middle', 'font-size': 11}, panel.xLabel);
    if (panel.yLabel) el('text', {x: 12, y: M.t - 8, 'font-size': 11}, panel.yLabel);
    const nBars = panel.traces.filter(t => t.style === 'bars').length;
    let barIndex = 0;
    panel.traces.forEach(function (t, ti) {
      const color = colors[(t.color === null ? ti : t.color) % colors.length];
      if (t.style === 'bars') {
        const w = 0.8 / nBars, off = -0.4 + w * barIndex++;
        const g = el('g', {'class': 'trace', 'data-name': t.name, 'clip-path': 'url(#' + clip + ')'});
        if (view.hidden[ti]) g.setAttribute('display', 'none');
        t.x.forEach(function (x, i) {
          const r = document.createElementNS(NS, 'rect');
          const y0 = sy(Math.max(0, t.y[i])), y1 = sy(Math.min(0, t.y[i]));
          [['x', sx(x + off)], ['y', y0], ['width', Math.max(1, sx(x + off + w) - sx(x + off))], ['height', Math.max(0, y1 - y0)],
           ['fill', color]].forEach(a => r.setAttribute(a[0], a[1]));
          const title = document.createElementNS(NS, 'title'); title.textContent = t.name + ': ' + eng(t.y[i], panel.yUnit);
          r.appendChild(title); g.appendChild(r);
        });
        return;
      }
      let d = '';
      const dots = t.style === 'markers';
      t.x.forEach(function (x, i) {
        d += (dots ? 'M' : (i ? 'L' : 'M')) + sx(x).toFixed(1) + ',' + sy(t.y[i]).toFixed(1) + (dots ? 'h0' : '');
      });
      const attrs = {'class': 'trace', 'data-name': t.name, d: d, fill: 'none', stroke: color,
                     'stroke-width': 1.4, 'clip-path': 'url(#' + clip + ')'};
      if (dots) { attrs['stroke-width'] = 5; attrs['stroke-linecap'] = 'round'; }
      const path = el('path', attrs);
      if (view.hidden[ti]) path.setAttribute('display', 'none');
    });
  }
  views.forEach(draw);
  document.body.dataset.traces = document.querySelectorAll('.trace').length.toString();
  document.body.dataset.resources = performance.getEntriesByType('resource').length.toString();
  document.body.dataset.ready = '1';
})();
"""
