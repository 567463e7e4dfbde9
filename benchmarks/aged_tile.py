"""An aged attention tile in SPICE against the torch layer's decay model (issue 26's check).

Characterizes the default cell with its converters and fits the surrogate, then per case writes a random tile
(query on 16 pulse widths, keys and values on the DAC levels) whose tokens were written 0 .. 3 tau ago (tau:
the fitted decay's 1/e time, ages evenly spread, the newest token fresh). SPICE holds every stored level for
the longest age (retention) and reads the tile with the voltages each cell holds at its token's age. Printed
per case, in the units of `bench_tile.py` (phi RMS of 1; readout RMS in % of the output range):
- the layer: fresh voltages with the layer's decay (the stored voltage aged by the fitted retention model,
  then read by the fitted multiply: `CellModel.aged_expansion`);
- the paper's product form: fresh voltages, each product times the reference level's decay factor;
- the decayed voltages: the layer's transfers on the voltages SPICE held, no decay - the fitted multiply
  alone, the floor the decay model is measured against.
Writes a figure (held voltage by age per DAC level, SPICE and the fitted model; case 0's readout per column)
and exits with status 1 when the layer misses the fresh tile's targets (phi RMS 0.02, readout RMS 2 %).

    .venv/bin/python benchmarks/aged_tile.py [--random 2] [--tokens 64] [--dims 64] [--workers 2]
        [--figure benchmarks/aged-tile]
"""
from __future__ import annotations

import argparse
import functools
import tempfile
import time
from pathlib import Path

import numpy as np

from gaincell.arguments import positive_int
from gaincell.circuits.characterize import characterize
from gaincell.circuits.tile import MAX_TILE, aged_voltages, run_tile
from gaincell.compact import evaluate, tau_1e
from gaincell.design import load_design
from gaincell.errors import GaincellError
from gaincell.fitting.fit import fit_characterization
from gaincell.periphery import Grid
from gaincell.outputs import REPORT, guard_output
from gaincell.plotting import Figure, Panel, Trace, save_png_and_html
from gaincell.surrogate.tile_reference import tile_reference

from agreement import require
from bench_tile import PHI_RMS_TOLERANCE, READOUT_RMS_TOLERANCE

MAX_CASES = 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--random", type=functools.partial(positive_int, high=MAX_CASES), default=2,
                        help="random cases")
    tile = functools.partial(positive_int, high=MAX_TILE)
    parser.add_argument("--tokens", type=tile, default=64, help=f"tokens of the tile (1..{MAX_TILE})")
    parser.add_argument("--dims", type=tile, default=64, help=f"head dimensions of the tile (1..{MAX_TILE})")
    parser.add_argument("--workers", type=positive_int, default=2)
    parser.add_argument("--figure", default=str(Path(__file__).with_name("aged-tile")),
                        help="where to write FIGURE.png and FIGURE.html")
    args = parser.parse_args()
    try:
        for suffix in (".png", ".html"):
            guard_output(Path(args.figure).with_suffix(suffix), REPORT, option="--figure")
        with tempfile.TemporaryDirectory(prefix="gaincell-aged-tile-") as scratch:
            measure(Path(scratch), args)
    except GaincellError as error:
        parser.exit(1, f"{parser.prog}: error: {error}\n")


