"""The verbs from a characterization on: `fit` (a surrogate), `validate` (it against fresh SPICE),
`attention` (the layer it compiles to) and `energy` (latency, energy and area per token)."""
from __future__ import annotations

import math
import re
from pathlib import Path

import click

from ...errors import ConfigError, FitError, GaincellError, InputFileError
from ...outputs import (REPORT, SURROGATE, SWEEP_FILE, atomic_write_text, discard_other_kind, guard_output,
                       output_lock)
from .options import (Quantity, condition_options, design_inputs, force_option, hardware_option, one_condition,
                      report_folder)

@click.command()
@click.argument("characterization", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True, help="Surrogate HDF5 file to write.")
@click.option("--model", type=click.Choice(["poly", "ekv"]), default="poly", show_default=True,
              help="Multiply model: the paper's polynomial family or the EKV complementary-branch model.")
@click.option("--order", type=click.IntRange(1, 9), default=5, show_default=True, help="Polynomial order (poly model).")
@click.option("--decay-model", type=click.Choice(["leakage", "stretched", "exponential"]), default="leakage",
              show_default=True, help="Retention model.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for the fit report (OUT-fit.png, OUT-fit.html, OUT-fit.txt); default: beside --out.")
@condition_options(several=False)
@force_option
def fit(characterization, out, model, order, decay_model, report_dir, corners, temps, force):
    """Fit a characterization file into a surrogate HDF5 file, with a report (figure as PNG and HTML, text).

    A file characterized at several corners or temperatures gives one surrogate per condition: choose it with
    --corner/--temp; the surrogate's design record names that corner and temperature."""
    from ...fitting.fit import fit_characterization
    from ...fitting.report import fit_figure, text_report
    from ...plotting import save_png_and_html
    from ...surrogate.file import check

    corner, temp_c = one_condition(corners, temps)
    folder = Path(report_dir) if report_dir else Path(out).parent
    stem = Path(out).stem
    figure, txt = folder / f"{stem}-fit", folder / f"{stem}-fit.txt"  # figure: .png and .html
    guard_output(out, SURROGATE, [characterization], force)
    for report_file in (figure.with_suffix(".png"), figure.with_suffix(".html"), txt):
        guard_output(report_file, REPORT, [characterization, out], force, option="--report")
    with output_lock(out):
        try:
            surrogate, outcomes = fit_characterization(characterization, model, order, decay_model,
                                                       corner=corner, temp_c=temp_c)
        except FitError as exc:  # what the sweeps cannot give, said of the file
            raise FitError(f"{characterization}: {exc}") from None
        except GaincellError:  # a clear message already (e.g. which condition to choose)
            raise
        except (ValueError, KeyError, TypeError) as exc:  # contents gaincell did not write (edited, damaged)
            raise InputFileError(f"{characterization}: its sweeps cannot be fitted, the file holds values or "
                                 f"attributes gaincell does not write ({type(exc).__name__}: {str(exc)[:200]})") from None
        check(surrogate, f"{out} (fitted from {characterization})")  # an implausible fit writes no report either
        text = text_report(surrogate)
        save_png_and_html(fit_figure(outcomes), figure)
        atomic_write_text(txt, text)
        surrogate.save(out)
    click.echo(text)
    click.echo(f"wrote {out}, {figure}.png/.html, {txt}")



@click.command()
@click.argument("surrogate_path", type=click.Path(exists=True, dir_okay=False))
@click.option("--design", default=None,
              help="The design the surrogate describes (default: the one recorded in it; another is refused, "
                   "naming the fields that differ).")
@click.option("--points", default="7x5x3", show_default=True,
              help="Random stored x pulse x input values (a random grid the fit never saw).")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True)
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
              help="Where to keep the fresh SPICE results (default: beside the surrogate).")
