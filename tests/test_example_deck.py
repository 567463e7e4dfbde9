"""The shipped example deck (netlists/examples/) runs through `gaincell simulate` and writes and reads its cells."""
import fnmatch
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from gaincell.store import read_sweep

ROOT = Path(__file__).resolve().parent.parent
DECK = ROOT / "netlists" / "examples" / "signed_write_read.cir"


def test_example_deck_writes_and_reads_both_cells(tmp_path):
    out, png = tmp_path / "example.h5", tmp_path / "example.png"
    done = subprocess.run([sys.executable, "-m", "gaincell.app.cli", "simulate", str(DECK), "--out", str(out),
                           "--png", str(png)], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    wave = read_sweep(out, "tran").point((0,))

    def at(signal, t):
        return float(np.interp(t, wave["time"], wave[signal]))

    # written through the write path (word line low at 6.2 ns), from the opposite level: feedthrough of a few mV
    assert at("v(x1.sn)", 9.5e-9) == pytest.approx(0.9, abs=0.02)
    assert at("v(x0.sn)", 9.5e-9) == pytest.approx(0.0, abs=0.02)
    # mid-read (10..20 ns), into the bit line held at VDD/2: about +-10 uA (netlists/README.md, signed cell read)
    assert 9e-6 < at("i(va1)", 15e-9) < 11e-6
    assert -11e-6 < at("i(va0)", 15e-9) < -9e-6
    assert abs(at("i(va1)", 9.5e-9)) < 1e-8 and abs(at("i(va0)", 24e-9)) < 1e-8  # no current outside the pulse
    assert png.stat().st_size > 10_000


def test_example_decks_are_package_data():
    """An installed (non-editable) copy ships netlists/examples/ beside the .lib and .sub files it includes."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["gaincell.netlists"]
    decks = sorted((ROOT / "netlists" / "examples").glob("*.cir"))
    assert decks
    for deck in decks:
        name = deck.relative_to(ROOT / "netlists").as_posix()
        assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), name
