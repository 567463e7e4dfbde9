"""What the tests keep between runs, outside the project and outside ../shared: plain ngspice's results on the
reference netlists (tests/test_conformance.py), recomputed when the ngspice binary or its version, the netlist
folder (any file in it) or how the reference is run changes; and Triton's compile cache (tests/test_kernel.py).

Where: $GAINCELL_TEST_CACHE, else $XDG_CACHE_HOME/gaincell-tests, else ~/.cache/gaincell-tests. ngspice's
results: one file per key, `conformance-<key>.npz`: the arrays, and a JSON index of the outcomes (read without
pickle). A file that cannot be read counts as absent; a new one replaces the old atomically. Delete the folder
to start afresh.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

FORMAT = 1  # bump when the stored layout or what reference_run returns changes


def cache_folder() -> Path:
    explicit = os.environ.get("GAINCELL_TEST_CACHE")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gaincell-tests"


def ngspice_identity() -> str:
    """`ngspice -v` and the binary's own hash: another version or build gives another key."""
    executable = shutil.which("ngspice")
    if executable is None:
        return "no ngspice"
    version = subprocess.run([executable, "-v"], capture_output=True, text=True, timeout=60).stdout
    binary = hashlib.sha256(Path(executable).resolve().read_bytes()).hexdigest()
    return f"{version}\n{binary}"


def cache_key(folder: Path, *settings: object) -> str:
    """Every file under `folder` (path and bytes), the ngspice binary and the run's settings."""
    digest = hashlib.sha256(f"{FORMAT}\n{ngspice_identity()}\n{settings!r}\n".encode())
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(folder)}\0{path.stat().st_size}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:32]


def _path(key: str) -> Path:
    return cache_folder() / f"conformance-{key}.npz"


def load(key: str) -> dict | None:
    """The stored results for `key` ({netlist: reference_run's result}), or None."""
    try:
        with np.load(_path(key), allow_pickle=False) as stored:
            index = json.loads(str(stored["index"]))
            return {name: _decode(entry, stored) for name, entry in index.items()}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def store(key: str, results: dict) -> None:
    arrays: dict[str, np.ndarray] = {}
    index = {name: _encode(result, arrays) for name, result in results.items()}
    folder = cache_folder()
    folder.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".conformance-", suffix=".tmp.npz")
    try:
        with os.fdopen(handle, "wb") as out:
            np.savez(out, index=np.array(json.dumps(index)), **arrays)
        os.replace(temporary, _path(key))
    finally:
        Path(temporary).unlink(missing_ok=True)
    for old in folder.glob("conformance-*.npz"):  # results of an older binary or folder are of no more use
        if old != _path(key):
            old.unlink(missing_ok=True)


def _encode(result: tuple, arrays: dict) -> list:
    if result[0] != "ok":
        return list(result)
    plots = []
    for plot_name, columns in result[1]:
        vectors = []
        for vector_name, values in columns:
            array_name = f"a{len(arrays)}"
            arrays[array_name] = np.asarray(values)
            vectors.append([vector_name, array_name])
        plots.append([plot_name, vectors])
    return ["ok", plots]


def _decode(entry: list, stored) -> tuple:
    if entry[0] != "ok":
        return tuple(entry)
    return ("ok", [(plot_name, [(vector_name, stored[array_name]) for vector_name, array_name in vectors])
                   for plot_name, vectors in entry[1]])


def writable_copy(source: Path, target: Path) -> Path:
    """`source`'s files under `target` in writable folders (../shared is read-only; ngspice writes logs, e.g.
    BSIM's model checks, beside the netlist it runs)."""
    for path in sorted(source.rglob("*")):
        if path.is_file():
            destination = target / path.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, destination)
    return target
