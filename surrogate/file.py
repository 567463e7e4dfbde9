"""The surrogate file (HDF5, schema version 4): the fitted compact model of a gain-cell design.

Layout: root attributes `schema_version` (4), `file_kind` ("gaincell surrogate"), `created`,
`gaincell_version`, `design_record` (the design it was fitted to, `gaincell.design.design_record`; read back
as the same `CellDesign`), `source_path` and `source_sha256` (the characterization file it came from, or the
reference data); one group per component (`multiply`, `decay`, `c2p`, `energy`, `timing`, optional others
such as `multiply_2d`), each with
- attributes `model_id` (see gaincell.compact, or `figures/v1` for plain figures), `config` (JSON),
  `source` (how it was obtained), `validity` (JSON: input -> [min, max]), `residuals` (JSON: rms,
  rms_rel_full_scale, max_abs, full_scale, n_points, worst_point);
- datasets `param_names` (strings), `values`, `stderr` (NaN where unknown), `covariance` (n x n, NaN where
  unknown);
optionally the group `variation` (not a component: the cell-to-cell spread and read noise,
`surrogate.variation.Variation`, from a Monte Carlo characterization; `Surrogate.variation` is None without it),
and the group `hardware` (not a component: the converters, array and read phases the layer computes,
`gaincell.hardware.HardwareConfig`, one attribute per field; files without it get the paper's defaults).
Files of schema version 1 (the design as a JSON attribute `design`), 2 (no variation group) and 3 (no hardware
group) still load. No pickles. Writing is atomic (the file built in memory, then written whole). Loading (and
saving) validates everything and refuses, with a `SurrogateError` naming the file, component and parameter: an
unreadable file, a file pointing into other files (`gaincell.hdf5_trust`), a wrong version, a missing
component, a non-finite value, a parameter outside its physically plausible range (the model spec's, `gaincell.compact`: a zero
saturation charge, a negative time constant, a coefficient of 1e30 A/V^3 ...), a multiply whose read current
over its validity box exceeds `MAX_READ_CURRENT_A` (a variation: whose cells' mean + one sigma does), a config
voltage beyond +-10 V (`VOLTAGE`), validity bounds that are not finite and ordered, and a hardware
configuration out of its fields' ranges. The attention layer compiled from it is probed where it is built
(`cellmodel.probe_compiled`); this module needs no torch.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from gaincell import __version__
from gaincell.compact import (ELECTRON_C, FIGURES_MODEL, LEAKAGE, MAX_CHARGE_C, MAX_VOLTAGE_V, MODELS, Plausible,
                              evaluate)
from gaincell.design import CellDesign
from gaincell.design_record import DESIGN_RECORD, design_record, read_design_record
from gaincell.errors import ConfigError, SurrogateError
from gaincell.hardware import HardwareConfig, recorded_before
from gaincell.hdf5_trust import check_trusted
from gaincell.interrupts import signals_deferred
from gaincell.outputs import utf8_text
from gaincell.periphery import C2PDesign, DacDesign
from gaincell.store import new_hdf5

from .variation import GROUP as VARIATION_GROUP, Variation

SCHEMA_VERSION = 4
READABLE_VERSIONS = (1, 2, 3, 4)  # 1: the design as a JSON attribute `design`; 3: + `variation`; 4: + `hardware`
HARDWARE_GROUP = "hardware"
REQUIRED = ("multiply", "decay", "c2p", "energy", "timing")
_STR = h5py.string_dtype()
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


VOLTAGE = Plausible("a voltage of the cell (a level, a reference or the supply)", "V", -MAX_VOLTAGE_V, MAX_VOLTAGE_V)
CONFIG_VOLTAGES = ("y0_v", "vin0_v", "hold_v", "ref_v", "vdd_v")
# figures/v1 components hold named figures; their unit suffix says what they are
FIGURES = {"_j": Plausible("an energy per action", "J", 0.0, 1.0), "_w": Plausible("a power", "W", 0.0, 1e3),
           "_s": Plausible("a time", "s", 0.0, 1e6)}
NAMED_FIGURES = {"t_max_s": Plausible("the read pulse's full width T_max", "s", 1e-15, 1e-3),
                 "latency_per_token_s": Plausible("the time between two tokens", "s", 1e-15, 1.0)}
CONFIG = {"output_full_scale_c": Plausible("the readout's full-scale charge (the attention divides by it)", "C",
                                           ELECTRON_C, MAX_CHARGE_C),
          "output_full_scale_negative_c": Plausible("the readout's negative full-scale charge", "C", ELECTRON_C,
                                                    MAX_CHARGE_C)}
MAX_READ_CURRENT_A = 1e-2  # no gain cell reads 10 mA: a multiply giving more is a unit or sign slip
MAX_POLY_ORDER = 9


def plausible_range(model_id: str, parameter: str) -> Plausible | None:
    """The range a parameter of a model must lie in (None: any finite value): the model's spec, or for a
    component of figures the figure's unit suffix."""
    if model_id == FIGURES_MODEL:
        return NAMED_FIGURES.get(parameter) or next(
            (rule for suffix, rule in FIGURES.items() if parameter.endswith(suffix)), None)
    return MODELS[model_id].plausible(parameter) if model_id in MODELS else None


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
    """All components, the design they were fitted to, and provenance; `save`/`load` round-trip exactly."""

    components: dict[str, Component]
    design: CellDesign
    source_path: str = ""
    source_sha256: str = ""
    created: str = ""
    variation: Variation | None = None  # cell-to-cell spread and read noise (Monte Carlo), when fitted
    hardware: HardwareConfig | None = None  # None: `gaincell.hardware.recorded_before` its timing figures
    c2p_design: C2PDesign | None = None  # the converters and DAC it was characterized with (None: not recorded)
    dac_design: DacDesign | None = None

    def __post_init__(self):
        if self.hardware is None and isinstance(self.components.get("timing"), Component):
            self.hardware = recorded_before(self.components["timing"].params)

    def __getitem__(self, name: str) -> Component:
        return self.components[name]

    def evaluate(self, component: str, **inputs):
        """Evaluate a fitted component's model, e.g. `evaluate("multiply", stored_v=..., pulse_s=..., vin_v=...)`."""
        part = self.components[component]
        return evaluate(part.model_id, part.config, part.params, **inputs)

    def save(self, path: str | Path) -> Path:
        """Check, then write atomically (temporary file, then rename)."""
        path = Path(path)
        check(self, f"surrogate to write to {path}")
        with new_hdf5(path) as f:
            f.attrs.update({"schema_version": SCHEMA_VERSION, "file_kind": "gaincell surrogate",
                            "created": self.created or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                            "gaincell_version": __version__, DESIGN_RECORD: design_record(self.design, self.c2p_design,
                                                                                         self.dac_design),
                            "source_path": utf8_text(self.source_path), "source_sha256": self.source_sha256})
            for name, part in self.components.items():
                group = f.create_group(name)
                group.attrs.update({"model_id": part.model_id, "config": json.dumps(part.config),
                                    "source": utf8_text(part.source), "validity": json.dumps(part.validity),
                                    "residuals": json.dumps(part.residuals, default=float)})
                group.create_dataset("param_names", data=np.array(part.param_names, dtype=object).astype(_STR))
                group.create_dataset("values", data=part.values)
                group.create_dataset("stderr", data=part.stderr)
                group.create_dataset("covariance", data=part.covariance)
            if self.variation is not None:
                self.variation.write(f)
            f.create_group(HARDWARE_GROUP).attrs.update(self.hardware.to_attrs())
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Surrogate":
        """Read and validate a surrogate file; anything wrong raises `SurrogateError` naming it."""
        path = Path(path)
        if not path.is_file():
            raise SurrogateError(f"surrogate file {path} does not exist")
        try:
            with open(path, "rb") as handle:
                head = handle.read(8)
        except OSError as exc:
            raise SurrogateError(f"surrogate file {path} cannot be read ({exc.strerror})") from None
        if head != HDF5_SIGNATURE:
            what = "it is empty (0 bytes)" if not head else "it is not an HDF5 file (a text file or another format?)"
            raise SurrogateError(f"{path} is not a gaincell surrogate: {what}")
        try:
            with signals_deferred(), h5py.File(path, "r") as f:  # h5py would swallow an interrupt
                check_trusted(f, path, SurrogateError)
                version = f.attrs.get("schema_version")
                if version is None:
                    kind = f.attrs.get("file_kind", "")
                    kind = kind.decode() if isinstance(kind, bytes) else str(kind)
                    what = f"it is a {kind} file" if kind else "no schema_version attribute"
                    raise SurrogateError(f"{path} is not a gaincell surrogate ({what})")
                if int(version) not in READABLE_VERSIONS:
                    raise SurrogateError(f"{path} has schema version {version}; this gaincell reads versions "
                                         f"{', '.join(map(str, READABLE_VERSIONS))}")
                reserved = {VARIATION_GROUP} if int(version) >= 3 else set()
                reserved |= {HARDWARE_GROUP} if int(version) >= 4 else set()
                components = {name: _read_component(path, name, group) for name, group in f.items()
                              if name not in reserved}
                variation = (Variation.read(f[VARIATION_GROUP], str(path))
                             if int(version) >= 3 and VARIATION_GROUP in f else None)
                try:
                    record = read_design_record(f.attrs, f"surrogate file {path}")
                except ConfigError as exc:
                    raise SurrogateError(str(exc)) from None
                hardware = _read_hardware(f, path) if int(version) >= 4 else None
                surrogate = cls(components, record.cell,
                                str(f.attrs.get("source_path", "")), str(f.attrs.get("source_sha256", "")),
                                str(f.attrs.get("created", "")), variation, hardware, record.c2p, record.dac)
        except SurrogateError:
            raise
        except (OSError, KeyError, ValueError, TypeError, json.JSONDecodeError) as exc:
            raise SurrogateError(f"{path} is not a readable surrogate file (truncated or corrupted?): {exc}") from None
        check(surrogate, path)
        return surrogate


