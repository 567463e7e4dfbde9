"""Training step time in float32 and under bfloat16 autocast, side by side: `gaincell adapt --precision`.

Runs the same `gaincell adapt` command twice from the same model, --precision float32 then bfloat16 (the gain-cell
layers compute in float32 in both; under autocast the projections, MLPs and logits run in bfloat16), and compares
what the stage records: its seconds per step and its loss at every step (the same batches on both sides). The
first step's losses come from the same weights on the same batch, so they differ by the autocast's rounding
alone: more than --loss-tolerance (relative) fails the run. Later steps follow two trajectories that part
(a rounding changes every update), so their losses are shown, not compared. The ratio says whether this CPU
gains (measured so far on one with avx512_bf16 only: benchmarks/RESULTS.md).

    .venv/bin/python benchmarks/bench_training.py --model runs/evening-folder --surrogate paper --stage mlp \
        --steps 10 --text runs/text/austen-no-pp-wikitext-valid.txt
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from gaincell import __version__
from gaincell.arguments import positive_int
from gaincell.errors import GaincellError
from gaincell.outputs import REPORT, atomic_write_text, guard_output

STAGE_STEPS = {"mlp": "--mlp-steps", "distill": "--distill-steps", "transfer": "--transfer-steps"}
PRECISIONS = ("float32", "bfloat16")
MAX_STEPS = 10_000


def adapt_command(options, precision: str, out: Path) -> list[str]:
    """The `gaincell adapt` command line of one side."""
    command = [sys.executable, "-m", "gaincell.app.cli", "adapt", "--model", options.model, "--train-text", str(options.text),
               "--stages", options.stage, STAGE_STEPS[options.stage], str(options.steps), "--batch",
               str(options.batch), "--seq", str(options.seq), "--checkpoint-every", str(options.steps),
               "--precision", precision, "--out", str(out)]
    return command + (["--surrogate", options.surrogate] if options.surrogate else [])


def run_side(options, precision: str, work: Path) -> dict:
    """One side: its stage's seconds per step (the steps after the first) and its losses."""
    out = work / precision
    done = subprocess.run(adapt_command(options, precision, out), capture_output=True, text=True)
    if done.returncode:
        raise GaincellError(f"gaincell adapt --precision {precision} failed:\n{(done.stdout + done.stderr)[-3000:]}")
    stage = json.loads((out / "adapted.json").read_text())["stages"][options.stage]
    return {"precision": precision, "seconds": stage["seconds"], "steps": stage["steps"],
            "seconds_per_step": stage["seconds"] / stage["steps"], "losses": stage["losses"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-gaincell",
                        help="what `gaincell adapt --model` takes: an adapted folder, smollm2-gaincell, a plain model")
    parser.add_argument("--surrogate", default=None, help="`gaincell adapt --surrogate` (a plain model needs one)")
    parser.add_argument("--stage", choices=sorted(STAGE_STEPS), default="mlp", help="the stage both sides run")
    parser.add_argument("--steps", type=functools.partial(positive_int, high=MAX_STEPS), default=10,
                        help="optimizer steps of each side")
    parser.add_argument("--batch", type=functools.partial(positive_int, high=64), default=2)
    parser.add_argument("--seq", type=functools.partial(positive_int, high=4096), default=512)
    parser.add_argument("--text", type=Path, default=Path("../shared/data/wikitext-2/valid.txt"),
                        help="the training text (`gaincell adapt --train-text`)")
    parser.add_argument("--loss-tolerance", type=float, default=0.02,
                        help="largest relative difference of the two sides' first-step loss")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON")
    options = parser.parse_args()
    if not 0 < options.loss_tolerance < 1:
        parser.error(f"--loss-tolerance: must be within 0 .. 1 (excluded); got {options.loss_tolerance}")
    try:
        if options.out:
            guard_output(options.out, REPORT, [options.text])
        with tempfile.TemporaryDirectory(prefix="bench-training-") as work:
            rows = [run_side(options, precision, Path(work)) for precision in PRECISIONS]
    except GaincellError as error:
        sys.exit(f"bench_training: {error}")
    print(f"`gaincell adapt --stages {options.stage}`, {options.steps} steps of {options.batch} x {options.seq} tokens "
          f"on {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), torch threads as the command sets")
    print("\n| precision | s/step | tokens/s | mean loss |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['precision']} | {row['seconds_per_step']:.2f} | "
              f"{options.batch * options.seq / row['seconds_per_step']:.0f} | "
              f"{sum(row['losses']) / len(row['losses']):.4f} |")
    base, fast = rows
    first = abs(base["losses"][0] - fast["losses"][0]) / max(abs(base["losses"][0]), 1e-12)
    print(f"\nbfloat16 / float32 speed: {base['seconds_per_step'] / fast['seconds_per_step']:.2f}x; first-step loss "
          f"{base['losses'][0]:.4f} / {fast['losses'][0]:.4f} (relative difference {first:.4f}, tolerance "
          f"{options.loss_tolerance})")
    print("losses by step (float32 / bfloat16): " + ", ".join(f"{a:.3f}/{b:.3f}" for a, b in
                                                             zip(base["losses"], fast["losses"])))
    if options.out:
        atomic_write_text(options.out, json.dumps({"written_by": f"gaincell {__version__}", "stage": options.stage, "rows": rows, "first_step_difference": first}, indent=2)
                          + "\n")
        print(f"wrote {options.out}")
    if first > options.loss_tolerance:
        sys.exit(f"bench_training: the two sides disagree: the same weights on the same batch give losses "
                 f"{first:.3f} apart (relative), more than {options.loss_tolerance}; bfloat16 autocast is not a "
                 "faithful speed-up here")


if __name__ == "__main__":
    main()
