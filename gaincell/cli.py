"""The `gaincell` command: one entry point, one verb per pipeline stage.

Every verb checks its inputs before work starts and never writes over an input or over a file of another kind
(`gaincell.outputs`); any `GaincellError` is printed as one `error:` paragraph with exit status 1 (see
`GaincellGroup`), never as a traceback.
"""
from __future__ import annotations

import json
import math
import os
import re
import sys
import time
import traceback
from pathlib import Path

import click

from . import __version__
from .errors import ConfigError, GaincellError, InputFileError
from .outputs import (REPORT, SURROGATE, SWEEP_FILE, atomic_write_text, discard_other_kind, guard_output,
                      output_lock)

BUILT_CIRCUITS = {"cell": "one write + read transient of a gain cell (--design, --stored, --pulse)",
                  "array": "a --rows x --cols array read (random DAC levels and pulse widths, --seed; wires optional)",
                  "c2p": "transfer curves of the charge-to-pulse converters (unsigned and signed)",
                  "tile": "a --cols-token attention tile: Q x K array -> C2P -> V array -> signed readout"}
_SI_PREFIX = {"f": 1e-15, "p": 1e-12, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "meg": 1e6, "g": 1e9, "t": 1e12}
_QUANTITY = re.compile(r"([-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)\s*(meg|[fpnumkgt])?\s*([a-z]*)")


def parse_si(text: str, parameter: str, unit: str = "") -> float:
    """A number with an optional SPICE prefix and, at most, the expected unit: '10n', '10ns', '1.5e-9 s',
    '2.5meg', '4kohm'. Anything else ('10x', 'nan', '1 V' for seconds) is refused naming the parameter."""
    match = _QUANTITY.fullmatch(text.strip().lower())
    allowed_units = {"", unit.lower()} | ({"ohms"} if unit.lower() == "ohm" else set())
    if not match or match.group(3) not in allowed_units:
        example = f"0.7, 10n{unit} or 1.5e-9" if unit else "0.7, 10n or 1.5e-9"
        raise ConfigError(parameter, f"{text!r} is not a number like {example} (an SI prefix f p n u m k meg g t "
                                     f"and {'the unit ' + repr(unit) if unit else 'no unit'} at most)")
    value = float(match.group(1)) * _SI_PREFIX.get(match.group(2) or "", 1.0)
    if not math.isfinite(value):
        raise ConfigError(parameter, f"{text!r} is not a finite number")
    return value


class Quantity(click.ParamType):
    """A click option value parsed by `parse_si` and kept within [low, high]."""

    name = "quantity"

    def __init__(self, unit: str = "", low: float = -math.inf, high: float = math.inf):
        self.unit, self.low, self.high = unit, low, high

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        else:
            try:
                number = parse_si(str(value), param.opts[0] if param else "value", self.unit)
            except ConfigError as exc:
                self.fail(exc.problem, param, ctx)
        if not (math.isfinite(number) and self.low <= number <= self.high):
            self.fail(f"{value!r} is outside [{self.low:g}, {self.high:g}] {self.unit}".rstrip(), param, ctx)
        return number


SECONDS = Quantity("s", 1e-12, 1e6)


def torch_out_of_memory() -> tuple[type, ...]:
    """torch's out-of-memory errors, when torch is already loaded (it is never imported just for this)."""
    torch = sys.modules.get("torch")
    return (torch.OutOfMemoryError,) if torch is not None and hasattr(torch, "OutOfMemoryError") else ()


