"""The trust policy for SPICE text: what gaincell lets ngspice read, checked before ngspice sees anything.

ngspice runs commands from `.control ... .endc` blocks and from `*#` lines in every file it reads, and one
of those commands is `shell`. gaincell runs netlists without ngspice scripting, so in the netlist and in
every file it reads (`.include`/`.inc` and `.lib FILE SECTION`, followed recursively) these are refused:

- a line starting with `.control` or `.endc` (any case, after leading blanks; ngspice matches prefixes);
- a line starting with `*#` (an ngspice script line);
- the words `shell` and `system`, anywhere, in any case;
- binary data: a NUL byte, text that is not UTF-8;
- a file that is missing, a folder or device, unreadable; includes nested deeper than `MAX_INCLUDE_DEPTH`
  or including themselves.

Paths are resolved as ngspice 39 does: `~` is the home folder, a relative path is relative to the file that
names it (ngspice looks in its working folder first; gaincell runs it in a private, empty one). Inside a
library file, `.lib NAME` ... `.endl` defines a section, read only when a `.lib FILE NAME` line names it;
references in sections nobody selects are still checked when their files exist (they are never trusted
unread). Every problem is a `NetlistError` naming the file, the line, the chain of includes and the rule.
"""
from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from gaincell.errors import NetlistError
from gaincell.spice_words import FORBIDDEN_WORD

from .elements import include, library

MAX_INCLUDE_DEPTH = 16
MAX_FILES = 20000  # distinct files one netlist may reach (a full PDK has a few hundred)

CONTROL_RULE = ("'.control'/'.endc' blocks are not allowed: gaincell runs netlists without ngspice scripting; "
                "run such a deck with plain ngspice outside gaincell")
SCRIPT_RULE = ("'*#' lines are not allowed: ngspice runs them as commands; gaincell runs netlists without "
               "ngspice scripting (make it a plain '* ' comment)")
WORD_RULE = ("the word {word!r} is not allowed in SPICE text that gaincell runs (ngspice can run shell commands "
             "from a netlist); rename or remove it")

_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x85\u2028\u2029]")
_ARGUMENT = re.compile(r"\s*(?:\"([^\"]*)\"|'([^']*)'|(\S+))")
_SECTION_END = ".endl"


def line_problem(line: str) -> str | None:
    """The rule a single line of SPICE text breaks, or None."""
    start = line.lstrip().lstrip("\ufeff").lstrip().lower()
    if start.startswith((".control", ".endc")):
        return CONTROL_RULE
    if start.startswith("*#"):
        return SCRIPT_RULE
    word = FORBIDDEN_WORD.search(line)
    if word:
        return WORD_RULE.format(word=word.group(1))
    return None


def card_of(line: str) -> str:
    """The first word of a line, lower case ('' for a blank line)."""
    words = line.split(None, 1)
    return words[0].lower() if words else ""


@dataclass(frozen=True)
class Reference:
    """A `.include FILE`, `.lib FILE SECTION` (a reference) or `.lib NAME` (a section definition) line."""

    kind: str  # "include", "lib" or "section"
    card: str
    path: str = ""
    section: str | None = None


def parse_reference(line: str) -> Reference | None:
    """What an `.inc...`/`.lib...` line names, read like ngspice (which matches card prefixes: `.incl`,
    `.library` count); None for other lines. Raises `ValueError` for such a line without a file name."""
    card = card_of(line)
    if not card.startswith((".inc", ".lib")):
        return None
    rest = line.lstrip()[len(card):]
    words = []
    position = 0
    while len(words) < 2:
        match = _ARGUMENT.match(rest, position)
        if not match or match.end() == position:
            break
        words.append(next(g for g in match.groups() if g is not None))
        position = match.end()
    if not words or not words[0]:
        raise ValueError(f"'{card}' needs a file name")
    if any(mark in word for word in words for mark in (";", "$", "//")):
        raise ValueError(f"'{card}' line with ';', '$' or '//' in its file or section name: ngspice reads those as "
                         "the start of a comment, so it would read another file; rename the file")
    if card.startswith(".inc"):
        return Reference("include", card, words[0])
    if any(word != word.strip() or len(word.split()) != 1 for word in words):
        raise ValueError(f"'{card}' with a blank inside quotes: ngspice splits such a .lib line at the blank, "
                         "so it would read another file or section; use a path and section without blanks")
    if len(words) == 1:
        return Reference("section", card, section=words[0].lower())
    return Reference("lib", card, words[0], words[1].lower())


