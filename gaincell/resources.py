"""Files shipped inside the package (netlists, data), found with importlib.resources.

Works for editable and installed (wheel) copies alike; never relies on the repository layout.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from .errors import ConfigError


def _shipped(package: str, name: str) -> Path:
    entry = resources.files(package) / name
    if not entry.is_file():
        available = sorted(p.name for p in resources.files(package).iterdir() if p.is_file()
                           and not p.name.endswith((".py", ".pyc")))
        raise ConfigError("name", f"{name!r} is not shipped in {package}; available: {', '.join(available)}")
    return Path(str(entry))


def netlist_path(name: str) -> Path:
    """Absolute path of a shipped SPICE file, e.g. `netlist_path("cmos_generic.lib")`."""
    return _shipped("gaincell.netlists", name)


def data_path(name: str) -> Path:
    """Absolute path of a shipped data file (reference surrogates, golden results)."""
    return _shipped("gaincell.data", name)
