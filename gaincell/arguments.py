"""Argument types shared by the scripts and benchmarks' argparse command lines (the CLI's are click options in
`gaincell.app.commands.options`)."""
from __future__ import annotations

import argparse


def positive_int(text: str, high: int | None = None) -> int:
    """An argparse type: an integer >= 1 (and <= `high`, where given: `functools.partial(positive_int, high=N)`)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text!r}")
    if high is not None and value > high:
        raise argparse.ArgumentTypeError(f"must be at most {high}; got {text!r}")
    return value
