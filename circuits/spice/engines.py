"""The two ngspice engines, run in the calling process: PySpice shared mode and `ngspice -b` batch mode.

Both take a prepared `Netlist` and return `EngineOutput`: every plot under one name per analysis (`tran`,
`op`, `dc`, `ac`, `noise`, `pz`, `sens`, `tf`, `disto`: ngspice's own plot type names) with its vectors under
the names `ngspice -b -r` writes into a raw file (see `vector_name`), values exactly as ngspice computed them
(complex for `.ac`, AC `.sens`, `.pz`; a plot without points has no vectors, as in ngspice's raw file), plus
the simulator's text output and version. Failure is detected from ngspice's text (shared mode returns 0
even for parse errors) and raised as `SimulationError` carrying ngspice's own lines. The shared engine is
one per process (libngspice keeps global state); run it in a worker process (see `workers.py`), never in
threads.

ngspice reads more than the deck. At start it runs a user `.spiceinit` (measured with ngspice 39 here):
`ngspice -b` takes the first of $SPICE_USERINIT_DIR, the working folder and $HOME (`.spiceinit` or
`spice.rc`); libngspice takes the working folder's, else the one in the account's home folder from the
password database (not $HOME). And it looks for a relative `.include`/`.lib` path in its working folder
before the including file's folder. So the shared engine works in a private folder that holds nothing but
gaincell's own `.spiceinit` (`set num_threads=1`), and the batch engine works in an empty folder and gets
that file (plus `set keep#branch`, which only changes names in the raw file) through $SPICE_USERINIT_DIR:
no user or project `.spiceinit` runs, and relative paths resolve to the files the trust policy (`trust.py`)
checked.
"""
from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gaincell.errors import SimulationError, SimulationTimeout, SimulatorNotFoundError

from .netlist import Netlist
from .rawfile import read_raw

LIBNGSPICE_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libngspice.so.0",
    "/usr/lib/aarch64-linux-gnu/libngspice.so.0",
    "/usr/lib/libngspice.so.0",
    "/usr/local/lib/libngspice.so.0",
    "/usr/local/lib/libngspice.so",
)
_ERROR_LINE = re.compile(
    r"error|aborted|fatal|timestep too small|simulation interrupted|can't find model|unknown subckt|"
    r"circuit not parsed|there aren't any circuits",
    re.IGNORECASE,
)
_REPORTED_WARNING = re.compile(r"error|can't find model", re.IGNORECASE)
# printed after a successful run of a circuit without nodes (its empty initial transient solution)
_HARMLESS_ERROR = re.compile(r"^error: there are no vectors currently active\.?$", re.IGNORECASE)
SPICEINIT = "* gaincell's own ngspice start-up file: one thread (processes run in parallel instead)\nset num_threads=1\n"
# batch raw files then name every current as ngspice does inside (`p1#branch1_0`, not eight `i(p1)`)
BATCH_SPICEINIT = SPICEINIT + "set keep#branch\n"
# ngspice's vector types (enum simvar_types, stable since ngspice 27) that decide a vector's name
_VECTOR_KINDS = {1: "time", 2: "frequency", 3: "voltage", 4: "current"}
FOLDER_VARIABLE = "GAINCELL_NGSPICE_FOLDER"  # a private folder made by the worker pool for its workers
_folder: Path | None = None


@dataclass
class EngineOutput:
    """What one simulator run produced: plots in run order, each (kind, {vector name: values})."""

    plots: list[tuple[str, dict[str, np.ndarray]]] = field(default_factory=list)
    log: str = ""
    simulator: str = ""
    elapsed_s: float = 0.0


def vector_name(name: str, kind: str) -> str:
    """gaincell's name for an ngspice vector of type `kind` (`voltage`, `current`, `time`, ...): the name
    `ngspice -b -r` writes into its raw file, in lower case. A voltage is `v(name)` (`v(out)`, `v(v-sweep)`,
    `v(@m1[vbs])`, `v(pole(1))`), a current `i(name)` without `#branch` (`i(vdd)`, `i(@m1[id])`,
    `i(i-sweep)`), anything else its bare name (`time`, `frequency`, `inoise_spectrum`, `@c1[capacitance]`).
    One difference: a current named `X#branchSUFFIX` (CPL/TXL lines have several per element) keeps the
    suffix, `i(p1#branch1_0)`, where the raw file writes every one of them as `i(p1)`."""
    low = name.strip().lower()
    if low.startswith(("v(", "i(")) and low.endswith(")"):
        return low
    if kind == "voltage":
        return f"v({low})"
    if kind == "current":
        stem, _, suffix = low.partition("#branch")
        return f"i({stem}#branch{suffix})" if suffix else f"i({stem})"
    return low