def resolve(path_text: str, base_dir: Path) -> Path:
    """Where ngspice finds `path_text` named in a file in `base_dir`: `~` expanded, relative to `base_dir`.

    Kept as ngspice builds it, by joining names, without resolving links or `..`: a file reached through a
    linked folder reads its own relative includes from that folder, as ngspice does, not from the link's
    target."""
    path = Path(os.path.expanduser(path_text))
    return path if path.is_absolute() else base_dir / path


def title_problem(line: str) -> str | None:
    """The first line of a deck is its title; ngspice still acts on some first lines (a script marker, a card)."""
    low = line.strip().lower()
    if low.startswith("*ng_script"):
        return "'*ng_script' makes ngspice run the whole file as a script; gaincell runs netlists only"
    if low.startswith(".") and card_of(low) != ".title":
        return (f"the first line is the title, but it is the card {card_of(low)!r}, which ngspice may act on; "
                "put a plain title line first")
    return None


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


class _Unreadable(Exception):
    """Why a file cannot be used (and at which line, for binary data)."""

    def __init__(self, reason: str, line: int | None = None):
        super().__init__(reason)
        self.reason, self.line = reason, line


def _binary_characters(text: str) -> _Unreadable | None:
    """NUL or other control characters (tab, newline and CR LF are fine), a lone CR, Unicode line separators
    or text that cannot be written as UTF-8: what a netlist handed to ngspice must not hold."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return _Unreadable("binary data (it is not UTF-8 text)", text[:exc.start].count("\n") + 1)
    normalised = text.replace("\r\n", "\n")
    bad = _CONTROL_CHARACTERS.search(normalised) or re.search("\r", normalised)
    if bad is None:
        return None
    what = "a NUL byte" if bad.group() == "\x00" else f"the control character {bad.group()!r}"
    return _Unreadable(f"binary data ({what})", normalised[:bad.start()].count("\n") + 1)


def check_text_characters(text: str, name: str) -> None:
    """Refuse netlist text with binary data (see `_binary_characters`), naming `name` and the line."""
    problem = _binary_characters(text)
    if problem:
        raise NetlistError(f"{name} line {problem.line}: {problem.reason}; a netlist must be plain text")


def _decode(data: bytes) -> str:
    """UTF-8 text of a file's bytes; a NUL byte or bytes that are not UTF-8 are `_Unreadable` at their line."""
    nul = data.find(b"\x00")
    if nul >= 0:
        raise _Unreadable("binary data (a NUL byte); SPICE files must be plain text", data[:nul].count(b"\n") + 1)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Unreadable(f"binary data (byte 0x{data[exc.start]:02x} is not UTF-8); SPICE files must be plain "
                          "UTF-8 text (convert one in another encoding, e.g. with `iconv -f latin1 -t utf-8`)",
                          data[:exc.start].count(b"\n") + 1) from None


def _regular_file(path: Path, read: bool = True) -> tuple[os.stat_result, bytes]:
    """The stat and (when `read`) the bytes of a regular file, or `_Unreadable` saying why it cannot be used."""
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise _Unreadable("is a folder, not a file")
        if not stat.S_ISREG(info.st_mode):
            raise _Unreadable("is not a regular file (a device, pipe or socket)")
        return info, path.read_bytes() if read else b""
    except FileNotFoundError:
        raise _Unreadable("file not found") from None
    except (OSError, RuntimeError, ValueError) as exc:  # RuntimeError: a symlink loop
        raise _Unreadable(f"cannot be read ({getattr(exc, 'strerror', None) or exc})") from None


