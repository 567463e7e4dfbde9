"""The adapted model folder's format: its file names, its manifest (`adapted.json`) and the recovery of a save
cut short (see `adapt.models.save_adapted`), all checked as untrusted input: a manifest of the wrong shape or
range, or a link where the recovery would move files, is a `ModelLoadError` naming the folder."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from gaincell.errors import ModelLoadError
from gaincell.surrogate.attention import MAX_TILE, MAX_WINDOW, MODES, is_count
from gaincell.surrogate.cellmodel import TOKEN_PERIOD_RANGE_S

STAGING = ".staging"
ADAPTED_MANIFEST = "adapted.json"
GAINCELL_WEIGHTS = "gaincell-attention.safetensors"
LEGACY_WEIGHTS = "gaincell-attention.pt"  # folders written before safetensors: read with weights_only=True


def check_staging(folder: Path) -> None:
    """Refuse a staging entry that is not a real folder of real files (a link could make the recovery move or
    delete files of another folder)."""
    staging = folder / STAGING
    if staging.is_symlink() or (staging.exists() and not staging.is_dir()):
        raise ModelLoadError(f"{staging} is a symbolic link or not a folder; gaincell only recovers saves from a "
                             f"real {STAGING} folder inside {folder}: remove it by hand")
    if staging.is_dir():
        odd = [p.name for p in staging.iterdir() if p.is_symlink() or not p.is_file()]
        if odd:
            raise ModelLoadError(f"{staging} holds {', '.join(sorted(odd)[:3])}, which are links or folders, not "
                                 "files gaincell wrote: remove the folder by hand")


def finish_interrupted_save(folder: Path) -> None:
    """Complete a save whose staging folder is whole (roll forward), or discard a partial one (roll back).
    Only the writer (`gaincell adapt`) calls this; readers never change a folder."""
    folder = Path(folder)
    staging = folder / STAGING
    check_staging(folder)
    if not staging.is_dir():
        return
    if not (staging / ADAPTED_MANIFEST).is_file():
        shutil.rmtree(staging)
        return
    for path in sorted(staging.iterdir()):
        if path.name != ADAPTED_MANIFEST:
            os.replace(path, folder / path.name)
    os.replace(staging / ADAPTED_MANIFEST, folder / ADAPTED_MANIFEST)
    staging.rmdir()


def read_manifest(folder: str | Path) -> dict:
    """The folder's `adapted.json`, checked to be a JSON object with the fields the loaders read."""
    path = Path(folder) / ADAPTED_MANIFEST
    if path.is_symlink() or not path.is_file():
        raise ModelLoadError(f"{folder}: not an adapted model folder (no {ADAPTED_MANIFEST} file)")
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ModelLoadError(f"{path}: not a readable JSON manifest ({exc})") from None
    if not isinstance(manifest, dict):
        raise ModelLoadError(f"{path}: is not a JSON object; it is not a manifest written by `gaincell adapt`")
    required, optional = {"layer": dict, "files": dict}, {"stages_done": list, "base_model": str, "surrogate_sha256": str}
    wrong = [f"{key} ({kind.__name__})" for key, kind in (required | optional).items()
             if not isinstance(manifest.get(key), kind) and (key in required or key in manifest)]
    if wrong:
        raise ModelLoadError(f"{path}: lacks or mistypes {', '.join(wrong)}; it is not a manifest written by "
                             "`gaincell adapt`")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in manifest["files"].items()):
        raise ModelLoadError(f"{path}: its files entry must map file names to sha256 digests")
    heads = held_heads(manifest)
    if not isinstance(heads, list) or not all(
            isinstance(h, list) and len(h) == 2 and all(_is_index(i) for i in h) for h in heads):
        raise ModelLoadError(f"{path}: its sharpened heads must be a list of [layer, head] index pairs")
    return manifest


def held_heads(manifest: dict) -> list[list[int]]:
    """The heads ([layer, head]) whose C2P gain and threshold later stages keep: those its heads stage set, or
    those its source model held (an adapted or shipped model adapted further)."""
    stages = manifest.get("stages")
    heads = stages.get("heads") if isinstance(stages, dict) else None
    return (heads.get("heads") if isinstance(heads, dict) else None) or manifest.get("held_heads", [])


def _is_index(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 16


def _is_time(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        TOKEN_PERIOD_RANGE_S[0] <= value <= TOKEN_PERIOD_RANGE_S[1]


LAYER_OPTIONS = {  # a manifest's "layer" field -> (what is allowed, test); the keyword arguments of swap_attention
    "mode": (f"one of {', '.join(MODES)}", lambda v: v in MODES),
    "tile": (f"an integer 1 .. {MAX_TILE}", lambda v: is_count(v, MAX_TILE)),
    "window": (f"null or an integer 1 .. {MAX_WINDOW}, a multiple of tile",
               lambda v: v is None or is_count(v, MAX_WINDOW)),
    "quantize": ("true or false", lambda v: isinstance(v, bool)),
    "decay": ("true or false", lambda v: isinstance(v, bool)),
    "linear_backward": ("true or false", lambda v: isinstance(v, bool)),
    "token_period_s": ("a time in seconds, {:g} .. {:g}".format(*TOKEN_PERIOD_RANGE_S), _is_time),
    "hardware": ("an object of hardware fields set for a study (gaincell.hardware)", lambda v: isinstance(v, dict)),
}


def check_layer_options(options, where) -> None:
    """The "layer" options of an adapted folder's manifest: known fields of the right type and range, else a
    ModelLoadError naming the folder, field, value and what is allowed."""
    def refuse(problem: str):
        return ModelLoadError(f"{where}/{ADAPTED_MANIFEST}: {problem}; it is not a manifest written by "
                              "`gaincell adapt`")

    if not isinstance(options, dict):
        raise refuse(f"'layer' must be a JSON object of layer options ({', '.join(LAYER_OPTIONS)})")
    for field, value in options.items():
        if field not in LAYER_OPTIONS:
            raise refuse(f"layer.{field} is not a layer option; they are {', '.join(LAYER_OPTIONS)}")
        allowed, test = LAYER_OPTIONS[field]
        if not test(value):
            raise refuse(f"layer.{field} = {json.dumps(value)[:80]} is out of range: it must be {allowed}")
    tile, window = options.get("tile", 64), options.get("window")
    if window is not None and (window < tile or window % tile):
        raise refuse(f"layer.window = {window} is out of range: it must be a multiple of layer.tile = {tile}")
