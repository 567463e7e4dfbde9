"""Checkpoints and weight files as tensors plus plain data, never pickles.

A checkpoint (model tensors, optimizer and schedule state, counters, options) is one safetensors file: the
tensors under path-like keys ("model/...", "optimizer/state/0/exp_avg"), everything else as JSON in the
file's metadata, where each tensor appears as {"__tensor__": key}. Reading it executes nothing: a file
handed over in an output folder can at worst hold wrong numbers, which the loaders then refuse by name.
Written atomically (temporary file + rename).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from gaincell.errors import InputFileError
from gaincell.outputs import disk_full, is_disk_full

_META_KEY = "gaincell"
_TENSOR, _DICT = "__tensor__", "__dict__"


def _split(value, key: str, tensors: dict):
    """`value` as JSON-able data, its tensors moved into `tensors` under keys below `key`."""
    if isinstance(value, torch.Tensor):
        tensors[key] = value.detach().cpu().clone()  # a copy: safetensors refuses tensors sharing memory
        return {_TENSOR: key}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {k: _split(v, f"{key}/{k}", tensors) for k, v in value.items()}
        return {_DICT: [[k, _split(v, f"{key}/{k}", tensors)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return [_split(v, f"{key}/{i}", tensors) for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, str)) or (isinstance(value, float) and math.isfinite(value)):
        return value
    if isinstance(value, float):
        return {"__float__": repr(value)}
    raise TypeError(f"a checkpoint holds tensors and plain data only, not {type(value).__name__} (at {key})")


def _join(value, tensors: dict, where: str):
    if isinstance(value, dict):
        if set(value) == {_TENSOR}:
            if value[_TENSOR] not in tensors:
                raise InputFileError(f"{where}: names a tensor {value[_TENSOR]!r} it does not hold")
            return tensors[value[_TENSOR]]
        if set(value) == {"__float__"}:
            return float(value["__float__"])
        if set(value) == {_DICT}:
            return {k: _join(v, tensors, where) for k, v in value[_DICT]}
        return {k: _join(v, tensors, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_join(v, tensors, where) for v in value]
    return value


def save_state(state: dict, path: str | Path) -> None:
    """Write `state` (nested dicts/lists of tensors, numbers, strings, None) to `path` atomically."""
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    meta = json.dumps(_split(state, "", tensors))
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        save_file(tensors, str(partial), metadata={_META_KEY: meta})
        os.replace(partial, path)
    except (OSError, SafetensorError) as exc:
        if is_disk_full(exc):
            raise disk_full(path, exc) from None
        raise
    finally:
        partial.unlink(missing_ok=True)


def load_state(path: str | Path, device: str | torch.device = "cpu") -> dict:
    """Read a file written by `save_state`; anything else raises `InputFileError` naming the file."""
    path = Path(path)
    where = f"{path} (a gaincell checkpoint)"
    if path.is_symlink() or not path.is_file():
        raise InputFileError(f"{where}: not a regular file")
    try:
        with safe_open(str(path), "pt") as handle:
            meta = (handle.metadata() or {}).get(_META_KEY)
        tensors = load_file(str(path), device=str(device))
        data = json.loads(meta) if meta is not None else None
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError, RecursionError) as exc:
        raise InputFileError(f"{where}: not a readable safetensors checkpoint ({exc}); delete it to start "
                             "over") from None
    if not isinstance(data, dict):
        raise InputFileError(f"{where}: its metadata holds no gaincell state; delete it to start over")
    return _join(data, tensors, where)


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    """A flat name -> tensor mapping as a plain safetensors file (weights other tools can read)."""
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """A flat safetensors file; anything else raises `InputFileError` naming it."""
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputFileError(f"{path}: not a readable safetensors file ({exc})") from None
