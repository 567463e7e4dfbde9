"""Text for fine-tuning and evaluation, from paths only (nothing is fetched at run time).

A `.txt` file is read as plain text (WikiText-2's tokenized release, a novel, ...); a `.jsonl` file as one
JSON object per line with a "text" field (LAMBADA's format). Tokens are produced without special tokens
(no BOS), as the evaluation windows are cut from one continuous stream.
"""
from __future__ import annotations

import codecs
import json
from pathlib import Path

import torch

from gaincell.errors import ConfigError, InputFileError
from gaincell.surrogate.file import HDF5_SIGNATURE

TEXT_PREFIX_BYTES = 1 << 16  # the prefix checked to be text before anything is read or loaded


def read_text(path: str | Path, parameter: str = "--data") -> str:
    """The text of a .txt file, or the "text" fields of a .jsonl file joined by blank lines."""
    return "\n\n".join(read_items(path, parameter)) if str(path).endswith(".jsonl") else _read(path, parameter)


def check_text_file(path: str | Path, parameter: str = "--data") -> Path:
    """A readable file whose first TEXT_PREFIX_BYTES are UTF-8 text (no NUL byte, not HDF5), else refused
    naming it: a binary file given as text would train or evaluate on noise."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(parameter, f"{str(path)!r} is not a file (a .txt text file or a .jsonl with a 'text' field)")
    try:
        with path.open("rb") as stream:
            head = stream.read(TEXT_PREFIX_BYTES)
    except OSError as exc:
        raise InputFileError(f"{parameter} {path} cannot be read ({exc.strerror or exc})") from None
    problem, nul_at = None, head.find(b"\0")
    if head.startswith(HDF5_SIGNATURE):
        problem = "is an HDF5 file"
    elif nul_at >= 0:
        problem = f"is a binary file (NUL byte at offset {nul_at})"
    else:
        try:
            codecs.getincrementaldecoder("utf-8")().decode(head, final=len(head) < TEXT_PREFIX_BYTES)
        except UnicodeDecodeError as exc:
            problem = f"is not UTF-8 text (invalid byte at offset {exc.start})"
    if problem:
        raise InputFileError(f"{parameter} {path} {problem}; give a UTF-8 text file (.txt, or .jsonl with a 'text' "
                             "field)")
    return path


def _read(path: str | Path, parameter: str) -> str:
    return check_text_file(path, parameter).read_text(encoding="utf-8", errors="replace")


def read_items(path: str | Path, parameter: str = "--data") -> list[str]:
    """The "text" field of every line of a .jsonl file."""
    items = []
    for number, line in enumerate(_read(path, parameter).splitlines(), 1):
        if not line.strip():
            continue
        try:
            text = json.loads(line)["text"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ConfigError(parameter, f"{path} line {number} is not a JSON object with a 'text' field ({exc})")
        if not isinstance(text, str):
            raise ConfigError(parameter, f"{path} line {number}: 'text' must be a string; got {type(text).__name__}")
        items.append(text)
    if not items:
        raise ConfigError(parameter, f"{path} holds no items")
    return items


def split_last_word(text: str, path, number: int, parameter: str = "--data") -> tuple[str, str]:
    """(context, word) of a LAMBADA item: the text before its last space and the word after it."""
    context, _, word = text.rstrip().rpartition(" ")
    if not context or not word:
        raise ConfigError(parameter, f"{path} item {number} has no space before its last word")
    return context, word


def check_lambada_file(path: str | Path, parameter: str = "--lambada") -> Path:
    """A LAMBADA .jsonl file checked whole before any work (UTF-8 text, every line an item with a last word)."""
    path = check_text_file(path, parameter)
    if path.suffix != ".jsonl":
        raise ConfigError(parameter, f"{path} is not a .jsonl file (one JSON object with a 'text' field per line)")
    for number, text in enumerate(read_items(path, parameter), 1):
        split_last_word(text, path, number, parameter)
    return path


def check_data_file(path: str | Path, parameter: str = "--data") -> Path:
    """An evaluation file checked before any model loads: a LAMBADA .jsonl whole, any other file as text."""
    return check_lambada_file(path, parameter) if str(path).endswith(".jsonl") else check_text_file(path, parameter)


def token_stream(path: str | Path, tokenizer, max_tokens: int | None = None, parameter: str = "--data") -> torch.Tensor:
    """The whole file as one 1-D tensor of token ids (the first `max_tokens` if given)."""
    text = read_text(path, parameter)
    if max_tokens is not None:
        text = text[: max(16 * max_tokens, 4096)]  # enough characters for max_tokens, never the whole corpus
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if max_tokens is not None:
        ids = ids[:max_tokens]
    if len(ids) < 2:
        raise ConfigError(parameter, f"{path} gives fewer than 2 tokens")
    return torch.tensor(ids, dtype=torch.long)


def random_windows(stream: torch.Tensor, batch: int, length: int, seed: int) -> torch.Tensor:
    """`batch` windows of `length` + 1 tokens at positions drawn from a generator seeded with `seed`
    (so a resumed run draws the same batches)."""
    if stream.numel() < length + 2:
        raise ConfigError("--seq", f"{length} is longer than the training text ({stream.numel()} tokens)")
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, stream.numel() - length - 1, (batch,), generator=generator)
    return torch.stack([stream[s:s + length + 1] for s in starts.tolist()])