def _read_hardware(f, path: Path) -> HardwareConfig:
    group = f.get(HARDWARE_GROUP)
    if not isinstance(group, h5py.Group):
        raise SurrogateError(f"{path}: schema version 4 needs the group {HARDWARE_GROUP!r} (the hardware configuration)")
    try:
        return HardwareConfig.from_attrs(group.attrs, f"{path}")
    except ConfigError as exc:
        raise SurrogateError(f"{path}: {exc}") from None


def _read_component(path: Path, name: str, group) -> Component:
    if not isinstance(group, h5py.Group):
        raise SurrogateError(f"{path}: {name!r} is not a component group (every root object is a component)")
    try:
        model_id = str(group.attrs["model_id"])
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in group["param_names"][()]]
        texts = {key: json.loads(group.attrs[key]) for key in ("config", "validity", "residuals")}
    except KeyError as exc:
        raise SurrogateError(f"{path}: component {name!r} lacks {exc}") from None
    for key, value in texts.items():
        if not isinstance(value, dict):
            raise SurrogateError(f"{path}: component {name!r} attribute {key!r} must be a JSON object; it is "
                                 f"{type(value).__name__}")
    return Component(model_id, names, group["values"][()], group["stderr"][()],
                     group["covariance"][()], texts["config"], texts["validity"], texts["residuals"],
                     str(group.attrs.get("source", "")))


