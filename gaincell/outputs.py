"""Writing outputs safely: every file appears whole or not at all, and never replaces an input.

    with atomic_path("fit.png") as tmp:      # write tmp; renamed over fit.png only on success
        fig.savefig(tmp)
    atomic_write_text("summary.txt", text)

    guard_output("surrogate.h5", kind=SURROGATE, inputs=["char.h5"], force=False)
    with output_lock("char.h5"):             # a second run writing the same file waits or is refused
        ...

The temporary file lives beside the destination (same file system, so the rename is atomic) and is removed
when the write fails or is interrupted (Ctrl-C, or SIGTERM, which the CLI turns into the same interrupt).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

from .errors import OutputError
from .interrupts import signals_deferred

# What a command writes, as recognised in an existing file (HDF5 attribute `file_kind`, or its content).
SWEEP_FILE = "gaincell characterization"
SURROGATE = "gaincell surrogate"
REPORT = "report"  # PNG, HTML, JSON, text, CSV or raw files: replaced only when gaincell wrote them (see below)
# How gaincell's own reports begin (checked before one is replaced): text reports start with "gaincell",
# HTML pages carry a generator tag, JSON results a "written_by" field.
_TEXT_MARKS = {".txt": b"gaincell", ".html": b'<meta name="generator" content="gaincell">',
               ".htm": b'<meta name="generator" content="gaincell">', ".json": b'"written_by": "gaincell'}


def _report_signature_ok(path: Path) -> bool:
    """Does an existing file look like the report gaincell writes under this suffix?

    .png: a Matplotlib PNG; .txt/.html/.htm/.json: gaincell's mark near the start (`_TEXT_MARKS`); .csv:
    gaincell's export header (`point,...`); .raw: an ngspice raw file. An empty file is always replaceable."""
    with open(path, "rb") as handle:
        head = handle.read(8192)
    if not head:
        return True
    suffix = path.suffix.lower()
    if suffix == ".png":
        return head.startswith(b"\x89PNG\r\n\x1a\n") and b"Matplotlib" in head
    if suffix == ".txt":
        return head.startswith(_TEXT_MARKS[suffix])
    if suffix in _TEXT_MARKS:
        return _TEXT_MARKS[suffix] in head
    if suffix == ".csv":
        return head.startswith(b"point,")
    if suffix == ".raw":
        return head.startswith(b"Title:")
    return False