def read_netlist_file(path: str | Path) -> str:
    """The text of a user's netlist file, read strictly: a missing file, a folder, an unreadable file or
    binary data (NUL bytes, not UTF-8, control characters) is a `NetlistError` naming the file."""
    path = Path(path)
    try:
        text = _decode(_regular_file(path)[1])
        problem = _binary_characters(text)
        if problem:
            raise problem
    except _Unreadable as exc:
        where = f"netlist file {path}" + (f" line {exc.line}" if exc.line else "")
        raise NetlistError(f"{where}: {exc.reason}") from None
    return text


# ---------------------------------------------------------------------------------------------------
# Files a netlist reads: scanned once per version (path, size, mtime), then followed reference by reference.

@dataclass(frozen=True)
class _Scan:
    """One file: its first broken rule, its references (line, reference, section it lies in) and sections."""

    problem: tuple[int, str] | None
    references: tuple[tuple[int, Reference, str | None], ...]
    sections: frozenset[str]


_scans: dict[tuple, _Scan] = {}


def _scan_text(text: str) -> _Scan:
    problem, references, sections, region = None, [], set(), None
    lines = ((number, line) for number, physical in enumerate(text.split("\n"), start=1)
             for line in physical.splitlines())  # every line break ngspice sees, and more (\r, \f, ...)
    for number, line in lines:
        rule = line_problem(line)
        if rule and problem is None:
            problem = (number, rule)
        card = card_of(line)
        if card.startswith(_SECTION_END):
            region = None
            continue
        try:
            reference = parse_reference(line)
        except ValueError as exc:
            problem = problem or (number, str(exc))
            continue
        if reference is None:
            continue
        if reference.kind == "section":
            region = reference.section
            sections.add(region)
        else:
            references.append((number, reference, region))
    return _Scan(problem, tuple(references), frozenset(sections))


