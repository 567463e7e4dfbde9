"""GPU attention baselines: measured files written by benchmarks/gpu_attention_baseline.py, or the paper's.

Two JSON formats are read:
- this project's (`"file_kind": "gaincell gpu attention baseline"`): device, device_kind ("cuda" or
  "cpu"), batch, heads, head_dim, tokens, latency_per_step_s, energy_per_step_j (null when not measured),
  idle_power_w, energy_method, command, created;
- the paper's (paper_gpu/*.json, from its public code): S (batch), H, D_h, N_tokens,
  mean_latency_per_token (s per decode step of the whole batch), mean_energy_per_token (J per step).
Both describe one attention layer decoding one token per sequence per step with a KV cache.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from gaincell.errors import ConfigError

FILE_KIND = "gaincell gpu attention baseline"
PAPER_FILES = {"nvidia_4090_attention.json": "NVIDIA RTX 4090", "nvidia_jetson_attention.json": "NVIDIA Jetson Nano"}


@dataclass(frozen=True)
class GpuBaseline:
    """One attention layer's decode step on a GPU (or CPU): latency and energy for the whole batch."""

    label: str
    device_kind: str  # "cuda", "cpu" or "paper"
    batch: int
    heads: int
    head_dim: int
    tokens: int
    latency_per_step_s: float
    energy_per_step_j: float | None
    source: str


MAX_BASELINE_BYTES = 1 << 20


def _number(data: dict, key: str, file) -> float:
    value = data.get(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ConfigError("--gpu-baseline", f"{file}: {key!r} must be a positive number; got {value!r}")
    return float(value)


def load_gpu_baseline(path: str | Path, label: str | None = None) -> GpuBaseline:
    """Read a baseline JSON in this project's format or the paper's."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_BASELINE_BYTES:
            raise ValueError(f"{path.stat().st_size} bytes; a baseline is a few hundred")
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except RecursionError:
        raise ConfigError("--gpu-baseline", f"cannot read {path} (its JSON is nested too deeply); give a JSON "
                                            "written by benchmarks/gpu_attention_baseline.py or one of the "
                                            "paper's") from None
    except (OSError, ValueError) as exc:
        raise ConfigError("--gpu-baseline", f"cannot read {path} ({exc}); give a JSON written by "
                                            "benchmarks/gpu_attention_baseline.py or one of the paper's") from None
    if data.get("file_kind") == FILE_KIND:
        energy = data.get("energy_per_step_j")
        return GpuBaseline(label or f"{data.get('device', '?')} ({data.get('device_kind', '?')}, measured)",
                           str(data.get("device_kind", "?")), int(_number(data, "batch", path)),
                           int(_number(data, "heads", path)), int(_number(data, "head_dim", path)),
                           int(_number(data, "tokens", path)), _number(data, "latency_per_step_s", path),
                           None if energy is None else _number(data, "energy_per_step_j", path),
                           f"measured: {path.name}, {data.get('created', '')}; {data.get('energy_method', '')}")
    if "mean_latency_per_token" in data:
        return GpuBaseline(label or path.stem, "paper", int(_number(data, "S", path)), int(_number(data, "H", path)),
                           int(_number(data, "D_h", path)), int(_number(data, "N_tokens", path)),
                           _number(data, "mean_latency_per_token", path), _number(data, "mean_energy_per_token", path),
                           f"paper's measurement ({path.name}, Leroux et al. 2025 public code; timing without "
                           "GPU synchronisation)")
    raise ConfigError("--gpu-baseline", f"{path} is neither a gaincell GPU baseline (file_kind {FILE_KIND!r}) nor "
                                        "the paper's format (mean_latency_per_token, mean_energy_per_token)")


def paper_gpu_baselines() -> list[GpuBaseline]:
    """The paper's RTX 4090 and Jetson Nano measurements (shipped in gaincell.energy/paper_gpu)."""
    folder = resources.files("gaincell.energy") / "paper_gpu"
    return [load_gpu_baseline(Path(str(folder / name)), f"{label} (paper's measurement)")
            for name, label in PAPER_FILES.items()]
