"""Write data/paper_reference.h5: the paper's compact model fitted to its public SPICE IV data.

    .venv/bin/python scripts/make_reference_surrogate.py [PATH/TO/gaincell_iv_spice.npz]

Default input: ../shared/reference/gaincellattention/gaincell_iv_spice.npz beside the project.
"""
import argparse
import sys
from pathlib import Path

from gaincell.errors import GaincellError, InputFileError

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = ROOT.parent / "shared/reference/gaincellattention/gaincell_iv_spice.npz"

def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", metavar="IV_FILE", nargs="?", type=Path, default=DEFAULT_SOURCE,
                        help="the paper's gaincell_iv_spice.npz (default: %(default)s)")
    options = parser.parse_args(argv)
    from gaincell.fitting.reference import fit_reference
    from gaincell.fitting.report import text_report

    try:
        surrogate = fit_reference(options.source)
        target = surrogate.save(ROOT / "data" / "paper_reference.h5")
    except InputFileError as error:  # IV_FILE is not the paper's IV data: a bad argument
        parser.error(str(error))
    except GaincellError as error:
        sys.exit(f"make_reference_surrogate: error: {error}")
    print(text_report(surrogate))
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
