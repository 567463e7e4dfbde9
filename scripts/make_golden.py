"""Write tests/golden/cell_golden.h5: the frozen results of the small sweeps in tests/golden_sweeps.py.

    .venv/bin/python scripts/make_golden.py

Only scalar results are kept (waveforms would make the file large); tests/test_golden.py re-runs the same
sweeps and compares. Re-run this only for an intended change, and say why in the commit.
"""
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from golden_sweeps import GOLDEN_FILE, golden_sweeps  # noqa: E402

from gaincell.circuits import run_sweep  # noqa: E402
from gaincell.store import save_sweeps  # noqa: E402


def main():
    target = ROOT / "tests" / "golden" / GOLDEN_FILE
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for sweep in golden_sweeps():
            data = run_sweep(sweep, Path(scratch) / "golden.h5", progress=False).data
            if data.counts()["failed"]:
                raise SystemExit(f"{sweep.name}: failed points, not writing a golden file")
            data.waveforms = {}
            results.append(data)
    target.unlink(missing_ok=True)
    save_sweeps(target, results, file_attrs={"made_by": "scripts/make_golden.py"})
    print(f"wrote {target} ({target.stat().st_size} bytes): {', '.join(d.name for d in results)}")


if __name__ == "__main__":
    main()
