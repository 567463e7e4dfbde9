"""The design of a gain cell, validated at construction, loadable from TOML/YAML, recorded in every artifact.

    design = load_design("cmos-generic")                 # a shipped preset
    design = load_design("my_cell.toml")                 # a file; `base = "cmos-generic"` then overrides
    setup = load_setup("my_cell.toml")                   # the cell with its [c2p], [dac] and [grid] tables

Every field carries a unit, a range and a description (`gaincell.fields`); a bad value raises `ConfigError`
naming the field (e.g. `read_n.l_m: must be a number between 1e-09 and 0.001 m`). A user PDK is described by
`model_libraries` (paths), an optional `corner` (the `.lib` section) and `model_names`, which maps the shipped
subcircuits' model names (nmos_gen, pmos_gen, nmos_gen_hvt, nmos_igzo) onto the PDK's own.

Fields that are pasted into netlist text (`name` in the title line, `corner`, both sides of `model_names`,
`cell_subckt`, the model library paths) are checked here, so no value can add a line to a netlist: names
are SPICE identifiers (`SPICE_NAME_RULE`), paths are printable and free of spaces and quotes.

Artifacts (sweep groups, surrogate files) carry the design as a versioned record: `gaincell.design_record`.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .design_text import read_design_table
from .devices import (SHIPPED_MODEL_NAMES, PdkDevice, VtShift, check_spice_name,
                      refuse_command_word)
from .errors import ConfigError
from .fields import check_quantities, described, quantity, shown
from .layout import Layout
from .pdk_presets import PDK_TABLES
from .periphery import C2PDesign, DacDesign, Grid
from .resources import netlist_path

DEVICE_FIELDS = ("write", "read_n", "read_p", "switch_n", "switch_p", "logic_n", "logic_p")
LATER_FIELDS = ("devices", "logic_n", "logic_p", "temp_c", "vt_shift", "layout")  # recorded only when not at the default
PERIPHERY = {"c2p": C2PDesign, "dac": DacDesign, "grid": Grid}  # design-file tables beside the cell's fields

SHIPPED_LIBRARY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*\.lib")
UNSAFE_PATH_CHARACTERS = re.compile(r"[\s\"';]")
MAX_PATH_CHARACTERS = 4096
MAX_SOURCE_CHARACTERS = 2000
LIBRARY_HEAD_BYTES = 1 << 16  # where a model library must show a SPICE line (sky130's first is at line 82)
LIBRARY_LINE = re.compile(rb"^[ \t]*\.(model|subckt|lib|include|inc|param)\b", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class Device:
    """One MOSFET's drawn size."""

    w_m: float = quantity("channel width", "m", 1e-9, 1e-3)
    l_m: float = quantity("channel length", "m", 1e-9, 1e-3)

    def check(self, prefix: str) -> None:
        check_quantities(self, f"{prefix}.")


