"""Shipped adapted models: an adaptation stored as its difference from the base model, small enough for package data.

`export_shipped` turns an adapted folder (`gaincell adapt --out`) into two files: `<name>.safetensors` holds every
weight that differs from the base model as low-rank factors in float16 (an SVD: the stages' merged LoRA updates
have rank at most the sum of their ranks, and only the directions above 1 % of the largest are kept; a
one-dimensional weight is kept whole) and the gain-cell scalers; `<name>.json` names
the base model with the sha256 of its installed file, the surrogate with its sha256, the layer options, and the
command, text and scores that made it.

`shipped_model_folder(name)` rebuilds the adapted folder once per machine under the model cache (base weights plus
the factors, the scalers, the surrogate): every command then loads it as any adapted folder. It is refused
(`ModelLoadError`) when the installed base model or the packaged surrogate is not the one the model was made for.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from gaincell.errors import ModelLoadError
from gaincell.outputs import atomic_write_text
from gaincell.progress import say
from gaincell.resources import data_path
from gaincell.surrogate.file import sha256_of

from .checkpoint import load_tensors, save_tensors
from .manifest import held_heads
from .models import (PACKAGED, SHIPPED, base_state, gaincell_state, load_adapted, load_pretrained, model_cache_dir,
                     read_manifest, resolve_model, save_adapted, swap_attention)
SURROGATES = {"paper": "paper_reference.h5"}  # surrogate names a shipped model may be made for -> package data
RANK_TOLERANCE = 1e-2  # singular values below this fraction of the largest are dropped (the shipped model's
# scores are those of the rebuilt model: benchmarks/RESULTS.md)
FORMAT = "gaincell-shipped-adaptation/1"


def model_folder(spec) -> Path:
    """A --model value -> a folder: a shipped adapted model (built on first use), else as `models.resolve_model`."""
    if str(spec) in SHIPPED:
        return shipped_model_folder(str(spec))
    return resolve_model(spec)


def base_fingerprint(spec: str) -> str:
    """sha256 of the installed base model's weights: the packaged model's source file, or a folder's safetensors."""
    if spec in PACKAGED:
        import importlib.util

        package, source, _ = PACKAGED[spec]
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            raise ModelLoadError(f"base model {spec}: the PyPI package {package.replace('_', '-')} is not installed")
        return sha256_of(Path(found.submodule_search_locations[0]) / source)
    return sha256_of(resolve_model(spec) / "model.safetensors")


