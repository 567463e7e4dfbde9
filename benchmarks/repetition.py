"""How much a gain-cell model repeats itself when it writes, beside the softmax model it was made from.

Each prompt is continued by both models with the same decoding (`gaincell generate`'s: the softmax model through
transformers' `generate`, the gain-cell model token by token through its ring caches; greedy by default). A
continuation's repeats are its runs of --ngram consecutive tokens that occur earlier in it: 0 when it repeats no
phrase, about one per token once it is stuck in a loop. The issue's criterion (`gaincell generate --model
smollm2-gaincell --prompt "The history of the city"` continues without repeating a phrase) is the first row.

    .venv/bin/python benchmarks/repetition.py --model smollm2-gaincell
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path


from gaincell import __version__
from gaincell.arguments import positive_int
from gaincell.errors import ConfigError, GaincellError
from gaincell.outputs import REPORT, atomic_write_text, guard_output

PROMPTS = ("The history of the city", "In the early years of the war", "She opened the letter and",
           "The album was released", "Scientists have found that", "The team won the")
MAX_PROMPTS = 1000
MAX_PROMPT_CHARS = 2000
MAX_NEW_TOKENS, MAX_NGRAM = 1024, 64  # a long continuation; a phrase


def read_prompts(path: Path) -> list[str]:
    """The non-blank lines of a UTF-8 text file, one prompt each (at most MAX_PROMPTS of MAX_PROMPT_CHARS)."""
    from gaincell.adapt.text import read_text

    prompts = [line.strip() for line in read_text(path, "--prompts").splitlines() if line.strip()]
    if not prompts:
        raise ConfigError("--prompts", f"{path} holds no prompt (one per line)")
    if len(prompts) > MAX_PROMPTS:
        raise ConfigError("--prompts", f"{path} holds {len(prompts)} prompts; at most {MAX_PROMPTS}")
    long = next((i for i, p in enumerate(prompts, 1) if len(p) > MAX_PROMPT_CHARS), None)
    if long:
        raise ConfigError("--prompts", f"{path}: prompt {long} is longer than {MAX_PROMPT_CHARS} characters")
    return prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-gaincell",
                        help="an adapted folder (gaincell adapt --out), smollm2-gaincell, or a plain model "
                             "with --surrogate")
    parser.add_argument("--surrogate", default=None, help="for a plain model: the cell of its naive swap")
    parser.add_argument("--prompts", type=Path, default=None,
                        help="a UTF-8 text file, one prompt per line (default: six built-in prompts)")
    parser.add_argument("--new-tokens", type=functools.partial(positive_int, high=MAX_NEW_TOKENS), default=48,
                        help="tokens each continuation adds")
    parser.add_argument("--ngram", type=functools.partial(positive_int, high=MAX_NGRAM), default=4,
                        help="tokens in a repeated phrase")
    parser.add_argument("--repetition-penalty", type=float, default=1.0, help="as `gaincell generate` (1: none)")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON")
    options = parser.parse_args()
    try:
        inputs = [options.model, *([options.surrogate] if options.surrogate else []),
                  *([options.prompts] if options.prompts else [])]
        if options.out:
            guard_output(options.out, REPORT, inputs)
        prompts = read_prompts(options.prompts) if options.prompts else list(PROMPTS)
        rows, labels = measure(options, prompts)
    except GaincellError as error:
        sys.exit(f"repetition: {error}")
    softmax, gaincell = (sum(r[side] for r in rows) for side in ("softmax_repeats", "gaincell_repeats"))
    print(f"| all {len(rows)} prompts | {softmax} | {gaincell} | |")
    ratio = f"{gaincell / softmax:.1f}x the softmax model's" if softmax else "the softmax model repeats none"
    clean = {side: sum(r[f"{side}_repeats"] == 0 for r in rows) for side in ("softmax", "gaincell")}
    print(f"\nrepeated {options.ngram}-token phrases in {options.new_tokens} new tokens per prompt: "
          f"gain-cell {gaincell}, softmax {softmax} ({ratio}); continuations that repeat no phrase: gain-cell "
          f"{clean['gaincell']} of {len(rows)}, softmax {clean['softmax']} of {len(rows)}. A count near the tokens "
          "generated means a loop.")
    if options.out:
        record = {"written_by": f"gaincell {__version__}", "model": str(options.model), "labels": labels,
                  "new_tokens": options.new_tokens, "ngram": options.ngram,
                  "repetition_penalty": options.repetition_penalty, "rows": rows}
        atomic_write_text(options.out, json.dumps(record, indent=2) + "\n")
        print(f"wrote {options.out}")


def measure(options, prompts: list[str]) -> tuple[list[dict], dict]:
    from gaincell.adapt.generate import Decoding, generate_both, load_generation_models, repeated_ngrams
    from gaincell.app.commands.options import surrogate_file

    decoding = Decoding(max_new_tokens=options.new_tokens, repetition_penalty=options.repetition_penalty)
    models = load_generation_models(options.model, surrogate_file(options.surrogate) if options.surrogate else None)
    print(f"{decoding.describe()}, {options.new_tokens} new tokens; repeated {options.ngram}-token phrases\n")
    print("| prompt | softmax | gain-cell | gain-cell continuation |\n|---|---|---|---|", flush=True)
    rows = []
    for prompt in prompts:
        softmax, gaincell = generate_both(models, prompt, decoding)
        row = {"prompt": prompt, "softmax_repeats": repeated_ngrams(softmax.tokens, options.ngram),
               "gaincell_repeats": repeated_ngrams(gaincell.tokens, options.ngram), "softmax": softmax.text,
               "gaincell": gaincell.text}
        rows.append(row)
        shown, asked = (text.replace("\n", "\\n").replace("|", "\\|") for text in (gaincell.text, prompt))
        print(f"| {asked} | {row['softmax_repeats']} | {row['gaincell_repeats']} | {shown} |", flush=True)
    return rows, {"softmax": models.softmax_label, "gaincell": models.gaincell_label}


if __name__ == "__main__":
    main()