@dataclass(frozen=True)
class CellDesign:
    """A signed gain cell (complementary read) with its write path and operating conditions."""

    name: str = described("design name (a SPICE name: it is the netlists' title)")
    cell_subckt: str = described("subcircuit in netlists/gaincell_signed.sub: gcsigned or gcsigned_igzo")
    model_libraries: tuple[str, ...] = described(
        "shipped .lib names or paths (with a '/', relative to the design file), included in order")
    write: Device = described("write transistor (wbl -> storage node)", nested=Device)
    read_n: Device = described("NMOS read transistor", nested=Device, default=Device(100e-9, 800e-9))
    read_p: Device = described("PMOS read transistor", nested=Device, default=Device(150e-9, 420e-9))
    switch_n: Device = described("NMOS read-pulse switch", nested=Device, default=Device(200e-9, 30e-9))
    switch_p: Device = described("PMOS read-pulse switch", nested=Device, default=Device(300e-9, 30e-9))
    cs_f: float = quantity("storage capacitance", "F", 1e-18, 1e-9, default=3e-15)
    vdd_v: float = quantity("supply voltage", "V", 0.3, 5.0, default=0.9)
    v_in_v: float = quantity("read input (pulse) amplitude", "V", 0.0, "vdd_v", default=0.9)
    write_wl_v: float = quantity("write word-line high level, boosted", "V", 0.1, 5.0, default=1.8)
    write_time_s: float = quantity("write word-line pulse width", "s", 1e-12, 1e-3, default=5e-9)
    t_max_s: float = quantity("longest read pulse, T_max", "s", 1e-12, 1e-3, default=15e-9)
    hold_wbl_v: float = quantity("write bit line while holding; 0 V is the worst case (write transistor at V_GS = 0)",
                                 "V", 0.0, "vdd_v", default=0.0)
    retention_gmin_s: float = quantity("simulator gmin for retention runs; the default 1e-12 S would fake leakage",
                                       "S", 1e-30, 1e-12, default=1e-20)
    dac_levels: int = quantity("stored-value levels of the write DAC", low=2, high=1024, default=8, integer=True)
    corner: str = described("section of a .lib file to load ('' = plain include)", default="")
    model_names: tuple[tuple[str, str], ...] = described(
        "renames of the shipped model names for a user PDK, e.g. (('nmos_gen', 'nch'),)", default=())
    devices: tuple[tuple[str, PdkDevice], ...] = described(
        "the PDK device behind each shipped model name: (('nmos_gen', PdkDevice('nfet', 'subckt', 'um')),); "
        "a shipped name in neither this nor model_names is used as it is", default=())
    logic_n: Device = described("periphery logic NMOS (row inverter, C2P buffers); its length is every periphery "
                                "NMOS's (DAC gates too)", nested=Device, default=Device(200e-9, 30e-9))
    logic_p: Device = described("periphery logic PMOS (row inverter, C2P buffers); its length is every periphery "
                                "PMOS's (DAC gates too)", nested=Device, default=Device(300e-9, 30e-9))
    temp_c: float = quantity("circuit temperature (every netlist's .temp)", "C", -60.0, 200.0, default=27.0)
    vt_shift: VtShift = described("threshold shift per cell transistor (a DC source in series with its gate)",
                                  nested=VtShift, default=VtShift())
    layout: Layout = described("how it is drawn, for the area estimate (gaincell.layout)", nested=Layout,
                               default=Layout())
    source: str = described("provenance / citation of the design (one line of text)", default="")

    def __post_init__(self):
        check_spice_name("name", self.name)
        if self.cell_subckt not in ("gcsigned", "gcsigned_igzo"):
            raise ConfigError("cell_subckt", f"must be gcsigned or gcsigned_igzo, got {shown(self.cell_subckt)}")
        if self.corner != "":
            check_spice_name("corner", self.corner)
        if not (isinstance(self.source, str) and len(self.source) <= MAX_SOURCE_CHARACTERS
                and self.source.isprintable()):
            raise ConfigError("source", f"must be one line of printable text (at most {MAX_SOURCE_CHARACTERS} "
                                        f"characters, no line breaks or control characters), got {shown(self.source)}")
        object.__setattr__(self, "model_libraries", self._checked_libraries())
        object.__setattr__(self, "model_names", self._checked_model_names())
        object.__setattr__(self, "devices", self._checked_devices())
        if not isinstance(self.vt_shift, VtShift):
            raise ConfigError("vt_shift", f"must be a VtShift(write, read_n, read_p, switch_n, switch_p), got "
                                          f"{shown(self.vt_shift)}")
        check_quantities(self.vt_shift, "vt_shift.")
        if not isinstance(self.layout, Layout):
            raise ConfigError("layout", f"must be a Layout(rules, storage_cap), got {shown(self.layout)}")
        for name in DEVICE_FIELDS:
            device = getattr(self, name)
            if not isinstance(device, Device):
                raise ConfigError(name, f"must be a Device(w_m, l_m), got {shown(device)}")
            device.check(name)
        check_quantities(self)

    def _checked_libraries(self) -> tuple[str, ...]:
        libraries = self.model_libraries
        if not isinstance(libraries, (list, tuple)):
            raise ConfigError("model_libraries", f"must be a list of shipped .lib names or paths, e.g. "
                                                 f"[\"cmos_generic.lib\"], got {shown(libraries)}")
        if not libraries:
            raise ConfigError("model_libraries", "needs at least one model library")
        for index, library in enumerate(libraries):
            _library_location(library, f"model_libraries[{index}]")
        return tuple(libraries)

    def _checked_model_names(self) -> tuple[tuple[str, str], ...]:
        allowed = f"entries map one of {', '.join(SHIPPED_MODEL_NAMES)} to a PDK model name"
        if not isinstance(self.model_names, (list, tuple)):
            raise ConfigError("model_names", f"{allowed}, got {shown(self.model_names)}")
        renamed = set()
        for pair in self.model_names:
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and pair[0] in SHIPPED_MODEL_NAMES):
                raise ConfigError("model_names", f"{allowed}, got {shown(pair)}")
            shipped, own = pair
            if shipped in renamed:
                raise ConfigError("model_names", f"{shipped} is renamed twice")
            renamed.add(shipped)
            check_spice_name(f"model_names.{shipped}", own)
        return tuple((shipped, own) for shipped, own in self.model_names)

    def _checked_devices(self) -> tuple[tuple[str, PdkDevice], ...]:
        allowed = f"entries map one of {', '.join(SHIPPED_MODEL_NAMES)} to a PdkDevice"
        if not isinstance(self.devices, (list, tuple)):
            raise ConfigError("devices", f"{allowed}, got {shown(self.devices)}")
        described_names = {shipped for shipped, _ in self.model_names}
        for pair in self.devices:
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and pair[0] in SHIPPED_MODEL_NAMES
                    and isinstance(pair[1], PdkDevice)):
                raise ConfigError("devices", f"{allowed}, got {shown(pair)}")
            if pair[0] in described_names:
                raise ConfigError("devices", f"{pair[0]} is described twice (in model_names or devices); give it once")
            described_names.add(pair[0])
            pair[1].check(f"devices.{pair[0]}")
        return tuple((shipped, device) for shipped, device in self.devices)

    def device(self, shipped: str) -> PdkDevice:
        """The PDK device that stands for shipped model name `shipped` (renamed by model_names, described by
        devices, else the shipped model itself)."""
        described_devices = dict(self.devices) | {name: PdkDevice(own) for name, own in self.model_names}
        return described_devices.get(shipped, PdkDevice(shipped))

    @staticmethod
    def library_path(library: str, field_name: str = "model_libraries") -> Path:
        """A shipped library name (cmos_generic.lib) or a path to the user's own, checked to be a readable
        file whose absolute path can stand in a netlist's `.include`/`.lib` line and whose first
        LIBRARY_HEAD_BYTES are SPICE text (no NUL byte, a `.model`/`.subckt`/`.lib`/`.include`/`.param` line)."""
        path = _library_location(library, field_name)
        if not _is_path(library):
            return path
        try:
            if not path.exists():
                raise ConfigError(field_name, f"model library {shown(library)} does not exist")
            if not path.is_file():
                raise ConfigError(field_name, f"model library {shown(library)} is a folder or device, not a file")
            with path.open("rb") as stream:
                head = stream.read(LIBRARY_HEAD_BYTES)
        except OSError as exc:
            raise ConfigError(field_name, f"model library {shown(library)} cannot be read: {exc}") from None
        if b"\0" in head:
            problem = "is a binary file (it holds NUL bytes)"
        elif not LIBRARY_LINE.search(head):
            problem = (f"has no .model, .subckt, .lib, .include or .param line in its first "
                       f"{LIBRARY_HEAD_BYTES // 1024} KiB")
        else:
            return path
        raise ConfigError(field_name, f"model library {shown(library)} {problem}: it is not a SPICE model library")

    def check_libraries_readable(self) -> None:
        """Every model library exists and can be read (checked when a design is loaded from a file)."""
        for index, library in enumerate(self.model_libraries):
            self.library_path(library, f"model_libraries[{index}]")

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
                "wsp": self.switch_p.w_m, "lsp": self.switch_p.l_m, "cs": self.cs_f} | self.vt_shift.params()

    def to_dict(self) -> dict:
        """The fields as plain data (the design record's form). Fields added after the record's schema 2 appear
        only when they differ from their defaults, so a design without them keeps its record and sweep hashes."""
        data = dataclasses.asdict(self)
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        return {key: value for key, value in data.items()
                if key not in LATER_FIELDS or getattr(self, key) != defaults[key]}

    def differences(self, other: "CellDesign") -> list[str]:
        """`field: this -> other` for every field in which `other` differs (empty when they are equal)."""
        mine, theirs = _flat(dataclasses.asdict(self)), _flat(dataclasses.asdict(other))
        return [f"{key}: {shown(mine[key])} -> {shown(theirs[key])}" for key in mine if mine[key] != theirs[key]]


