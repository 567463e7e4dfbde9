"""The circuit verbs: `simulate` (a netlist file or a built circuit) and `characterize` (a cell's sweeps)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import click

from ... import __version__
from ...design import preset_names
from ...errors import ConfigError, InputFileError
from ...outputs import REPORT, SWEEP_FILE, discard_other_kind, guard_output, output_lock
from .options import (SECONDS, Quantity, condition_options, dask_scheduler, option_group, corner_list, design_inputs,
                      force_option, temperature_list)

BUILT_CIRCUITS = {"cell": "one write + read transient of a gain cell (--design, --stored, --pulse)",
                  "array": "a --rows x --cols array read (random DAC levels and pulse widths, --seed; wires optional)",
                  "c2p": "transfer curves of the charge-to-pulse converters (unsigned and signed)",
                  "tile": "a --cols-token attention tile: Q x K array -> C2P -> V array -> signed readout"}

PRESET_LIST = ", ".join(preset_names())


def _provenance(simulator: str, backend: str, **extra) -> dict:
    """The attributes that say how a stored result was made."""
    return {"simulator": simulator, "backend": backend, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "gaincell_version": __version__, **extra}


def save_result(result, out: str, backend: str, **extra) -> list:
    """Store every plot of a `SimResult` as its own group of `out` (tran, op, ...)."""
    from ...store import save_sweeps
    from ...sweep_data import run_as_sweep

    sweeps, seen = [], {}
    for kind, vectors in result.plots:
        seen[kind] = seen.get(kind, 0) + 1
        name = kind if seen[kind] == 1 else f"{kind}{seen[kind]}"
        sweeps.append(run_as_sweep(name, vectors, result.netlist.text, _provenance(result.simulator, backend,
                                                                                    **extra)))
    save_sweeps(out, sweeps)
    return sweeps


@click.command()
@click.argument("target")
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True,
              help="HDF5 file to write (a new file, or a gaincell sweep file whose other sweeps are kept).")
@click.option("--backend", type=click.Choice(["shared", "batch"]), default="shared", show_default=True,
              help="ngspice as a shared library (PySpice) or as a batch process.")
@click.option("--timeout", type=SECONDS, default=120.0, show_default=True, help="Seconds before giving up.")
@click.option("--png", type=click.Path(dir_okay=False), default=None,
              help="Also draw the transient waveforms to this PNG file.")
@click.option("--design", default="cmos-generic", show_default=True,
              help=f"cell: a design preset ({PRESET_LIST}) or a TOML/YAML design file.")
@click.option("--stored", type=Quantity("V", 0.0, 5.0), default="0.7", show_default=True,
              help="cell: value to write, volts (0..VDD).")
@click.option("--pulse", type=Quantity("s", 1e-12, 1e-3), default="10n", show_default=True,
              help="cell: read pulse width, seconds (e.g. 10n or 10ns).")
@option_group("array",
              click.option("--rows", type=click.IntRange(1, 4096), default=64, show_default=True,
                           help="array/tile: rows (head dimension)."),
              click.option("--cols", type=click.IntRange(1, 4096), default=64, show_default=True,
                           help="array/tile: columns (stored tokens)."),
              click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True,
                           help="array/tile: seed of the random inputs."))
@option_group("wires",
              click.option("--bitline-r", type=Quantity("ohm", 0.0, 1e9), default="0", show_default=True,
                           help="array: bit-line resistance per cell (ohm)."),
              click.option("--bitline-c", type=Quantity("F", 0.0, 1e-9), default="0", show_default=True,
                           help="array: bit-line capacitance per cell (F)."),
              click.option("--wordline-r", type=Quantity("ohm", 0.0, 1e9), default="0", show_default=True,
                           help="array: word-line resistance per cell (ohm)."),
              click.option("--wordline-c", type=Quantity("F", 0.0, 1e-9), default="0", show_default=True,
                           help="array: word-line capacitance per cell (F)."),
              click.option("--driver-r", type=Quantity("ohm", 0.0, 1e9), default="0", show_default=True,
                           help="array: row-driver resistance (ohm)."))
@option_group("array_run",
              click.option("--write-path", is_flag=True,
                           help="array: write the stored values through the write path (not .ic)."),
              click.option("--all-cells", is_flag=True,
                           help="array without wires: simulate every cell (default: each distinct stored value x "
                                "pulse width once, exact because such cells are independent)."),
              click.option("--max-seconds", type=Quantity("s", 0.0, 1e6), default=300.0, show_default=True,
                           help="array: refuse an array whose estimated simulation time is longer."),
              click.option("--workers", type=click.IntRange(1, 256), default=None,
                           help="array/c2p/tile: simulator processes (default: one per core)."))
@force_option
def simulate(target, out, backend, timeout, png, design, stored, pulse, array, wires, array_run, force):
    """Simulate TARGET and store every vector in --out (HDF5).

    TARGET is a SPICE netlist file with its own analysis lines (.tran, .op, ...), or a built circuit:
    `cell` (write --stored, then read with a --pulse wide input pulse, for a --design); `array` (a --rows x
    --cols read; with wires the ideal array is read too and the IR-drop error reported); `c2p` (converter
    transfer curves); `tile` (one attention tile of --cols tokens x --rows dimensions).
    """
    path = Path(target)
    built = target in BUILT_CIRCUITS and not path.is_file()
    if not built and not path.is_file():
        names = ", ".join(BUILT_CIRCUITS)
        raise InputFileError(f"TARGET: {target!r} is neither a netlist file nor a built circuit ({names})")
    if built:
        inputs = design_inputs(design)
    else:
        from ...circuits.spice.netlist import read_netlist_file
        from ...circuits.spice.trust import files_read

        inputs = [path, *files_read(read_netlist_file(path), str(path), path.parent.resolve())]
    guard_output(out, SWEEP_FILE, inputs, force)
    if png:
        guard_output(png, REPORT, inputs + [Path(out)], force, option="--png")
    with output_lock(out):
        if force:
            discard_other_kind(out, SWEEP_FILE)
        if target in ("array", "c2p", "tile") and built:
            from ...circuits.builtins import simulate_array, simulate_c2p, simulate_tile
            from ...design import load_setup

            setup = load_setup(design)  # the cell with its design file's [c2p], [dac] and [grid] tables
            chosen = setup.cell
            workers = array_run.workers
            if target == "array":
                lines = simulate_array(chosen, array.rows, array.cols, array.seed, vars(wires), array_run.write_path,
                                       out, workers, array_run.max_seconds, merge_identical=not array_run.all_cells)
            elif target == "c2p":
                lines = simulate_c2p(chosen, out, workers, setup.c2p)
            else:
                lines = simulate_tile(chosen, array.rows, array.cols, array.seed, out, workers, setup.c2p)
            click.echo("\n".join(lines))
            return
        from ...circuits.spice.netlist import read_netlist_file
        from ...circuits.spice.simulator import run

        if built:
            result, extra = simulate_cell(design, stored, pulse, backend, timeout)
        else:
            result = run(read_netlist_file(path), timeout=timeout, backend=backend, base_dir=path.parent.resolve(),
                         source_name=str(path))
            extra = {"source_file": str(path.resolve())}
        sweeps = save_result(result, out, backend, **extra)
    click.echo(f"wrote {out}: " + ", ".join(f"{s.name} ({len(s.waveforms) + len(s.scalars)} vectors)"
                                              for s in sweeps))
    if png:
        _plot_result(result, png, result.netlist.title)


def simulate_cell(design_name: str, stored_v: float, pulse_s: float, backend: str, timeout: float):
    """One write + read transient of a design's cell: the `SimResult` and the attributes stored with it."""
    from ...circuits.cells import cell_transient
    from ...circuits.spice.simulator import run
    from ...design import load_design

    design = load_design(design_name)
    circuit, analysis, save = cell_transient(design, stored_v, pulse_s)
    result = run(circuit, analysis, save=save, timeout=timeout, backend=backend)
    return result, {"design": json.dumps(design.to_dict()), "stored_v": stored_v, "pulse_s": pulse_s}


