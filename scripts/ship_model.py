"""Package an adapted folder as a shipped model (`--model NAME` for eval, generate, adapt and the harness).

Writes data/NAME.safetensors (or into --out; the weights that differ from the base model, as low-rank factors, and the scalers)
and data/NAME.json (base model and surrogate with their sha256, layer options, stages, and what made it: the
command, the training text and the scores, read from `gaincell eval --out` files). --tolerance sets which
singular directions of each difference are kept (the package's size against its faithfulness; recorded too).

    .venv/bin/python scripts/ship_model.py --from runs/best --name smollm2-gaincell --surrogate paper \
        --command "gaincell adapt ..." --train-text "WikiText-2 valid" --scores runs/best-eval.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from gaincell.adapt.shipped import RANK_TOLERANCE, export_shipped

DATA = Path(__file__).resolve().parents[1] / "data"


def fraction(text: str) -> float:
    """A --tolerance: a number in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1) (the kept singular values' least fraction of "
                                         f"the largest); got {text!r}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="folder", type=Path, required=True, help="an adapted folder (gaincell adapt --out)")
    parser.add_argument("--name", default="smollm2-gaincell")
    parser.add_argument("--surrogate", default="paper", help="the packaged surrogate it was adapted to")
    parser.add_argument("--command", required=True, help="the command line(s) that made the folder")
    parser.add_argument("--train-text", required=True, help="what the training text was")
    parser.add_argument("--scores", type=Path, nargs="+", default=[], help="gaincell eval --out files: the shipped model's scores (gaincell eval --model NAME, after a first export)")
    parser.add_argument("--max-rank", type=int, default=64)
    parser.add_argument("--tolerance", type=fraction, default=RANK_TOLERANCE,
                        help="keep the singular values above this fraction of each weight difference's largest")
    parser.add_argument("--out", type=Path, default=DATA, help="where NAME.safetensors and NAME.json go (the package data)")
    options = parser.parse_args()
    scores = [result for path in options.scores for result in json.loads(path.read_text())]
    made_by = {"command": options.command, "train_text": options.train_text,
               "scores": [{k: r[k] for k in ("data", "kind", "perplexity", "tokens_scored", "context", "accuracy", "items")
                           if k in r} for r in scores]}
    record = export_shipped(options.folder, options.out, options.name, options.surrogate, made_by, options.max_rank,
                            options.tolerance)
    size = (options.out / f"{options.name}.safetensors").stat().st_size
    print(f"wrote {options.out / options.name}.safetensors ({size / 2**20:.1f} MiB) and .json; factors within "
          f"{record['max_relative_error_of_factors']:.2g} of the weight differences")


if __name__ == "__main__":
    main()
