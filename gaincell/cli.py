"""The `gaincell` command: one entry point, one verb per pipeline stage."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from . import __version__
from .errors import GaincellError

BUILT_CIRCUITS: dict[str, str] = {}  # name -> help; filled as circuit builders land (e.g. "cell")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gaincell")
def main():
    """gaincell: gain-cell analog in-memory attention, from SPICE netlists to language models."""


def _fail(exc: Exception) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(1)


@main.command()
@click.argument("target")
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True, help="HDF5 file to write.")
@click.option("--backend", type=click.Choice(["shared", "batch"]), default="shared", show_default=True,
              help="ngspice as a shared library (PySpice) or as a batch process.")
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Seconds before giving up.")
@click.option("--png", type=click.Path(dir_okay=False), default=None,
              help="Also draw the transient waveforms to this PNG file.")
def simulate(target, out, backend, timeout, png):
    """Simulate TARGET: a SPICE netlist file with its own analysis lines, stored with every vector."""
    from .circuits.simulator import run
    from .store import run_as_sweep, save_sweeps

    path = Path(target)
    if not path.is_file():
        names = ", ".join(BUILT_CIRCUITS) or "none yet"
        _fail(GaincellError(f"TARGET: {target!r} is neither a netlist file nor a built circuit ({names})"))
    try:
        result = run(path.read_text(), timeout=timeout, backend=backend, base_dir=path.parent.resolve())
    except GaincellError as exc:
        _fail(exc)
    sweeps, seen = [], {}
    for kind, vectors in result.plots:
        seen[kind] = seen.get(kind, 0) + 1
        name = kind if seen[kind] == 1 else f"{kind}{seen[kind]}"
        sweeps.append(run_as_sweep(name, vectors, result.netlist.text, {
            "source_file": str(path.resolve()), "simulator": result.simulator, "backend": backend,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "gaincell_version": __version__}))
    save_sweeps(out, sweeps)
    click.echo(f"wrote {out}: " + ", ".join(f"{s.name} ({len(s.waveforms) + len(s.scalars)} vectors)"
                                              for s in sweeps))
    if png:
        _plot_result(result, png, path.name)


def _plot_result(result, png: str, title: str) -> None:
    from .plotting import plot_waveforms

    vectors = result.vectors
    if "time" not in vectors:
        _fail(GaincellError("--png: the last analysis has no time axis (only transients are drawn)"))
    signals = {k: v for k, v in vectors.items() if k != "time"}
    plot_waveforms(png, vectors["time"], signals, title=title)
    click.echo(f"wrote {png}")


if __name__ == "__main__":
    main()