def low_rank(delta: torch.Tensor, max_rank: int, tolerance: float, dtype) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(up, down, relative error) in `dtype` with up @ down ~ delta, keeping the singular values above `tolerance`
    x the largest."""
    u, s, vh = torch.linalg.svd(delta.double(), full_matrices=False)
    rank = max(1, min(max_rank, int((s > tolerance * s[0]).sum())))
    up, down = (u[:, :rank] * s[:rank]).to(dtype), vh[:rank].to(dtype)
    error = torch.linalg.norm(up.double() @ down.double() - delta.double()) / torch.linalg.norm(delta.double())
    return up, down, float(error)


def export_shipped(folder: Path, out: Path, name: str, surrogate: str, made_by: dict, max_rank: int = 64,
                   tolerance: float = RANK_TOLERANCE, dtype=torch.float16) -> dict:
    """Write `out/<name>.safetensors` and `out/<name>.json` from the adapted `folder` (factors in `dtype`, singular
    values above `tolerance` x the largest); returns the manifest."""
    manifest = read_manifest(folder)
    base_name = manifest["base_model"]
    if sha256_of(folder / "surrogate.h5") != sha256_of(data_path(SURROGATES[surrogate])):
        raise ModelLoadError(f"{folder}: was not adapted to the packaged surrogate {surrogate!r}")
    adapted, _ = load_adapted(folder)
    base = load_pretrained(base_name)[0].state_dict()
    tensors, errors = {}, {}
    for key, weight in base_state(adapted).items():
        delta = weight.float() - base[key].float()
        if not delta.abs().max() > 0:
            continue
        if delta.dim() == 2:
            up, down, errors[key] = low_rank(delta, max_rank, tolerance, dtype)
            tensors[f"delta/{key}/up"], tensors[f"delta/{key}/down"] = up.contiguous(), down.contiguous()
        else:
            tensors[f"delta/{key}/full"] = delta
    tensors.update({f"gaincell/{key}": value for key, value in gaincell_state(adapted).items()})
    out.mkdir(parents=True, exist_ok=True)
    weights = out / f"{name}.safetensors"
    partial = weights.with_name(weights.name + ".partial")
    save_tensors(tensors, partial)
    partial.replace(weights)
    record = {"format": FORMAT, "name": name, "base_model": base_name, "base_sha256": base_fingerprint(base_name),
              "surrogate": surrogate, "surrogate_sha256": sha256_of(data_path(SURROGATES[surrogate])),
              "layer": manifest["layer"], "stages": {s: _summary(r) for s, r in manifest["stages"].items()},
              **({"held_heads": held_heads(manifest)} if held_heads(manifest) else {}),
              "weights_sha256": sha256_of(weights), "rank_tolerance": tolerance, "max_rank": max_rank,
              "max_relative_error_of_factors": max(errors.values(), default=0.0),
              **made_by}
    atomic_write_text(out / f"{name}.json", json.dumps(record, indent=2) + "\n")
    return record


def _summary(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in ("losses", "layer_errors")}


def shipped_files(name: str, source: Path | None = None) -> tuple[Path, Path]:
    """(weights, manifest) of shipped model `name`: package data, or the files `export_shipped` wrote to `source`."""
    if source is None:
        return data_path(f"{name}.safetensors"), data_path(f"{name}.json")
    return source / f"{name}.safetensors", source / f"{name}.json"


def shipped_model_folder(name: str, progress=say, source: Path | None = None) -> Path:
    """The adapted folder of shipped model `name`, built under the model cache on first use (and again when the
    package's files change); refused when the installed base model is not the one it was made for."""
    weights, manifest = shipped_files(name, source)
    record = json.loads(manifest.read_text())
    if record.get("format") != FORMAT or sha256_of(weights) != record["weights_sha256"]:
        raise ModelLoadError(f"--model {name}: the packaged files {weights.name} and {name}.json do not match; "
                             "reinstall gaincell")
    folder = model_cache_dir() / name
    stamp = folder / "SHIPPED.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == record:
        return folder
    installed = base_fingerprint(record["base_model"])
    if installed != record["base_sha256"]:
        raise ModelLoadError(f"--model {name}: was made for base model {record['base_model']} with weights sha256 "
                             f"{record['base_sha256'][:12]}..., but the installed one has {installed[:12]}...; install "
                             "the pinned version (requirements.lock)")
    surrogate = data_path(SURROGATES[record["surrogate"]])
    if sha256_of(surrogate) != record["surrogate_sha256"]:
        raise ModelLoadError(f"--model {name}: was made for another version of the {record['surrogate']!r} surrogate")
    progress(f"building {name} in {folder} from the packaged adaptation of {record['base_model']} (once per machine)")
    model, tokenizer, _ = load_pretrained(record["base_model"])
    tensors = load_tensors(weights)
    state = model.state_dict()
    with torch.no_grad():
        for key, weight in state.items():
            if f"delta/{key}/up" in tensors:
                weight += (tensors[f"delta/{key}/up"].float() @ tensors[f"delta/{key}/down"].float()).to(weight.dtype)
            elif f"delta/{key}/full" in tensors:
                weight += tensors[f"delta/{key}/full"]
    swap_attention(model, surrogate, **record["layer"])
    scalers = {k.removeprefix("gaincell/"): v for k, v in tensors.items() if k.startswith("gaincell/")}
    missing, unexpected = model.load_state_dict(scalers, strict=False)
    if unexpected:
        raise ModelLoadError(f"--model {name}: its scalers do not fit {record['base_model']} ({unexpected[:3]})")
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    save_adapted(model, tokenizer, partial, surrogate, {"base_model": record["base_model"],
                                                        "surrogate_sha256": record["surrogate_sha256"],
                                                        "stages_done": list(record["stages"]),
                                                        "stages": record["stages"], "shipped": name,
                                                        **({"held_heads": record["held_heads"]}
                                                           if "held_heads" in record else {})})
    atomic_write_text(partial / "SHIPPED.json", json.dumps(record, indent=2) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder
