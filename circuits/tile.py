"""Attention tile testbench: Q pulses x K array -> one C2P per token -> the V array -> signed readout.

One decode step of one head over a tile of `tokens` stored tokens (the query at the newest position sees
every key of the tile). Stage 1 (`TileScores`, sweep `tile_scores`): the query drives the K array's rows
(head dimension) as pulse widths q_d x T_max; each token's column (its D cells) is integrated by its own
C2P (netlists/c2p.sub), which emits a pulse phi_j x T_max. Stage 2 (`TileReadout`, sweep `tile_readout`):
those pulses drive the V array's rows (one per token) through row drivers (ideal pulse sources of the
measured widths: the driver regenerates the C2P's pulse); each output dimension's column is read out by a
signed C2P and a 5-bit counter. Columns of both stages are independent (each integrator holds its own bit
line), so each stage is a sweep with one column per point, spread over the worker processes.

    result = run_tile(design, query_frac, keys_v, values_v, "tile.h5")
    result.phi(t_sat), result.outputs(t_sat)        # (tokens,), (dim,) in C2P / readout units
    result.compare(reference, t_sat)                 # against values the caller computed (e.g. the torch layer)
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from gaincell.design import CellDesign
from gaincell.errors import ConfigError, SimulationError
from gaincell.sweep_data import OK

from .arrays import READ_DELAY_S
from .c2p import (C2P_FILE, FIRED_MIN_FRACTION, C2PDesign, converter_lines, never_fired, pulse_readout,
                  window_lines)
from .cells import CellTestbench, cell_instance, drawn_energy, read_drive_lines, shipped_subcircuits
from .spice.analysis import Transient
from .spice.elements import GROUND, initial_condition, param, voltage
from .sweep import Sweep, SweepReport, run_sweep

MAX_TILE = 64


@dataclass(frozen=True)
class TileColumn(CellTestbench):
    """A column of cells whose bit line is a converter's input; its rows are driven by `pulse_s`."""

    stored_v: tuple[tuple[float, ...], ...] = ()  # (rows, cols)
    pulse_s: tuple[float, ...] = ()  # (rows,)
    c2p: C2PDesign = C2PDesign()

    signed = False
    subckt_name = "tilecol"
    max_pack = 1  # a netlist per column: BSIM4 evaluation gets slower per device in bigger netlists

    @property
    def rows(self) -> int:
        return len(self.pulse_s)

    @property
    def ports(self) -> tuple[str, ...]:
        return tuple(f"rwl{r}" for r in range(self.rows)) + tuple(f"rwlb{r}" for r in range(self.rows)) + ("win", "trk", "rst")

    @property
    def probes(self) -> tuple[str, ...]:
        outs = ("v(outp)", "v(outn)") if self.signed else ("v(out)",)
        return outs + ("i(v.vdd)", "v(xc.vo)")

    @property
    def window_opens_s(self) -> float:
        return READ_DELAY_S + self.design.t_max_s + self.c2p.gap_s

    def describe(self) -> dict:
        return {"design": self.design.to_dict(), "stored_v": self.stored_v, "pulse_s": self.pulse_s,
                "c2p": self.c2p.__dict__, "signed": self.signed}

    def preamble(self) -> str:
        return super().preamble() + "\n" + shipped_subcircuits(self.design, C2P_FILE)

    def subcircuit(self) -> str:
        d = self.design
        lines = [voltage("dd", "vdd", GROUND, d.vdd_v), voltage("wbl", "wbl", GROUND, d.zero_v),
                 voltage("wwl", "wwl", GROUND, 0)]
        for r in range(self.rows):
            lines += [cell_instance(d, str(r), wwl="wwl", wbl="wbl", rwl=f"rwl{r}", rwlb=f"rwlb{r}", rbl="col",
                                    vdd="vdd"), initial_condition(f"x{r}.sn", param(f"s{r}"))]
        lines += converter_lines("c", "col", "out", self.c2p, self.signed)
        return self.point_subcircuit({f"s{r}": d.zero_v for r in range(self.rows)}, lines)

    def instance_params(self, point):
        c = int(point["column"])
        return {f"s{r}": self.stored_v[r][c] for r in range(self.rows)}

    def shared_lines(self, points) -> str:
        d = self.design
        lines = []
        for r, width in enumerate(self.pulse_s):
            lines += read_drive_lines(d, width, d.v_in_v, READ_DELAY_S, str(r))
        return "\n".join(lines + window_lines(d, self.window_opens_s, READ_DELAY_S))

    def analysis(self, points) -> Transient:
        return Transient(step_s=100e-12, stop_s=self.window_opens_s + self.design.t_max_s + 1e-9, max_step_s=1e-9)

    def options(self) -> dict:
        return {"method": "gear", "bypass": 1}

    def extract(self, vectors, point):
        d, t = self.design, vectors["time"]
        held = np.interp(self.window_opens_s - 0.1e-9, t, vectors["v(xc.vo)"])  # integrator before conversion
        out = {"time": t, "e_j": np.asarray(drawn_energy(t, d.vdd_v, vectors["i(v.vdd)"])),
               "v(vo)": vectors["v(xc.vo)"], "charge_c": np.asarray(self.c2p.cint_f * (held - d.zero_v))}
        return out | pulse_readout(vectors, d, self.c2p.counter_levels, self.signed)


