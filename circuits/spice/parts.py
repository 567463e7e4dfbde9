"""A sweep's chunk files: each finished chunk is saved atomically in FILE.parts/SWEEP/ as soon as it comes
back, and merged into the HDF5 file at each checkpoint (then deleted), so a killed run loses at most the
chunks in flight."""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np

from gaincell.outputs import disk_full, is_disk_full
from gaincell.store import save_sweeps
from gaincell.sweep_data import SweepData


def parts_folder(out: Path, sweep_name: str) -> Path:
    """FILE.parts/SWEEP: where the finished chunks of a sweep wait to be merged into FILE."""
    return out.with_name(out.name + ".parts") / sweep_name


def save_part(folder: Path, serial: str, indices, outcome: dict) -> None:
    """Save one finished chunk (its points' results, or its failure) atomically as FOLDER/SERIAL.npz."""
    arrays = {"index": np.array(indices, dtype=np.int64), "deck": np.array(outcome["deck"])}
    if "results" in outcome:
        results = outcome["results"]
        for name in results[0]:
            values = [np.asarray(r[name]) for r in results]
            kind = complex if any(np.iscomplexobj(v) for v in values) else float  # keep imaginary parts
            values = [v.astype(kind) for v in values]
            width = max(v.size for v in values)
            stacked = np.full((len(values), width) if values[0].ndim else (len(values),), np.nan, dtype=kind)
            for j, value in enumerate(values):
                if value.ndim:
                    stacked[j, : value.size] = value
                else:
                    stacked[j] = value
            arrays[f"signal:{name}"] = stacked
            arrays[f"length:{name}"] = np.array([v.size for v in values])
        arrays["simulator"] = np.array(outcome.get("simulator", ""))
    else:
        arrays["error"] = np.array(outcome["error"])
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{serial}.tmp.npz"
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, folder / f"{serial}.npz")
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full(folder / f"{serial}.npz", exc) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


PART_GLOB = "[0-9]*.npz"  # finished chunk files (a chunk is written as .SERIAL.tmp.npz, then renamed)


def apply_part(data: SweepData, path: Path) -> None:
    """Record the points of one saved chunk file (FILE.parts/SWEEP/*.npz) into `data`."""
    with np.load(path, allow_pickle=False) as part:
        indices = [tuple(int(i) for i in row) for row in part["index"]]
        deck = data.add_deck(str(part["deck"]))
        if "error" in part.files:
            for index in indices:
                data.record_failure(index, str(part["error"]), deck)
            return
        if str(part["simulator"]):
            data.attrs["simulator"] = str(part["simulator"])
        names = [k[len("signal:"):] for k in part.files if k.startswith("signal:")]
        stacked = {name: (part[f"signal:{name}"], part[f"length:{name}"]) for name in names}
        for j, index in enumerate(indices):
            data.record_ok(index, {name: table[j, : lengths[j]] if table.ndim == 2 else table[j]
                                   for name, (table, lengths) in stacked.items()}, deck)


def record_outcome(data: SweepData, indices: list[tuple], outcome: dict) -> None:
    """Record one chunk's outcome (per-point results, or one failure for all its points) into `data`."""
    deck = data.add_deck(outcome["deck"])
    if "results" not in outcome:
        for index in indices:
            data.record_failure(index, outcome["error"], deck)
        return
    if outcome.get("simulator"):
        data.attrs["simulator"] = outcome["simulator"]
    for index, result in zip(indices, outcome["results"]):
        data.record_ok(index, result, deck)


def checkpoint(out: Path, data: SweepData, parts: Path) -> None:
    """Merge everything recorded so far into the HDF5 file (atomically), then drop the merged parts."""
    merged = sorted(parts.glob(PART_GLOB)) if parts.exists() else []
    merged += list(parts.glob(".*.tmp.npz")) if parts.exists() else []  # chunk writes cut short by a kill
    data.attrs["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if data.decks:
        data.attrs["netlist"] = data.decks[0]
        data.attrs["netlist_sha256"] = hashlib.sha256(data.decks[0].encode()).hexdigest()
    save_sweeps(out, [data])
    for part in merged:
        part.unlink(missing_ok=True)
    for folder in (parts, parts.parent):
        try:
            folder.rmdir()
        except OSError:
            pass
