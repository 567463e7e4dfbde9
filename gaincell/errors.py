"""One exception hierarchy for the whole package.

Every error names what went wrong in words a user can act on: configuration errors name the parameter
and what is allowed, simulation errors carry the netlist hash and ngspice's own message.
"""
from __future__ import annotations


class GaincellError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(GaincellError, ValueError):
    """A parameter is invalid: the message names it and says what is allowed."""

    def __init__(self, parameter: str, problem: str):
        self.parameter = parameter
        self.problem = problem
        super().__init__(f"{parameter}: {problem}")


class NetlistError(GaincellError, ValueError):
    """A netlist was refused before any simulator ran (e.g. a negative capacitance)."""


class SimulatorNotFoundError(GaincellError):
    """ngspice (the program or the shared library) is not installed."""


class SimulationError(GaincellError):
    """ngspice ran but the simulation failed; carries ngspice's own message and the netlist hash."""

    kind = "error"

    def __init__(self, message: str, netlist_hash: str = "", log: str = ""):
        self.message = message.strip()
        self.netlist_hash = netlist_hash
        self.log = log
        where = f" [netlist {netlist_hash[:12]}]" if netlist_hash else ""
        super().__init__(f"simulation failed{where}: {self.message}")


class SimulationTimeout(SimulationError):
    """The simulation did not finish within its time limit and was stopped."""

    kind = "timeout"


class WorkerCrashed(SimulationError):
    """The process running ngspice died (crash, out of memory, killed)."""

    kind = "crash"


class OutputError(GaincellError):
    """An output cannot be written where asked (it is an input, a file of another kind, not writable)."""


class InputFileError(GaincellError):
    """An input file is not what the command reads (wrong kind, unreadable, malformed); the message names it."""


class WorkerStartError(GaincellError):
    """A simulator worker process could not start or could not take its task; the message is its own error
    (`details` holds its traceback when there is one)."""

    def __init__(self, message: str, details: str = ""):
        super().__init__(message)
        self.details = details


class SurrogateError(GaincellError):
    """A surrogate file is missing, unreadable, of another schema version, inconsistent or implausible."""


class FitError(GaincellError):
    """A fit could not be made: too few usable points, a sweep that does not resolve what is fitted, or a
    least-squares fit that did not converge."""


class ModelLoadError(GaincellError):
    """A model folder or packaged model is missing or cannot be read."""