@dataclass(frozen=True)
class TileScores(TileColumn):
    """Stage 1: K array (rows = head dimension, one column per token) -> one C2P per token."""

    name = "tile-scores"


@dataclass(frozen=True)
class TileReadout(TileColumn):
    """Stage 2: V array (rows = tokens, one column per output dimension) -> signed C2P + counter."""

    name = "tile-readout"
    signed = True


@dataclass
class TileResult:
    """What the SPICE tile computed, in the units of the torch layer: C2P pulses as fractions of the converter's
    saturated width, the readout signed in [-1, 1]; plus the counter values and the two sweeps."""

    widths_s: np.ndarray  # (tokens,) stage-1 pulse widths
    readout_widths_s: np.ndarray  # (dim,)
    signs: np.ndarray  # (dim,)
    counts: np.ndarray  # (dim,)
    counter_levels: int
    scores: SweepReport
    readout: SweepReport
    message: str = ""  # converters that never fired

    def phi(self, saturated_width_s: float) -> np.ndarray:
        return self.widths_s / saturated_width_s

    def outputs(self, saturated_width_s: float) -> np.ndarray:
        return self.signs * self.readout_widths_s / saturated_width_s

    @property
    def counter_outputs(self) -> np.ndarray:
        """The 5-bit readout: sign x count / (levels - 1)."""
        return self.signs * self.counts / (self.counter_levels - 1)

    def compare(self, reference: Mapping[str, np.ndarray], saturated_width_s: float) -> dict[str, float]:
        """This tile against `reference`, the C2P outputs `phi` (tokens,) and the readout `output` (dim,) that the
        caller computed on the same inputs (e.g. the torch layer's, `gaincell.surrogate.tile_reference`): the RMS
        error of phi, and of the readout (`output_rms`, worst `output_max`, the counter's `counter_rms`) as
        fractions of the readout's range [-1, 1]."""
        phi, outputs = self.phi(saturated_width_s), self.outputs(saturated_width_s)
        span = 2.0
        return {"phi_rms": float(np.sqrt(np.mean((phi - reference["phi"]) ** 2))),
                "output_rms": float(np.sqrt(np.mean((outputs - reference["output"]) ** 2)) / span),
                "output_max": float(np.abs(outputs - reference["output"]).max() / span),
                "counter_rms": float(np.sqrt(np.mean((self.counter_outputs - reference["output"]) ** 2)) / span)}


def _check_tile(design: CellDesign, query_frac, keys_v, values_v):
    q = np.asarray(query_frac, dtype=float)
    k = np.asarray(keys_v, dtype=float)
    v = np.asarray(values_v, dtype=float)
    if q.ndim != 1 or k.ndim != 2 or k.shape != v.shape or k.shape[1] != q.size:
        raise ConfigError("keys_v", f"query (dim,), keys and values (tokens, dim) must agree; got {q.shape}, "
                                    f"{k.shape}, {v.shape}")
    if not 1 <= k.shape[0] <= MAX_TILE or not 1 <= q.size <= MAX_TILE:
        raise ConfigError("tokens", f"a tile holds 1..{MAX_TILE} tokens of 1..{MAX_TILE} dimensions, got {k.shape}")
    if not (np.all(np.isfinite(q)) and q.min() >= 0 and q.max() <= 1):
        raise ConfigError("query_frac", "pulse widths must be fractions of T_max in [0, 1]")
    for name, x in (("keys_v", k), ("values_v", v)):
        if not (np.all(np.isfinite(x)) and x.min() >= 0 and x.max() <= design.vdd_v):
            raise ConfigError(name, f"stored values must be within 0..VDD = {design.vdd_v} V")
    return q, k, v


