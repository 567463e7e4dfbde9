"""A simulator worker process: `python -P worker_entry.py FD` (see workers.py).

Run as a script, not with `-m`: it needs nothing from gaincell to start, so when importing gaincell fails
it can send that error to the parent over the socket (printed once there) instead of a traceback per
worker. `-P` keeps the working folder and this script's folder off `sys.path`.
"""
import importlib.util
import sys
import traceback
from multiprocessing.connection import Connection


def _where_gaincell_is() -> str:
    """Where this process's path finds gaincell (a failed import leaves no module to ask)."""
    try:
        spec = importlib.util.find_spec("gaincell")
    except Exception as exc:
        return f"nowhere ({type(exc).__name__}: {exc})"
    if spec is None:
        return "nowhere"
    return spec.origin if spec.has_location else str(list(spec.submodule_search_locations or []))


def main(argv: list[str]) -> int:
    conn = Connection(int(argv[1]))
    try:
        from gaincell.circuits.spice.workers import serve
    except Exception as exc:
        try:
            conn.send(("failed", f"{type(exc).__name__}: {exc}", traceback.format_exc(), _where_gaincell_is()))
        except OSError:
            pass
        return 1
    except KeyboardInterrupt:
        return 1
    try:
        serve(conn)
    except (OSError, EOFError):  # the parent is gone: nothing to report to
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