# ngspice's plot type names (shared mode: `tran1`, `noise2`) for the plot names of its raw files
_PLOT_KINDS = {"transient analysis": "tran", "operating point": "op", "dc transfer characteristic": "dc",
               "ac analysis": "ac", "noise spectral density curves": "noise", "integrated noise": "noise",
               "pole-zero analysis": "pz", "sensitivity analysis": "sens", "transfer function": "tf"}


def plot_kind(name: str) -> str:
    """Backend-independent plot name: shared `tran1` and batch `Transient Analysis` both give `tran`;
    `noise` for both noise plots (spectra, integrated), `disto` for every distortion plot."""
    low = name.strip().lower()
    if low.startswith("distortion"):
        return "disto"
    return _PLOT_KINDS.get(low, low.rstrip("0123456789") or low)


def find_errors(log: str) -> list[str]:
    """The lines of ngspice output that report a failure (warnings and notes excluded)."""
    found = []
    for line in log.splitlines():
        text = line.strip()
        if text.lower().startswith(("warning", "note:")) and not _REPORTED_WARNING.search(text):
            continue
        if _HARMLESS_ERROR.match(text):
            continue
        if _ERROR_LINE.search(text):
            found.append(text)
    return found


def _check(log: str, netlist: Netlist, extra_failure: str | None = None) -> None:
    errors = find_errors(log)
    if errors or extra_failure:
        message = "; ".join(dict.fromkeys(errors)) or extra_failure
        raise SimulationError(message, netlist.hash, log)


_CPL_ELEMENT = re.compile(r"^\s*p\S*\s", re.IGNORECASE | re.MULTILINE)  # a CPL instance line
_CPL_CURRENT = re.compile(r"#branch\d+_\d+\)$")  # its branch currents, i(p1#branch1_0), e.g. from an .include
_AFTER_CPL = "gaincell: run by ngspice -b: libngspice cannot run a circuit after one with a CPL line in this process"
_SCALE_KINDS = ("time", "frequency")  # real axes (ngspice keeps a complex plot's frequency as complex)


def _named(vectors: list[tuple[str, str, np.ndarray]]) -> dict[str, np.ndarray]:
    """A plot's (name, kind, values) under gaincell's names (`vector_name`), values untouched (complex stays
    complex) but for the time or frequency axis, which is real. A plot without points gives no vectors, as in
    ngspice's raw file (which then names none)."""
    if all(np.size(values) == 0 for _, _, values in vectors):
        return {}
    return {vector_name(name, kind): np.asarray(values).real if kind in _SCALE_KINDS else np.asarray(values)
            for name, kind, values in vectors}


def libngspice_path() -> str:
    """Where libngspice lives: $NGSPICE_LIBRARY_PATH, else the Debian/usual locations."""
    configured = os.environ.get("NGSPICE_LIBRARY_PATH")
    if configured:
        if not Path(configured).exists():
            raise SimulatorNotFoundError(
                f"NGSPICE_LIBRARY_PATH={configured} does not exist: install the Debian package libngspice0 "
                "(apt-get install libngspice0) or point the variable at libngspice.so.0")
        return configured
    for candidate in LIBNGSPICE_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    raise SimulatorNotFoundError(
        "libngspice (ngspice's shared library) not found: install the Debian package libngspice0 "
        "(apt-get install libngspice0) or set NGSPICE_LIBRARY_PATH to the library file")


