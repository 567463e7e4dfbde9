"""The hardware configuration: what the attention layer takes from the designed circuit.

One frozen record per surrogate (the HDF5 group `hardware`, one attribute per field): the converters' levels,
the array's rows, the window, how the query is encoded, and the read phases' durations. `gaincell fit` derives
it from the design it fits (`from_design`: the write DAC's levels, the C2P counter's levels, T_max, the write
time, the rows one write bit line serves), the paper's surrogate carries the paper's (`PAPER_HARDWARE`), and a
user may override a field for a study (`HardwareConfig.overridden`), which the record keeps in `overrides`.

`token_time_s` is the one clock of a token: the decay's ages, the latency and the energy report all use it.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import ConfigError
from .fields import check_quantities, described, quantity, shown
from .paper import PAPER_LATENCY_PER_LAYER_S, PAPER_T_MAX_S

INPUT_ENCODINGS = ("pulse-width",)  # the paper's: the query sets the read pulse's width at a fixed amplitude
# how a head's readout is scaled: "none" (the paper's) or "reference-column" (divided by a reference column's)
NORMALIZATIONS = ("none", "reference-column")
# the C2P comparators' reference: the cell's offset (the paper's) or each query's peak score
C2P_REFERENCES = ("offset", "peak")
ADDED_FIELDS = {"normalization": "none", "c2p_reference": "offset"}
# what the layer computes rather than a converter's level: a model adapted with them keeps them on another cell
COMPUTATION_FIELDS = ("normalization", "c2p_reference")  # fields added after files were written: their value when absent
# what the paper's 65 ns leaves per conversion after its two 15 ns pulse phases (inferred; it also covers the
# paper's write, counter and digital time)
PAPER_C2P_CONVERSION_S = (PAPER_LATENCY_PER_LAYER_S - 2 * PAPER_T_MAX_S) / 2


@dataclass(frozen=True)
class HardwareConfig:
    """The converters, array and clock of one design, as the attention layer computes them."""

    input_levels: int = quantity("query pulse-width levels over [0, T_max] (the pulse generator)", low=2, high=4096,
                                 default=16, integer=True)
    stored_levels: int = quantity("stored levels of K and V (the write DAC)", low=2, high=1024, default=8,
                                  integer=True)
    readout_levels: int = quantity("levels of the signed readout: sign x counter magnitudes (2 x the C2P "
                                   "counter's levels)", low=4, high=2048, default=32, integer=True)
    rows_per_tile: int = quantity("tokens one array holds (cells on one write bit line)", low=1, high=4096,
                                  default=64, integer=True)
    window_tokens: int = quantity("tokens in the sliding window (the ring of arrays of one head)", low=1,
                                  high=1 << 20, default=1024, integer=True)
    input_encoding: str = described("how the query reaches the cells: 'pulse-width' (at the fixed read "
                                    "amplitude v_in_v)", default="pulse-width")
    t_max_s: float = quantity("longest read pulse, T_max (one read stage)", "s", 1e-12, 1e-3, default=15e-9)
    write_time_s: float = quantity("writing the new token's K and V column", "s", 0.0, 1e-3, default=0.0)
    conversion_s: float = quantity("one C2P conversion after a read stage", "s", 0.0, 1e-3, default=17.5e-9)
    normalization: str = described("how a head's readout is scaled: 'none' (the paper's: the summed tile readouts) "
                                   "or 'reference-column' (each V array has one more column, written with the DAC's "
                                   "top level; the digital periphery divides the head's readouts by that column's, "
                                   "so a query's pulses weigh the values as weights summing to one)", default="none")
    c2p_reference: str = described("where the C2P comparators' reference sits: 'offset' (the cell's offset plus "
                                    "the head's threshold, the paper's) or 'peak' (each query's largest score less "
                                    "one saturation unit plus the head's threshold: a peak detector across the rows "
                                    "sets it, so a key's pulse depends on how far it scores below the best key)",
                                    default="offset")
    source: str = described("where the configuration comes from", default="the paper's configuration")
    overrides: tuple[str, ...] = described("fields a user set explicitly, 'name=value'", default=())

    def __post_init__(self):
        if self.input_encoding not in INPUT_ENCODINGS:
            raise ConfigError("input_encoding", f"must be one of {', '.join(INPUT_ENCODINGS)}; got "
                                                f"{shown(self.input_encoding)}")
        if self.normalization not in NORMALIZATIONS:
            raise ConfigError("normalization", f"must be one of {', '.join(NORMALIZATIONS)}; got "
                                               f"{shown(self.normalization)}")
        if self.c2p_reference not in C2P_REFERENCES:
            raise ConfigError("c2p_reference", f"must be one of {', '.join(C2P_REFERENCES)}; got "
                                               f"{shown(self.c2p_reference)}")
        if self.readout_levels % 2:
            raise ConfigError("readout_levels", f"is sign x counter levels and must be even; got {self.readout_levels}")
        if self.window_tokens % self.rows_per_tile:
            raise ConfigError("window_tokens", f"must be a multiple of rows_per_tile = {self.rows_per_tile}; got "
                                               f"{self.window_tokens}")
        check_quantities(self)

    @property
    def phase_s(self) -> float:
        """One read phase: stage 1 (Q pulses, C2P) then stage 2 (phi pulses, signed C2P and counter)."""
        return 2 * (self.t_max_s + self.conversion_s)

    def overridden(self, **changes) -> "HardwareConfig":
        """This configuration with fields set by the user; each is recorded in `overrides`."""
        unknown = set(changes) - set(FIELDS) - {"source", "overrides"}
        if unknown:
            raise ConfigError(sorted(unknown)[0], f"is not a hardware field; they are {', '.join(FIELDS)}")
        changes = {k: v for k, v in changes.items() if v is not None and v != getattr(self, k)}
        if not changes:
            return self
        noted = tuple(f"{k}={v}" for k, v in changes.items())
        kept = tuple(o for o in self.overrides if o.split("=", 1)[0] not in changes)
        return dataclasses.replace(self, **changes, overrides=kept + noted)

    def to_attrs(self) -> dict:
        """One HDF5 attribute per field (overrides as JSON text)."""
        return {name: json.dumps(list(value)) if name == "overrides" else value
                for name, value in dataclasses.asdict(self).items()}

    @classmethod
    def from_attrs(cls, attrs: Mapping, where: str) -> "HardwareConfig":
        """Read back `to_attrs`; anything missing, of another type or out of range is a ConfigError naming it."""
        values = {}
        for name, field in FIELDS_ALL.items():
            if name not in attrs and name in ADDED_FIELDS:
                values[name] = ADDED_FIELDS[name]
                continue
            if name not in attrs:
                raise ConfigError(f"hardware.{name}", f"is missing in {where}")
            value = attrs[name]
            value = value.decode() if isinstance(value, bytes) else value
            value = value.item() if hasattr(value, "item") else value
            if name == "overrides":
                try:
                    value = tuple(str(o) for o in json.loads(value))
                except (TypeError, ValueError):
                    raise ConfigError("hardware.overrides", f"in {where} is not a JSON list of text") from None
            values[name] = value
        try:
            return cls(**values)
        except ConfigError as exc:
            raise ConfigError(f"hardware.{exc.parameter}", f"{exc.problem} (in {where})") from None


FIELDS_ALL = {f.name: f for f in dataclasses.fields(HardwareConfig)}
FIELDS = tuple(name for name in FIELDS_ALL if name not in ("source", "overrides"))

PAPER_HARDWARE = HardwareConfig(t_max_s=PAPER_T_MAX_S, write_time_s=0.0, conversion_s=PAPER_C2P_CONVERSION_S,
                                source="the paper's configuration (16 pulse widths, 3-bit DAC, sign + 16-level "
                                       "counter, 64-token arrays, 1024-token window, 65 ns per read)")


def phase_durations(timing: Mapping[str, float]) -> dict[str, float]:
    """t_max_s, write_time_s and conversion_s from a surrogate's `timing` figures: a `latency_per_token_s` (the
    paper's figure per read) is one whole read; else the design's write and T_max with the characterized C2P
    conversion (`t_c2p_conversion_s`, else the paper's share); without those, the paper's."""
    t_max = float(timing.get("t_max_s", PAPER_T_MAX_S))
    if "latency_per_token_s" in timing:
        return {"t_max_s": t_max, "write_time_s": 0.0,
                "conversion_s": max(0.0, float(timing["latency_per_token_s"]) / 2 - t_max)}
    if not {"write_time_s", "t_max_s"} <= set(timing):
        return {"t_max_s": PAPER_T_MAX_S, "write_time_s": 0.0, "conversion_s": PAPER_C2P_CONVERSION_S}
    return {"t_max_s": t_max, "write_time_s": float(timing["write_time_s"]),
            "conversion_s": float(timing.get("t_c2p_conversion_s", PAPER_C2P_CONVERSION_S))}


def recorded_before(timing: Mapping[str, float]) -> HardwareConfig:
    """The configuration of a surrogate that records none (files written before the `hardware` group, or built
    in code without one): the paper's levels, array and window, with the read phases of its timing figures."""
    return dataclasses.replace(PAPER_HARDWARE, **phase_durations(timing),
                               source="the paper's defaults: no hardware configuration recorded (a surrogate "
                                      "written before gaincell recorded one); read phases from its timing figures")


def from_design(cell, c2p=None, dac=None, timing: Mapping[str, float] | None = None) -> HardwareConfig:
    """The configuration a design describes: its write DAC's levels, its C2P counter's levels, the rows one
    write bit line serves, and the read phases of its fitted `timing` (else its T_max and write time with the
    paper's conversion share); the periphery's defaults where the design record holds none."""
    from .periphery import C2PDesign, DacDesign

    c2p, dac = c2p or C2PDesign(), dac or DacDesign()
    rows = dac.load_cells
    window = max(rows, PAPER_HARDWARE.window_tokens // rows * rows)
    phases = phase_durations(timing or {"t_max_s": cell.t_max_s, "write_time_s": cell.write_time_s})
    return HardwareConfig(stored_levels=cell.dac_levels, readout_levels=2 * c2p.counter_levels, rows_per_tile=rows,
                          window_tokens=window, **phases,
                          source=f"design {cell.name}: write DAC {cell.dac_levels} levels, C2P counter "
                                 f"{c2p.counter_levels} levels, {rows} rows per array")


def token_time_s(hardware: HardwareConfig, layers: int = 1, read_phases: int = 1) -> float:
    """The time of one token through the model: per layer, the K/V write then one read phase per query head
    that reads the same KV arrays (`read_phases` = query heads / KV heads), layers one after another. The
    decay's clock (ages of stored tokens), the latency and the energy per token all use this."""
    for name, value in (("layers", layers), ("read_phases", read_phases)):
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            raise ConfigError(name, f"must be a positive integer; got {shown(value)}")
    return layers * (hardware.write_time_s + read_phases * hardware.phase_s)


def describe(hardware: HardwareConfig) -> list[str]:
    """Lines for `gaincell inspect` and the fit report: every field with its unit, where it comes from."""
    h = hardware
    lines = [f"hardware: {h.source}",
             f"  input {h.input_levels} pulse-width levels ({h.input_encoding}), stored K/V {h.stored_levels} levels, "
             f"readout {h.readout_levels} levels (sign x {h.readout_levels // 2})"
             + ("" if h.normalization == "none" else f", normalized by a {h.normalization}")
             + ("" if h.c2p_reference == "offset" else ", C2P reference at each query's peak score"),
             f"  arrays of {h.rows_per_tile} tokens, window {h.window_tokens} tokens",
             f"  read phase {h.phase_s * 1e9:.4g} ns (2 x (T_max {h.t_max_s * 1e9:.4g} ns + conversion "
             f"{h.conversion_s * 1e9:.4g} ns)), write {h.write_time_s * 1e9:.4g} ns"]
    if h.overrides:
        lines.append(f"  set by the user: {', '.join(h.overrides)}")
    return lines


def parse_overrides(items, where: str = "--hardware") -> dict:
    """'FIELD=VALUE' texts (the `--hardware` option, a record's `overrides`) as {field: value of its type}."""
    values = {}
    for item in items:
        name, sep, text = str(item).partition("=")
        name = name.strip()
        if not sep or name not in FIELDS:
            raise ConfigError(where, f"{shown(item)} is not FIELD=VALUE with a hardware field ({', '.join(FIELDS)})")
        kind = FIELDS_ALL[name].type
        try:
            values[name] = int(text) if kind in (int, "int") else float(text) if kind in (float, "float") else text
        except ValueError:
            raise ConfigError(where, f"{name} = {shown(text)} is not a number") from None
    return values
