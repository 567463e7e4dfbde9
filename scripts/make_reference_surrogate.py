"""Write data/paper_reference.h5: the paper's compact model fitted to its public SPICE IV data.

    .venv/bin/python scripts/make_reference_surrogate.py [PATH/TO/gaincell_iv_spice.npz]

Default input: ../shared/reference/gaincellattention/gaincell_iv_spice.npz beside the project.
"""
import argparse
import sys
import zipfile
from pathlib import Path

import numpy as np

from gaincell.errors import GaincellError, InputFileError

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = ROOT.parent / "shared/reference/gaincellattention/gaincell_iv_spice.npz"
ARRAYS = ("Vstore", "Vin", "Iout")  # stored voltages (n), input voltages (m), currents (n, m)


def check_iv_file(source: Path) -> None:
    """Refuse (InputFileError naming the file) anything but an .npz of finite float arrays Vstore (n), Vin (m) and
    Iout (n, m), read without unpickling."""
    what = f"IV_FILE {source}"
    if not source.is_file():
        raise InputFileError(f"{what}: no such file" if not source.exists() else f"{what}: is not a file")
    try:
        with open(source, "rb") as handle:
            if handle.read(4) != b"PK\x03\x04":
                raise InputFileError(f"{what}: is not an .npz archive (a zip file of arrays); expected the paper's "
                                     f"gaincell_iv_spice.npz ({', '.join(ARRAYS)})")
        with np.load(source, allow_pickle=False) as data:
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise InputFileError(f"{what}: is a single .npy array, not an .npz archive of {', '.join(ARRAYS)}")
            missing = [name for name in ARRAYS if name not in data.files]
            if missing:
                raise InputFileError(f"{what}: has no array {', '.join(missing)} (it holds {', '.join(data.files) or 'none'});"
                                     f" expected the paper's gaincell_iv_spice.npz ({', '.join(ARRAYS)})")
            stored, vin, current = (np.asarray(data[name]) for name in ARRAYS)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InputFileError(f"{what}: cannot be read as an .npz archive of numbers ({exc}); expected the paper's "
                             f"gaincell_iv_spice.npz ({', '.join(ARRAYS)})") from None
    if not all(np.issubdtype(a.dtype, np.number) and np.isfinite(a).all() for a in (stored, vin, current)):
        raise InputFileError(f"{what}: {', '.join(ARRAYS)} must hold finite numbers")
    if stored.ndim != 1 or vin.ndim != 1 or current.shape != (stored.size, vin.size) or min(stored.size, vin.size) < 4:
        raise InputFileError(f"{what}: expected Vstore (n), Vin (m) and Iout (n, m) with n, m >= 4; got shapes "
                             f"{stored.shape}, {vin.shape}, {current.shape}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", metavar="IV_FILE", nargs="?", type=Path, default=DEFAULT_SOURCE,
                        help="the paper's gaincell_iv_spice.npz (default: %(default)s)")
    options = parser.parse_args(argv)
    try:
        check_iv_file(options.source)
    except InputFileError as error:
        parser.error(str(error))
    from gaincell.fitting.reference import fit_reference
    from gaincell.fitting.report import text_report

    try:
        surrogate = fit_reference(options.source)
        target = surrogate.save(ROOT / "data" / "paper_reference.h5")
    except GaincellError as error:
        sys.exit(f"make_reference_surrogate: {options.source}: {error}")
    print(text_report(surrogate))
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