def private_folder() -> Path:
    """This process's working folder for libngspice: empty but for gaincell's `.spiceinit`. A worker uses
    the one its pool made (`$GAINCELL_NGSPICE_FOLDER`); any other process makes its own, removed at exit."""
    global _folder
    if _folder is None:
        given = os.environ.get(FOLDER_VARIABLE)
        if given and Path(given, ".spiceinit").is_file():
            _folder = Path(given)
        else:
            _folder = make_private_folder()
            atexit.register(shutil.rmtree, _folder, True)
    return _folder


def make_private_folder() -> Path:
    """A new private folder holding only gaincell's `.spiceinit` (the caller removes it)."""
    folder = Path(tempfile.mkdtemp(prefix="gaincell-ngspice-"))
    (folder / ".spiceinit").write_text(SPICEINIT)
    return folder


@contextlib.contextmanager
def _inside(folder: Path):
    """Work in `folder` for the duration (the process's single thread of ngspice work), then go back."""
    try:
        previous = os.getcwd()
    except OSError:  # the working folder was removed: nothing to go back to
        previous = None
    os.chdir(folder)
    try:
        yield
    finally:
        if previous is not None:
            with contextlib.suppress(OSError):
                os.chdir(previous)


class SharedEngine:
    """ngspice as a shared library through PySpice, with the workarounds this stack needs. libngspice
    starts and runs inside `private_folder()` (see the module docstring).

    libngspice 39 crashes or hangs in the next circuit with a CPL line (coupled lossy lines, `P` elements)
    once one has run in the process, `destroy` and `remcirc` notwithstanding. So after a CPL run this engine
    hands every further deck to `ngspice -b` (`BatchEngine`, same ngspice, same numbers) and says so in the
    log and in `simulator`."""

    _instance: "SharedEngine | None" = None

    @classmethod
    def get(cls) -> "SharedEngine":
        """The process's single engine (libngspice state is global: one per process)."""
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def __init__(self):
        os.environ["NGSPICE_LIBRARY_PATH"] = libngspice_path()
        logging.getLogger("PySpice").setLevel(logging.CRITICAL)
        from PySpice.Spice.NgSpice.Shared import NgSpiceShared

        NgSpiceShared.LIBRARY_PATH = os.environ["NGSPICE_LIBRARY_PATH"]
        self.folder = private_folder()
        with _inside(self.folder):  # ngSpice_Init reads .spiceinit from the working folder, else from home
            self._ng = NgSpiceShared.new_instance()
        self.simulator = f"ngspice-{self._ng.ngspice_version} (shared, PySpice)"
        self._quiet("set num_threads=1")
        self._quiet("set nomoremode")
        self.runs = 0
        self.after_cpl = False  # a CPL circuit ran: libngspice cannot run another one (see the class docstring)

    def _quiet(self, command: str) -> str:
        """Run an ngspice command and return its text; PySpice's exception on stderr lines is ignored
        here because success and failure are judged from the text (see `find_errors`)."""
        try:
            self._ng.exec_command(command)
        except NameError:  # PySpice's NgSpiceCommandError (a NameError) for any stderr line, e.g. a gmin note
            pass
        return self._output()

    def _output(self) -> str:
        return "\n".join(self._ng._stdout + self._ng._stderr)

    def _vectors(self, plot_name: str) -> list[tuple[str, str, np.ndarray]]:
        """(name, kind, values) of every vector of a plot, read through libngspice's API with each vector's
        type (PySpice's own `plot()` fails on a plot without vectors, e.g. the `.op` of an empty circuit)."""
        from PySpice.Spice.NgSpice.Shared import ffi

        library = self._ng._ngspice_shared
        names = library.ngSpice_AllVecs(plot_name.encode())
        found = []
        index = 0
        while names != ffi.NULL and names[index] != ffi.NULL:
            name = ffi.string(names[index]).decode(errors="replace")
            index += 1
            info = library.ngGet_Vec_Info(f"{plot_name}.{name}".encode())
            if info == ffi.NULL:
                continue
            length = info.v_length
            if info.v_compdata != ffi.NULL:
                pairs = np.frombuffer(ffi.buffer(info.v_compdata, length * 16), dtype=np.float64)
                values = pairs[0::2] + 1j * pairs[1::2]
            elif info.v_realdata != ffi.NULL:
                values = np.frombuffer(ffi.buffer(info.v_realdata, length * 8), dtype=np.float64).copy()
            else:
                values = np.empty(0)
            found.append((name, _VECTOR_KINDS.get(info.v_type, "other"), values))
        return found

    def simulate(self, netlist: Netlist) -> EngineOutput:
        """Load and run one deck; raise `SimulationError` with ngspice's lines if it fails."""
        if self.after_cpl:
            output = BatchEngine().simulate(netlist)
            output.log = f"{_AFTER_CPL}\n{output.log}"
            output.simulator = f"{output.simulator} ({_AFTER_CPL})"
            return output
        self.after_cpl = _CPL_ELEMENT.search(netlist.text.partition("\n")[2]) is not None  # not the title
        with _inside(self.folder):
            output = self._simulate(netlist)
        self.after_cpl = self.after_cpl or any(_CPL_CURRENT.search(name) for _, vectors in output.plots
                                               for name in vectors)
        return output

    def _simulate(self, netlist: Netlist) -> EngineOutput:
        start = time.perf_counter()
        log_parts = []
        try:
            try:
                self._ng.load_circuit(netlist.text)
            except NameError:  # PySpice's NgSpiceCircuitError for any stderr line: ngspice's text is judged below
                pass
            log_parts.append(self._output())
            _check(log_parts[-1], netlist)
            log_parts.append(self._quiet("run"))
            _check("\n".join(log_parts), netlist)
            names = [p for p in self._ng.plot_names if p != "const"]
            if not names:
                _check("\n".join(log_parts), netlist, "ngspice produced no results")
            plots = [(plot_kind(name), _named(self._vectors(name))) for name in reversed(names)]
        finally:
            self._quiet("destroy all")
            self._quiet("remcirc")
            self.runs += 1
        return EngineOutput(plots, "\n".join(log_parts), self.simulator, time.perf_counter() - start)


