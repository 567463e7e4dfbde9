"""Every netlist the package writes is byte-identical to its golden copy (tests/golden/netlists/): a change to
how netlists are written shows here as a diff, to be explained in the commit that re-writes the copies
(`.venv/bin/python tests/golden_netlists.py`)."""
import difflib

import pytest

from golden_netlists import GOLDEN_FOLDER, golden_path, package_netlists

DECKS = package_netlists()


@pytest.mark.parametrize("name", sorted(DECKS))
def test_netlist_matches_its_golden_copy(name):
    golden = golden_path(name)
    assert golden.exists(), f"no golden copy {golden}: run .venv/bin/python tests/golden_netlists.py"
    expected = golden.read_text()
    if DECKS[name] != expected:
        diff = difflib.unified_diff(expected.splitlines(), DECKS[name].splitlines(), "golden", "now", lineterm="")
        pytest.fail(f"{name} differs from {golden}:\n" + "\n".join(list(diff)[:60]))


def test_every_golden_copy_is_still_written():
    stale = sorted(p.stem for p in GOLDEN_FOLDER.glob("*.cir") if p.stem not in DECKS)
    assert not stale, f"golden netlists no catalogue entry writes any more: {stale}"
