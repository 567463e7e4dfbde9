"""Progress of long jobs, one interface for the whole package: library code calls `bar` for counted work and
`say` for a line of news; how it shows is chosen here, not by the caller: a live bar where stderr is a
terminal, and in a log (stderr redirected to a file, a CI job) plain lines, one when the work starts, one at
least every `LOG_EVERY_S` seconds and one at the end, never the carriage-return redraws a bar leaves in a file."""
from __future__ import annotations

import sys
import time

LOG_EVERY_S = 10.0


def say(message: str) -> None:
    """One line of news for the user (stdout), e.g. a stage starting."""
    print(message, flush=True)


def bar(iterable=None, *, total: int | None = None, desc: str = "", unit: str = "it", initial: int = 0,
        enabled: bool = True, transient: bool = False):
    """A progress bar over `iterable` or `total` units: tqdm's where stderr is a terminal, `LogLines` elsewhere,
    a silent one when not `enabled`. Both take `update(n)`, `set_postfix(**values)`, `close()` and iterate
    `iterable`. `transient`: the terminal bar disappears when done."""
    if enabled and sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, leave=not transient)
    return LogLines(iterable, total=total, desc=desc, unit=unit, initial=initial, enabled=enabled)


class LogLines:
    """A bar for logs: 'DESC: N/TOTAL UNIT, RATE, POSTFIX' on stderr when it opens, every LOG_EVERY_S seconds
    and at the end."""

    def __init__(self, iterable=None, *, total=None, desc="", unit="it", initial=0, enabled=True):
        self.iterable, self.desc, self.unit, self.enabled = iterable, desc, unit, enabled
        self.total = total if total is not None or iterable is None else _length(iterable)
        self.n, self.start_n, self.postfix, self.closed = initial, initial, {}, False
        self.started = self.last = time.monotonic()
        self._line()  # the work has started

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self.last >= LOG_EVERY_S:
            self._line()

    def set_postfix(self, **values) -> None:
        self.postfix = values

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.n > self.start_n:
                self._line()

    def _line(self) -> None:
        self.last = time.monotonic()
        if not self.enabled:
            return
        done = self.n - self.start_n
        elapsed = self.last - self.started
        rate = (f"{elapsed / done:.3g} s/{self.unit}" if elapsed > done else f"{done / elapsed:.3g} {self.unit}/s") \
            if done and elapsed > 0 else ""
        parts = [f"{self.n}/{self.total if self.total is not None else '?'} {self.unit}", rate,
                 ", ".join(f"{k}={v}" for k, v in self.postfix.items())]
        print(f"{self.desc}: " + ", ".join(p for p in parts if p), file=sys.stderr, flush=True)


def _length(iterable) -> int | None:
    try:
        return len(iterable)
    except TypeError:
        return None