class BatchEngine:
    """`ngspice -b -r` in a scratch folder, one process per run; the cross-check and fallback. ngspice works
    in an empty folder there and reads gaincell's `.spiceinit` through $SPICE_USERINIT_DIR, which it
    prefers to the working and home folders."""

    _version: str | None = None

    def __init__(self, executable: str = "ngspice"):
        found = shutil.which(executable)
        if found is None:
            raise SimulatorNotFoundError(
                f"the ngspice program ({executable!r}) is not on PATH: install the Debian package ngspice "
                "(apt-get install ngspice)")
        self.executable = found

    @property
    def simulator(self) -> str:
        if BatchEngine._version is None:
            out = subprocess.run([self.executable, "-n", "-v"], capture_output=True, text=True, timeout=30).stdout
            match = re.search(r"ngspice-(\S+)", out)
            BatchEngine._version = f"ngspice-{match.group(1) if match else 'unknown'} (batch)"
        return BatchEngine._version

    def simulate(self, netlist: Netlist, timeout: float | None = None) -> EngineOutput:
        """Run one deck as a separate ngspice process; raise `SimulationTimeout` past `timeout` seconds."""
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="gaincell-ngspice-") as scratch:
            work = Path(scratch)
            (work / "init").mkdir()
            (work / "init" / ".spiceinit").write_text(BATCH_SPICEINIT)
            (work / "cwd").mkdir()
            (work / "deck.cir").write_text(netlist.text)
            raw = work / "out.raw"
            env = dict(os.environ, SPICE_USERINIT_DIR=str(work / "init"))
            try:
                done = subprocess.run([self.executable, "-b", "-r", str(raw), str(work / "deck.cir")],
                                      cwd=work / "cwd", env=env, capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired as exc:
                log = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
                raise SimulationTimeout(f"ngspice did not finish within {timeout} s", netlist.hash, log) from None
            log = done.stdout + done.stderr
            failure = None if done.returncode == 0 else f"ngspice exited with code {done.returncode}"
            if failure is None and not raw.exists():
                failure = "ngspice wrote no results"
            _check(log, netlist, failure)
            plots = [(plot_kind(p.name), _named([(name, p.kinds[name], values) for name, values in p.vectors.items()]))
                     for p in read_raw(raw)]
        return EngineOutput(plots, log, self.simulator, time.perf_counter() - start)
