"""Write tests/golden/cell_golden.h5: the frozen results of the small sweeps in tests/golden_sweeps.py.

    .venv/bin/python scripts/make_golden.py
    .venv/bin/python scripts/make_golden.py --out /tmp/golden.h5     # somewhere else (to compare)

Only scalar results are kept (waveforms would make the file large); tests/test_golden.py re-runs the same
sweeps and compares. Re-run this only for an intended change, and say why in the commit. The file is written
whole or not at all (a temporary file beside it, renamed over it once complete).
"""
import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from golden_sweeps import GOLDEN_FILE, golden_sweeps

from gaincell.errors import GaincellError
from gaincell.outputs import SWEEP_FILE, atomic_path, guard_output


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "golden" / GOLDEN_FILE,
                        help="the golden file to write (default: %(default)s); an existing file must be a "
                             "characterization file")
    parser.add_argument("--force", action="store_true", help="replace an existing --out of another kind")
    options = parser.parse_args(argv)
    try:
        guard_output(options.out, SWEEP_FILE, force=options.force)
    except GaincellError as error:
        parser.error(str(error))
    from gaincell.circuits import run_sweep

    from gaincell.store import save_sweeps

    target = options.out
    results = []
    try:
        with tempfile.TemporaryDirectory() as scratch:
            for sweep in golden_sweeps():
                data = run_sweep(sweep, Path(scratch) / "golden.h5", progress=False).data
                if data.counts()["failed"]:
                    raise SystemExit(f"{sweep.name}: failed points, not writing a golden file")
                data.waveforms = {}
                results.append(data)
        with atomic_path(target) as fresh:  # a new file (no sweeps or attributes kept from the old one)
            save_sweeps(fresh, results, file_attrs={"made_by": "scripts/make_golden.py"})
    except GaincellError as error:
        sys.exit(f"make_golden: {error}")
    print(f"wrote {target} ({target.stat().st_size} bytes): {', '.join(d.name for d in results)}")


if __name__ == "__main__":
    main()