def _flat(data: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in data.items():
        flat |= _flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value}
    return flat


def _is_path(library: str) -> bool:
    """A model library given as a path (it holds a '/' or starts with '~'), not as a shipped name."""
    return "/" in library or library.startswith("~")


def _library_location(library, field_name: str) -> Path:
    """Where a library is, checked in form only: a shipped name the package has, or a path a netlist's
    `.include` line can carry (whether the file exists is `CellDesign.library_path`'s check)."""
    if not (isinstance(library, str) and library and len(library) <= MAX_PATH_CHARACTERS and library.isprintable()):
        raise ConfigError(field_name, f"must be a shipped .lib name or a path (printable text, no line breaks "
                                      f"or control characters), got {shown(library)}")
    if not _is_path(library):
        if not SHIPPED_LIBRARY.fullmatch(library):
            raise ConfigError(field_name, f"{shown(library)} is neither a shipped .lib name nor a path (a path "
                                          "holds a '/': ./models.lib is next to the design file)")
        try:
            return netlist_path(library)
        except ConfigError:
            raise ConfigError(field_name, f"{shown(library)} is neither a shipped library nor a path") from None
    try:
        path = Path(library).expanduser().resolve()
    except (OSError, RuntimeError) as exc:  # ~user of an unknown user, or a symlink loop
        raise ConfigError(field_name, f"model library {shown(library)} cannot be located: {exc}") from None
    if UNSAFE_PATH_CHARACTERS.search(str(path)):
        raise ConfigError(field_name, f"the model library's path {shown(str(path))} holds a space, quote or ';', "
                                      "which a netlist's .include line cannot carry; move or link the library "
                                      "to a path without them")
    refuse_command_word(field_name, str(path))
    return path


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


