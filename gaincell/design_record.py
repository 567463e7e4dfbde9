"""The design record every artifact carries (sweep groups, surrogate files), read back as the same dataclasses.

    attrs[DESIGN_RECORD] = design_record(cell, c2p)      # {"schema_version": 2, "cell": {...}, "c2p": {...}}
    record = read_design_record(attrs, "sweep 'read'")   # DesignRecord(cell=CellDesign(...), c2p=..., dac=None)

Files written before the record existed (schema 1) hold the design inside a JSON attribute `design`; the
same function reads them, in this one place.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .design import LATER_FIELDS, CellDesign, design_from_dict, periphery_from_table
from .errors import ConfigError
from .periphery import C2PDesign, DacDesign

DESIGN_SCHEMA_VERSION = 2
DESIGN_RECORD = "design_record"  # the attribute holding the record in sweep groups and surrogate files


@dataclass(frozen=True)
class DesignRecord:
    """What an artifact was made with: the cell, and the periphery when its sweep simulated one."""

    cell: CellDesign
    c2p: C2PDesign | None = None
    dac: DacDesign | None = None


def design_record(cell: CellDesign, c2p: C2PDesign | None = None, dac: DacDesign | None = None) -> str:
    """The JSON text of a design record (attribute `DESIGN_RECORD` of sweep groups and surrogates)."""
    record = {"schema_version": DESIGN_SCHEMA_VERSION, "cell": cell.to_dict()}
    record |= {name: dataclasses.asdict(part) for name, part in (("c2p", c2p), ("dac", dac)) if part is not None}
    return json.dumps(record)


def read_design_record(attrs: Mapping, where: str) -> DesignRecord:
    """The design record in an artifact's attributes. Files written before the record (schema 1) hold the
    design in the JSON attribute `design`: a testbench description {"design": {...}, "c2p": {...}} in sweep
    groups, the cell's fields (possibly only some of them) in surrogate files; fields they lack take the
    cmos-generic preset's values, as a design file without them would."""
    try:
        if DESIGN_RECORD in attrs:
            record = json.loads(attrs[DESIGN_RECORD])
            version = record.get("schema_version") if isinstance(record, dict) else None
            if version != DESIGN_SCHEMA_VERSION:
                raise ConfigError(where, f"holds a design record of schema version {version!r}; this gaincell reads "
                                         f"version {DESIGN_SCHEMA_VERSION}")
            return DesignRecord(_cell_from_fields(record["cell"], complete=True),
                                *(_periphery(record, name) for name in ("c2p", "dac")))
        blob = json.loads(attrs.get("design", "{}"))
        if not isinstance(blob, dict):
            raise TypeError(f"attribute 'design' is a JSON {type(blob).__name__}, not an object")
        fields = blob.get("design", {}) if "testbench" in attrs else blob
        return DesignRecord(_cell_from_fields(fields, complete=False),
                            *(_periphery(blob, name) for name in ("c2p", "dac")))
    except ConfigError as exc:
        if exc.parameter == where:
            raise
        raise ConfigError(where, f"holds no readable design record: {exc.parameter}: {exc.problem}") from None
    except (ValueError, TypeError, KeyError, AttributeError) as exc:  # JSON errors are ValueErrors
        raise ConfigError(where, f"holds no readable design record: {exc}") from None


def _periphery(record: dict, name: str):
    part = record.get(name)
    return None if part is None else periphery_from_table(name, part)


def _cell_from_fields(fields: Mapping, complete: bool) -> CellDesign:
    """A CellDesign from its `to_dict` form, read by the design files' loader (`design_from_dict`) as a table
    of every field (when `complete`, but `LATER_FIELDS`) or of some (the cmos-generic preset's for the others);
    its device and model-name pairs become the file form's tables, and its libraries need not exist here."""
    if not isinstance(fields, Mapping):
        raise TypeError(f"the cell design is a {type(fields).__name__}, not a table of fields")
    names = [f.name for f in dataclasses.fields(CellDesign)]
    unknown = [key for key in fields if key not in names]
    missing = [name for name in names if name not in fields and name not in LATER_FIELDS]
    if unknown or (complete and missing):
        raise KeyError(f"unknown fields {unknown}" if unknown else f"missing fields {missing}")
    table = {key: dict(value) if key in ("devices", "model_names") else value for key, value in fields.items()}
    return design_from_dict(table, base_dir=Path(), check_libraries=False)
