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
import functools
import json
import re
from pathlib import Path

from gaincell.adapt.manifest import read_manifest
from gaincell.adapt.shipped import RANK_TOLERANCE, SURROGATES, export_shipped
from gaincell.arguments import positive_int
from gaincell.errors import GaincellError
from gaincell.outputs import check_writable_folder

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"

# A shipped model's name: its two files are NAME.safetensors and NAME.json in --out, and `--model NAME` selects it
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
MAX_RANK = 4096


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


def model_name(text: str) -> str:
    """A --name: letters, digits, '.', '_' and '-', starting with a letter or digit (a file name inside --out)."""
    if not NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(f"must be 1 to 100 letters, digits, '.', '_' or '-', starting with a letter or "
                                         f"digit (it names NAME.safetensors and NAME.json in --out); got {text!r}")
    return text


def read_scores(path: Path) -> list[dict]:
    """The results of one `gaincell eval --out` file (a JSON list of objects); ValueError naming what is wrong."""
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot be read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"is not a JSON file ({exc})") from None
    if not isinstance(results, list) or not all(isinstance(result, dict) for result in results):
        raise ValueError("is not a list of results (JSON objects), as `gaincell eval --out` writes")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="folder", type=Path, required=True, help="an adapted folder (gaincell adapt --out)")
    parser.add_argument("--name", type=model_name, default="smollm2-gaincell",
                        help="the shipped model's name (NAME.safetensors and NAME.json; `--model NAME`)")
    parser.add_argument("--surrogate", default="paper", choices=sorted(SURROGATES),
                        help="the packaged surrogate it was adapted to")
    parser.add_argument("--command", required=True, help="the command line(s) that made the folder")
    parser.add_argument("--train-text", required=True, help="what the training text was")
    parser.add_argument("--scores", type=Path, nargs="+", default=[], help="gaincell eval --out files: the shipped model's scores (gaincell eval --model NAME, after a first export)")
    parser.add_argument("--max-rank", type=functools.partial(positive_int, high=MAX_RANK), default=64,
                        help="the most singular directions kept of each weight difference")
    parser.add_argument("--tolerance", type=fraction, default=RANK_TOLERANCE,
                        help="keep the singular values above this fraction of each weight difference's largest")
    parser.add_argument("--out", type=Path, default=DATA, help="where NAME.safetensors and NAME.json go (the package data)")
    options = parser.parse_args()
    try:
        read_manifest(options.folder)
    except GaincellError as error:
        parser.error(f"--from: {error}")
    if not (options.folder / "surrogate.h5").is_file():
        parser.error(f"--from {options.folder}: has no surrogate.h5; it is not a folder written by `gaincell adapt`")
    if options.out.exists() and not options.out.is_dir():
        parser.error(f"--out {options.out}: exists and is not a folder (NAME.safetensors and NAME.json go into it)")
    scores = []
    for path in options.scores:
        try:
            scores += read_scores(path)
        except ValueError as error:
            parser.error(f"--scores {path}: {error}")
    made_by = {"command": options.command, "train_text": options.train_text,
               "scores": [{k: r[k] for k in ("data", "kind", "perplexity", "tokens_scored", "context", "accuracy", "items")
                           if k in r} for r in scores]}
    try:
        check_writable_folder(options.out)
        record = export_shipped(options.folder, options.out, options.name, options.surrogate, made_by,
                                options.max_rank, options.tolerance)
    except GaincellError as error:
        parser.exit(1, f"{parser.prog}: error: {error}\n")
    size = (options.out / f"{options.name}.safetensors").stat().st_size
    print(f"wrote {options.out / options.name}.safetensors ({size / 2**20:.1f} MiB) and .json; factors within "
          f"{record['max_relative_error_of_factors']:.2g} of the weight differences")


if __name__ == "__main__":
    main()