def utf8_text(text: str) -> str:
    """`text` made writable as UTF-8: the undecodable bytes of a file name (which Python keeps as lone
    surrogates) become U+FFFD, so a path can go into an HDF5 attribute, a figure title or a report."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a lone surrogate that is not an escaped byte (e.g. from JSON)
        return text.encode("utf-8", "replace").decode("utf-8")


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside `path`; on success it is renamed onto `path`, on any error removed.

    The temporary name carries this process's id (`.NAME.PID.tmp.SUFFIX`), so one left by a process killed
    with SIGKILL is recognised and removed by the next write of the same file."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    check_writable_folder(folder, path)
    remove_stale_temporaries(path)
    tmp = folder / f".{path.name}.{os.getpid()}.tmp{path.suffix}"
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full(path, exc) from None
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc` (an OSError, or a library's error carrying its text) says the disk or quota is full."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return True
    text = str(exc)
    return "No space left on device" in text or "Disk quota exceeded" in text or "os error 28" in text


def disk_full(path: Path, exc: BaseException) -> OutputError:
    """The one error every writer gives for a full disk: where, and that earlier results are intact."""
    return OutputError(f"no space left on {Path(path).absolute().parent} (writing {path}): "
                       f"{getattr(exc, 'strerror', None) or 'No space left on device'}; nothing there was replaced "
                       "or left half-written (earlier results are intact): free some space and run again")


def remove_stale_temporaries(path: Path) -> None:
    """Delete temporary files of `path` whose writing process no longer exists."""
    folder = path.parent if str(path.parent) else Path(".")
    for leftover in folder.glob(f".{glob_escape(path.name)}.*.tmp*"):
        pid = leftover.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                leftover.unlink()


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def atomic_write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(utf8_text(text), encoding="utf-8")
    return Path(path)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def check_writable_folder(folder: Path, target: Path | None = None) -> None:
    """Create `folder` if needed; refuse clearly when it cannot hold the output."""
    what = f"output {target}" if target is not None else f"output folder {folder}"
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{what}: {folder} exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{what}: cannot create the folder {folder} ({exc.strerror})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{what}: the folder {folder} is not writable")


def file_kind(path: Path) -> str | None:
    """The gaincell kind of an existing HDF5 file (its `file_kind` attribute), '' for a foreign HDF5 file,
    None when the file is not HDF5 at all."""
    import h5py

    try:
        with open(path, "rb") as handle:
            if handle.read(8) != b"\x89HDF\r\n\x1a\n":
                return None
        with signals_deferred(), h5py.File(path, "r") as f:
            kind = f.attrs.get("file_kind", "")
    except OSError:
        return ""
    return kind.decode() if isinstance(kind, bytes) else str(kind)


def same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def guard_output(out: str | Path, kind: str, inputs=(), force: bool = False, option: str = "--out") -> Path:
    """Refuse an output that is one of the inputs, a folder, or an existing file of another kind.

    kind: SWEEP_FILE or SURROGATE (an existing file must be HDF5 carrying that `file_kind`), or REPORT (an
    existing file is replaced only when it looks like what gaincell writes under that suffix).
    `force` allows replacing a file of another kind, never an input.
    """
    path = Path(out)
    for source in inputs:
        if source is not None and same_file(path, Path(source)):
            raise OutputError(f"{option} {out}: is also an input of this command ({source}); choose another "
                              "output file so that the input is not overwritten")
    if path.is_dir():
        raise OutputError(f"{option} {out}: is a folder; give a file name")
    for ancestor in path.absolute().parents:  # the nearest existing folder must be a writable folder
        if ancestor.exists():
            if not ancestor.is_dir():
                raise OutputError(f"{option} {out}: {ancestor} is not a folder")
            if not os.access(ancestor, os.W_OK | os.X_OK):
                raise OutputError(f"{option} {out}: the folder {ancestor} is not writable")
            break
    if path.exists() and not path.is_file():
        raise OutputError(f"{option} {out}: exists and is not a regular file")
    if path.is_file() and not force:
        if kind == REPORT:
            if not _report_signature_ok(path):
                raise OutputError(f"{option} {out}: exists and was not written by gaincell as a {path.suffix or 'plain'} "
                                  "report; pass --force to replace it, or choose another name")
        else:
            found = file_kind(path)
            if found != kind:
                what = "not an HDF5 file" if found is None else (f"a {found} file" if found else
                                                                  "an HDF5 file of another program")
                raise OutputError(f"{option} {out}: exists and is {what}, not a {kind} file; pass --force to "
                                  "replace it, or choose another name")
    return path


def discard_other_kind(out: str | Path, kind: str) -> None:
    """With --force: remove an existing output of another kind, so that the command writes a fresh file."""
    path = Path(out)
    if path.is_file() and file_kind(path) != kind:
        path.unlink()


_HELD_LOCKS: set[Path] = set()


@contextlib.contextmanager
def output_lock(path: str | Path, wait: bool = False):
    """Hold an exclusive lock on `path` (a `.PATH.lock` file beside it) while writing it.

    A second process asking for the same lock is refused with a clear message (or waits, `wait=True`). The lock
    file is removed on release (a process killed with SIGKILL leaves it behind; the next writer reuses it)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    check_writable_folder(folder, path)
    lock = (folder / f".{path.name}.lock").resolve()
    if lock in _HELD_LOCKS:  # already held by this process (a verb and the sweep runner inside it)
        yield path
        return
    while True:
        handle = open(lock, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.close()
            raise OutputError(f"{path}: another gaincell process is writing this file right now; wait for it "
                              "to finish (or stop it) and run again") from None
        try:
            if os.fstat(handle.fileno()).st_ino == os.stat(lock).st_ino:
                break
        except FileNotFoundError:
            pass
        handle.close()  # its holder removed that lock file after we opened it: take the current one
    _HELD_LOCKS.add(lock)
    try:
        yield path
    finally:
        _HELD_LOCKS.discard(lock)
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()  # while still held, so no other process holds a lock on a removed file
        handle.close()
