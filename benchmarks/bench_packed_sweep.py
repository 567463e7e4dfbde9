"""Packed-netlist sweep vs the naive way, on single-cell read points of the default gain cell.

naive : one PySpice simulation per point in this process, through PySpice's high-level API
        (Circuit -> circuit.simulator('ngspice-shared') -> .transient()), charge integrated per point.
packed: gaincell's `run_sweep`: up to 200 points per netlist, chunks on a process pool (one per core).
Both simulate the same circuit (cell + sources, stored value by .ic, gear integration) over the same grid
and their charges are compared; the ratio of wall times is printed.

    .venv/bin/python benchmarks/bench_packed_sweep.py [--points-per-axis 20]
"""
from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time

import numpy as np
from PySpice.Spice.Netlist import Circuit

from gaincell.circuits import Sweep, run_sweep
from gaincell.circuits.cells import (CellRead, cell_instance_params, cell_subcircuits, library_lines,
                                     read_drive_lines)
from gaincell.circuits.engines import libngspice_path
from gaincell.design import load_design


def naive(design, bench: CellRead, points):
    os.environ.setdefault("NGSPICE_LIBRARY_PATH", libngspice_path())
    logging.getLogger("PySpice").setLevel(logging.CRITICAL)
    charges = []
    for point in points:
        circuit = Circuit("naive read point")
        circuit.raw_spice += "\n".join(library_lines(design) + [cell_subcircuits(design)]) + "\n"
        circuit.V("wwl", "wwl", circuit.gnd, 0)
        circuit.V("wbl", "wbl", circuit.gnd, design.zero_v)
        circuit.V("rbl", "rbl", circuit.gnd, design.zero_v)
        circuit.raw_spice += "\n".join(read_drive_lines(design, point["pulse_s"], point["vin_v"], bench.delay_s))
        circuit.raw_spice += (f"\nxc wwl wbl rwl rwlb rbl vdd {design.cell_subckt} params: "
                              f"{cell_instance_params(design)}\n.options method=gear\n")
        simulator = circuit.simulator(simulator="ngspice-shared")
        simulator.initial_condition(**{"xc.sn": point["stored_v"]})
        tran = bench.analysis([point])
        analysis = simulator.transient(step_time=tran.step_s, end_time=tran.stop_s, max_time=tran.tmax_s)
        t = np.array(analysis.time)
        charges.append(np.trapezoid(-np.array(analysis.branches["vrbl"]), t))
    return np.array(charges)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points-per-axis", type=int, default=20, help="stored x pulse grid side (20 -> 400)")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    design = load_design("cmos-generic")
    bench = CellRead(design)
    n = args.points_per_axis
    grid = {"stored_v": np.linspace(0, design.vdd_v, n), "pulse_s": np.linspace(1e-9, design.t_max_s, n),
            "vin_v": [design.v_in_v]}
    sweep = Sweep("bench", bench, grid)
    points = [sweep.point((i, j, 0)) for i in range(n) for j in range(n)]

    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        report = run_sweep(sweep, os.path.join(scratch, "bench.h5"), workers=args.workers, progress=False)
        packed_s = time.perf_counter() - start
    packed = report.data.scalars["charge_c"][:, :, 0].ravel()

    start = time.perf_counter()
    reference = naive(design, bench, points)
    naive_s = time.perf_counter() - start

    full_scale = np.max(np.abs(reference))
    worst = np.max(np.abs(packed - reference)) / full_scale
    print(f"points: {len(points)} single-cell reads ({n} stored x {n} pulse widths), cores: {os.cpu_count()}")
    print(f"naive  (PySpice high-level API, one simulation per point): {naive_s:7.2f} s "
          f"({1e3 * naive_s / len(points):.2f} ms/point)")
    print(f"packed (gaincell run_sweep, {bench.max_pack}/netlist, {report.data.counts()['ok']} ok, "
          f"{len(report.data.decks)} netlists): {packed_s:7.2f} s ({1e3 * packed_s / len(points):.2f} ms/point, "
          "worker start-up included)")
    print(f"speed-up packed vs naive: {naive_s / packed_s:.1f}x")
    print(f"same results: max |charge difference| = {worst:.2e} of full scale ({full_scale * 1e15:.1f} fC)")


if __name__ == "__main__":
    main()
