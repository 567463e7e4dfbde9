"""`gaincell explore`: a design-space exploration (`gaincell.app.explore`)."""
from __future__ import annotations

from pathlib import Path

import click

from ..explore import PRESETS, SAMPLINGS

SHIPPED_LAMBADA = "lambada-test-first200.jsonl"  # package data: the first 200 items of LAMBADA's test set


@click.command()
@click.option("--design", default=None, help="The base design: a preset or a TOML/YAML file [default: cmos-generic].")
@click.option("--vary", "varies", multiple=True, metavar="FIELD=V1,V2,...",
              help="A design field and its values (repeat for more fields; every combination is a point): a cell "
                   "field (cs_f=2f,4f; SPICE suffixes allowed), TABLE.FIELD for [c2p], [dac], [grid] and the "
                   "transistors (c2p.counter_levels=8,16; write.w_m=0.2u,0.4u).")
@click.option("--sampling", type=click.Choice(SAMPLINGS), default=None,
              help="Which points: every combination (grid, the default), or the first values and each other value "
                   "alone (one-at-a-time: 1 + the other values' count points).")
@click.option("--preset", type=click.Choice(list(PRESETS)), default=None,
              help="A small exploration instead of --design/--vary: Cs, write-transistor width, DAC levels and readout "
                   "levels, each changed alone from the design's own values (5 points; wall times in the README).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Folder of the exploration: points/NAME/ per point, exploration.nc, report.html. A re-run with "
                   "the same plan resumes it.")
@click.option("--scheduler", default="local", show_default=True,
              help="'local' for a Dask LocalCluster on this machine, or a Dask scheduler's address "
                   "(tcp://host:8786) whose workers share this file system.")
@click.option("--workers", type=click.IntRange(1, 256), default=2, show_default=True,
              help="Points run at once on the local cluster (one process each).")
@click.option("--spice-workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="ngspice processes inside each point.")
@click.option("--lm-steps", type=click.IntRange(0, 10_000), default=12, show_default=True,
              help="Distillation steps re-targeting the shipped gain-cell SmolLM2-135M to each point's cell before "
                   "it is scored (0: no language model; a few CPU minutes per point).")
@click.option("--lambada", type=click.Path(dir_okay=False, exists=True), default=None,
              help="A LAMBADA .jsonl each point's model is also scored on (first --lambada-items items) [default: "
                   "the first 200 items of LAMBADA's test set, shipped with gaincell].")
@click.option("--lambada-items", type=click.IntRange(0, 100_000), default=50, show_default=True,
              help="LAMBADA items scored per point (0: none).")
@click.option("--max-validation-error", type=click.FloatRange(0.0, 1.0, min_open=True), default=0.05,
              show_default=True, help="A point whose fit errs more than this (fraction of full scale) at fresh SPICE "
                                      "points is recorded as out of tolerance and not scored further.")
def explore(design, varies, sampling, preset, out_dir, scheduler, workers, spice_workers, lm_steps, lambada,
            lambada_items, max_validation_error):
    """Every combination of the given design-field values (or one change at a time, or a --preset), each
    taken through characterize (with the periphery), fit, validate, retention at 85 C, latency, energy and area
    per token and the re-targeted language model; one dataset (exploration.nc, xarray-readable) and report.html
    with the Pareto fronts."""
    from ...errors import ConfigError
    from ..explore import explore as run, parse_varies
    from ..explore_point import PointSettings

    if preset:
        if design or varies or sampling:
            raise ConfigError("--preset", f"{preset} sets the design, the fields and the sampling; give it without "
                                          "--design, --vary and --sampling")
        design, plan = PRESETS[preset]
        sampling = "one-at-a-time"
    else:
        plan = parse_varies(varies)  # refuses an empty --vary, naming it

    if not lambada_items:
        lambada = None
    elif lambada is not None:
        from ...adapt.text import check_lambada_file

        check_lambada_file(lambada)  # read by every point's language-model stage: checked once, now
    else:
        from ...resources import data_path

        lambada = data_path(SHIPPED_LAMBADA)
    settings = PointSettings(spice_workers=spice_workers, max_validation_rms=max_validation_error, lm_steps=lm_steps,
                             lambada=str(Path(lambada).resolve()) if lambada else None, lambada_items=lambada_items)
    root = click.get_current_context().find_root().command
    report, results = run(Path(out_dir), design or "cmos-generic", plan, settings, sampling=sampling or "grid",
                          scheduler=scheduler, workers=workers, say=click.echo, gaincell=root)
    done = sum(r.get("status") == "ok" for r in results)
    click.echo(f"{done} of {len(results)} points ok; dataset {Path(out_dir) / 'exploration.nc'}; report {report}")
