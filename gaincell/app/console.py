"""The `gaincell` console script: Ctrl-C and SIGTERM are held back while the CLI's modules load (a signal inside
an import would leave a half-imported library behind, or print the interpreter's traceback), then the CLI runs
with its own handling (`gaincell.app.cli`), and a signal that came during the loading stops it at once."""
import signal


def run() -> None:
    received: list[int] = []
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda signum, frame: received.append(signum))
    from ..interrupts import stop_on_signals
    from .cli import run as run_cli, stopped

    stop_on_signals()
    if received:
        stopped(KeyboardInterrupt(f"stopped by {signal.Signals(received[0]).name}"))
    run_cli()
