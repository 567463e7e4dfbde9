"""What the verbs share: SI quantities as option values, the --force flag, and the inputs and outputs
every verb checks before work starts."""
from __future__ import annotations

import functools
import math
import re
from pathlib import Path
from types import SimpleNamespace

import click

from ...errors import ConfigError
from ...outputs import REPORT, guard_output

_SI_PREFIX = {"f": 1e-15, "p": 1e-12, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "meg": 1e6, "g": 1e9, "t": 1e12}
_QUANTITY = re.compile(r"([-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)\s*(meg|[fpnumkgt])?\s*([a-z]*)")


def parse_si(text: str, parameter: str, unit: str = "") -> float:
    """A number with an optional SPICE prefix and, at most, the expected unit: '10n', '10ns', '1.5e-9 s',
    '2.5meg', '4kohm'. Anything else ('10x', 'nan', '1 V' for seconds) is refused naming the parameter."""
    match = _QUANTITY.fullmatch(text.strip().lower())
    allowed_units = {"", unit.lower()} | ({"ohms"} if unit.lower() == "ohm" else set())
    if not match or match.group(3) not in allowed_units:
        example = f"0.7, 10n{unit} or 1.5e-9" if unit else "0.7, 10n or 1.5e-9"
        raise ConfigError(parameter, f"{text!r} is not a number like {example} (an SI prefix f p n u m k meg g t "
                                     f"and {'the unit ' + repr(unit) if unit else 'no unit'} at most)")
    value = float(match.group(1)) * _SI_PREFIX.get(match.group(2) or "", 1.0)
    if not math.isfinite(value):
        raise ConfigError(parameter, f"{text!r} is not a finite number")
    return value


class Quantity(click.ParamType):
    """A click option value parsed by `parse_si` and kept within [low, high]."""

    name = "quantity"

    def __init__(self, unit: str = "", low: float = -math.inf, high: float = math.inf):
        self.unit, self.low, self.high = unit, low, high

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        else:
            try:
                number = parse_si(str(value), param.opts[0] if param else "value", self.unit)
            except ConfigError as exc:
                self.fail(exc.problem, param, ctx)
        if not (math.isfinite(number) and self.low <= number <= self.high):
            self.fail(f"{value!r} is outside [{self.low:g}, {self.high:g}] {self.unit}".rstrip(), param, ctx)
        return number


SECONDS = Quantity("s", 1e-12, 1e6)


def option_group(name: str, *options):
    """Click options handed to the verb as one parameter `name` (a namespace of their values, by option name):
    a verb takes the groups its pipeline feeds (the training loop, the array, the wires) instead of each option.
    The options keep their names, help and checks."""
    def decorate(function):
        @functools.wraps(function)
        def verb(*args, **kwargs):
            kwargs[name] = SimpleNamespace(**{key: kwargs.pop(key) for key in keys})
            return function(*args, **kwargs)

        verb.__dict__.pop("__click_params__", None)  # functools.wraps shares the function's list: start a new one
        for option in reversed(options):
            verb = option(verb)
        keys = [parameter.name for parameter in verb.__click_params__]
        verb.__click_params__ = [*getattr(function, "__click_params__", []), *verb.__click_params__]
        return verb
    return decorate


def force_option(function):
    """The --force flag of the verbs that write a file."""
    return click.option("--force", is_flag=True,
                        help="Replace an existing output file of another kind (never an input).")(function)


def design_inputs(design: str) -> list[Path]:
    """The design file and its model libraries among a command's inputs (a preset's files are shipped ones)."""
    path = Path(design)
    if not path.is_file():
        return []
    from ...design import CellDesign, load_design

    chosen = load_design(design)
    return [path] + [CellDesign.library_path(library) for library in chosen.model_libraries]


def report_folder(out_dir: str, names: list[str], inputs=(), force: bool = False) -> Path:
    """An output folder and the fixed-name report files a verb writes into it, checked before any work."""
    folder = Path(out_dir)
    if folder.exists() and not folder.is_dir():
        raise ConfigError("--out", f"{out_dir} exists and is not a folder")
    for name in names:
        guard_output(folder / name, REPORT, inputs, force)
    return folder


def hardware_option(command):
    """--hardware FIELD=VALUE (repeatable): a field of the surrogate's hardware configuration set for a study,
    recorded in what the verb writes."""
    def parse(ctx, param, values):
        from ...hardware import parse_overrides

        return parse_overrides(values)

    from ...hardware import FIELDS

    return click.option("--hardware", "hardware", multiple=True, metavar="FIELD=VALUE", callback=parse,
                        help="Set a field of the surrogate's hardware configuration for a study (repeatable; "
                             f"{', '.join(FIELDS)}), e.g. --hardware readout_levels=64; recorded in the "
                             "outputs.")(command)