def refuse_failed_columns(report: SweepReport, stage: str) -> None:
    """A tile result needs every column of a stage: name the ones whose simulation failed, with ngspice's
    message."""
    failed = [int(i) for i in np.nonzero(report.data.status != OK)[0]]
    if failed:
        messages = "; ".join(report.messages[:2]) or "; ".join(str(e) for e in report.data.error.flat if e)[:500]
        raise SimulationError(f"tile {stage} failed for column(s) {failed}: {messages}")


def run_tile(design: CellDesign, query_frac, keys_v, values_v, out, c2p: C2PDesign = C2PDesign(),
             workers: int | None = None, progress: bool = True, restart: bool = False, prefix: str = "tile") -> TileResult:
    """Simulate one tile read (both stages) into `out` (groups `{prefix}_scores`, `{prefix}_readout`)."""
    q, k, v = _check_tile(design, query_frac, keys_v, values_v)
    tokens, dim = k.shape
    as_rows = lambda x: tuple(tuple(float(e) for e in row) for row in x)  # noqa: E731
    stage1 = TileScores(design, as_rows(k.T), tuple(float(x) * design.t_max_s for x in q), c2p)
    scores = run_sweep(Sweep(f"{prefix}_scores", stage1, {"column": list(range(tokens))}, timeout_s=600.0), out,
                       workers=workers, progress=progress, restart=restart)
    refuse_failed_columns(scores, "stage 1 (token converters)")
    widths = np.asarray(scores.data.scalars["width_s"], dtype=float)
    # the row drivers regenerate the pulses; one shorter than a converter that fired drives nothing (a
    # femtosecond pulse between 50 ps edges stops ngspice: "timestep too small")
    drive = tuple(float(min(w, design.t_max_s)) if w > FIRED_MIN_FRACTION * design.t_max_s else 0.0 for w in widths)
    stage2 = TileReadout(design, as_rows(v), drive, c2p)
    readout = run_sweep(Sweep(f"{prefix}_readout", stage2, {"column": list(range(dim))}, timeout_s=600.0), out,
                        workers=workers, progress=progress, restart=restart)
    refuse_failed_columns(readout, "stage 2 (readout counters)")
    s = readout.data.scalars
    fired = widths > FIRED_MIN_FRACTION * design.t_max_s
    charges = np.asarray(scores.data.scalars["charge_c"], dtype=float)
    return TileResult(widths, np.asarray(s["width_s"], dtype=float), np.asarray(s["sign"], dtype=float),
                      np.asarray(s["count"], dtype=float), c2p.counter_levels, scores, readout,
                      never_fired(charges, fired, "token converters (stage 1)"))


def aged_voltages(design: CellDesign, stored_v, ages_s, out, workers: int | None = None,
                  progress: bool = False) -> np.ndarray:
    """What the cells of a tile hold after `ages_s` of retention (one age per token, the rows of `stored_v`):
    each distinct stored level is held in SPICE (`CellRetention`, group `aged_retention` of `out`) for the
    longest age, and every cell's voltage is read off its level's waveform at its token's age."""
    from .cells import CellRetention

    stored, ages = np.asarray(stored_v, dtype=float), np.asarray(ages_s, dtype=float)
    if stored.ndim != 2 or ages.shape != stored.shape[:1] or not (np.isfinite(ages).all() and (ages >= 0).all()):
        raise ConfigError("ages_s", f"must be one finite age >= 0 per token ({stored.shape[:1]}); got {ages.shape}")
    levels = np.unique(stored)
    longest = max(float(ages.max()), 1e-9)
    sweep = Sweep("aged_retention", CellRetention(design, stop_s=1.02 * longest, max_step_s=longest / 400),
                  {"stored_v": levels})
    report = run_sweep(sweep, out, workers=workers, progress=progress, restart=True)
    refuse_failed_columns(report, "aged retention")
    data = report.data
    time_s, node, samples = data.waveforms["time"], data.waveforms["v(sn)"], data.n_samples
    held = np.empty_like(stored)
    for index, level in enumerate(levels):
        n = int(samples[index])
        rows, cols = np.nonzero(stored == level)
        held[rows, cols] = np.interp(ages[rows], time_s[index, :n], node[index, :n])
    # a node held at 0 V reads -1e-17 V or so (the solver's round-off); 1 uV steps keep the read netlists tame
    return np.round(np.clip(held, 0.0, design.vdd_v), 6)
