"""Ctrl-C and SIGTERM: one behaviour for every verb.

`stop_on_signals` (installed by the CLI) makes both raise KeyboardInterrupt in the main thread, so the same
clean-up runs whichever stops a run. `signals_deferred` holds them back over a block of HDF5 work: h5py
ignores an exception raised inside its object clean-up ("Exception ignored in ... __dealloc__"), which would
lose the signal and let the run go on; inside the block a signal is recorded, and raised when the block ends.
"""
from __future__ import annotations

import contextlib
import importlib
import signal
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")


def interrupt_behind(exc: BaseException) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt behind `exc`: itself, or one a library turned into another error (a signal raised
    inside h5py's Cython code arrives as a SystemError caused by it; one inside transformers' lazy imports as a
    ModuleNotFoundError)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def stop_on_signals() -> None:
    """SIGTERM (a scheduler, `timeout`, `kill`) and Ctrl-C both raise KeyboardInterrupt("stopped by SIG...")."""
    if threading.current_thread() is threading.main_thread():
        for number in STOP_SIGNALS:
            signal.signal(number, _interrupt)


@contextlib.contextmanager
def signals_deferred():
    """Record SIGINT/SIGTERM inside the block and raise the first one as KeyboardInterrupt at its end."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {number: signal.signal(number, lambda signum, frame: received.append(signum))
                for number in STOP_SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if received:  # what the handler in force outside would have done (the CLI's raises KeyboardInterrupt)
        handler = previous[received[0]]
        if callable(handler):
            handler(received[0], None)
        elif handler == signal.SIG_DFL:
            _interrupt(received[0], None)


def import_deferred(*names: str) -> None:
    """Import compiled libraries with SIGINT/SIGTERM held back to the end: a signal inside an extension module's
    initialisation can leave it half-imported (e.g. numpy without its ufuncs) and be lost, so the run goes on
    to fail later as a bug."""
    with signals_deferred():
        for name in names:
            importlib.import_module(name)
