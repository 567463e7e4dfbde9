"""Text tables and the breakdown figure of an `EnergyReport`."""
from __future__ import annotations

import math

import numpy as np

from .model import GROUPS, NOT_CHARACTERIZED, EnergyReport, Estimate


def _eng(value: float, unit: str) -> str:
    if value == 0:
        return f"0 {unit}"
    for factor, prefix in ((1e-15, "f"), (1e-12, "p"), (1e-9, "n"), (1e-6, "u"), (1e-3, "m"), (1.0, "")):
        if abs(value) < factor * 1000:
            return f"{value / factor:.4g} {prefix}{unit}"
    return f"{value:.4g} {unit}"


def gpu_rows(report: EnergyReport) -> list[tuple[str, str]]:
    """Speed-up and energy ratio of each GPU baseline over each estimate (one attention layer, one token)."""
    rows = []
    model = report.model
    for gpu in report.gpus:
        config = f"{gpu.heads} heads x {gpu.head_dim}, batch {gpu.batch}, {gpu.tokens} tokens"
        if (gpu.heads, gpu.head_dim) != (model.heads, model.head_dim):
            config += f" (model: {model.heads} x {model.head_dim}; ratios compare unlike layers)"
        rows.append((gpu.label, f"{_eng(gpu.latency_per_step_s, 's')} and "
                                f"{_eng(gpu.energy_per_step_j, 'J') if gpu.energy_per_step_j else 'no energy'} "
                                f"per decode step; {config}; {gpu.source}"))
        for estimate in (e for e in (report.own, report.paper) if e is not None):
            who = "this project" if estimate.figures == "surrogate" else "paper figures"
            text = f"speed-up x{gpu.latency_per_step_s / estimate.latency_layer_s:,.0f}"
            if gpu.energy_per_step_j:
                step = gpu.energy_per_step_j / estimate.energy_layer_j
                text += (f"; energy x{step:,.0f} per decode step (the paper's comparison: the GPU's whole batch vs "
                         f"one token), x{step / gpu.batch:,.0f} per sequence token")
            rows.append((f"  vs {who}", text))
    return rows


def summary_rows(report: EnergyReport) -> list[tuple[str, str]]:
    """Headline figures: latency, energy per head / layer / model, area, for both sets of figures."""
    rows = []
    for estimate in (e for e in (report.own, report.paper) if e is not None):
        who = "this project" if estimate.figures == "surrogate" else "paper figures"
        m = estimate.model
        rows += [(f"{who}: latency per token, one layer", _eng(estimate.latency_layer_s, "s")),
                 (f"{who}: latency per token, {m.layers} layers in sequence", _eng(estimate.latency_model_s, "s")),
                 (f"{who}: energy per token per query head", _eng(estimate.energy_head_j, "J")),
                 (f"{who}: energy per token, one layer", _eng(estimate.energy_layer_j, "J")),
                 (f"{who}: energy per token, model", _eng(estimate.energy_model_j, "J"))]
        characterized = estimate.characterized_energy_layer_j() / m.heads
        if estimate.figures == "surrogate" and not math.isclose(characterized, estimate.energy_head_j, rel_tol=1e-6):
            rows.append((f"{who}: energy per token per query head, characterized parts only (the rest: paper figures)",
                         _eng(characterized, "J")))
        for what, per_head, source in estimate.area:
            rows.append((f"{who}: area, {what}", f"{per_head:.4g} mm^2 per query head, "
                                                 f"{per_head * m.heads * m.layers:.4g} mm^2 for the model ({source})"))
        total = estimate.area_head_mm2
        rows.append((f"{who}: area in all", f"{total:.4g} mm^2 per query head, {total * m.heads * m.layers:.4g} mm^2 "
                                            "for the model"))
    return rows


def _parts_table(estimate: Estimate) -> list[str]:
    heads = estimate.model.heads
    lines = [f"  {'component':28s} {'group':10s} {'count/head':>12s} {'per action':>11s} {'per head':>10s}  source"]
    for p in estimate.parts:
        lines.append(f"  {p.label:28s} {p.group:10s} {p.count / heads:12.5g} {_eng(p.per_action_j, 'J'):>11s} "
                     f"{_eng(p.energy_j / heads, 'J'):>10s}  [{p.status}] {p.source} (per {p.action})")
    lines.append(f"  {'total':28s} {'':10s} {'':12s} {'':11s} {_eng(estimate.energy_head_j, 'J'):>10s}")
    lines.append(f"  {'phase':40s} {'each':>9s} {'x':>4s} {'total':>9s}  source")
    for p in estimate.phases:
        lines.append(f"  {p.label:40s} {_eng(p.seconds, 's'):>9s} {p.repeats:4g} {_eng(p.total_s, 's'):>9s}  "
                     f"[{p.status}] {p.source}")
    lines.append(f"  {'latency per token, one layer':40s} {'':9s} {'':4s} {_eng(estimate.latency_layer_s, 's'):>9s}")
    return lines


