"""`gaincell demo`: the main job on embedded defaults, stage by stage, into one folder with report.html.

Stages: cell transient, characterization, fit, validation, attention layer, energy per token and (optionally)
the language-model check. Each stage appends a `report.Stage`; the report is written even when a stage fails.
"""
from __future__ import annotations

import time
from pathlib import Path

from ..errors import ConfigError, GaincellError
from .demo_lm import LM_FILES
from ..outputs import REPORT, SURROGATE, SWEEP_FILE, atomic_write_text, discard_other_kind, guard_output
from .. import progress

# The files the demo writes into its folder, by kind (checked before any work so nothing foreign is replaced).
DEMO_FILES = {SWEEP_FILE: ["cell.h5", "char.h5", "validation.h5"], SURROGATE: ["surrogate.h5"],
              REPORT: ["cell.png", "cell.html", "char-read.png", "char-read.html", "char-retention.png",
                       "char-retention.html", "surrogate-fit.png", "surrogate-fit.html", "surrogate-fit.txt", "validation-parity.png", "validation-parity.html",
                       "attention-layer.png", "attention-layer.html",
                       "energy-breakdown.png", "energy-breakdown.html", *LM_FILES, "summary.txt", "report.html"]}


def check_demo_folder(folder: Path, inputs: list[Path], force: bool) -> Path:
    """Refuse a --out that is a file, or that holds files of other kinds under the names the demo writes."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError("--out", f"{folder} exists and is not a folder")
    for kind, names in DEMO_FILES.items():
        for name in names:
            guard_output(folder / name, kind, inputs, force)
            if force and kind != REPORT:
                discard_other_kind(folder / name, kind)
    return folder


def run_demo(folder: Path, design: str, workers, lm: bool, say=progress.say, lambada: Path | None = None,
             gaincell=None) -> tuple[Path, float]:
    """Run every stage into `folder` (`lambada`: a LAMBADA .jsonl the language-model stage also scores, running
    the commands through `gaincell`, the CLI's click group); returns report.html's path and the wall time."""
    from .demo_lm import LM_STAGE_TITLE, demo_lm_stage
    from .report import Stage, write_report

    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    stages = []
    try:
        _demo_stages(folder, design, workers, stages, say)
        if lm:
            stages.append(demo_lm_stage(folder, say, lambada, gaincell))
        else:
            stages.append(Stage(LM_STAGE_TITLE, "skipped", "Not run (gaincell demo --no-lm)."))
    except GaincellError:
        write_report(folder, f"gaincell demo: {design} (failed)", stages, recap(stages).split("recap:\n")[-1])
        raise
    report = write_report(folder, f"gaincell demo: {design}", stages, recap(stages).split("recap:\n")[-1])
    say(recap(stages))
    return report, time.perf_counter() - started


def recap(stages) -> str:
    """The headline of every stage (its first table row, or its status), for the end of the console output."""
    lines = ["", "recap:"]  # the report's summary too
    for stage in stages:
        if stage.status != "done":
            lines.append(f"  {stage.title}: {stage.status}")
        elif not stage.table:
            lines.append(f"  {stage.title}: {stage.summary.split('. ')[0]}")
        else:
            lines += [f"  {stage.title}: {name} {value}" for name, value in stage.table[:2 if stage is stages[-1] else 1]]
    return "\n".join(lines)


def _demo_stages(folder: Path, design: str, workers, stages: list, say) -> None:
    """Run the demo's stages, appending a report Stage for each as it completes; summary.txt at the end."""
    from ..design import load_setup

    setup = load_setup(design)  # the cell with its design file's [c2p], [dac] and [grid] tables
    steps = [(f"one write + read transient of the {setup.cell.name} cell -> cell.h5, cell.png, cell.html", _cell_stage),
             ("characterization: write, retention, read/multiply, charge-to-pulse and DAC sweeps -> char.h5",
              _characterization_stage),
             ("fit the compact model -> surrogate.h5, surrogate-fit.png/.html/.txt", _fit_stage),
             ("validate the surrogate against fresh SPICE at random points -> validation.h5, validation-parity.png/.html",
              _validation_stage),
             ("attention layer built from surrogate.h5 -> attention-layer.png/.html", _layer_stage),
             ("latency and energy per token for GPT-2 from surrogate.h5 -> energy-breakdown.png/.html", _energy_stage)]
    lines = [f"design: {setup.cell.name}"]
    for number, (title, run_stage) in enumerate(steps, 1):
        say(f"[{number}/7] {title}")
        clock = time.perf_counter()
        stage, text = run_stage(folder, design, setup, workers, say)
        stage.seconds = time.perf_counter() - clock
        stages.append(stage)
        lines.append(text)
    text = "\n".join(line for line in lines if line)
    atomic_write_text(folder / "summary.txt", f"gaincell demo summary\n{text}\n")
    say(text)


def _rows_text(rows) -> str:
    return "\n".join(f"{name}: {value}" for name, value in rows)


def _cell_stage(folder: Path, design: str, setup, workers, say):
    import numpy as np

    from ..plotting import save_png_and_html, waveform_figure
    from .commands.circuits import save_result, simulate_cell
    from .report import ReportFigure, Stage

    result, extra = simulate_cell(design, 0.7, 10e-9, "shared", 120.0)
    save_result(result, str(folder / "cell.h5"), "shared", **extra)
    signals = {k: v for k, v in result.vectors.items() if k != "time"}
    save_png_and_html(waveform_figure(result["time"], signals, result.netlist.title), folder / "cell")
    stored = float(np.interp(14e-9, result["time"], result["v(xcell.sn)"]))
    say(f"      stored after write: {stored:.4f} V (target 0.7 V)")
    return Stage("cell transient: write 0.7 V, read with a 10 ns pulse", "done",
                 f"Stored after the write: {stored:.4f} V (target 0.7 V).",
                 f"gaincell simulate cell --design {design} --stored 0.7 --pulse 10n --out cell.h5 --png cell.png",
                 ["cell.h5"], [ReportFigure("cell.png", "write and read waveforms", "cell.html")]), ""


def _characterization_stage(folder: Path, design: str, setup, workers, say):
    from ..circuits.characterize import characterize, format_summary, summarize, summary_rows
    from ..plotting import save_png_and_html
    from .inspection import sweep_figure
    from .report import ReportFigure, Stage

    characterize(setup.cell, folder / "char.h5", setup.grid, workers=workers, restart=True, c2p=True, dac=True,
                 c2p_design=setup.c2p, dac_design=setup.dac)
    read_points = setup.grid.stored_levels * setup.grid.pulse_levels * setup.grid.vin_levels
    ends = f"0,{read_points // 2 - 1},{read_points - 1}"  # the lowest, a middle and the highest stored level
    figures = summarize(folder / "char.h5")
    charts = []
    for sweep, signal, points, name in (("read", "i_cell_a", ends, "char-read"),
                                        ("retention", "v(sn)", "0,1,2,3", "char-retention")):
        save_png_and_html(sweep_figure(folder / "char.h5", sweep, [signal], [int(p) for p in points.split(",")]),
                          folder / name)
        charts.append(ReportFigure(f"{name}.png", f"{sweep} sweep: {signal} at points {points}", f"{name}.html",
                                   f"gaincell plot char.h5 --sweep {sweep} --signal '{signal}' --points {points} "
                                   f"--out {name}.png"))
    return Stage("characterization of the cell and its converters", "done",
                 "Read (multiply), write and retention sweeps of the cell; transfer curves and energy per "
                 "conversion of the charge-to-pulse converters (unsigned and signed); the write DAC's "
                 "conversions (energy, settling, written value).",
                 f"gaincell characterize --design {design} --c2p --dac --out char.h5",
                 ["char.h5"], charts, summary_rows(figures)), format_summary(figures)


def _fit_stage(folder: Path, design: str, setup, workers, say):
    from ..fitting.fit import fit_characterization
    from ..fitting.report import fit_figure, text_report
    from ..plotting import save_png_and_html
    from .report import ReportFigure, Stage

    surrogate, outcomes = fit_characterization(folder / "char.h5")
    surrogate.save(folder / "surrogate.h5")
    atomic_write_text(folder / "surrogate-fit.txt", text_report(surrogate))
    save_png_and_html(fit_figure(outcomes), folder / "surrogate-fit")  # the files of `gaincell fit`
    multiply, decay = surrogate["multiply"], surrogate["decay"]
    rows = [("multiply model", multiply.model_id),
            ("multiply RMS error on the grid", f"{100 * multiply.residuals['rms_rel_full_scale']:.3f} % of full scale"),
            ("decay model", decay.model_id),
            ("retention 1/e time (fit / raw curve)",
             f"{decay.residuals['tau_1e_s'] * 1e3:.4g} ms / {decay.residuals['raw_tau_1e_s'] * 1e3:.4g} ms")]
    return Stage("fit the compact model into the surrogate file", "done", "", "gaincell fit char.h5 --out surrogate.h5",
                 ["surrogate.h5", "surrogate-fit.txt"],
                 [ReportFigure("surrogate-fit.png", "read current, residuals and retention: SPICE against the fit",
                               "surrogate-fit.html")],
                 rows), _rows_text(rows)


def _validation_stage(folder: Path, design: str, setup, workers, say):
    from ..fitting.report import describe_point
    from ..fitting.validate import parity_figure, validate_cell
    from ..plotting import save_png_and_html
    from ..surrogate.file import Surrogate
    from .report import ReportFigure, Stage

    validation = validate_cell(Surrogate.load(folder / "surrogate.h5"), setup.cell, folder / "validation.h5",
                               workers=workers)
    save_png_and_html(parity_figure(validation), folder / "validation-parity")
    return Stage("validation against fresh SPICE points", "done", str(validation),
                 "gaincell validate surrogate.h5 --out validation.h5", ["validation.h5"],
                 [ReportFigure("validation-parity.png", "surrogate against fresh SPICE, and the error per point",
                               "validation-parity.html")],
                 [("held-out RMS error", f"{100 * validation.rms_rel_full_scale:.3f} % of full scale"),
                  ("worst point", f"{100 * validation.max_rel_full_scale:.3f} % of full scale at "
                                  f"{describe_point(validation.worst_point)}")]), f"held-out validation: {validation}"


def _layer_stage(folder: Path, design: str, setup, workers, say):
    from ..surrogate.layer_check import layer_check
    from .report import ReportFigure, Stage

    check = layer_check(folder / "surrogate.h5", folder)
    return Stage("gain-cell attention layer from this cell's surrogate", "done",
                 "GainCellAttention (12 heads x 64, window 1024, 64-token tiles, quantized, decaying).",
                 "gaincell attention surrogate.h5 --out .", [],
                 [ReportFigure("attention-layer.png", "compiled multiply and decay", "attention-layer.html")],
                 check["rows"]), _rows_text(check["rows"])


def _energy_stage(folder: Path, design: str, setup, workers, say):
    from ..energy.model import estimate
    from ..energy.report import breakdown_figure, energy_table
    from ..plotting import save_png_and_html
    from .report import ReportFigure, Stage

    energy_report = estimate("gpt2", folder / "surrogate.h5", tokens=2)
    save_png_and_html(breakdown_figure(energy_report), folder / "energy-breakdown")
    rows = energy_table(energy_report)
    return Stage("latency and energy per token (GPT-2 attention)", "done",
                 "Action counts from a decode of the attention layer (GPT-2: 12 layers, 12 heads x 64, window "
                 "1024) x this cell's SPICE figures, cited digital figures and labelled paper fallbacks; the "
                 "paper's figures beside them; ratios to the paper's GPU measurements.",
                 "gaincell energy --surrogate surrogate.h5 --model gpt2 --out .", [],
                 [ReportFigure("energy-breakdown.png", "energy per token per head by component",
                               "energy-breakdown.html")],
                 rows), _rows_text(rows)
