"""Design dataclasses: what a gain cell is made of, validated at construction, loadable from TOML/YAML.

    design = load_design("cmos-generic")                 # a shipped preset
    design = load_design("my_cell.toml")                 # a file; `base = "cmos-generic"` then overrides

Every field has a unit in its name and a description; a bad value raises `ConfigError` naming the field
(e.g. `read_n.l_m: must be > 0 m`). A user PDK is described by `model_library` (a path), an optional
`corner` (the `.lib` section) and `model_names`, which maps the shipped subcircuits' model names
(nmos_gen, pmos_gen, nmos_gen_hvt, nmos_igzo) onto the PDK's own.
"""
from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError
from .resources import netlist_path

SHIPPED_MODEL_NAMES = ("nmos_gen", "pmos_gen", "nmos_gen_hvt", "nmos_igzo")


@dataclass(frozen=True)
class Device:
    """One MOSFET's drawn size."""

    w_m: float = field(metadata={"doc": "channel width (m)"})
    l_m: float = field(metadata={"doc": "channel length (m)"})

    def check(self, prefix: str) -> None:
        for name in ("w_m", "l_m"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 1e-9 <= value <= 1e-3):
                raise ConfigError(f"{prefix}.{name}", f"must be a size between 1 nm and 1 mm (in m), got {value!r}")


@dataclass(frozen=True)
class CellDesign:
    """A signed gain cell (complementary read) with its write path and operating conditions."""

    name: str = field(metadata={"doc": "design name"})
    cell_subckt: str = field(metadata={"doc": "subcircuit in netlists/gaincell_signed.sub: gcsigned or gcsigned_igzo"})
    model_libraries: tuple[str, ...] = field(metadata={"doc": "shipped .lib names or paths, included in order"})
    write: Device = field(metadata={"doc": "write transistor (wbl -> storage node)"})
    read_n: Device = field(default=Device(100e-9, 800e-9), metadata={"doc": "NMOS read transistor"})
    read_p: Device = field(default=Device(150e-9, 420e-9), metadata={"doc": "PMOS read transistor"})
    switch_n: Device = field(default=Device(200e-9, 30e-9), metadata={"doc": "NMOS read-pulse switch"})
    switch_p: Device = field(default=Device(300e-9, 30e-9), metadata={"doc": "PMOS read-pulse switch"})
    cs_f: float = field(default=3e-15, metadata={"doc": "storage capacitance (F)"})
    vdd_v: float = field(default=0.9, metadata={"doc": "supply voltage (V)"})
    v_in_v: float = field(default=0.9, metadata={"doc": "read input (pulse) amplitude (V)"})
    write_wl_v: float = field(default=1.8, metadata={"doc": "write word-line high level, boosted (V)"})
    write_time_s: float = field(default=5e-9, metadata={"doc": "write word-line pulse width (s)"})
    t_max_s: float = field(default=15e-9, metadata={"doc": "longest read pulse, T_max (s)"})
    hold_wbl_v: float = field(default=0.0, metadata={
        "doc": "write bit line while holding (V); 0 V is the worst case (write transistor at V_GS = 0)"})
    retention_gmin_s: float = field(default=1e-20, metadata={
        "doc": "simulator gmin for retention runs (S); the default 1e-12 S would fake leakage"})
    dac_levels: int = field(default=8, metadata={"doc": "stored-value levels of the write DAC"})
    corner: str = field(default="", metadata={"doc": "section of a .lib file to load ('' = plain include)"})
    model_names: tuple[tuple[str, str], ...] = field(default=(), metadata={
        "doc": "renames of the shipped model names for a user PDK, e.g. (('nmos_gen', 'nch'),)"})
    source: str = field(default="", metadata={"doc": "provenance / citation of the design"})

    def __post_init__(self):
        if self.cell_subckt not in ("gcsigned", "gcsigned_igzo"):
            raise ConfigError("cell_subckt", f"must be gcsigned or gcsigned_igzo, got {self.cell_subckt!r}")
        if not self.model_libraries:
            raise ConfigError("model_libraries", "needs at least one model library")
        for index, library in enumerate(self.model_libraries):
            self.library_path(library, f"model_libraries[{index}]")
        for name in ("write", "read_n", "read_p", "switch_n", "switch_p"):
            device = getattr(self, name)
            if not isinstance(device, Device):
                raise ConfigError(name, f"must be a Device(w_m, l_m), got {device!r}")
            device.check(name)
        _in_range("cs_f", self.cs_f, 1e-18, 1e-9, "F")
        _in_range("vdd_v", self.vdd_v, 0.3, 5.0, "V")
        _in_range("v_in_v", self.v_in_v, 0.0, self.vdd_v, "V")
        _in_range("write_wl_v", self.write_wl_v, 0.1, 5.0, "V")
        _in_range("write_time_s", self.write_time_s, 1e-12, 1e-3, "s")
        _in_range("t_max_s", self.t_max_s, 1e-12, 1e-3, "s")
        _in_range("hold_wbl_v", self.hold_wbl_v, 0.0, self.vdd_v, "V")
        _in_range("retention_gmin_s", self.retention_gmin_s, 1e-30, 1e-12, "S")
        if not (isinstance(self.dac_levels, int) and 2 <= self.dac_levels <= 1024):
            raise ConfigError("dac_levels", f"must be an integer in [2, 1024], got {self.dac_levels!r}")
        for pair in self.model_names:
            if len(pair) != 2 or pair[0] not in SHIPPED_MODEL_NAMES:
                raise ConfigError("model_names", f"entries map one of {', '.join(SHIPPED_MODEL_NAMES)} to a "
                                                 f"PDK model name, got {pair!r}")

    @staticmethod
    def library_path(library: str, field_name: str = "model_libraries") -> Path:
        """A shipped library name (cmos_generic.lib) or a path to the user's own."""
        path = Path(library).expanduser()
        if path.is_absolute() or path.parent != Path("."):
            if not path.is_file():
                raise ConfigError(field_name, f"model library {library!r} does not exist")
            return path.resolve()
        try:
            return netlist_path(library)
        except ConfigError:
            raise ConfigError(field_name, f"{library!r} is neither a shipped library nor an existing path") from None

    @property
    def dac_voltages(self) -> list[float]:
        """The stored-value levels of the DAC: evenly spaced over 0..VDD."""
        return [self.vdd_v * k / (self.dac_levels - 1) for k in range(self.dac_levels)]

    @property
    def zero_v(self) -> float:
        """The stored voltage that means zero (VDD/2)."""
        return self.vdd_v / 2

    def cell_params(self) -> dict[str, float]:
        """The cell subcircuit's parameters."""
        return {"ww": self.write.w_m, "lw": self.write.l_m, "wrn": self.read_n.w_m, "lrn": self.read_n.l_m,
                "wrp": self.read_p.w_m, "lrp": self.read_p.l_m, "wsn": self.switch_n.w_m, "lsn": self.switch_n.l_m,
                "wsp": self.switch_p.w_m, "lsp": self.switch_p.l_m, "cs": self.cs_f}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _in_range(name: str, value, low: float, high: float, unit: str) -> None:
    if not (isinstance(value, (int, float)) and low <= value <= high):
        raise ConfigError(name, f"must be between {low:g} and {high:g} {unit}, got {value!r}")


