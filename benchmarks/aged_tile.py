"""An aged attention tile in SPICE against the torch layer's decay model (issue 26's check).

Characterizes the default cell with its converters and fits the surrogate, then per case writes a random tile
(query on 16 pulse widths, keys and values on the DAC levels) whose tokens were written 0 .. 3 tau ago (tau:
the fitted decay's 1/e time, ages evenly spread, the newest token fresh). SPICE holds every stored level for
the longest age (retention) and reads the tile with the voltages each cell holds at its token's age. Printed
per case, in the units of `bench_tile.py` (phi RMS of 1; readout RMS in % of the output range):
- the layer: fresh voltages with the layer's decay model (each product times the decay factor at its age);
- the decayed voltages: the layer's transfers on the voltages SPICE held, no decay factor - what the circuit
  does, and what a faithful decay model must reproduce.
Exits with status 1 when the layer misses the fresh tile's targets (phi RMS 0.02, readout RMS 2 %).

    .venv/bin/python benchmarks/aged_tile.py [--random 2] [--tokens 64] [--dims 64] [--workers 2]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from gaincell.circuits.characterize import characterize
from gaincell.circuits.tile import aged_voltages, run_tile
from gaincell.compact import tau_1e
from gaincell.design import load_design
from gaincell.fitting.fit import fit_characterization
from gaincell.periphery import Grid
from gaincell.surrogate.tile_reference import tile_reference

from agreement import require
from bench_tile import PHI_RMS_TOLERANCE, READOUT_RMS_TOLERANCE


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--random", type=int, default=2, help="random cases")
    parser.add_argument("--tokens", type=int, default=64, help="tokens of the tile (1..64)")
    parser.add_argument("--dims", type=int, default=64, help="head dimensions of the tile")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gaincell-aged-tile-") as scratch:
        measure(Path(scratch), args)


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
    failures = []
    for case in range(args.random):
        query = rng.integers(0, 16, args.dims) / 15
        keys, values = (levels[rng.integers(0, 8, (args.tokens, args.dims))] for _ in range(2))
        started = time.perf_counter()
        held_k = aged_voltages(design, keys, ages, work / "aged.h5", args.workers)
        held_v = aged_voltages(design, values, ages, work / "aged.h5", args.workers)
        result = run_tile(design, query, held_k, held_v, work / "tile.h5", workers=args.workers, progress=False,
                          prefix=f"case_{case}")
        seconds = time.perf_counter() - started
        layer = result.compare(tile_reference(surrogate, query, keys, values, ages), saturated)
        held = result.compare(tile_reference(surrogate, query, held_k, held_v), saturated)
        print(f"random case {case}: {seconds:.0f} s; fired {np.count_nonzero(result.phi(saturated) > 1e-3)}/"
              f"{args.tokens}; the layer (product x decay): phi RMS {layer['phi_rms']:.4f}, readout RMS "
              f"{100 * layer['output_rms']:.2f} %; the decayed voltages, no decay factor: phi RMS "
              f"{held['phi_rms']:.4f}, readout RMS {100 * held['output_rms']:.2f} %")
        failures += [layer["phi_rms"] > PHI_RMS_TOLERANCE or layer["output_rms"] > READOUT_RMS_TOLERANCE]
    require("the layer's decay model vs the aged SPICE tile", not any(failures),
            f"{sum(failures)} of {len(failures)} cases beyond phi RMS {PHI_RMS_TOLERANCE} or readout RMS "
            f"{100 * READOUT_RMS_TOLERANCE:.0f} %: the layer decays each product toward zero, the cell its stored "
            "voltage toward the hold level (issue 26)")


if __name__ == "__main__":
    main()