PDK_PRESETS = tuple(PDK_TABLES)  # presets on an installed PDK package: design-file tables, read when asked for


def preset_names() -> tuple[str, ...]:
    return tuple(PRESETS) + PDK_PRESETS


def preset(name: str) -> "CellDesign":
    """A preset's cell design by name (a PDK preset needs its package: ConfigError naming it otherwise)."""
    return PRESETS[name] if name in PRESETS else load_setup(name).cell


@dataclass(frozen=True)
class DesignSetup:
    """A design file in full: the cell and the periphery and characterization grid it is simulated with."""

    cell: CellDesign
    c2p: C2PDesign = C2PDesign()
    dac: DacDesign = DacDesign()
    grid: Grid = Grid()


def load_design(name_or_path: str | Path) -> CellDesign:
    """A preset by name, or a TOML/YAML file whose keys are CellDesign fields (devices as tables)."""
    return load_setup(name_or_path).cell


def load_setup(name_or_path: str | Path) -> DesignSetup:
    """A preset (default periphery and grid) or a design file with optional [c2p], [dac], [grid] tables."""
    key = str(name_or_path)
    if key in PRESETS:
        return DesignSetup(PRESETS[key])
    if key in PDK_TABLES:
        return setup_from_table(PDK_TABLES[key](), f"preset {key}")
    path = Path(key)
    try:
        exists = path.exists()
    except (OSError, ValueError):  # a name too long for the file system, or one with a NUL
        exists = False
    if not exists:
        raise ConfigError("design", f"{shown(key)} is neither a preset ({', '.join(preset_names())}) nor a TOML/YAML "
                                     "file")
    return setup_from_table(read_design_table(path), f"design file {path}", path.parent)


def setup_from_table(raw, where: str, base_dir: Path | None = None) -> DesignSetup:
    """A design file's table (the cell's fields with optional [c2p], [dac], [grid] tables) as a DesignSetup;
    errors name `where`."""
    try:
        if not isinstance(raw, Mapping):
            raise ConfigError("design", f"must be a table of design fields, got {shown(raw)}")
        tables = {name: periphery_from_table(name, raw[name]) for name in PERIPHERY if name in raw}
        cell = design_from_dict({k: v for k, v in raw.items() if k not in PERIPHERY}, base_dir=base_dir)
    except ConfigError as exc:
        raise ConfigError(exc.parameter, f"{exc.problem} (in {where})") from None
    return DesignSetup(cell, **tables)


def periphery_from_table(name: str, table):
    return nested_from_table(PERIPHERY[name], name, table)


def nested_from_table(cls, name: str, table):
    """A nested design (`cls`) from the file's table `name`, every key a field of it."""
    allowed = [f.name for f in dataclasses.fields(cls)]
    if not isinstance(table, Mapping):
        raise ConfigError(name, f"must be a table of {', '.join(allowed)}, got {shown(table)}")
    for key in table:
        if key not in allowed:
            raise ConfigError(f"{name}.{_key_shown(key)}", f"is not a field of [{name}]; fields are: "
                                                           f"{', '.join(allowed)}")
    try:
        return cls(**table)
    except ConfigError as exc:
        raise ConfigError(f"{name}.{exc.parameter}", exc.problem) from None