def _scan(path: Path, where: "_Chain") -> _Scan:
    try:
        info, _ = _regular_file(path, read=False)
        key = (str(path), info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
        scan = _scans.get(key)
        if scan is None:
            scan = _scan_text(_decode(_regular_file(path)[1]))
            if len(_scans) > 4096:
                _scans.clear()
            _scans[key] = scan
    except _Unreadable as exc:
        raise NetlistError(f"{where.describe(path, exc.line)}: {exc.reason}") from None
    if scan.problem:
        number, rule = scan.problem
        raise NetlistError(f"{where.describe(path, number)}: {rule}")
    return scan


@dataclass(frozen=True)
class _Chain:
    """Where a file was reached from: (file, line, reference) steps, outermost first."""

    steps: tuple[tuple[str, int, Reference], ...] = ()

    def then(self, file: str, line: int, reference: Reference) -> "_Chain":
        return _Chain(self.steps + ((file, line, reference),))

    def describe(self, path: Path | str, line: int | None = None) -> str:
        here = f"{path} line {line}" if line else f"{path}"
        via = ", ".join(f"{'included' if ref.kind == 'include' else f'section {ref.section!r} read'} from "
                        f"{file} line {number}"
                        for file, number, ref in reversed(self.steps))
        return f"{here} ({via})" if via else here


@dataclass
class _Walk:
    """One netlist's walk over the files it reads: finished (file, section) pairs with the depth below them."""

    finished: dict[tuple[str, str | None], int] = field(default_factory=dict)
    scanned_only: set[str] = field(default_factory=set)

    def count(self) -> None:
        if len(self.finished) + len(self.scanned_only) > MAX_FILES:
            raise NetlistError(f"the netlist reaches more than {MAX_FILES} files through .include/.lib lines")

    def follow(self, path: Path, section: str | None, chain: _Chain, open_keys: tuple) -> int:
        """Check `path` (its `section`, or all of it) as ngspice reads it; returns the include depth below it."""
        key = (str(path), section)
        if key in open_keys:
            raise NetlistError(f"{chain.describe(path)}: include cycle: this file is already being read further "
                               "up the chain; a file must not include itself, directly or through others")
        if len(open_keys) + self.finished.get(key, 0) > MAX_INCLUDE_DEPTH:
            raise NetlistError(f"{chain.describe(path)}: .include/.lib lines nest deeper than "
                               f"{MAX_INCLUDE_DEPTH} files")
        if key in self.finished:
            return self.finished[key]
        self.count()
        scan = _scan(path, chain)
        if section is not None and section not in scan.sections:
            raise NetlistError(f"{chain.describe(path)}: no section {section!r} in this library (it defines "
                               f"{', '.join(sorted(scan.sections)) or 'no .lib sections'})")
        below = 0
        for number, reference, region in scan.references:
            target = resolve(reference.path, path.parent)
            step = chain.then(str(path), number, reference)
            if region == section:  # ngspice reads this line
                depth = self.follow(target, reference.section, step, open_keys + (key,))
                below = max(below, depth + 1)
            else:
                self.scan_unread(target, step)
        self.finished[key] = below
        return below

    def scan_unread(self, path: Path, chain: _Chain) -> None:
        """Check a file that only an unselected section names: its text and, transitively, the existing
        files it names (ngspice does not read them now, but a different section choice would)."""
        queue = [(path, chain)]
        while queue:
            path, chain = queue.pop()
            if str(path) in self.scanned_only or not _exists(path):
                continue
            self.scanned_only.add(str(path))
            self.count()
            scan = _scan(path, chain)
            for number, reference, _ in scan.references:
                queue.append((resolve(reference.path, path.parent), chain.then(str(path), number, reference)))


class DeckPolicy:
    """The policy applied to one deck given as text (`name` in messages; relative paths from `base_dir`)."""

    def __init__(self, name: str, base_dir: Path):
        self.name, self.base_dir, self._walk = name, Path(base_dir), _Walk()

    def files(self) -> list[Path]:
        """Every file the deck's .include/.lib lines read (or name in unselected sections), as checked so far."""
        return sorted({Path(name) for name, _ in self._walk.finished} | {Path(n) for n in self._walk.scanned_only})

    def check_title(self, number: int, line: str) -> None:
        """Refuse a title line that ngspice would act on (see `title_problem`), then apply the line rules."""
        problem = title_problem(line)
        if problem:
            raise NetlistError(f"{self.name} line {number}: {problem}")
        self.check_line(number, line)

    def check_line(self, number: int | None, line: str) -> None:
        """Refuse a line that breaks a rule (see the module docstring); `number` None for a generated line."""
        rule = line_problem(line)
        if rule:
            where = f"line {number}" if number is not None else f"generated line {line.strip()[:80]!r}"
            raise NetlistError(f"{self.name} {where}: {rule}")

    def reference_line(self, number: int, line: str) -> str | None:
        """For an `.include`/`.lib` line: check every file it reads and return it with the absolute path;
        None for any other line."""
        try:
            reference = parse_reference(line)
        except ValueError as exc:
            raise NetlistError(f"{self.name} line {number}: {exc}") from None
        if reference is None:
            return None
        if reference.kind == "section":
            raise NetlistError(f"{self.name} line {number}: '{reference.card} {reference.section}' defines a "
                               "library section, which belongs in a library file; read one with "
                               ".lib FILE SECTION, or a whole file with .include FILE")
        path = resolve(reference.path, self.base_dir)
        self._walk.follow(path, reference.section, _Chain().then(self.name, number, reference), ())
        try:  # the element layer refuses a path its line cannot carry
            return library(path, reference.section) if reference.kind == "lib" else include(path)
        except NetlistError as exc:
            raise NetlistError(f"{self.name} line {number}: {exc}") from None


def files_read(text: str, name: str, base_dir: Path) -> list[Path]:
    """The files a netlist's `.include`/`.lib` lines reach (the inputs a command must never overwrite)."""
    policy = DeckPolicy(name, base_dir)
    for number, line in enumerate(text.replace("\r\n", "\n").split("\n")[1:], start=2):
        if card_of(line) == ".end":
            break
        policy.reference_line(number, line)
    return policy.files()
