"""Write Jane Austen's six novels as one plain-text file for fine-tuning (no hub, registries only).

Source: the Debian package r-cran-janeaustenr (the texts from Project Gutenberg, public domain), read
without R: its lazy-load database (data/Rdata.rdx index + Rdata.rdb zlib records) is parsed with the PyPI
package `rdata`. Usage:  .venv/bin/python scripts/get_training_text.py --out data-text/austen.txt
(`apt-get download` needs no root; an already downloaded .deb can be given with --deb).
"""
from __future__ import annotations

import argparse
import glob
import gzip
import subprocess
import tempfile
import zlib
from pathlib import Path

from gaincell.errors import GaincellError, InputFileError
from gaincell.outputs import atomic_write_text, check_writable_folder

NOVELS = ("sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey", "persuasion")


def novels_from_deb(deb: Path) -> dict[str, list[str]]:
    """The six novels (lists of lines) from the package file; InputFileError naming it when it is not the package."""
    import rdata

    with tempfile.TemporaryDirectory() as unpacked:
        try:
            subprocess.run(["dpkg-deb", "-x", str(deb), unpacked], check=True, capture_output=True, text=True)
        except FileNotFoundError:
            raise InputFileError("dpkg-deb is not installed: it unpacks the .deb (Debian/Ubuntu: apt-get install "
                                 "dpkg)") from None
        except subprocess.CalledProcessError as exc:
            said = (exc.stderr or "").strip().splitlines()
            raise InputFileError(f"--deb {deb}: is not a Debian package dpkg-deb can unpack"
                                 f"{' (' + said[-1] + ')' if said else ''}") from None
        try:
            return read_novels(Path(unpacked), rdata)
        except (OSError, ValueError, KeyError, TypeError, EOFError, zlib.error) as exc:
            raise InputFileError(f"--deb {deb}: is not the r-cran-janeaustenr package (its R data cannot be read: "
                                 f"{exc})") from None


def read_novels(unpacked: Path, rdata) -> dict[str, list[str]]:
    """The novels from the unpacked package's lazy-load database."""
    data = next(unpacked.rglob("janeaustenr/data"), None)
    if data is None:
        raise ValueError("it holds no janeaustenr/data folder")
    index = rdata.conversion.convert(rdata.parser.parse_data(gzip.decompress((data / "Rdata.rdx").read_bytes())))
    records = (data / "Rdata.rdb").read_bytes()
    novels = {}
    for name in NOVELS:
        offset, length = (int(x) for x in index["variables"][name])
        blob = zlib.decompress(records[offset + 4:offset + length])
        novels[name] = [str(line) for line in rdata.conversion.convert(rdata.parser.parse_data(blob))]
    return novels


def download_deb() -> Path:
    """r-cran-janeaustenr's .deb, downloaded by `apt-get download` into a new temporary folder."""
    folder = Path(tempfile.mkdtemp())
    try:
        subprocess.run(["apt-get", "download", "r-cran-janeaustenr"], cwd=folder, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise InputFileError(f"`apt-get download r-cran-janeaustenr` failed ({exc}); download the package another "
                             "way and give it with --deb") from None
    found = glob.glob(str(folder / "r-cran-janeaustenr_*.deb"))
    if not found:
        raise InputFileError(f"`apt-get download r-cran-janeaustenr` wrote no .deb into {folder}; give one with --deb")
    return Path(found[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="text file to write")
    parser.add_argument("--deb", type=Path, default=None, help="r-cran-janeaustenr .deb (default: apt-get download)")
    parser.add_argument("--exclude", action="append", default=[], choices=NOVELS,
                        help="leave this novel out (repeatable): prideprejudice holds the demo's held-out text "
                             "(data/pride_and_prejudice_ch1-3.txt), so a model the demo scores must not train on it")
    args = parser.parse_args()
    if args.deb is not None and not args.deb.is_file():
        parser.error(f"--deb {args.deb}: " + ("no such file" if not args.deb.exists() else "is not a file") +
                     "; give the r-cran-janeaustenr .deb, or leave --deb out to download it")
    if args.out.is_dir():
        parser.error(f"--out {args.out}: is a folder; give a file name")
    try:
        check_writable_folder(args.out.parent, args.out)
        deb = args.deb if args.deb is not None else download_deb()
        novels = {name: lines for name, lines in novels_from_deb(deb).items() if name not in args.exclude}
        paragraphs = []
        for lines in novels.values():
            paragraphs += [" ".join(block.split("\n")).strip() for block in "\n".join(lines).split("\n\n")]
        atomic_write_text(args.out, "\n\n".join(p for p in paragraphs if p) + "\n")
    except GaincellError as error:
        parser.exit(1, f"{parser.prog}: error: {error}\n")
    print(f"wrote {args.out}: {sum(len(v) for v in novels.values())} lines of {len(novels)} novels, "
          f"{args.out.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
