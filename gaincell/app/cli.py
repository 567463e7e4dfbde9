"""The `gaincell` command: one entry point, one verb per pipeline stage.

Every verb checks its inputs before work starts and never writes over an input or over a file of another kind
(`gaincell.outputs`); any `GaincellError` is printed as one `error:` paragraph with exit status 1 (see
`GaincellGroup`), never as a traceback. The verbs live in `gaincell.app.commands` by theme: `circuits` (simulate,
characterize), `surrogate` (fit, validate, attention, energy), `language_model` (adapt, eval, generate) and
`files` (inspect, plot, export); `demo` (below) runs the whole pipeline (`gaincell.app.demo`).
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import traceback
from pathlib import Path

import click

from .. import __version__
from .commands import circuits, explore, files, language_model, surrogate
from .commands.options import design_inputs, force_option
from ..errors import GaincellError
from ..interrupts import STOP_SIGNALS, import_deferred, interrupt_behind, stop_on_signals
from ..outputs import disk_full, is_disk_full, output_lock


def torch_out_of_memory() -> tuple[type, ...]:
    """torch's out-of-memory errors, when torch is already loaded (it is never imported just for this)."""
    torch = sys.modules.get("torch")
    return (torch.OutOfMemoryError,) if torch is not None and hasattr(torch, "OutOfMemoryError") else ()


TORCH_VERBS = {"attention", "energy", "adapt", "eval", "generate", "explore", "demo"}  # import torch (slow to load)


def echo_any_file_name() -> None:
    """Let the console streams print a file name whose bytes are not UTF-8 as those bytes (Python keeps them
    as lone surrogates, which a UTF-8 terminal's strict stream refuses in the middle of a message)."""
    for stream in (sys.stdout, sys.stderr):
        if callable(getattr(stream, "reconfigure", None)):
            with contextlib.suppress(ValueError, OSError):  # a closed or detached stream stays as it is
                stream.reconfigure(errors="surrogateescape")


class GaincellGroup(click.Group):
    """Runs a verb and turns the package's errors into one clear paragraph and exit status 1.

    Ctrl-C (SIGINT) and SIGTERM both raise KeyboardInterrupt in every verb (`stop_on_signals`), so the same
    clean-up runs (temporary files removed, finished work kept for a resume) and the verb exits with 130 after
    one line; an unexpected exception is reported as an internal error in one paragraph (GAINCELL_DEBUG=1
    shows the traceback)."""

    def invoke(self, ctx):
        stop_on_signals()
        echo_any_file_name()
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit):
            raise
        except BaseException as exc:
            interrupt = interrupt_behind(exc)
            if interrupt is not None:
                stopped(interrupt)
            report(exc)

    def resolve_command(self, ctx, args):
        """The verb to run, once the compiled libraries it needs are loaded with signals held back."""
        name, command, rest = super().resolve_command(ctx, args)
        import_deferred("numpy", "h5py", *(("torch",) if name in TORCH_VERBS else ()))
        return name, command, rest


def stopped(interrupt: KeyboardInterrupt) -> None:
    """One line and exit status 130; clean-up already ran while the interrupt unwound."""
    for number in STOP_SIGNALS:  # a second signal now would only cut the message
        signal.signal(number, signal.SIG_IGN)
    click.echo(f"\n{interrupt or 'interrupted'}: stopped; temporary files were removed and finished work kept "
               "(characterize and adapt resume from it when run again)", err=True)
    sys.exit(130)