class GaincellGroup(click.Group):
    """Runs a verb and turns the package's errors into one clear paragraph and exit status 1.

    KeyboardInterrupt and SIGTERM exit with 130 (whatever was half-written has been removed by then); an
    unexpected exception is reported as an internal error in one paragraph (GAINCELL_DEBUG=1 shows the
    traceback)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except GaincellError as exc:
            fail(exc)
        except KeyboardInterrupt as exc:
            click.echo(f"\n{exc or 'interrupted'}; partial output was not kept (re-run to resume where "
                       "supported)", err=True)
            sys.exit(130)
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            fail(GaincellError(f"{where}{exc.strerror or exc}"))
        except MemoryError as exc:  # e.g. a file declaring a huge dataset, or sizes too large for this machine
            fail(GaincellError(f"not enough memory for what the inputs ask ({exc}); check the input files and the "
                               "sizes given on the command line"))
        except RecursionError:
            fail(GaincellError("an input is nested too deeply to be read (e.g. a JSON attribute of an HDF5 file); "
                               "check the input files"))
        except torch_out_of_memory() as exc:
            fail(GaincellError(f"not enough memory: {str(exc).splitlines()[0][:200]}; use smaller sizes"))
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit):
            raise
        except Exception as exc:
            if any("/h5py/" in frame.filename for frame in traceback.extract_tb(exc.__traceback__)):
                fail(GaincellError(f"an HDF5 input could not be read ({type(exc).__name__}: {exc}); it is damaged "
                                   "or was not written by gaincell"))
            # a bug: still one paragraph for the user
            if os.environ.get("GAINCELL_DEBUG"):
                traceback.print_exc()
            click.echo(f"error: internal error ({type(exc).__name__}: {exc}); this is a bug in gaincell, please "
                       "report it with the command line (GAINCELL_DEBUG=1 prints the traceback)", err=True)
            sys.exit(2)


@click.group(cls=GaincellGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gaincell")
def main():
    """gaincell: gain-cell analog in-memory attention, from SPICE netlists to language models."""


def fail(exc: Exception) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(1)


def _force_option(function):
    return click.option("--force", is_flag=True,
                        help="Replace an existing output file of another kind (never an input).")(function)


def _design_input(design: str) -> list[Path]:
    """The design file and its model libraries among a command's inputs (a preset's files are shipped ones)."""
    path = Path(design)
    if not path.is_file():
        return []
    from .design import CellDesign, load_design

    chosen = load_design(design)
    return [path] + [CellDesign.library_path(library) for library in chosen.model_libraries]


def _provenance(simulator: str, backend: str, **extra) -> dict:
    return {"simulator": simulator, "backend": backend, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "gaincell_version": __version__, **extra}


def save_result(result, out: str, backend: str, **extra) -> list:
    """Store every plot of a `SimResult` as its own group of `out` (tran, op, ...)."""
    from .store import run_as_sweep, save_sweeps

    sweeps, seen = [], {}
    for kind, vectors in result.plots:
        seen[kind] = seen.get(kind, 0) + 1
        name = kind if seen[kind] == 1 else f"{kind}{seen[kind]}"
        sweeps.append(run_as_sweep(name, vectors, result.netlist.text, _provenance(result.simulator, backend,
                                                                                    **extra)))
    save_sweeps(out, sweeps)
    return sweeps


@main.command()
@click.argument("target")
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True,
              help="HDF5 file to write (a new file, or a gaincell sweep file whose other sweeps are kept).")
@click.option("--backend", type=click.Choice(["shared", "batch"]), default="shared", show_default=True,
              help="ngspice as a shared library (PySpice) or as a batch process.")
@click.option("--timeout", type=SECONDS, default=120.0, show_default=True, help="Seconds before giving up.")
@click.option("--png", type=click.Path(dir_okay=False), default=None,
              help="Also draw the transient waveforms to this PNG file.")
@click.option("--design", default="cmos-generic", show_default=True,
              help="cell: a design preset (cmos-generic, igzo-generic) or a TOML/YAML design file.")
@click.option("--stored", type=Quantity("V", 0.0, 5.0), default="0.7", show_default=True,
              help="cell: value to write, volts (0..VDD).")
@click.option("--pulse", type=Quantity("s", 1e-12, 1e-3), default="10n", show_default=True,
              help="cell: read pulse width, seconds (e.g. 10n or 10ns).")
@click.option("--rows", type=click.IntRange(1, 4096), default=64, show_default=True, help="array/tile: rows (head dimension).")
@click.option("--cols", type=click.IntRange(1, 4096), default=64, show_default=True, help="array/tile: columns (stored tokens).")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True,
              help="array/tile: seed of the random inputs.")
@click.option("--bitline-r", type=Quantity("ohm", 0.0, 1e9), default="0", show_default=True,
              help="array: bit-line resistance per cell (ohm).")
@click.option("--bitline-c", type=Quantity("F", 0.0, 1e-9), default="0", show_default=True,
              help="array: bit-line capacitance per cell (F).")
@click.option("--wordline-r", type=Quantity("ohm", 0.0, 1e9), default="0", show_default=True,
              help="array: word-line resistance per cell (ohm).")
@click.option("--wordline-c", type=Quantity("F", 0.0, 1e-9), default="0", show_default=True,
              help="array: word-line capacitance per cell (F).")
@click.option("--driver-r", type=Quantity("ohm", 0.0, 1e9), default="0", show_default=True,
              help="array: row-driver resistance (ohm).")
@click.option("--write-path", is_flag=True, help="array: write the stored values through the write path (not .ic).")
@click.option("--all-cells", is_flag=True,
              help="array without wires: simulate every cell (default: each distinct stored value x pulse width once, "
                   "exact because such cells are independent).")
@click.option("--max-seconds", type=Quantity("s", 0.0, 1e6), default=300.0, show_default=True,
              help="array: refuse an array whose estimated simulation time is longer.")
@click.option("--workers", type=click.IntRange(1, 256), default=None,
              help="array/c2p/tile: simulator processes (default: one per core).")
@_force_option
def simulate(target, out, backend, timeout, png, design, stored, pulse, rows, cols, seed, bitline_r, bitline_c,
             wordline_r, wordline_c, driver_r, write_path, all_cells, max_seconds, workers, force):
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
        inputs = _design_input(design)
    else:
        from .circuits.netlist import read_netlist_file
        from .circuits.trust import files_read

        inputs = [path, *files_read(read_netlist_file(path), str(path), path.parent.resolve())]
    guard_output(out, SWEEP_FILE, inputs, force)
    if png:
        guard_output(png, REPORT, inputs + [Path(out)], force, option="--png")
    with output_lock(out):
        if force:
            discard_other_kind(out, SWEEP_FILE)
        if target in ("array", "c2p", "tile") and built:
            from .circuits.builtins import simulate_array, simulate_c2p, simulate_tile
            from .design import load_design

            chosen = load_design(design)
            if target == "array":
                wires = {"bitline_r": bitline_r, "bitline_c": bitline_c, "wordline_r": wordline_r,
                         "wordline_c": wordline_c, "driver_r": driver_r}
                lines = simulate_array(chosen, rows, cols, seed, wires, write_path, out, workers, max_seconds,
                                       merge_identical=not all_cells)
            elif target == "c2p":
                lines = simulate_c2p(chosen, out, workers)
            else:
                lines = simulate_tile(chosen, rows, cols, seed, out, workers)
            click.echo("\n".join(lines))
            return
        from .circuits.netlist import read_netlist_file
        from .circuits.simulator import run

        if built:
            result, extra = _simulate_cell(design, stored, pulse, backend, timeout)
        else:
            result = run(read_netlist_file(path), timeout=timeout, backend=backend, base_dir=path.parent.resolve(),
                         source_name=str(path))
            extra = {"source_file": str(path.resolve())}
        sweeps = save_result(result, out, backend, **extra)
    click.echo(f"wrote {out}: " + ", ".join(f"{s.name} ({len(s.waveforms) + len(s.scalars)} vectors)"
                                              for s in sweeps))
    if png:
        _plot_result(result, png, result.netlist.title)


def _simulate_cell(design_name: str, stored_v: float, pulse_s: float, backend: str, timeout: float):
    from .circuits.cells import cell_transient
    from .circuits.simulator import run
    from .design import load_design

    design = load_design(design_name)
    circuit, analysis, save = cell_transient(design, stored_v, pulse_s)
    result = run(circuit, analysis, save=save, timeout=timeout, backend=backend)
    return result, {"design": json.dumps(design.to_dict()), "stored_v": stored_v, "pulse_s": pulse_s}


def _plot_result(result, png: str, title: str) -> None:
    from .plotting import plot_waveforms

    vectors = result.vectors
    if "time" not in vectors:
        raise ConfigError("--png", "the last analysis has no time axis (only transients are drawn)")
    signals = {k: v for k, v in vectors.items() if k != "time"}
    plot_waveforms(png, vectors["time"], signals, title=title)
    click.echo(f"wrote {png}")


@main.command()
@click.option("--design", default="cmos-generic", show_default=True,
              help="A design preset (cmos-generic, igzo-generic) or a TOML/YAML design file.")
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True,
              help="Characterization HDF5 file (resumed if it already holds part of the sweeps).")
@click.option("--workers", type=click.IntRange(1, 256), default=None, help="Simulator processes (default: one per core).")
@click.option("--scheduler", default=None,
              help="Dask scheduler: 'local-dask' for a LocalCluster or tcp://host:port (default: local processes).")
@click.option("--restart", is_flag=True, help="Discard what --out holds for these sweeps and start over.")
@click.option("--c2p", "with_c2p", is_flag=True,
              help="Also characterize the charge-to-pulse converters (sweeps c2p, c2p_signed; `fit` then uses them).")
@click.option("--dac", "with_dac", is_flag=True,
              help="Also characterize the write DAC's conversions (sweep dac; `fit` then uses its energy).")
@_force_option
def characterize(design, out, workers, scheduler, restart, with_c2p, with_dac, force):
    """Characterize a cell: write, retention and read/multiply sweeps with energies, into one HDF5 file."""
    from .circuits.characterize import characterization_sweeps, format_summary, summarize
    from .circuits.sweep import run_sweep
    from .design import load_design

    started = time.perf_counter()
    guard_output(out, SWEEP_FILE, _design_input(design), force)
    chosen = load_design(design)
    with output_lock(out):
        if force:
            discard_other_kind(out, SWEEP_FILE)
        for sweep in characterization_sweeps(chosen, c2p=with_c2p, dac=with_dac):
            report = run_sweep(sweep, out, workers=workers, scheduler=scheduler, restart=restart)
            counts = report.data.counts()
            click.echo(f"{sweep.name}: {counts['ok']}/{counts['total']} ok, {counts['failed']} failed "
                       f"({report.simulated} simulated now, {report.wall_s:.1f} s)")
            for message in report.messages[:5]:
                click.echo(f"  failed: {message}")
        figures = summarize(out)
    click.echo(format_summary(figures))
    click.echo(f"wrote {out} in {time.perf_counter() - started:.1f} s")


@main.command()
@click.argument("characterization", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True, help="Surrogate HDF5 file to write.")
@click.option("--model", type=click.Choice(["poly", "ekv"]), default="poly", show_default=True,
              help="Multiply model: the paper's polynomial family or the EKV complementary-branch model.")
@click.option("--order", type=click.IntRange(1, 9), default=5, show_default=True, help="Polynomial order (poly model).")
@click.option("--decay-model", type=click.Choice(["leakage", "stretched", "exponential"]), default="leakage",
              show_default=True, help="Retention model.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for the fit report (fit.png, fit.txt); default: beside --out.")
@_force_option
def fit(characterization, out, model, order, decay_model, report_dir, force):
    """Fit a characterization file into a surrogate HDF5 file, with a report (PNG + text)."""
    from .fitting.fit import fit_characterization
    from .fitting.report import plot_report, text_report

    folder = Path(report_dir) if report_dir else Path(out).parent
    stem = Path(out).stem
    png, txt = folder / f"{stem}-fit.png", folder / f"{stem}-fit.txt"
    guard_output(out, SURROGATE, [characterization], force)
    for report_file in (png, txt):
        guard_output(report_file, REPORT, [characterization, out], force, option="--report")
    with output_lock(out):
        try:
            surrogate, outcomes = fit_characterization(characterization, model, order, decay_model)
        except (ValueError, KeyError, TypeError) as exc:  # contents gaincell did not write (edited, damaged)
            raise InputFileError(f"{characterization}: its sweeps cannot be fitted, the file holds values or "
                                 f"attributes gaincell does not write ({type(exc).__name__}: {str(exc)[:200]})") from None
        text = text_report(surrogate)
        plot_report(png, outcomes)
        atomic_write_text(txt, text)
        surrogate.save(out)
    click.echo(text)
    click.echo(f"wrote {out}, {png}, {txt}")


@main.command()
@click.argument("surrogate_path", type=click.Path(exists=True, dir_okay=False))
@click.option("--design", default="cmos-generic", show_default=True, help="The design the surrogate describes.")
@click.option("--points", default="7x5x3", show_default=True,
              help="Random stored x pulse x input values (a random grid the fit never saw).")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True)
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
              help="Where to keep the fresh SPICE results (default: beside the surrogate).")
@_force_option
def validate(surrogate_path, design, points, seed, out, force):
    """Check a surrogate against fresh SPICE runs at random points; report its error."""
    from .design import load_design
    from .fitting.validate import validate_cell
    from .surrogate.file import Surrogate

    match = re.fullmatch(r"\s*(\d{1,3})\s*x\s*(\d{1,3})\s*x\s*(\d{1,3})\s*", points.lower())
    counts = tuple(int(p) for p in match.groups()) if match else ()
    if not counts or min(counts) < 1 or math.prod(counts) > 100_000:
        raise ConfigError("--points", f"give three positive counts like 7x5x3 (at most 100000 points in all), got "
                                      f"{points!r}")
    target = out or str(Path(surrogate_path).with_suffix(".validation.h5"))
    guard_output(target, SWEEP_FILE, [surrogate_path, *_design_input(design)], force)
    surrogate = Surrogate.load(surrogate_path)
    with output_lock(target):
        if force:
            discard_other_kind(target, SWEEP_FILE)
        report = validate_cell(surrogate, load_design(design), target, counts, seed)
    click.echo(f"multiply ({surrogate['multiply'].model_id}): {report}")
    click.echo(f"fresh SPICE results in {target}")


def _report_folder(out_dir: str, names: list[str], inputs=(), force: bool = False) -> Path:
    """An output folder and the fixed-name report files a verb writes into it, checked before any work."""
    folder = Path(out_dir)
    if folder.exists() and not folder.is_dir():
        raise ConfigError("--out", f"{out_dir} exists and is not a folder")
    for name in names:
        guard_output(folder / name, REPORT, inputs, force)
    return folder


@main.command()
@click.argument("surrogate_path", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=".", show_default=True,
              help="Folder for attention-layer.png/.html.")
@click.option("--layers", type=click.IntRange(1, 1024), default=12, show_default=True,
              help="Layers run one after another per token (sets the token clock: layers x latency per token).")
@_force_option
def attention(surrogate_path, out_dir, layers, force):
    """Build the attention layer from a surrogate; show what it compiled to and check decoding and gradients."""
    from .surrogate.layer_check import layer_check

    folder = _report_folder(out_dir, ["attention-layer.png", "attention-layer.html"], [surrogate_path], force)
    for name, value in layer_check(surrogate_path, folder, layers)["rows"]:
        click.echo(f"{name:52s} {value}")


def _surrogate_file(value: str) -> Path:
    """--surrogate: 'paper' (the shipped fit of the paper's cell) or a surrogate file."""
    from .resources import data_path

    if value == "paper":
        return data_path("paper_reference.h5")
    if not Path(value).is_file():
        raise ConfigError("--surrogate", f"must be 'paper' or a surrogate file (gaincell fit); {value!r} is neither")
    return Path(value)


@main.command()
@click.option("--model", "model_spec", default="smollm2", show_default=True,
              help="smollm2 (packaged SmolLM2-135M) or a Hugging Face model folder (e.g. a GPT-2).")
@click.option("--surrogate", "surrogate", default="paper", show_default=True,
              help="'paper' (shipped fit of the paper's cell) or a surrogate file from `gaincell fit`.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Adapted model folder (reloads with `gaincell eval --model OUT`); resumes if it exists.")
@click.option("--train-text", type=click.Path(dir_okay=False), required=True,
              help="Fine-tuning text (.txt, or .jsonl with 'text'); its first tokens are the calibration batch.")
@click.option("--stages", default="linear,calibrate,nonlinear", show_default=True,
              help="Comma-separated subset of linear,calibrate,transfer,nonlinear,distill (run in that order): the "
                   "paper's recipe is linear,calibrate,nonlinear; the cheap one transfer,distill.")
@click.option("--steps", type=click.IntRange(1, 10**7), default=200, show_default=True,
              help="Optimizer steps of the linear and nonlinear stages.")
@click.option("--transfer-steps", type=click.IntRange(1, 10**7), default=200, show_default=True,
              help="Optimizer steps of the transfer stage.")
@click.option("--distill-steps", type=click.IntRange(1, 10**7), default=50, show_default=True,
              help="Optimizer steps of the distill stage.")
@click.option("--lora-rank", type=click.IntRange(0, 4096), default=16, show_default=True,
              help="Rank of the LoRA adapters on the attention projections in transfer/distill (0: scalers only).")
@click.option("--scaler-lr", type=Quantity("", 0.0, 10.0), default=1e-2, show_default=True,
              help="Peak learning rate of the scalers in transfer/distill (--lr is the adapters').")
@click.option("--batch", type=click.IntRange(1, 4096), default=4, show_default=True, help="Sequences per micro-batch.")
@click.option("--seq", type=click.IntRange(2, 1 << 20), default=256, show_default=True, help="Tokens per training sequence.")
@click.option("--accumulate", type=click.IntRange(1, 4096), default=1, show_default=True,
              help="Micro-batches per optimizer step.")
@click.option("--lr", type=Quantity("", 0.0, 10.0), default=None,
              help="Peak learning rate (AdamW) of every stage run; default per stage: linear and nonlinear 2e-4, "
                   "transfer 2e-3, distill 5e-4 (the adapters' rate in transfer/distill).")
@click.option("--distill", type=Quantity("", 0.0, 1.0), default=None,
              help="Weight of knowledge distillation from the unmodified model in the loss (0..1): default 0 in "
                   "the linear/nonlinear stages, 1 (KL only) in the distill stage.")
@click.option("--calibration-tokens", type=click.IntRange(1, 1 << 24), default=512, show_default=True)
@click.option("--calibration-iterations", type=click.IntRange(1, 10**6), default=100, show_default=True)
@click.option("--max-train-tokens", type=click.IntRange(1, None), default=None, help="Use only the first N tokens of the text.")
@click.option("--checkpoint-every", type=click.IntRange(1, None), default=50, show_default=True)
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
def adapt(model_spec, surrogate, out_dir, train_text, stages, steps, transfer_steps, distill_steps, lora_rank,
          scaler_lr, batch, seq, accumulate, lr, distill, calibration_tokens, calibration_iterations, max_train_tokens,
          checkpoint_every, seed, device):
    """Adapt a pre-trained LM to gain-cell attention: the paper's linear fine-tune -> calibration -> nonlinear
    fine-tune, or layer-wise attention transfer -> distillation."""
    from .adapt.models import ADAPTED_MANIFEST, STAGING
    from .adapt.recipe import STAGE_LR, AdaptOptions, adapt as run_adapt
    from .adapt.train import TrainConfig, sigterm_as_interrupt

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError("--out", f"{out_dir} exists and is not a folder")
    lock = out / ".gaincell-adapt"
    names = {p.name for p in out.iterdir()} - {f".{lock.name}.lock"} if out.is_dir() else set()
    if names and not names & {ADAPTED_MANIFEST, STAGING, "checkpoints"}:
        raise ConfigError("--out", f"{out_dir} is a folder with other files in it, not an adapted model folder; "
                                   "give a new or empty folder (an interrupted `gaincell adapt` folder resumes)")
    for source in (train_text, surrogate, model_spec):
        if Path(source).exists() and out.resolve() in (Path(source).resolve(), *Path(source).resolve().parents):
            raise ConfigError("--out", f"{out_dir} holds the input {source}; choose a folder outside it")
    train = {"batch": batch, "seq": seq, "accumulate": accumulate, "checkpoint_every": checkpoint_every, "seed": seed}

    def rate(stage: str) -> float:
        return STAGE_LR[stage] if lr is None else lr
    options = AdaptOptions(model_spec, _surrogate_file(surrogate), out, Path(train_text),
                           tuple(s.strip() for s in stages.split(",") if s.strip()),
                           TrainConfig(steps=steps, lr=rate("linear"), distill_weight=distill or 0.0, **train),
                           TrainConfig(steps=steps, lr=rate("nonlinear"), distill_weight=distill or 0.0, **train),
                           TrainConfig(steps=transfer_steps, lr=rate("transfer"), scaler_lr=scaler_lr, **train),
                           TrainConfig(steps=distill_steps, lr=rate("distill"), scaler_lr=scaler_lr,
                                       distill_weight=1.0 if distill is None else distill, **train),
                           lora_rank, calibration_tokens, calibration_iterations, max_train_tokens=max_train_tokens,
                           device=device)
    with output_lock(lock), sigterm_as_interrupt():
        manifest = run_adapt(options, say=click.echo)
    click.echo(f"adapted model in {out_dir}: stages done {', '.join(manifest['stages_done'])}")


@main.command(name="eval")
@click.option("--model", "model_spec", required=True,
              help="An adapted folder (gaincell adapt), smollm2, or a Hugging Face model folder.")
@click.option("--data", "data_paths", multiple=True, required=True,
              help="Text file (.txt: sliding-window perplexity) or LAMBADA .jsonl (last-word accuracy); repeatable.")
@click.option("--surrogate", default=None,
              help="Plain model only: swap its attention for gain-cell attention from this surrogate ('paper' or a "
                   "file) with initial scalers (the naive swap).")
@click.option("--mode", type=click.Choice(["nonlinear", "linear", "ideal"]), default=None,
              help="Gain-cell mode (default: the adapted folder's, or nonlinear for a naive swap).")
@click.option("--max-tokens", type=click.IntRange(2, None), default=None, help="Perplexity on the first N tokens only.")
@click.option("--context", type=click.IntRange(2, 1 << 20), default=1024, show_default=True, help="Perplexity window.")
@click.option("--stride", type=click.IntRange(1, 1 << 20), default=512, show_default=True, help="Perplexity window step.")
@click.option("--limit", type=click.IntRange(1, None), default=None, help="LAMBADA: the first N items only.")
@click.option("--harness", is_flag=True, default=False,
              help="Also evaluate each --data through lm-evaluation-harness (lm-eval, in the 'lm' extra) on a task "
                   "built from the local file (no hub): a .txt as one document scored in disjoint windows of "
                   "--context tokens after a prefix token (token/word/byte perplexity, bits per byte; gaincell's "
                   "evaluator on those same windows is printed beside it), a .jsonl as LAMBADA (accuracy).")
@click.option("--out", "out_json", type=click.Path(dir_okay=False), default=None, help="Also write results as JSON.")
@click.option("--device", default="auto", show_default=True)
@_force_option
def eval_command(model_spec, data_paths, surrogate, mode, max_tokens, context, stride, limit, harness, out_json, device,
                 force):
    """Perplexity and LAMBADA accuracy of an adapted or plain model (the same code for baselines)."""
    from .adapt.evaluate import evaluate_path
    from .adapt.harness import evaluate_with_harness, harness_summary, require_lm_eval
    from .adapt.models import ADAPTED_MANIFEST, load_adapted, load_pretrained, resolve_model, swap_attention
    from .adapt.recipe import pick_device

    if out_json:
        guard_output(out_json, REPORT, [*data_paths, model_spec, *([surrogate] if surrogate else [])], force)
    if harness:
        require_lm_eval()  # before loading the model
    folder = resolve_model(model_spec)
    if (folder / ADAPTED_MANIFEST).is_file():
        if surrogate:
            raise ConfigError("--surrogate", "is for plain models; an adapted folder carries its own")
        model, tokenizer = load_adapted(folder, mode)
        kind = "adapted"
    else:
        model, tokenizer, _ = load_pretrained(folder)
        kind = "plain (softmax)"
        if surrogate:
            swap_attention(model, _surrogate_file(surrogate), mode=mode or "nonlinear")
            kind = f"naive swap ({mode or 'nonlinear'}, initial scalers)"
        elif mode:
            raise ConfigError("--mode", "needs --surrogate for a plain model")
    model.to(pick_device(device))
    results = []
    for path in data_paths:
        result = {"written_by": f"gaincell {__version__}", "model": str(model_spec), "kind": kind,
                  **evaluate_path(model, tokenizer, path, max_tokens, context, stride, limit)}
        results.append(result)
        metric = (f"perplexity {result['perplexity']:.4g} over {result['tokens_scored']} tokens"
                  if result["kind"] == "perplexity" else f"accuracy {result['accuracy']:.4f} over {result['items']} items")
        click.echo(f"{path}: {metric}  [{kind}]")
        if harness:
            result["harness"] = evaluate_with_harness(model, tokenizer, path, max_tokens=max_tokens, max_length=context,
                                                      limit=limit, cross_check=True)
            click.echo(f"{path}: {harness_summary(result['harness'])}  [{kind}]")
    if out_json:
        atomic_write_text(out_json, json.dumps(results, indent=2) + "\n")
        click.echo(f"wrote {out_json}")


@main.command(name="generate")
@click.option("--model", "model_spec", required=True,
              help="An adapted folder (gaincell adapt), or smollm2 / a Hugging Face model folder with --surrogate.")
@click.option("--prompt", required=True, help="The text to continue.")
@click.option("--max-new-tokens", type=click.IntRange(1, 1 << 20), default=32, show_default=True,
              help="Tokens to generate (prompt + these must fit the model's context).")
@click.option("--temperature", type=Quantity("", 0.0, 100.0), default=0.0, show_default=True,
              help="0: greedy; above 0: sampled at this temperature.")
@click.option("--top-k", type=click.IntRange(1, None), default=None, help="Sampling: keep the K likeliest tokens only.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True, help="Sampling seed.")
@click.option("--surrogate", default=None,
              help="Plain model only: gain-cell attention from this surrogate ('paper' or a file), initial scalers.")
@click.option("--json", "out_json", type=click.Path(dir_okay=False), default=None,
              help="Also write the prompt and both continuations as JSON.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@_force_option
def generate_command(model_spec, prompt, max_new_tokens, temperature, top_k, seed, surrogate, out_json, device, force):
    """Continue a prompt with the softmax model (transformers' generate) and with the gain-cell model decoding
    token by token through every layer's ring cache (the hardware's decode path); both decoded alike."""
    from .adapt.generate import Decoding, generate_both, load_generation_models
    from .adapt.recipe import pick_device

    decoding = Decoding(max_new_tokens, temperature, top_k, seed)
    if out_json:
        guard_output(out_json, REPORT, [model_spec, *([surrogate] if surrogate else [])], force, option="--json")
    models = load_generation_models(model_spec, _surrogate_file(surrogate) if surrogate else None)
    target = pick_device(device)
    models.gaincell.to(target)
    models.softmax.to(target)
    started = time.perf_counter()
    continuations = generate_both(models, prompt, decoding)
    click.echo(f"prompt: {prompt}")
    for continuation in continuations:
        click.echo(f"\n[{continuation.label}] ({len(continuation.tokens)} tokens)\n{continuation.text}")
    click.echo(f"\n{decoding.describe()}, {time.perf_counter() - started:.1f} s on {target}")
    if out_json:
        record = {"written_by": f"gaincell {__version__}", "model": str(model_spec), "prompt": prompt,
                  "decoding": {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_k": top_k,
                               "seed": seed},
                  **{key: {"label": c.label, "text": c.text, "tokens": c.tokens}
                     for key, c in zip(("softmax", "gaincell"), continuations)}}
        atomic_write_text(out_json, json.dumps(record, indent=2) + "\n")
        click.echo(f"wrote {out_json}")


@main.command()
@click.option("--surrogate", "surrogate_path", type=click.Path(dir_okay=False), default=None,
              help="Surrogate file with SPICE figures (from `gaincell fit`); optional with --figures paper.")
@click.option("--model", default="gpt2", show_default=True,
              help="gpt2, smollm2, or a folder with a Hugging Face config.json.")
@click.option("--figures", type=click.Choice(["surrogate", "paper"]), default="surrogate", show_default=True,
              help="Headline figures: this project's (SPICE surrogate + cited) or the paper's (both are printed).")
@click.option("--window", type=click.IntRange(1, 1 << 20), default=1024, show_default=True,
              help="Sliding window (ring) in tokens.")
@click.option("--tile", type=click.IntRange(1, 4096), default=64, show_default=True, help="Array size (tokens per sub-tile).")
@click.option("--tokens", type=click.IntRange(1, 4096), default=4, show_default=True,
              help="Tokens decoded while counting actions.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True,
              help="Seed of the synthetic activations.")
@click.option("--gpu-baseline", type=click.Path(dir_okay=False), default=None,
              help="JSON from benchmarks/gpu_attention_baseline.py (default: the paper's GPU measurements).")
@click.option("--cell-area-um2", type=Quantity("", 1e-6, 1e6), default=1.0, show_default=True,
              help="Cell area for the own area estimate (default: the paper's 'about 1 um^2').")
@click.option("--digital-scale", type=Quantity("", 1e-6, 1e6), default=1.0, show_default=True,
              help="Factor on the cited 45 nm adder/counter energies (node scaling of your choice).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=".", show_default=True,
              help="Folder for energy-breakdown.png/.html.")
@_force_option
def energy(surrogate_path, model, figures, window, tile, tokens, seed, gpu_baseline, cell_area_um2, digital_scale,
           out_dir, force):
    """Latency, energy (per head, layer, model; by component) and area per token, with the ratio to GPU
    attention; counts from a real decode of the attention layer, figures from the surrogate and citations."""
    from .energy.model import estimate
    from .energy.report import breakdown_figure, format_report
    from .plotting import save_png_and_html

    inputs = [p for p in (surrogate_path, gpu_baseline) if p]
    folder = _report_folder(out_dir, ["energy-breakdown.png", "energy-breakdown.html"], inputs, force)
    report = estimate(model, surrogate_path, figures=figures, window=window, tile=tile, tokens=tokens, seed=seed,
                      gpu_baseline=gpu_baseline, cell_area_um2=cell_area_um2, digital_scale=digital_scale)
    png, page = save_png_and_html(breakdown_figure(report), folder / "energy-breakdown")
    click.echo(format_report(report))
    click.echo(f"wrote {png}, {page}")


@main.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="demo-output", show_default=True,
              help="Folder for the demo's files and report.html.")
@click.option("--design", default="cmos-generic", show_default=True, help="Design preset or TOML/YAML file.")
@click.option("--workers", type=click.IntRange(1, 256), default=None, help="Simulator processes (default: one per core).")
@click.option("--lm/--no-lm", default=True, show_default=True,
              help="Run the language-model stage (SmolLM2 on CPU: naive swap vs calibration; ~2-4 min).")
@_force_option
def demo(out_dir, design, workers, lm, force):
    """The main job on embedded defaults: simulate the default cell, characterize, fit, validate, build the
    attention layer, and write report.html listing every stage."""
    from .demo import check_demo_folder, run_demo

    folder = check_demo_folder(Path(out_dir), _design_input(design), force)
    with output_lock(folder / ".gaincell-demo"):
        report, seconds = run_demo(folder, design, workers, lm, say=click.echo)
    click.echo(f"done in {seconds:.1f} s: {report}")


def _point_list(text: str | None) -> list[int] | None:
    if not text:
        return None
    if not re.fullmatch(r"\s*\d{1,9}\s*(,\s*\d{1,9}\s*)*,?\s*", text):
        raise ConfigError("--points", f"must be comma-separated point numbers like 0,5,12; got {text!r}")
    return [int(p) for p in text.replace(" ", "").split(",") if p]


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--max-listed", type=click.IntRange(0, 10**6), default=10, show_default=True,
              help="Failed/missing points listed per sweep.")
def inspect(file, max_listed):
    """List what a gaincell HDF5 file holds: sweeps, signals and units, provenance, failed and missing points."""
    from .inspect import describe

    click.echo(describe(file, max_listed))


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--sweep", required=True, help="Sweep (group) name; `gaincell inspect FILE` lists them.")
@click.option("--signal", "signals", multiple=True, required=True, help="Waveform, e.g. 'v(x0.sn)' (repeatable).")
@click.option("--points", default=None, help="Flat point numbers, e.g. 0,5,12 (default: the first completed).")
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True,
              help="Output file: .png for an image, .html for an interactive page (works offline).")
@_force_option
def plot(file, sweep, signals, points, out, force):
    """Draw waveforms of selected points of a sweep to PNG or interactive HTML."""
    from .inspect import sweep_figure
    from .plotting import save_figure

    guard_output(out, REPORT, [file], force)
    click.echo(save_figure(sweep_figure(file, sweep, list(signals), _point_list(points)), out))


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--sweep", required=True, help="Sweep (group) name.")
@click.option("--format", "fmt", type=click.Choice(["raw", "csv"]), required=True,
              help="raw: ngspice binary raw file (one plot per point; waveform viewers open it); csv: a table.")
@click.option("--points", default=None, help="Flat point numbers (default: every completed point).")
@click.option("--signal", "signals", multiple=True, help="Signals to include (default: all).")
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True)
@_force_option
def export(file, sweep, fmt, points, signals, out, force):
    """Export a sweep's completed points as an ngspice raw file or CSV."""
    from .inspect import export as run_export

    guard_output(out, REPORT, [file], force)
    click.echo(run_export(file, sweep, fmt, out, _point_list(points), list(signals) or None))


if __name__ == "__main__":
    main()
