"""Write data/paper_reference.h5: the paper's compact model fitted to its public SPICE IV data.

    .venv/bin/python scripts/make_reference_surrogate.py [PATH/TO/gaincell_iv_spice.npz]

Default input: ../shared/reference/gaincellattention/gaincell_iv_spice.npz beside the project.
"""
import sys
from pathlib import Path

from gaincell.fitting.reference import fit_reference
from gaincell.fitting.report import text_report

ROOT = Path(__file__).resolve().parent.parent


def main():
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared/reference/gaincellattention/gaincell_iv_spice.npz"
    surrogate = fit_reference(source)
    target = surrogate.save(ROOT / "data" / "paper_reference.h5")
    print(text_report(surrogate))
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