def report(exc: BaseException) -> None:
    """One `error:` paragraph for `exc` and exit 1 (2 for a bug)."""
    if isinstance(exc, GaincellError):
        fail(exc)
    if is_disk_full(exc):  # a writer below the package's own (transformers, safetensors, tokenizers)
        where = getattr(exc, "filename", None)
        fail(disk_full(Path(where), exc) if where else GaincellError(
            f"no space left on the device of an output ({exc}); free some space and run again"))
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        fail(GaincellError(f"{where}{exc.strerror or exc}"))
    # e.g. a file declaring a huge dataset, or sizes too large for this machine (torch's CPU allocator says so
    # in a RuntimeError)
    if isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)):
        fail(GaincellError(f"not enough memory for what the inputs ask ({str(exc).splitlines()[0][:300]}); check "
                           "the input files and the sizes given on the command line"))
    if isinstance(exc, RecursionError):
        fail(GaincellError("an input is nested too deeply to be read (e.g. a JSON attribute of an HDF5 file); "
                           "check the input files"))
    if isinstance(exc, torch_out_of_memory()):
        fail(GaincellError(f"not enough memory: {str(exc).splitlines()[0][:200]}; use smaller sizes"))
    if not isinstance(exc, Exception):
        raise exc
    if any("/h5py/" in frame.filename for frame in traceback.extract_tb(exc.__traceback__)):
        fail(GaincellError(f"an HDF5 input could not be read ({type(exc).__name__}: {exc}); it is damaged "
                           "or was not written by gaincell"))
    # a bug: still one paragraph for the user
    if os.environ.get("GAINCELL_DEBUG"):
        traceback.print_exception(exc)
    click.echo(f"error: internal error ({type(exc).__name__}: {exc}); this is a bug in gaincell, please "
               "report it with the command line (GAINCELL_DEBUG=1 prints the traceback)", err=True)
    sys.exit(2)


@click.group(cls=GaincellGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gaincell")
def main():
    """gaincell: gain-cell analog in-memory attention, from SPICE netlists to language models."""


def fail(exc: Exception) -> None:
    """Print one `error:` paragraph and exit with status 1."""
    click.echo(f"error: {exc}", err=True)
    sys.exit(1)


@click.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="demo-output", show_default=True,
              help="Folder for the demo's files and report.html.")
@click.option("--design", default="cmos-generic", show_default=True, help="Design preset or TOML/YAML file.")
@click.option("--workers", type=click.IntRange(1, 256), default=None, help="Simulator processes (default: one per core).")
@click.option("--lm/--no-lm", default=True, show_default=True,
              help="Run the language-model stage (the shipped gain-cell SmolLM2-135M re-targeted to this cell, on "
                   "CPU; a few minutes).")
@click.option("--lambada", type=click.Path(dir_okay=False, exists=True), default=None,
              help="A LAMBADA .jsonl the language-model stage also scores (make demo gives ../shared's when present).")
@force_option
def demo(out_dir, design, workers, lm, lambada, force):
    """The main job on embedded defaults: simulate the default cell, characterize, fit, validate, build the
    attention layer, and write report.html listing every stage."""
    from .demo import check_demo_folder, run_demo

    if lm and lambada:
        from ..adapt.text import check_lambada_file

        check_lambada_file(lambada)  # read minutes later, by the language-model stage: checked now
    folder = check_demo_folder(Path(out_dir), design_inputs(design), force)
    with output_lock(folder / ".gaincell-demo"):
        report, seconds = run_demo(folder, design, workers, lm, say=click.echo,
                                   lambada=Path(lambada).resolve() if lambada else None, gaincell=main)
    click.echo(f"done in {seconds:.1f} s: {report}")


for command in (circuits.simulate, circuits.characterize, surrogate.fit, surrogate.validate, surrogate.attention,
                surrogate.energy, language_model.adapt, language_model.eval_command, language_model.generate_command,
                files.inspect, files.plot, files.export, explore.explore, demo):
    main.add_command(command)


def run() -> None:
    """The `gaincell` command (console script and `python -m gaincell.app.cli`): `main`, and once it is done, signals
    no longer interrupt the exit (a late Ctrl-C would print a traceback from the interpreter's shutdown)."""
    if hasattr(sys.stdout, "reconfigure"):  # a redirected log keeps stage lines in order with stderr's
        sys.stdout.reconfigure(line_buffering=True)
    try:
        main()
    finally:
        for number in STOP_SIGNALS:
            signal.signal(number, signal.SIG_IGN)


if __name__ == "__main__":
    run()
