"""Design dataclasses: what a gain cell is made of, validated at construction, loadable from TOML/YAML.

    design = load_design("cmos-generic")                 # a shipped preset
    design = load_design("my_cell.toml")                 # a file; `base = "cmos-generic"` then overrides

Every field has a unit in its name and a description; a bad value raises `ConfigError` naming the field
(e.g. `read_n.l_m: must be > 0 m`). A user PDK is described by `model_libraries` (paths), an optional
`corner` (the `.lib` section) and `model_names`, which maps the shipped subcircuits' model names
(nmos_gen, pmos_gen, nmos_gen_hvt, nmos_igzo) onto the PDK's own.

Fields that are pasted into netlist text (`name` in the title line, `corner`, both sides of `model_names`,
`cell_subckt`, the model library paths) are checked here, so no value can add a line to a netlist: names
are SPICE identifiers (`SPICE_NAME_RULE`), paths are printable and free of spaces and quotes. A design
file that is not a table of such fields (syntax error, binary bytes, tags, wrong types) is a `ConfigError`
naming the file, never a traceback.
"""
from __future__ import annotations

import dataclasses
import re
import reprlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import ConfigError
from .resources import netlist_path

SHIPPED_MODEL_NAMES = ("nmos_gen", "pmos_gen", "nmos_gen_hvt", "nmos_igzo")
DEVICE_FIELDS = ("write", "read_n", "read_p", "switch_n", "switch_p")

SPICE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}")
SPICE_NAME_RULE = ("1 to 64 characters from letters, digits, '_', '.' and '-', starting with a letter, digit "
                   "or '_' (pattern [A-Za-z0-9_][A-Za-z0-9_.-]*; no spaces, line breaks, quotes or * ; $ = { } ( ) ,),"
                   " without the words shell or system")
SHIPPED_LIBRARY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*\.lib")
UNSAFE_PATH_CHARACTERS = re.compile(r"[\s\"';]")
# ngspice command words that the SPICE trust policy (circuits/trust.py) refuses anywhere in a netlist: a
# value holding one would only fail later, when the netlist is checked, so it is refused here by its field
FORBIDDEN_WORD = re.compile(r"\b(shell|system)\b", re.IGNORECASE)
MAX_PATH_CHARACTERS = 4096
MAX_SOURCE_CHARACTERS = 2000
MAX_DESIGN_FILE_BYTES = 64 * 1024  # a design file is well under 2 KiB; this bounds parse time and memory

_short = reprlib.Repr()
_short.maxstring = _short.maxother = 80
_short.maxlevel = 3


def shown(value) -> str:
    """A repr short enough for an error message, whatever the value's size or nesting."""
    return _short.repr(value)


def _is_number(value) -> bool:
    """A plain int or float (bool is an int in Python, but `true` is not a number here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_spice_name(field_name: str, value) -> None:
    """Refuse anything but a SPICE identifier: such a value is pasted into netlist text."""
    if not (isinstance(value, str) and SPICE_NAME.fullmatch(value)):
        raise ConfigError(field_name, f"must be a SPICE name: {SPICE_NAME_RULE}; got {shown(value)}")
    _refuse_command_word(field_name, value)


def _refuse_command_word(field_name: str, value: str) -> None:
    word = FORBIDDEN_WORD.search(value)
    if word:
        raise ConfigError(field_name, f"{shown(value)} holds the word {word.group(1)!r}, which netlists may not "
                                      "contain (ngspice runs shell commands); choose another name")


@dataclass(frozen=True)
class Device:
    """One MOSFET's drawn size."""

    w_m: float = field(metadata={"doc": "channel width (m)"})
    l_m: float = field(metadata={"doc": "channel length (m)"})

    def check(self, prefix: str) -> None:
        for name in ("w_m", "l_m"):
            value = getattr(self, name)
            if not (_is_number(value) and 1e-9 <= value <= 1e-3):
                raise ConfigError(f"{prefix}.{name}",
                                  f"must be a size between 1 nm and 1 mm (in m), got {shown(value)}")