def measure(work: Path, args):
    design = load_design("cmos-generic")
    started = time.perf_counter()
    characterize(design, work / "char.h5", Grid(retention_stop_s=20e-3), workers=args.workers, progress=False,
                 c2p=True)
    surrogate, _ = fit_characterization(work / "char.h5")
    decay = surrogate["decay"]
    tau = tau_1e(decay.model_id, decay.config, decay.params)
    print(f"characterized + fitted in {time.perf_counter() - started:.1f} s; decay {decay.model_id}, tau_1e "
          f"{tau * 1e3:.3f} ms; ages 0 .. 3 tau over {args.tokens} tokens")
    rng = np.random.default_rng(0)
    levels = np.asarray(design.dac_voltages)
    ages = (args.tokens - 1 - np.arange(args.tokens)) * 3 * tau / max(1, args.tokens - 1)
    saturated = surrogate["c2p"].param("t_max_s")
    failures, readouts = [], None
    for case in range(args.random):
        query = rng.integers(0, 16, args.dims) / 15
        keys, values = (levels[rng.integers(0, 8, (args.tokens, args.dims))] for _ in range(2))
        started = time.perf_counter()
        held_k = aged_voltages(design, keys, ages, work / "aged.h5", args.workers)
        held_v = aged_voltages(design, values, ages, work / "aged.h5", args.workers)
        result = run_tile(design, query, held_k, held_v, work / "tile.h5", workers=args.workers, progress=False,
                          prefix=f"case_{case}")
        seconds = time.perf_counter() - started
        answers = {"layer": tile_reference(surrogate, query, keys, values, ages),
                   "product": tile_reference(surrogate, query, keys, values, ages, product_form=True),
                   "held": tile_reference(surrogate, query, held_k, held_v)}
        errors = {name: result.compare(answer, saturated) for name, answer in answers.items()}
        print(f"random case {case}: {seconds:.0f} s; fired {np.count_nonzero(result.phi(saturated) > 1e-3)}/"
              f"{args.tokens}; " + "; ".join(
                  f"{label}: phi RMS {errors[name]['phi_rms']:.4f}, readout RMS {100 * errors[name]['output_rms']:.2f} %"
                  for name, label in (("layer", "the layer (aged voltages)"), ("product", "the paper's product form"),
                                      ("held", "the SPICE-held voltages, no decay"))))
        failures += [errors["layer"]["phi_rms"] > PHI_RMS_TOLERANCE
                     or errors["layer"]["output_rms"] > READOUT_RMS_TOLERANCE]
        if readouts is None:
            readouts = (result.outputs(saturated), answers["layer"]["output"], answers["product"]["output"])
    held_levels = aged_voltages(design, np.repeat(levels[None], len(ages), 0), ages, work / "aged.h5", args.workers)
    write_figure(args.figure, surrogate, levels, ages, held_levels, readouts)
    require("the layer's decay model vs the aged SPICE tile", not any(failures),
            f"{sum(failures)} of {len(failures)} cases beyond phi RMS {PHI_RMS_TOLERANCE} or readout RMS "
            f"{100 * READOUT_RMS_TOLERANCE:.0f} %")


def write_figure(stem, surrogate, levels, ages, held_levels, readouts):
    """Held voltage by age (SPICE markers, fitted model lines) and case 0's readout per column."""
    decay = surrogate["decay"]
    fine = np.linspace(0, ages.max(), 200)
    held_panel = []
    for i, level in enumerate(levels[1:], start=1):
        model = evaluate(decay.model_id, decay.config, decay.params, t_s=fine, stored_v=np.full_like(fine, level))
        held_panel += [Trace(f"{level:.3f} V, SPICE", ages, held_levels[:, i], "markers", color=i),
                       Trace(f"{level:.3f} V, fitted model", fine, model, color=i)]
    spice, layer, product = readouts
    columns = np.arange(len(spice), dtype=float)
    figure = Figure("aged 64 x 64 tile: SPICE vs the layer's decay (benchmarks/aged_tile.py)", [
        Panel(held_panel, "V", "stored voltage", "storage node held in SPICE (dots) vs the fitted retention model "
              "(lines), per DAC level", "s", "age"),
        Panel([Trace("SPICE tile", columns, spice, "markers"), Trace("layer (aged voltages)", columns, layer),
               Trace("paper's product form", columns, product)], "", "readout (fraction of full scale, -1 .. 1)",
              "random case 0: readout per column", "", "column")], share_x=False)
    png, _ = save_png_and_html(figure, stem)
    print(f"figure: {png}")


if __name__ == "__main__":
    main()