@force_option
def validate(surrogate_path, design, points, seed, out, force):
    """Check a surrogate against fresh SPICE runs at random points; report its error, with a parity figure
    (OUT-parity.png/.html beside --out: the surrogate's charge against SPICE's, and the error per point)."""
    from ...design import CellDesign, load_design
    from ...fitting.validate import parity_figure, validate_cell
    from ...plotting import save_png_and_html
    from ...surrogate.file import Surrogate

    match = re.fullmatch(r"\s*(\d{1,3})\s*x\s*(\d{1,3})\s*x\s*(\d{1,3})\s*", points.lower())
    counts = tuple(int(p) for p in match.groups()) if match else ()
    if not counts or min(counts) < 1 or math.prod(counts) > 100_000:
        raise ConfigError("--points", f"give three positive counts like 7x5x3 (at most 100000 points in all), got "
                                      f"{points!r}")
    target = out or str(Path(surrogate_path).with_suffix(".validation.h5"))
    surrogate = Surrogate.load(surrogate_path)
    libraries = [CellDesign.library_path(library) for library in surrogate.design.model_libraries]
    inputs = [surrogate_path, *(design_inputs(design) if design else libraries)]
    guard_output(target, SWEEP_FILE, inputs, force)
    parity = Path(target).with_name(Path(target).stem + "-parity")
    for figure_file in (parity.with_suffix(".png"), parity.with_suffix(".html")):
        guard_output(figure_file, REPORT, inputs + [target], force, option="--out")
    with output_lock(target):
        if force:
            discard_other_kind(target, SWEEP_FILE)
        report = validate_cell(surrogate, load_design(design) if design else None, target, counts, seed)
        png, page = save_png_and_html(parity_figure(report), parity)
    click.echo(f"multiply ({surrogate['multiply'].model_id}): {report}")
    click.echo(f"fresh SPICE results in {target}; parity figure {png}, {page}")



@click.command()
@click.argument("surrogate_path", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=".", show_default=True,
              help="Folder for attention-layer.png/.html.")
@click.option("--layers", type=click.IntRange(1, 1024), default=12, show_default=True,
              help="Layers run one after another per token (sets the token clock: layers x latency per token).")
@force_option
def attention(surrogate_path, out_dir, layers, force):
    """Build the attention layer from a surrogate; show what it compiled to and check decoding and gradients."""
    from ...surrogate.layer_check import layer_check

    folder = report_folder(out_dir, ["attention-layer.png", "attention-layer.html"], [surrogate_path], force)
    for name, value in layer_check(surrogate_path, folder, layers)["rows"]:
        click.echo(f"{name:52s} {value}")



@click.command()
@click.option("--surrogate", "surrogate_path", type=click.Path(dir_okay=False), default=None,
              help="Surrogate file with SPICE figures (from `gaincell fit`); optional with --figures paper.")
@click.option("--model", default="gpt2", show_default=True,
              help="gpt2, smollm2, or a folder with a Hugging Face config.json.")
@click.option("--figures", type=click.Choice(["surrogate", "paper"]), default="surrogate", show_default=True,
              help="Headline figures: this project's (SPICE surrogate + cited) or the paper's (both are printed).")
@click.option("--window", type=click.IntRange(1, 1 << 20), default=None,
              help="Sliding window (ring) in tokens (default: the surrogate's hardware configuration).")
@click.option("--tile", type=click.IntRange(1, 4096), default=None,
              help="Array size, tokens per sub-tile (default: the surrogate's hardware configuration).")
@click.option("--tokens", type=click.IntRange(1, 4096), default=4, show_default=True,
              help="Tokens decoded while counting actions.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True,
              help="Seed of the synthetic activations.")
@click.option("--gpu-baseline", type=click.Path(dir_okay=False), default=None,
              help="JSON from benchmarks/gpu_attention_baseline.py (default: the paper's GPU measurements).")
@click.option("--digital-scale", type=Quantity("", 1e-6, 1e6), default=1.0, show_default=True,
              help="Factor on the cited 45 nm adder/counter energies (node scaling of your choice).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=".", show_default=True,
              help="Folder for energy-breakdown.png/.html.")
@hardware_option
@force_option
def energy(surrogate_path, model, figures, window, tile, tokens, seed, gpu_baseline, digital_scale, out_dir,
           hardware, force):
    """Latency, energy (per head, layer, model; by component) and area per token, with the ratio to GPU
    attention; counts from a real decode of the attention layer, figures from the surrogate and citations,
    area from the surrogate's design drawn with its layout rules (the design's [layout] table)."""
    from ...energy.model import estimate
    from ...energy.report import breakdown_figure, format_report
    from ...plotting import save_png_and_html

    inputs = [p for p in (surrogate_path, gpu_baseline) if p]
    folder = report_folder(out_dir, ["energy-breakdown.png", "energy-breakdown.html"], inputs, force)
    report = estimate(model, surrogate_path, figures=figures, window=window, tile=tile, tokens=tokens, seed=seed,
                      gpu_baseline=gpu_baseline, digital_scale=digital_scale,
                      hardware=hardware)
    png, page = save_png_and_html(breakdown_figure(report), folder / "energy-breakdown")
    click.echo(format_report(report))
    click.echo(f"wrote {png}, {page}")