@dataclass(frozen=True)
class CellDesign:
    """A signed gain cell (complementary read) with its write path and operating conditions."""

    name: str = field(metadata={"doc": "design name (a SPICE name: it is the netlists' title)"})
    cell_subckt: str = field(metadata={"doc": "subcircuit in netlists/gaincell_signed.sub: gcsigned or gcsigned_igzo"})
    model_libraries: tuple[str, ...] = field(metadata={
        "doc": "shipped .lib names or paths (with a '/', relative to the design file), included in order"})
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
    source: str = field(default="", metadata={"doc": "provenance / citation of the design (one line of text)"})

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
        for name in DEVICE_FIELDS:
            device = getattr(self, name)
            if not isinstance(device, Device):
                raise ConfigError(name, f"must be a Device(w_m, l_m), got {shown(device)}")
            device.check(name)
        _in_range("cs_f", self.cs_f, 1e-18, 1e-9, "F")
        _in_range("vdd_v", self.vdd_v, 0.3, 5.0, "V")
        _in_range("v_in_v", self.v_in_v, 0.0, self.vdd_v, "V")
        _in_range("write_wl_v", self.write_wl_v, 0.1, 5.0, "V")
        _in_range("write_time_s", self.write_time_s, 1e-12, 1e-3, "s")
        _in_range("t_max_s", self.t_max_s, 1e-12, 1e-3, "s")
        _in_range("hold_wbl_v", self.hold_wbl_v, 0.0, self.vdd_v, "V")
        _in_range("retention_gmin_s", self.retention_gmin_s, 1e-30, 1e-12, "S")
        if not (isinstance(self.dac_levels, int) and not isinstance(self.dac_levels, bool)
                and 2 <= self.dac_levels <= 1024):
            raise ConfigError("dac_levels", f"must be an integer in [2, 1024], got {shown(self.dac_levels)}")

    def _checked_libraries(self) -> tuple[str, ...]:
        libraries = self.model_libraries
        if not isinstance(libraries, (list, tuple)):
            raise ConfigError("model_libraries", f"must be a list of shipped .lib names or paths, e.g. "
                                                 f"[\"cmos_generic.lib\"], got {shown(libraries)}")
        if not libraries:
            raise ConfigError("model_libraries", "needs at least one model library")
        for index, library in enumerate(libraries):
            self.library_path(library, f"model_libraries[{index}]")
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

    @staticmethod
    def library_path(library: str, field_name: str = "model_libraries") -> Path:
        """A shipped library name (cmos_generic.lib) or a path to the user's own, checked to be a readable
        file whose absolute path can stand in a netlist's `.include`/`.lib` line."""
        if not (isinstance(library, str) and library and len(library) <= MAX_PATH_CHARACTERS
                and library.isprintable()):
            raise ConfigError(field_name, f"must be a shipped .lib name or a path (printable text, no line breaks "
                                          f"or control characters), got {shown(library)}")
        try:
            path = Path(library).expanduser()
        except RuntimeError:  # ~user of an unknown user
            raise ConfigError(field_name, f"cannot expand the home folder in {shown(library)}") from None
        if not _is_path(library):
            if not SHIPPED_LIBRARY.fullmatch(library):
                raise ConfigError(field_name, f"{shown(library)} is neither a shipped .lib name nor a path (a path "
                                              "holds a '/': ./models.lib is next to the design file)")
            try:
                return netlist_path(library)
            except ConfigError:
                raise ConfigError(field_name, f"{shown(library)} is neither a shipped library nor a path") from None
        try:
            path = path.resolve()
            if not path.exists():
                raise ConfigError(field_name, f"model library {shown(library)} does not exist")
            if not path.is_file():
                raise ConfigError(field_name, f"model library {shown(library)} is a folder or device, not a file")
            with path.open("rb"):
                pass
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
            raise ConfigError(field_name, f"model library {shown(library)} cannot be read: {exc}") from None
        if UNSAFE_PATH_CHARACTERS.search(str(path)):
            raise ConfigError(field_name, f"the model library's path {shown(str(path))} holds a space, quote or ';', "
                                          "which a netlist's .include line cannot carry; move or link the library "
                                          "to a path without them")
        _refuse_command_word(field_name, str(path))
        return path

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


def _is_path(library: str) -> bool:
    """A model library given as a path (it holds a '/' or starts with '~'), not as a shipped name."""
    return "/" in library or library.startswith("~")


def _in_range(name: str, value, low: float, high: float, unit: str) -> None:
    """A number within [low, high]; NaN fails the comparison and infinities the range."""
    if not (_is_number(value) and low <= value <= high):
        raise ConfigError(name, f"must be a number between {low:g} and {high:g} {unit}, got {shown(value)}")


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