def _plot_result(result, png: str, title: str) -> None:
    """The last analysis's waveforms to a PNG file (transients only)."""
    from ...plotting import plot_waveforms

    vectors = result.vectors
    if "time" not in vectors:
        raise ConfigError("--png", "the last analysis has no time axis (only transients are drawn)")
    signals = {k: v for k, v in vectors.items() if k != "time"}
    plot_waveforms(png, vectors["time"], signals, title=title)
    click.echo(f"wrote {png}")


@click.command()
@click.option("--design", default="cmos-generic", show_default=True,
              help=f"A design preset ({PRESET_LIST}) or a TOML/YAML design file (its [c2p], [dac] "
                   "and [grid] tables set the converters, the DAC and the sweep grid).")
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True,
              help="Characterization HDF5 file (resumed if it already holds part of the sweeps).")
@click.option("--workers", type=click.IntRange(1, 256), default=None, help="Simulator processes (default: one per core).")
@click.option("--scheduler", default=None, callback=dask_scheduler,
              help="Dask scheduler: 'local-dask' for a LocalCluster or tcp://host:port (default: local processes).")
@click.option("--restart", is_flag=True, help="Discard what --out holds for these sweeps and start over.")
@click.option("--c2p", "with_c2p", is_flag=True,
              help="Also characterize the charge-to-pulse converters (sweeps c2p, c2p_signed; `fit` then uses them).")