def check(surrogate: Surrogate, where: str | Path = "surrogate") -> None:
    """Every required component present and consistent with its model id, every parameter finite and
    physically plausible, validity bounds finite and ordered (the compiled layer is probed where it is built)."""
    missing = [name for name in REQUIRED if name not in surrogate.components]
    if missing:
        raise SurrogateError(f"{where}: missing component(s) {', '.join(missing)} (required: {', '.join(REQUIRED)})")
    if not isinstance(surrogate.design, CellDesign):
        raise SurrogateError(f"{where}: its design must be a CellDesign, got {type(surrogate.design).__name__}")
    for reserved in (VARIATION_GROUP, HARDWARE_GROUP):
        if reserved in surrogate.components:
            raise SurrogateError(f"{where}: {reserved!r} is reserved for the {reserved} group "
                                 f"(Surrogate.{reserved}), not a component name")
    if not isinstance(surrogate.hardware, HardwareConfig):
        raise SurrogateError(f"{where}: its hardware must be a HardwareConfig, got {type(surrogate.hardware).__name__}")
    if surrogate.variation is not None and not isinstance(surrogate.variation, Variation):
        raise SurrogateError(f"{where}: its variation must be a Variation or None, got "
                             f"{type(surrogate.variation).__name__}")
    for name, part in surrogate.components.items():
        _check_component(name, part, surrogate.design, where)
    if surrogate.variation is not None:
        _check_variation_current(surrogate.variation, surrogate.design, where)


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _check_component(name: str, part: Component, design: CellDesign, where) -> None:
    bad = [p for p, v in zip(part.param_names, part.values) if not np.isfinite(v)]
    if bad:
        raise SurrogateError(f"{where}: component {name!r} has non-finite parameter(s) {', '.join(bad)}")
    if part.model_id != FIGURES_MODEL:
        if part.model_id not in MODELS:
            raise SurrogateError(f"{where}: component {name!r} has unknown model id {part.model_id!r}")
        _check_config_keys(name, part, where)
        try:
            expected = MODELS[part.model_id].param_names(part.config)
        except (KeyError, TypeError, ValueError) as exc:
            raise SurrogateError(f"{where}: component {name!r} ({part.model_id}) has a config without a valid "
                                 f"{exc} entry") from None
        if list(expected) != list(part.param_names):
            raise SurrogateError(f"{where}: component {name!r} ({part.model_id}) has parameters "
                                 f"{part.param_names}, expected {expected}")
    for parameter, value in part.params.items():
        rule = plausible_range(part.model_id, parameter)
        if rule is not None and not rule.allows(value):
            raise SurrogateError(f"{where}: component {name!r} parameter {parameter} = {value:g} is implausible: "
                                 f"{rule.describe()}")
    negative = [p for p, e in zip(part.param_names, part.stderr) if e < 0]
    if negative:
        raise SurrogateError(f"{where}: component {name!r} has negative standard error(s) for {', '.join(negative)} "
                             "(a standard error is >= 0, or NaN when unknown)")
    _check_config(name, part, where)
    _check_validity_bounds(name, part, where)
    if part.model_id.startswith("multiply/"):
        _check_read_current(name, part, design, where)