class _StrictYamlLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """PyYAML's safe loader that refuses a key given twice in one mapping (safe_load keeps the last).

    libyaml's parser is used where PyYAML has it: it is fast and limits nesting depth, where the pure-Python
    scanner takes seconds on a few thousand nested brackets."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key: the base constructor refuses it with its position
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        "while reading a mapping", node.start_mark, f"found the key {shown(key)} twice",
                        key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def _file_error(path: Path, problem: str) -> ConfigError:
    return ConfigError(f"design file {path}", problem)


def _read_design_text(path: Path) -> str:
    """The file's text: a regular, readable, small UTF-8 text file."""
    if path.is_dir():
        raise _file_error(path, "is a folder; give a .toml, .yaml or .yml design file")
    if not path.is_file():
        raise _file_error(path, "is not a regular file (a device or pipe); give a .toml, .yaml or .yml design file")
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_DESIGN_FILE_BYTES + 1)
    except OSError as exc:
        raise _file_error(path, f"cannot be read: {exc.strerror or exc}") from None
    if len(data) > MAX_DESIGN_FILE_BYTES:
        raise _file_error(path, f"is larger than {MAX_DESIGN_FILE_BYTES // 1024} KiB; a design file is a short "
                                "list of fields")
    nul_at = data.find(b"\0")
    if nul_at >= 0:
        raise _file_error(path, f"is a binary file (NUL byte at offset {nul_at}); a design file is UTF-8 text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _file_error(path, f"is not UTF-8 text (invalid byte at offset {exc.start})") from None


def _parse_toml(path: Path, text: str):
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _file_error(path, f"is not valid TOML: {exc}; write `field = value` lines and [device] tables, "
                                "each key once") from None
    except RecursionError:
        raise _file_error(path, "is nested too deeply to be a design file") from None
    except ValueError as exc:  # a value the TOML reader cannot convert, e.g. an integer of 5000 digits
        raise _file_error(path, f"holds a value that cannot be read: {exc}") from None


def _parse_yaml(path: Path, text: str):
    try:
        return yaml.load(text, Loader=_StrictYamlLoader)
    except yaml.constructor.ConstructorError as exc:
        where = _yaml_position(exc)
        if exc.problem and "could not determine a constructor" in exc.problem:
            raise _file_error(path, f"uses a YAML tag that is not allowed{where}: {exc.problem}; a design file "
                                    "holds only plain values (numbers, text), lists and mappings") from None
        raise _file_error(path, f"is not a valid design mapping{where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc)
        if "nesting depth" in problem:
            raise _file_error(path, f"is nested too deeply to be a design file{_yaml_position(exc)}") from None
        raise _file_error(path, f"is not valid YAML{_yaml_position(exc)}: {problem}") from None
    except RecursionError:
        raise _file_error(path, "is nested too deeply to be a design file") from None
    except (ValueError, OverflowError) as exc:  # e.g. a date like 2001-13-45, `!!int abc`
        raise _file_error(path, f"holds a value that cannot be read: {exc}") from None


def _yaml_position(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def load_design(name_or_path: str | Path) -> CellDesign:
    """A preset by name, or a TOML/YAML file whose keys are CellDesign fields (devices as tables)."""
    key = str(name_or_path)
    if key in PRESETS:
        return PRESETS[key]
    path = Path(key)
    try:
        exists = path.exists()
    except (OSError, ValueError):  # a name too long for the file system, or one with a NUL
        exists = False
    if not exists:
        raise ConfigError("design", f"{shown(key)} is neither a preset ({', '.join(PRESETS)}) nor a TOML/YAML file")
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml") and not path.is_dir():
        raise _file_error(path, "use a .toml, .yaml or .yml file")
    text = _read_design_text(path)
    raw = _parse_toml(path, text) if suffix == ".toml" else _parse_yaml(path, text)
    if raw is None or raw == {}:
        raise _file_error(path, "holds no design fields; write at least one, e.g. name = \"my-cell\"")
    if not isinstance(raw, Mapping):
        raise _file_error(path, f"must hold a table of design fields (name = ..., vdd_v = ...), not a "
                                f"{type(raw).__name__}: {shown(raw)}")
    try:
        return design_from_dict(raw, base_dir=path.parent)
    except ConfigError as exc:
        raise ConfigError(exc.parameter, f"{exc.problem} (in design file {path})") from None


def design_from_dict(raw: Mapping, base_dir: Path | None = None) -> CellDesign:
    """Build a design from plain data; `base` names a preset to start from."""
    if not isinstance(raw, Mapping):
        raise ConfigError("design", f"must be a table of design fields, got {shown(raw)}")
    fields = {f.name for f in dataclasses.fields(CellDesign)}
    for key in raw:
        if not (isinstance(key, str) and (key in fields or key == "base")):
            raise ConfigError(_key_shown(key), f"is not a design field; fields are: base, {', '.join(sorted(fields))}")
    raw = dict(raw)
    base = raw.pop("base", "cmos-generic")
    if not (isinstance(base, str) and base in PRESETS):
        raise ConfigError("base", f"must be one of {', '.join(PRESETS)}, got {shown(base)}")
    changes = {}
    for key, value in raw.items():
        if key in DEVICE_FIELDS:
            if not (isinstance(value, Mapping) and set(value) <= {"w_m", "l_m"}):
                raise ConfigError(key, f"must be a table with w_m and l_m (metres), got {shown(value)}")
            value = dataclasses.replace(getattr(PRESETS[base], key), **value)
        elif key == "model_libraries":
            value = _libraries_relative_to(value, base_dir or Path.cwd())
        elif key == "model_names":
            if not isinstance(value, Mapping):
                raise ConfigError(key, f"must be a table mapping shipped model names ({', '.join(SHIPPED_MODEL_NAMES)})"
                                       f" to the PDK's, e.g. {{nmos_gen = \"nch\"}}, got {shown(value)}")
            value = tuple(value.items())
        changes[key] = value
    return dataclasses.replace(PRESETS[base], **changes)


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