def _device_from_table(shipped: str, table, base: PdkDevice | None = None) -> PdkDevice:
    """A `[devices.<shipped>]` table of a design file (name and optionally kind, unit, params), or just a name;
    without a name it updates the base design's device of that name."""
    if isinstance(table, str):
        return PdkDevice(table)
    if isinstance(table, Mapping) and "name" not in table:
        if base is None:
            raise ConfigError(f"devices.{shipped}", "needs name = the PDK's model or subcircuit name")
        table = dataclasses.asdict(base) | dict(table)
    return nested_from_table(PdkDevice, f"devices.{shipped}", table)


def _merged_devices(base: CellDesign, changes: dict) -> None:
    """A design file's `devices` and `model_names` tables merge over the base design's, name by name: a name
    the file describes (in either table) replaces or updates the base's entry, the others stay."""
    if "devices" not in changes and "model_names" not in changes:
        return
    given = {key: dict(changes.get(key, ())) for key in ("devices", "model_names")}
    for key, other in (("devices", "model_names"), ("model_names", "devices")):
        kept = [(name, given[key].pop(name, value)) for name, value in getattr(base, key) if name not in given[other]]
        changes[key] = tuple(kept) + tuple(given[key].items())


def design_from_dict(raw: Mapping, base_dir: Path | None = None, check_libraries: bool = True) -> CellDesign:
    """Build a design from a design file's table; `base` names a preset to start from (its devices and
    model_names merge name by name, `_merged_devices`). Model libraries given as paths must exist (unless
    `check_libraries` is off: an artifact's design record names the libraries of the machine that made it)."""
    if not isinstance(raw, Mapping):
        raise ConfigError("design", f"must be a table of design fields, got {shown(raw)}")
    fields = {f.name for f in dataclasses.fields(CellDesign)}
    for key in raw:
        if not (isinstance(key, str) and (key in fields or key == "base")):
            raise ConfigError(_key_shown(key), f"is not a design field; fields are: base, {', '.join(sorted(fields))}"
                                               f" and the tables {', '.join(PERIPHERY)}")
    raw = dict(raw)
    base = raw.pop("base", "cmos-generic")
    if not (isinstance(base, str) and base in preset_names()):
        raise ConfigError("base", f"must be one of {', '.join(preset_names())}, got {shown(base)}")
    base_design = preset(base)
    changes = {}
    for key, value in raw.items():
        if key in DEVICE_FIELDS:
            if not (isinstance(value, Mapping) and set(value) <= {"w_m", "l_m"}):
                raise ConfigError(key, f"must be a table with w_m and l_m (metres), got {shown(value)}")
            value = dataclasses.replace(getattr(base_design, key), **value)
        elif key == "model_libraries":
            value = _libraries_relative_to(value, base_dir or Path.cwd())
        elif key == "model_names":
            if not isinstance(value, Mapping):
                raise ConfigError(key, f"must be a table mapping shipped model names ({', '.join(SHIPPED_MODEL_NAMES)})"
                                       f" to the PDK's, e.g. {{nmos_gen = \"nch\"}}, got {shown(value)}")
            value = tuple(value.items())
        elif key == "devices":
            if not isinstance(value, Mapping):
                raise ConfigError(key, f"must be a table of shipped model names ({', '.join(SHIPPED_MODEL_NAMES)}) "
                                       "each with a [devices.NAME] table, got " + shown(value))
            value = tuple((shipped, _device_from_table(shipped, table, dict(base_design.devices).get(shipped)))
                          for shipped, table in value.items())
        elif key in ("vt_shift", "layout"):
            value = nested_from_table(VtShift if key == "vt_shift" else Layout, key, value)
        changes[key] = value
    _merged_devices(base_design, changes)
    design = dataclasses.replace(base_design, **changes)
    if check_libraries:
        design.check_libraries_readable()
    return design


def _key_shown(key) -> str:
    """A file's key as the field name of an error: plain when it is a short printable string."""
    return key if isinstance(key, str) and key.isprintable() and len(key) <= 80 else shown(key)


def _libraries_relative_to(libraries, base_dir: Path):
    """Shipped names stay; relative paths are taken relative to the design file's folder."""
    if not isinstance(libraries, (list, tuple)):
        return libraries  # CellDesign refuses it with the allowed form
    resolved = []
    for library in libraries:
        if isinstance(library, str) and library.isprintable() and _is_path(library) and library[0] not in "/~":
            library = str(base_dir / library)
        resolved.append(library)
    return tuple(resolved)