def _check_config_keys(name: str, part: Component, where) -> None:
    lacking = [k for k in MODELS[part.model_id].config_keys if k not in part.config]
    if lacking:
        raise SurrogateError(f"{where}: component {name!r} ({part.model_id}) config lacks {', '.join(lacking)}")
    for key in ("order", "vin_order"):
        value = part.config.get(key, 0)
        if not (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= value <= MAX_POLY_ORDER):
            raise SurrogateError(f"{where}: component {name!r} config {key} = {value!r} must be an integer 0 .. "
                                 f"{MAX_POLY_ORDER}")


def _check_config(name: str, part: Component, where) -> None:
    config = part.config
    numbers = [k for k in CONFIG_VOLTAGES if k in config]
    bad = [k for k in numbers if not (_is_number(config[k]) and np.isfinite(config[k]))]
    if bad:
        raise SurrogateError(f"{where}: component {name!r} config {bad[0]} = {config[bad[0]]!r} must be a finite "
                             "number of volts")
    for key in numbers:
        if not VOLTAGE.allows(config[key]):
            raise SurrogateError(f"{where}: component {name!r} config {key} = {config[key]:g} is implausible: "
                                 f"{VOLTAGE.describe()}")
    for key, rule in CONFIG.items():
        if key in config and not (_is_number(config[key]) and rule.allows(float(config[key]))):
            raise SurrogateError(f"{where}: component {name!r} config {key} = {config[key]!r} is implausible: "
                                 f"{rule.describe()}")
    if part.model_id.startswith("decay/"):
        hold, ref = config.get("hold_v", np.nan), config.get("ref_v", np.nan)
        if not ref > hold:
            raise SurrogateError(f"{where}: component {name!r} config ref_v = {ref!r} must be above hold_v = "
                                 f"{hold!r} (the decay is of the stored level's excess over the hold level)")
        if part.model_id == LEAKAGE and not 1 + part.param("dibl_per_v") * (ref - hold) > 0:
            raise SurrogateError(f"{where}: component {name!r} parameter dibl_per_v = {part.param('dibl_per_v'):g} "
                                 f"is implausible: 1 + dibl_per_v x (ref_v - hold_v) must stay > 0 (else the "
                                 "leakage would charge the node)")