def format_report(report: EnergyReport) -> str:
    """The text `gaincell energy` prints."""
    m, c, s = report.model, report.counts, report.settings
    overrides = s.get("hardware_overrides")
    study = f"; hardware set for this study: {', '.join(overrides)}" if overrides else ""
    lines = [f"gain-cell attention: {m.name} ({m.layers} layers, {m.heads} query heads / {m.kv_heads} KV heads x "
             f"{m.head_dim}; {m.source})",
             f"window {s['window']}, {s['tile']}x{s['tile']} tiles; headline figures: "
             + ("this project's (SPICE surrogate + cited)" if report.figures == "surrogate" else "the paper's")
             + study,
             f"action counts per token, one layer: decode of {s['tokens']} tokens with a full ring "
             f"(GainCellAttention + RingCache from {s['surrogate']}, seed {s['seed']})",
             f"  cells written {c.cells_written:g}, cells read QK {c.cells_read_qk:g} / AV {c.cells_read_av:g}, "
             f"C2P stage 1 {c.c2p_stage1:g}, stage 2 {c.c2p_stage2:g}, tile reads {c.tile_reads_qk:g}, "
             f"adds {c.adds:g}, read phases per array {c.read_phases:g}",
             f"  mean pulse width / T_max: QK {c.mean_pulse_qk:.3f}, AV {c.mean_pulse_av:.3f} (synthetic activations "
             f"with calibrated statistics); counter increments {c.counter_ticks:.4g}", ""]
    lines += [f"{k:62s} {v}" for k, v in summary_rows(report)]
    for estimate in (e for e in (report.own, report.paper) if e is not None):
        lines += ["", "breakdown per token per query head: "
                  + ("this project" if estimate.figures == "surrogate" else "paper figures")]
        lines += _parts_table(estimate)
    if report.own is not None:
        own, paper = report.own.group_energy_head_j(), report.paper.group_energy_head_j()
        lines += ["", f"  {'by the paper categories':28s} {'this project':>14s} {'paper':>12s}"]
        lines += [f"  {g:28s} {_eng(own[g], 'J'):>14s} {_eng(paper[g], 'J'):>12s}" for g in GROUPS]
    lines += ["", f"GPU attention ({report.gpu_note}):"] + [f"  {k}: {v}" for k, v in gpu_rows(report)]
    return "\n".join(lines)


def breakdown_figure(report: EnergyReport):
    """Bars of energy per token per query head by the paper's categories: this project vs the paper."""
    from gaincell.plotting import Figure, Panel, Trace

    x = np.arange(len(GROUPS), dtype=float)
    traces = []
    for estimate in (e for e in (report.own, report.paper) if e is not None):
        groups = estimate.group_energy_head_j()
        traces.append(Trace("this project (SPICE + cited)" if estimate.figures == "surrogate" else "paper figures",
                            x, np.array([groups[g] for g in GROUPS]), style="bars"))
    m = report.model
    return Figure(f"energy per token per query head: {m.name}, window {report.settings['window']}",
                  [Panel(traces, "J", "energy per token per head")], share_x=False, categories=list(GROUPS))


def energy_table(report: EnergyReport) -> list[tuple[str, str]]:
    """The demo report's table: headline figures, the breakdown by the paper's categories, GPU ratios."""
    rows = summary_rows(report)
    if report.own is not None:
        own, paper = report.own.group_energy_head_j(), report.paper.group_energy_head_j()
        rows += [(f"{g} per token per head: this project / paper", f"{_eng(own[g], 'J')} / {_eng(paper[g], 'J')}")
                 for g in GROUPS]
        rows += [(f"not characterized (paper figure used): {p.label}", p.source)
                 for p in report.own.parts + report.own.phases if p.status == NOT_CHARACTERIZED]
    return rows + gpu_rows(report)
