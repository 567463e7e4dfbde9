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

NOVELS = ("sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey", "persuasion")


def novels_from_deb(deb: Path) -> dict[str, list[str]]:
    """The six novels (lists of lines) from the package file."""
    import rdata

    with tempfile.TemporaryDirectory() as unpacked:
        subprocess.run(["dpkg-deb", "-x", str(deb), unpacked], check=True)
        data = next(Path(unpacked).rglob("janeaustenr/data"))
        index = rdata.conversion.convert(rdata.parser.parse_data(gzip.decompress((data / "Rdata.rdx").read_bytes())))
        records = (data / "Rdata.rdb").read_bytes()
        novels = {}
        for name in NOVELS:
            offset, length = (int(x) for x in index["variables"][name])
            blob = zlib.decompress(records[offset + 4:offset + length])
            novels[name] = [str(line) for line in rdata.conversion.convert(rdata.parser.parse_data(blob))]
    return novels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="text file to write")
    parser.add_argument("--deb", type=Path, default=None, help="r-cran-janeaustenr .deb (default: apt-get download)")
    parser.add_argument("--exclude", action="append", default=[], choices=NOVELS,
                        help="leave this novel out (repeatable): prideprejudice holds the demo's held-out text "
                             "(data/pride_and_prejudice_ch1-3.txt), so a model the demo scores must not train on it")
    args = parser.parse_args()
    deb = args.deb
    if deb is None:
        folder = Path(tempfile.mkdtemp())
        subprocess.run(["apt-get", "download", "r-cran-janeaustenr"], cwd=folder, check=True)
        deb = Path(glob.glob(str(folder / "r-cran-janeaustenr_*.deb"))[0])
    novels = {name: lines for name, lines in novels_from_deb(deb).items() if name not in args.exclude}
    paragraphs = []
    for lines in novels.values():
        paragraphs += [" ".join(block.split("\n")).strip() for block in "\n".join(lines).split("\n\n")]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_name(args.out.name + ".partial")
    partial.write_text("\n\n".join(p for p in paragraphs if p) + "\n")
    partial.replace(args.out)
    print(f"wrote {args.out}: {sum(len(v) for v in novels.values())} lines of {len(novels)} novels, "
          f"{args.out.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
