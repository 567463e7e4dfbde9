"""The surrogate file (HDF5, schema version 1): the fitted compact model of a gain-cell design.

Layout: root attributes `schema_version` (1), `file_kind` ("gaincell surrogate"), `created`,
`gaincell_version`, `design` (JSON), `source_path` and `source_sha256` (the characterization file it came
from, or the reference data); one group per component (`multiply`, `decay`, `c2p`, `energy`, `timing`,
optional others such as `multiply_2d`), each with
- attributes `model_id` (see gaincell.fitting.models, or `figures/v1` for plain figures), `config` (JSON),
  `source` (how it was obtained), `validity` (JSON: input -> [min, max]), `residuals` (JSON: rms,
  rms_rel_full_scale, max_abs, full_scale, n_points, worst_point);
- datasets `param_names` (strings), `values`, `stderr` (NaN where unknown), `covariance` (n x n, NaN where
  unknown).
No pickles. Writing is atomic (temporary file + rename). Loading validates everything and refuses a wrong
version, a missing component, a non-finite value or an unreadable file with a `SurrogateError`.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from gaincell import __version__
from gaincell.errors import GaincellError

SCHEMA_VERSION = 1
REQUIRED = ("multiply", "decay", "c2p", "energy", "timing")
FIGURES_MODEL = "figures/v1"
_STR = h5py.string_dtype()


class SurrogateError(GaincellError):
    """A surrogate file is missing, unreadable, of another schema version, or inconsistent."""


@dataclass
class Component:
    """One fitted (or given) part of the surrogate: a model id, its parameters and how good they are."""

    model_id: str
    param_names: list[str]
    values: np.ndarray
    stderr: np.ndarray | None = None
    covariance: np.ndarray | None = None
    config: dict = field(default_factory=dict)
    validity: dict[str, list[float]] = field(default_factory=dict)
    residuals: dict = field(default_factory=dict)
    source: str = ""

    def __post_init__(self):
        n = len(self.param_names)
        self.values = np.asarray(self.values, dtype=float).reshape(n)
        self.stderr = np.full(n, np.nan) if self.stderr is None else np.asarray(self.stderr, float).reshape(n)
        self.covariance = (np.full((n, n), np.nan) if self.covariance is None
                           else np.asarray(self.covariance, float).reshape(n, n))

    @property
    def params(self) -> dict[str, float]:
        return {k: float(v) for k, v in zip(self.param_names, self.values)}

    def param(self, name: str) -> float:
        return self.params[name]


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Surrogate:
    """All components plus provenance; `save`/`load` round-trip exactly."""

    components: dict[str, Component]
    design: dict = field(default_factory=dict)
    source_path: str = ""
    source_sha256: str = ""
    created: str = ""

    def __getitem__(self, name: str) -> Component:
        return self.components[name]

    def evaluate(self, component: str, **inputs):
        """Evaluate a fitted component's model, e.g. `evaluate("multiply", stored_v=..., pulse_s=..., vin_v=...)`."""
        from gaincell.fitting.models import evaluate

        part = self.components[component]
        return evaluate(part.model_id, part.config, part.params, **inputs)

    def save(self, path: str | Path) -> Path:
        """Write atomically (temporary file, then rename)."""
        check(self)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with h5py.File(tmp, "w") as f:
                f.attrs.update({"schema_version": SCHEMA_VERSION, "file_kind": "gaincell surrogate",
                                "created": self.created or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                "gaincell_version": __version__, "design": json.dumps(self.design, default=str),
                                "source_path": self.source_path, "source_sha256": self.source_sha256})
                for name, part in self.components.items():
                    group = f.create_group(name)
                    group.attrs.update({"model_id": part.model_id, "config": json.dumps(part.config),
                                        "source": part.source, "validity": json.dumps(part.validity),
                                        "residuals": json.dumps(part.residuals, default=float)})
                    group.create_dataset("param_names", data=np.array(part.param_names, dtype=object).astype(_STR))
                    group.create_dataset("values", data=part.values)
                    group.create_dataset("stderr", data=part.stderr)
                    group.create_dataset("covariance", data=part.covariance)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Surrogate":
        """Read and validate a surrogate file; anything wrong raises `SurrogateError` naming it."""
        path = Path(path)
        if not path.is_file():
            raise SurrogateError(f"surrogate file {path} does not exist")
        try:
            with h5py.File(path, "r") as f:
                version = f.attrs.get("schema_version")
                if version is None:
                    raise SurrogateError(f"{path} is not a gaincell surrogate (no schema_version attribute)")
                if int(version) != SCHEMA_VERSION:
                    raise SurrogateError(f"{path} has schema version {version}; this gaincell reads version "
                                         f"{SCHEMA_VERSION}")
                components = {name: _read_component(path, name, group) for name, group in f.items()}
                surrogate = cls(components, json.loads(f.attrs.get("design", "{}")),
                                str(f.attrs.get("source_path", "")), str(f.attrs.get("source_sha256", "")),
                                str(f.attrs.get("created", "")))
        except SurrogateError:
            raise
        except (OSError, KeyError, ValueError, json.JSONDecodeError) as exc:
            raise SurrogateError(f"{path} is not a readable surrogate file (truncated or corrupted?): {exc}") from None
        check(surrogate, path)
        return surrogate


def _read_component(path: Path, name: str, group) -> Component:
    try:
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in group["param_names"][()]]
        return Component(str(group.attrs["model_id"]), names, group["values"][()], group["stderr"][()],
                         group["covariance"][()], json.loads(group.attrs["config"]),
                         json.loads(group.attrs["validity"]), json.loads(group.attrs["residuals"]),
                         str(group.attrs.get("source", "")))
    except KeyError as exc:
        raise SurrogateError(f"{path}: component {name!r} lacks {exc}") from None


def check(surrogate: Surrogate, where: str | Path = "surrogate") -> None:
    """Every required component present, every parameter finite, names consistent with the model id."""
    from gaincell.fitting.models import MODELS

    missing = [name for name in REQUIRED if name not in surrogate.components]
    if missing:
        raise SurrogateError(f"{where}: missing component(s) {', '.join(missing)} (required: {', '.join(REQUIRED)})")
    for name, part in surrogate.components.items():
        bad = [p for p, v in zip(part.param_names, part.values) if not np.isfinite(v)]
        if bad:
            raise SurrogateError(f"{where}: component {name!r} has non-finite parameter(s) {', '.join(bad)}")
        if part.model_id != FIGURES_MODEL:
            if part.model_id not in MODELS:
                raise SurrogateError(f"{where}: component {name!r} has unknown model id {part.model_id!r}")
            expected = MODELS[part.model_id].param_names(part.config)
            if list(expected) != list(part.param_names):
                raise SurrogateError(f"{where}: component {name!r} ({part.model_id}) has parameters "
                                     f"{part.param_names}, expected {expected}")
