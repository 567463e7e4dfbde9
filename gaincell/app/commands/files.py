"""The verbs that read any HDF5 file gaincell writes: `inspect` (what it holds), `plot` (waveforms to PNG or
HTML) and `export` (an ngspice raw file or CSV)."""
from __future__ import annotations

import click

from ...outputs import REPORT, guard_output
from .options import force_option, point_list

@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--max-listed", type=click.IntRange(0, 10**6), default=10, show_default=True,
              help="Failed/missing points listed per sweep.")
def inspect(file, max_listed):
    """List what a gaincell HDF5 file holds: sweeps, signals and units, provenance, failed and missing points."""
    from ..inspection import describe

    click.echo(describe(file, max_listed))


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--sweep", required=True, help="Sweep (group) name; `gaincell inspect FILE` lists them.")
@click.option("--signal", "signals", multiple=True, required=True, help="Waveform, e.g. 'v(x0.sn)' (repeatable).")
@click.option("--points", default=None, help="Flat point numbers, e.g. 0,5,12 (default: the first completed).")
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True,
              help="Output file: .png for an image, .html for an interactive page (works offline).")
@force_option
def plot(file, sweep, signals, points, out, force):
    """Draw waveforms of selected points of a sweep to PNG or interactive HTML."""
    from ..inspection import sweep_figure
    from ...plotting import save_figure

    guard_output(out, REPORT, [file], force)
    click.echo(save_figure(sweep_figure(file, sweep, list(signals), point_list(points)), out))


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--sweep", required=True, help="Sweep (group) name.")
@click.option("--format", "fmt", type=click.Choice(["raw", "csv"]), required=True,
              help="raw: ngspice binary raw file (one plot per point; waveform viewers open it); csv: a table.")
@click.option("--points", default=None, help="Flat point numbers (default: every completed point).")
@click.option("--signal", "signals", multiple=True, help="Signals to include (default: all).")
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True)
@force_option
def export(file, sweep, fmt, points, signals, out, force):
    """Export a sweep's completed points as an ngspice raw file or CSV."""
    from ..inspection import export as run_export

    guard_output(out, REPORT, [file], force)
    click.echo(run_export(file, sweep, fmt, out, point_list(points), list(signals) or None))