def surrogate_file(value: str) -> Path:
    """--surrogate: 'paper' (the shipped fit of the paper's cell) or a surrogate file."""
    from ...resources import data_path

    if value == "paper":
        return data_path("paper_reference.h5")
    if not Path(value).is_file():
        raise ConfigError("--surrogate", f"must be 'paper' or a surrogate file (gaincell fit); {value!r} is neither")
    return Path(value)


DASK_ADDRESS = re.compile(r"(tcp|tls|ucx)://[A-Za-z0-9._\-\[\]:]+:[0-9]{1,5}")


def dask_scheduler(ctx, param, value: str | None) -> str | None:
    """Click callback of --scheduler: none, 'local-dask', or a Dask scheduler's address (tcp://host:port)."""
    if value is None or value == "local-dask" or DASK_ADDRESS.fullmatch(value):
        return value
    raise click.BadParameter(f"{value!r} is neither 'local-dask' nor a Dask scheduler's address such as "
                             "tcp://host:8786")


def point_list(text: str | None) -> list[int] | None:
    """--points: comma-separated flat point numbers (None: the verb's default points)."""
    if not text:
        return None
    if not re.fullmatch(r"\s*\d{1,9}\s*(,\s*\d{1,9}\s*)*,?\s*", text):
        raise ConfigError("--points", f"must be comma-separated point numbers like 0,5,12; got {text!r}")
    return [int(p) for p in text.replace(" ", "").split(",") if p]


_CELSIUS = re.compile(r"([-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)\s*(?:°?c|degc)?", re.IGNORECASE)
TEMPERATURES = "temperatures in degrees C, e.g. --temp -40,27,85"


def option_items(text: str | None, option: str, allowed: str) -> list[str]:
    """The comma-separated items of a list option (None: not given); an empty list or item is refused."""
    if text is None:
        return []
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        problem = "has an empty item" if text.strip() else "is empty"
        raise ConfigError(option, f"{text!r} {problem}; give {allowed}")
    return items


def corner_list(text: str | None) -> tuple[str, ...]:
    """--corner: comma-separated process corners (.lib sections), e.g. tt,ss,ff (checked against the design
    by `gaincell.conditions.Conditions.checked`)."""
    return tuple(option_items(text, "--corner", "comma-separated .lib sections, e.g. --corner tt,ss,ff"))


def temperature_list(text: str | None) -> tuple[float, ...]:
    """--temp: comma-separated temperatures in degrees Celsius, e.g. -40,27,85 (a trailing C is allowed; no SI
    prefix or other unit: 300K is refused, not read as 300 kilo-degrees)."""
    temperatures = []
    for item in option_items(text, "--temp", TEMPERATURES):
        match = _CELSIUS.fullmatch(item)
        if not (match and math.isfinite(float(match.group(1)))):
            raise ConfigError("--temp", f"{item!r} is not a number of degrees C; give {TEMPERATURES} (no other "
                                        "unit or SI prefix)")
        temperatures.append(float(match.group(1)))
    return tuple(temperatures)


def condition_options(several: bool):
    """--corner and --temp: the conditions a verb characterizes (`several`), or the one it reads."""
    def add(function):
        if several:
            temp_help = "Temperatures in degrees Celsius (-60..200), comma-separated; a coordinate of every sweep."
            corner_help = ("Process corners, comma-separated .lib sections of the design's model libraries (e.g. "
                           "tt,ss,ff); a coordinate of every sweep; only for designs whose libraries have sections.")
        else:
            temp_help = "The temperature (C) to read from a file characterized at several (default: its only one)."
            corner_help = "The process corner to read from a file characterized at several (default: its only one)."
        function = click.option("--temp", "temps", default=None, metavar="C[,C...]" if several else "C",
                                help=temp_help)(function)
        return click.option("--corner", "corners", default=None, metavar="NAME[,NAME...]" if several else "NAME",
                            help=corner_help)(function)
    return add


def one_condition(corners: str | None, temps: str | None) -> tuple[str | None, float | None]:
    """--corner and --temp of a verb that reads one condition (None: not given)."""
    corner, temp = corner_list(corners), temperature_list(temps)
    for option, values in (("--corner", corner), ("--temp", temp)):
        if len(values) > 1:
            raise ConfigError(option, f"give one value (this verb reads one condition), got {len(values)}")
    return (corner[0] if corner else None), (temp[0] if temp else None)
