"""The built circuits of `gaincell simulate` beyond the single cell: array, c2p, tile. Each runs into an
HDF5 file through the sweep machinery (progress bar, resume) and returns the lines the command prints."""
from __future__ import annotations

import time

import numpy as np

from gaincell.design import CellDesign
from gaincell.periphery import C2PDesign

from .array_read import random_array_inputs, read_array
from .arrays import ArrayRead
from .c2p import c2p_sweeps, never_fired
from .sweep import run_sweep
from .tile import run_tile
from .wires import Wires


def ir_drop(with_wires: np.ndarray, ideal: np.ndarray) -> dict[str, float]:
    """Column-charge error of a read with wires against the ideal read, relative to the largest ideal charge."""
    scale = float(np.max(np.abs(ideal)))
    error = with_wires - ideal
    return {"rms_rel": float(np.sqrt(np.mean(error**2)) / scale), "max_rel": float(np.max(np.abs(error)) / scale),
            "mean_magnitude_loss": float(1 - np.sum(np.abs(with_wires)) / np.sum(np.abs(ideal)))}


def simulate_array(design: CellDesign, rows: int, cols: int, seed: int, wires: dict[str, float], write: bool,
                   out, workers: int | None = None, max_seconds: float = 300.0, merge_identical: bool = True) -> list[str]:
    """Read a random array (group `array`); with wires or the write path, also the ideal one (`array_ideal`)."""
    stored, pulses = random_array_inputs(design, rows, cols, seed)
    parasitics = Wires(**{f"{k}_{'ohm' if k.endswith('_r') else 'f'}": v for k, v in wires.items()})
    bench = ArrayRead.from_arrays(design, stored, pulses, write=write, merge_identical=merge_identical,
                                  wires=parasitics)
    started = time.perf_counter()
    result = read_array(bench, out, "array", workers, max_seconds)
    simulated = (f", {bench.simulated_cells} cell states simulated for {rows * cols} cells"
                 if bench.layout == "cells" else "")
    lines = [f"array {rows} x {cols} ({bench.layout} layout{simulated}): {time.perf_counter() - started:.2f} s "
             f"(estimated {result.estimate_s:.1f} s, {result.estimate_bytes / 2**20:.0f} MiB)",
             f"column charges: {np.nanmin(result.charges_c):.4g} .. {np.nanmax(result.charges_c):.4g} C"]
    groups = ["array"]
    failed = {k: v for k, v in result.failed_points.items() if v}
    if failed:
        lines.append(f"FAILED {failed}: {'; '.join(result.report.messages[:3])}")
    if not parasitics.ideal or write:
        groups.append("array_ideal")
        ideal = read_array(ArrayRead.from_arrays(design, stored, pulses), out, "array_ideal", workers, max_seconds)
        drop = ir_drop(result.charges_c, ideal.charges_c)
        lines.append(f"against the ideal array (.ic, no wires): RMS error {100 * drop['rms_rel']:.3f} %, worst "
                     f"{100 * drop['max_rel']:.3f} % of the largest column charge; mean |charge| loss "
                     f"{100 * drop['mean_magnitude_loss']:.3f} %")
    lines.append(f"wrote {out} (groups {', '.join(groups)})")
    return lines


def simulate_c2p(design: CellDesign, out, workers: int | None = None, c2p: C2PDesign = C2PDesign()) -> list[str]:
    """The converters' transfer sweeps of `c2p` into `out`; reports charges that never fired."""
    lines = []
    for sweep in c2p_sweeps(design, c2p):
        report = run_sweep(sweep, out, workers=workers)
        s, charges = report.data.scalars, sweep.grid["charge_c"]
        lines.append(f"{sweep.name}: widths {np.nanmin(s['width_s']) * 1e9:.3f} .. {np.nanmax(s['width_s']) * 1e9:.3f} ns "
                     f"for {charges[0]:.3g} .. {charges[-1]:.3g} C; energy per conversion "
                     f"{np.nanmean(s['e_conversion_j']) * 1e12:.3f} pJ (mean)")
        silent = never_fired(charges, s["fired"])
        if silent:
            lines.append("  " + silent)
        lines += [f"  failed: {m}" for m in report.messages[:3]]
    lines.append(f"wrote {out} (fit it with `gaincell fit` after `gaincell characterize --c2p`)")
    return lines


def simulate_tile(design: CellDesign, dim: int, tokens: int, seed: int, out, workers: int | None = None,
                  c2p: C2PDesign = C2PDesign()) -> list[str]:
    """One random tile (query on 16 pulse levels, K and V on the DAC levels) read through the converters `c2p`."""
    rng = np.random.default_rng(seed)
    levels = np.asarray(design.dac_voltages)
    query = rng.integers(0, 16, dim) / 15
    keys, values = (levels[rng.integers(0, len(levels), (tokens, dim))] for _ in range(2))
    started = time.perf_counter()
    result = run_tile(design, query, keys, values, out, c2p=c2p, workers=workers)
    lines = [f"tile {tokens} tokens x {dim} dims: {time.perf_counter() - started:.1f} s",
             "stage-1 C2P widths (ns): " + " ".join(f"{w * 1e9:.2f}" for w in result.widths_s),
             f"readout (sign x count / {c2p.counter_levels - 1}): " + " ".join(f"{x:+.3f}" for x in result.counter_outputs)]
    if result.message:
        lines.append(result.message)
    lines.append(f"wrote {out} (groups tile_scores, tile_readout)")
    return lines