@click.option("--dac", "with_dac", is_flag=True,
              help="Also characterize the write DAC's conversions (sweep dac; `fit` then uses its energy).")
@condition_options(several=True)
@click.option("--mc", type=click.IntRange(2, None), default=None,
              help="Also simulate N Monte Carlo cells (at most 10000) with drawn threshold mismatch (sweeps mc_read, "
                   "mc_retention, read_noise; `fit` then adds the variation component), at the one --corner/--temp "
                   "if given; what it will simulate is printed before anything starts.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True,
              help="--mc: seed of the cells' mismatch draws (cell k draws from (seed, k)).")
@force_option
def characterize(design, out, workers, scheduler, restart, with_c2p, with_dac, corners, temps, mc, seed, force):
    """Characterize a cell: write, retention and read/multiply sweeps with energies, into one HDF5 file.

    With --corner and/or --temp every sweep runs at each condition (they are its leading coordinates); the
    figures are then given per condition, and with several conditions the retention against temperature is
    written beside --out (OUT-retention.txt, OUT-retention.png)."""
    from ...circuits.characterize import characterization_sweeps, format_conditions, summarize_conditions
    from ...circuits.sweep import run_sweep
    from ...conditions import Condition, Conditions, at_condition
    from ...design import load_setup

    started = time.perf_counter()
    inputs = design_inputs(design)
    guard_output(out, SWEEP_FILE, inputs, force)
    setup = load_setup(design)
    conditions = Conditions.checked(setup.cell, corner_list(corners), temperature_list(temps))
    several = len(conditions.corners or [0]) * len(conditions.temps_c or [0]) > 1
    if mc and several:
        raise ConfigError("--mc", "runs its cells at one condition: give it at most one --corner and one --temp "
                                  "(run another file for another condition)")
    cell = setup.cell
    monte_carlo_cell = at_condition(cell, Condition((conditions.corners or [cell.corner])[0],
                                                    (conditions.temps_c or [cell.temp_c])[0]))
    if mc:
        from ...circuits.mismatch import monte_carlo_estimate, monte_carlo_sweeps

        click.echo(monte_carlo_estimate(monte_carlo_sweeps(monte_carlo_cell, mc, seed, setup.grid, c2p=setup.c2p)))
    stem = Path(out).with_suffix("")
    retention_files = [stem.with_name(stem.name + f"-retention.{kind}") for kind in ("txt", "png")]
    for report_file in retention_files if several else []:
        guard_output(report_file, REPORT, inputs + [Path(out)], force, option="--out")
    with output_lock(out):
        if force:
            discard_other_kind(out, SWEEP_FILE)
        for sweep in characterization_sweeps(setup.cell, setup.grid, with_c2p, with_dac, setup.c2p, setup.dac,
                                             conditions):
            report = run_sweep(sweep, out, workers=workers, scheduler=scheduler, restart=restart)
            counts = report.data.counts()
            click.echo(f"{sweep.name}: {counts['ok']}/{counts['total']} ok, {counts['failed']} failed "
                       f"({report.simulated} simulated now, {report.wall_s:.1f} s)")
            for message in report.messages[:5]:
                click.echo(f"  failed: {message}")
        if mc:
            from ...circuits.mismatch import run_monte_carlo

            click.echo("\n".join(run_monte_carlo(monte_carlo_cell, out, mc, seed, setup.grid, setup.c2p, workers,
                                                 scheduler, restart)))
        summaries = summarize_conditions(out)
        if several:
            from ...circuits.retention_report import write_retention_report

            retention_files = write_retention_report(out, stem)
    click.echo(format_conditions(summaries))
    if several:
        click.echo(Path(retention_files[0]).read_text().rstrip())
        click.echo(f"wrote {', '.join(map(str, retention_files))}")
    click.echo(f"wrote {out} in {time.perf_counter() - started:.1f} s")