def _check_validity_bounds(name: str, part: Component, where) -> None:
    for variable, bounds in part.validity.items():
        ok = (isinstance(bounds, (list, tuple)) and len(bounds) == 2 and all(_is_number(b) for b in bounds)
              and all(np.isfinite(bounds)) and bounds[0] <= bounds[1])
        if not ok:
            raise SurrogateError(f"{where}: component {name!r} validity of {variable} is {bounds!r}; it must be two "
                                 "finite numbers [low, high] with low <= high (low = high: fitted at one value)")


def _check_variation_current(variation: Variation, design: CellDesign, where) -> None:
    """The variation's read current (mean plus one sigma across cells) over stored 0 .. VDD: below
    MAX_READ_CURRENT_A, as a fitted multiply's."""
    y = np.linspace(0.0, design.vdd_v, 41) - variation.y0_v
    powers = y[:, None] ** np.arange(len(variation.multiply_mean))
    mean = powers @ np.asarray(variation.multiply_mean)
    sigma = np.sqrt(np.clip(np.einsum("ki,ij,kj->k", powers, variation.multiply_covariance, powers), 0.0, None))
    worst = float(np.max(np.abs(mean) + sigma))
    if not worst <= MAX_READ_CURRENT_A:
        raise SurrogateError(f"{where}: component 'variation' is implausible: its cells' read current (mean + one "
                             f"sigma, multiply_mean and multiply_covariance) over stored_v in [0, {design.vdd_v:g}] V "
                             f"reaches {worst:g} A; a gain cell reads at most {MAX_READ_CURRENT_A:g} A")


def _check_read_current(name: str, part: Component, design: CellDesign, where) -> None:
    """The multiply's read current over its validity box: finite and below MAX_READ_CURRENT_A."""
    stored = np.linspace(*part.validity.get("stored_v", [0.0, design.vdd_v]), 41)
    vin = np.linspace(*part.validity.get("vin_v", [design.v_in_v] * 2), 9)
    grid_stored, grid_vin = np.meshgrid(stored, vin)
    with np.errstate(all="ignore"):
        current = evaluate(part.model_id, part.config, part.params, stored_v=grid_stored,
                           pulse_s=np.ones_like(grid_stored), vin_v=grid_vin)
    worst = float(np.max(np.abs(current))) if np.all(np.isfinite(current)) else np.inf
    if not worst <= MAX_READ_CURRENT_A:
        raise SurrogateError(f"{where}: component {name!r} ({part.model_id}) is implausible: its read current over the "
                             f"validity box (stored_v in [{stored[0]:g}, {stored[-1]:g}] V, vin_v in [{vin[0]:g}, "
                             f"{vin[-1]:g}] V) reaches {worst:g} A; a gain cell reads at most {MAX_READ_CURRENT_A:g} A "
                             "(a coefficient in the wrong unit?)")