PRESETS: dict[str, CellDesign] = {
    "cmos-generic": CellDesign(
        name="cmos-generic", cell_subckt="gcsigned", model_libraries=("cmos_generic.lib",),
        write=Device(100e-9, 40e-9), write_wl_v=1.8,
        source="gaincell's open generic ~28 nm-like BSIM4 cards (netlists/cmos_generic.lib, not foundry data); "
               "cell sized to the +-10 uA signed read current of Leroux et al., Nat. Comput. Sci. 5, 813 (2025)"),
    "igzo-generic": CellDesign(
        name="igzo-generic", cell_subckt="gcsigned_igzo", model_libraries=("cmos_generic.lib", "igzo_generic.lib"),
        write=Device(100e-9, 100e-9), write_wl_v=2.5,
        source="silicon read path of cmos-generic with an oxide-semiconductor (IGZO-like) write transistor "
               "(netlists/igzo_generic.lib, generic, not measured data) for long retention"),
}


def load_design(name_or_path: str | Path) -> CellDesign:
    """A preset by name, or a TOML/YAML file whose keys are CellDesign fields (devices as tables)."""
    key = str(name_or_path)
    if key in PRESETS:
        return PRESETS[key]
    path = Path(key)
    if not path.is_file():
        raise ConfigError("design", f"{key!r} is neither a preset ({', '.join(PRESETS)}) nor a TOML/YAML file")
    if path.suffix.lower() == ".toml":
        raw = tomllib.loads(path.read_text())
    elif path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        raw = yaml.safe_load(path.read_text()) or {}
    else:
        raise ConfigError("design", f"{path.name}: use a .toml, .yaml or .yml file")
    return design_from_dict(raw, base_dir=path.parent)


def design_from_dict(raw: dict, base_dir: Path | None = None) -> CellDesign:
    """Build a design from plain data; `base` names a preset to start from."""
    raw = dict(raw)
    base = raw.pop("base", "cmos-generic")
    if base not in PRESETS:
        raise ConfigError("base", f"must be one of {', '.join(PRESETS)}, got {base!r}")
    fields = {f.name for f in dataclasses.fields(CellDesign)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise ConfigError(unknown[0], f"is not a design field; fields are: {', '.join(sorted(fields))}")
    changes = {}
    for key, value in raw.items():
        if key in ("write", "read_n", "read_p", "switch_n", "switch_p"):
            if not isinstance(value, dict) or set(value) - {"w_m", "l_m"}:
                raise ConfigError(key, f"must be a table with w_m and l_m (metres), got {value!r}")
            value = dataclasses.replace(getattr(PRESETS[base], key), **value)
        elif key == "model_libraries":  # shipped names stay; paths are relative to the design file
            value = tuple(v if Path(v).parent == Path(".") else str((base_dir or Path.cwd()) / v) for v in value)
        elif key == "model_names":
            value = tuple((k, v) for k, v in dict(value).items())
        changes[key] = value
    return dataclasses.replace(PRESETS[base], **changes)
