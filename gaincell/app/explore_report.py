"""An exploration's outputs: the dataset (one coordinate per varied field, one variable per figure, the status
and reason of every point; netCDF-4 written with h5netcdf, so `xarray.open_dataset` reads it) and report.html
(the Pareto front of energy per token against perplexity, a row per point linking its artifacts)."""
from __future__ import annotations

import json
import math
import shlex
from pathlib import Path

import numpy as np

from ..outputs import atomic_path


def write_dataset(path: Path, varies, points, results: list[dict]) -> Path:
    import xarray as xr

    from .explore_point import FIGURES

    dims = [field for field, _ in varies]
    shape = tuple(len(values) for _, values in varies)
    # each point at its values' place in the grid; a plan that is not the whole grid leaves the rest empty
    where = [tuple(values.index(value) for (_, values), (_, value) in zip(varies, p.values)) for p in points]
    variables = {}
    for name, (unit, description) in FIGURES.items():
        data = np.full(shape, math.nan)
        for index, result in zip(where, results):
            data[index] = float(result.get(name, math.nan))
        variables[name] = (dims, data, {"units": unit, "long_name": description})
    for name, meaning in (("status", "ok, out of tolerance or failed; 'not planned' off a one-at-a-time plan"),
                          ("reason", "why a point failed")):
        data = np.full(shape, "not planned" if name == "status" else "", dtype=object)
        for index, result in zip(where, results):
            data[index] = str(result.get(name, ""))
        variables[name] = (dims, data, {"long_name": meaning})
    coords = {field: (field, np.array(values)) for field, values in varies}
    dataset = xr.Dataset(variables, coords=coords, attrs={"title": "gaincell design-space exploration",
                                                          "points": json.dumps([p.name for p in points])})
    with atomic_path(path) as tmp:
        dataset.to_netcdf(tmp, engine="h5netcdf")
    return path


def pareto_front(x: list[float], y: list[float]) -> list[int]:
    """Indices of the points no other point beats in both x and y (lower is better), by increasing x."""
    finite = [i for i in range(len(x)) if math.isfinite(x[i]) and math.isfinite(y[i])]
    front = [i for i in finite
             if not any(x[j] <= x[i] and y[j] <= y[i] and (x[j] < x[i] or y[j] < y[i]) for j in finite)]
    return sorted(front, key=lambda i: x[i])


def write_exploration_report(out: Path, design: str, varies, points, results: list[dict], settings,
                             sampling: str = "grid") -> Path:
    from .explore_point import FIGURES, point_commands
    from ..plotting import Figure, save_png_and_html
    from .report import ReportFigure, Stage, write_report

    scored = any(math.isfinite(r.get("perplexity", math.nan)) for r in results)
    y_name = "perplexity" if scored else "validation_rms"
    ok = [i for i, r in enumerate(results) if r.get("status") == "ok"]
    y_label = "perplexity" if scored else "fit error (fraction)"  # short: two panels share the height
    energy_panel, front = _front_panel(results, ok, "energy_per_token_j", y_name, y_label,
                                       "J", "attention energy per token (SmolLM2-135M)")
    area_panel, _ = _front_panel(results, ok, "area_mm2_per_head", y_name, y_label,
                                 "", "silicon area per query head (mm^2)")
    figure = Figure("energy per token and area against " + ("the re-targeted SmolLM2-135M's perplexity" if scored
                                                            else "the fit's error (fraction of full scale)"),
                    [energy_panel, area_panel], share_x=False)
    save_png_and_html(figure, out / "pareto")
    command = "gaincell explore --design " + shlex.quote(design) + "".join(
        f" --vary {field}={','.join(_shown(v) for v in values)}" for field, values in varies) + (
        f" --sampling {sampling}" if sampling != "grid" else "") + f" --out {out.name}"
    front_names = ", ".join(points[i].name for i in front) or "none (no point finished with every figure)"
    reference = ""
    if (out / "softmax-eval.json").is_file():  # the unmodified model on the same text (explore._softmax_reference)
        softmax = json.loads((out / "softmax-eval.json").read_text())
        reference = f" The softmax SmolLM2-135M on the same text: perplexity {softmax[0]['perplexity']:.4g}" + (
            f", LAMBADA {100 * softmax[1]['accuracy']:.0f} %" if len(softmax) > 1 else "") + "."
    stages = [Stage("Pareto front", "done", f"{len(points)} points; on the front: {front_names}.{reference}", command,
                    ["exploration.nc", "exploration.json"],
                    [ReportFigure("pareto.png", "energy per token (top) and area per query head (bottom) against "
                                  + ("perplexity" if scored else "the fit's error") + "; each front joins the points "
                                  "no other point beats on both", "pareto.html")])]
    steps = " && ".join("gaincell " + shlex.join(c) for c in point_commands(settings))
    for point, result in zip(points, results):
        rows = [(FIGURES[name][1], _figure(result.get(name), FIGURES[name][0])) for name in FIGURES
                if name in result]
        files = [f"points/{point.name}/{name}" for name in ("design.yaml", "char.h5", "surrogate.h5",
                                                           "validation.h5", "retention-85c.h5", "result.json")
                 if (out / "points" / point.name / name).is_file()]
        summary = ", ".join(f"{field} = {_shown(value)}" for field, value in point.values)
        if result.get("reason"):
            summary += f". {result['status']}: {result['reason']}"
        stages.append(Stage(f"point {point.name}", "done" if result.get("status") == "ok" else "failed", summary,
                            f"cd points/{point.name} && {steps}", files, [], rows, result.get("seconds")))
    headline = "\n".join(f"{p.name}: {r.get('status')}"
                         + (f", perplexity {r['perplexity']:.4g}" if math.isfinite(r.get("perplexity", math.nan))
                            else "")
                         + (f", {r['energy_per_token_j'] * 1e9:.4g} nJ per token" if "energy_per_token_j" in r else "")
                         for p, r in zip(points, results))
    return write_report(out, f"gaincell explore: {design}", stages, headline)


def _front_panel(results: list[dict], ok: list[int], x_name: str, y_name: str, y_label: str, x_unit: str,
                 x_label: str):
    """A panel of the finished points (x_name against y_name) and their Pareto front; the front's indices."""
    from ..plotting import Panel, Trace

    x = [results[i].get(x_name, math.nan) for i in ok]
    y = [results[i].get(y_name, math.nan) for i in ok]
    front = [ok[i] for i in pareto_front(x, y)]
    front_x, front_y = (np.array([results[i][name] for i in front]) for name in (x_name, y_name))
    traces = [Trace("design points", np.array(x), np.array(y), "markers", 0),
              Trace("on the Pareto front", front_x, front_y, "markers", 1),
              Trace("Pareto front", front_x, front_y, "line", 1)]
    return Panel(traces, y_label=y_label, x_unit=x_unit, x_label=x_label), front


def _shown(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _figure(value, unit: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.4g} {unit}".strip()
