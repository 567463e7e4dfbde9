"""Latency, energy and area per token: per-action figures x the action counts of a real decode.

Two sets of figures, computed from the same counts and always shown side by side:
- "surrogate" (this project's): per-action energies and times the surrogate file holds from SPICE
  (`energy`: e_write_cell_j, e_read_cell_per_s_w, optionally e_c2p_conversion_j, e_c2p_signed_conversion_j
  and e_dac_write_j;
  `timing`: write_time_s, t_max_s, optionally t_c2p_conversion_s), cited figures for the digital periphery
  (gaincell.energy.figures), and, for what the surrogate does not characterize yet, the paper's figure
  labelled "not characterized (paper figure used)";
- "paper": the paper's per-head figures (65 ns; 1120 + 700 + 4000 + 330 pJ) turned into per-action
  figures by dividing by the paper design's own counts, so the paper's configuration gives back exactly the
  paper's numbers and other models scale with their counts.

Architecture assumed (the paper's): per layer, each KV head has its K and V arrays (window x head_dim cells
each, in tile x tile sub-arrays); the query heads sharing a KV head (grouped-query attention) read its arrays
one after another; layers run in sequence, so the model's latency per token is layers x the layer's. The
decode that counts the actions runs on that same clock (`gaincell.hardware.token_time_s`, which the layer and
the adaptation use too), so stored values decay as they would on this design. The window and the array's
rows default to the surrogate's hardware configuration.
Per layer and token: write the new K, V column; stage 1 (Q pulses, T_max, then a C2P per column); stage 2
(phi pulses, T_max, then a signed C2P + counter per output and sub-tile); sub-tile results are added
digitally (assumed pipelined with the next token's write).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gaincell.hardware import PAPER_C2P_CONVERSION_S, token_time_s
from gaincell.errors import ConfigError
from gaincell.layout import ArrayShape, head_area
from gaincell.model_shapes import ModelConfig, load_model_config
from gaincell import paper as P
from gaincell.periphery import C2PDesign, DacDesign

from . import figures as F
from .counting import ActionCounts, count_decode_actions
from .gpu import GpuBaseline, load_gpu_baseline, paper_gpu_baselines

FIGURE_SETS = ("surrogate", "paper")
GROUPS = ("QK stage", "AV stage", "digital", "DACs")  # the paper's breakdown
SPICE = "SPICE"
DESIGN = "surrogate (design value the SPICE runs used)"
CITED = "cited"
NOT_CHARACTERIZED = "not characterized (paper figure used)"
PAPER_INFERRED = "paper (per action, inferred)"


@dataclass(frozen=True)
class Part:
    """One energy component of a layer's token: count x energy per action."""

    key: str
    label: str
    group: str
    count: float  # actions per layer and token
    action: str  # what one action is
    per_action_j: float
    source: str
    status: str

    @property
    def energy_j(self) -> float:
        return self.count * self.per_action_j


@dataclass(frozen=True)
class Phase:
    """One step of a layer's token, done `repeats` times in sequence."""

    label: str
    seconds: float
    repeats: float
    source: str
    status: str

    @property
    def total_s(self) -> float:
        return self.seconds * self.repeats


@dataclass
class Estimate:
    """Latency, energy and area per token of one model with one set of figures."""

    figures: str
    model: ModelConfig
    counts: ActionCounts
    parts: list[Part]
    phases: list[Phase]
    area: list[tuple[str, float, str]]  # (what, mm^2 per query head, source)
    area_head_mm2: float  # the whole (the paper's parts overlap: its head area includes its KV arrays)

    @property
    def latency_layer_s(self) -> float:
        return sum(p.total_s for p in self.phases)

    @property
    def latency_model_s(self) -> float:
        return self.model.layers * self.latency_layer_s

    @property
    def energy_layer_j(self) -> float:
        return sum(p.energy_j for p in self.parts)

    @property
    def energy_head_j(self) -> float:
        """Per query head (the layer's energy shared equally by its query heads)."""
        return self.energy_layer_j / self.model.heads

    @property
    def energy_model_j(self) -> float:
        return self.model.layers * self.energy_layer_j

    def group_energy_head_j(self) -> dict[str, float]:
        return {g: sum(p.energy_j for p in self.parts if p.group == g) / self.model.heads for g in GROUPS}

    def characterized_energy_layer_j(self) -> float:
        """The layer's energy without the components that fall back on paper figures."""
        return sum(p.energy_j for p in self.parts if p.status != NOT_CHARACTERIZED)


def _optional(surrogate, component: str, name: str) -> float | None:
    part = surrogate.components.get(component)
    return part.params.get(name) if part is not None else None


def _required(surrogate, component: str, name: str, where: str) -> float:
    value = _optional(surrogate, component, name)
    if value is None:
        raise ConfigError("--surrogate", f"{where} has no {component}.{name}: it holds no SPICE per-action figures "
                                         "(a surrogate from `gaincell fit` does); use --figures paper, or fit one")
    return value


def _spice_or_paper(surrogate, component: str, name: str, paper_value: float, paper_note: str):
    """(value, source, status): the surrogate's SPICE figure if it has one, else the labelled paper figure."""
    value = _optional(surrogate, component, name)
    if value is not None:
        return value, f"surrogate {component}.{name}", SPICE
    return paper_value, paper_note, NOT_CHARACTERIZED


def surrogate_estimate(surrogate, model: ModelConfig, counts: ActionCounts, *, window: int, tile: int,
                       digital_scale: float = 1.0, where: str = "surrogate") -> Estimate:
    """This project's figures: SPICE from the surrogate, cited digital periphery, labelled paper fallbacks."""
    t_max = _required(surrogate, "timing", "t_max_s", where)
    write_time = _required(surrogate, "timing", "write_time_s", where)
    e_read_per_s = _required(surrogate, "energy", "e_read_cell_per_s_w", where)
    e_write = _required(surrogate, "energy", "e_write_cell_j", where)
    conv1, conv2 = F.paper_conversions_per_head()
    dac = _spice_or_paper(surrogate, "energy", "e_dac_write_j",
                          P.PAPER_E_DAC_HEAD_J.value / F.paper_cells_written_per_head(),
                          "paper's DACs 330 pJ / 128 cells written per head")
    c2p1 = _spice_or_paper(surrogate, "energy", "e_c2p_conversion_j", P.PAPER_E_QK_HEAD_J.value / conv1,
                           f"paper's QK stage 1120 pJ / {conv1} conversions per head (includes its array reads: "
                           "an upper bound)")
    c2p2 = _spice_or_paper(surrogate, "energy", "e_c2p_signed_conversion_j", P.PAPER_E_AV_HEAD_J.value / conv2,
                           f"paper's AV stage 700 pJ / {conv2} conversions per head (includes its array reads and "
                           "counters: an upper bound)")
    add = (F.HOROWITZ_ADD8_J.value * digital_scale,
           F.HOROWITZ_ADD8_J.source + ("" if digital_scale == 1 else f", x {digital_scale:g} (user scaling)"), CITED)
    read = (e_read_per_s * t_max, "surrogate energy.e_read_cell_per_s_w x timing.t_max_s", SPICE)
    c = counts
    rows = [("write", "K, V cell writes", "DACs", c.cells_written, "cell written",
             (e_write, "surrogate energy.e_write_cell_j", SPICE)),
            ("dac", "DAC conversions", "DACs", c.cells_written, "cell written", dac),
            ("qk_read", "QK array reads", "QK stage", c.pulse_cells_qk, "cell x T_max of pulse", read),
            ("c2p1", "stage-1 C2P", "QK stage", c.c2p_stage1, "conversion", c2p1),
            ("av_read", "AV array reads", "AV stage", c.pulse_cells_av, "cell x T_max of pulse", read),
            ("c2p2", "stage-2 signed C2P", "AV stage", c.c2p_stage2, "conversion", c2p2),
            ("counters", "readout counters", "AV stage", c.counter_ticks, "counter increment", add),
            ("adder", "adder tree", "digital", c.adds, "addition", add),
            ("control", "control and routing", "digital", c.query_heads, "query head",
             (P.PAPER_E_DIGITAL_HEAD_J.value, P.PAPER_E_DIGITAL_HEAD_J.source, CITED))]
    parts = [Part(key, label, group, count, action, *figure) for key, label, group, count, action, figure in rows]
    t_c2p = _spice_or_paper(surrogate, "timing", "t_c2p_conversion_s", PAPER_C2P_CONVERSION_S,
                            "half of what the paper's 65 ns leaves after two 15 ns pulse phases (inferred; also "
                            "covers its write, counter and digital time)")
    phases = [Phase("write the new K, V column", write_time, 1, "surrogate timing.write_time_s", DESIGN),
              Phase("stage 1: Q pulses", t_max, c.read_phases, "surrogate timing.t_max_s", DESIGN),
              Phase("stage 1: C2P", *_phase(t_c2p, c.read_phases)),
              Phase("stage 2: phi pulses", t_max, c.read_phases, "surrogate timing.t_max_s", DESIGN),
              Phase("stage 2: signed C2P + counter", *_phase(t_c2p, c.read_phases))]
    area = design_area(surrogate, model, ArrayShape(window, model.head_dim, tile))
    return Estimate("surrogate", model, counts, parts, phases, area, sum(mm2 for _, mm2, _ in area))


def design_area(surrogate, model: ModelConfig, shape: ArrayShape) -> list[tuple[str, float, str]]:
    """(part, mm^2 per query head, how) of the surrogate's design drawn with its layout rules
    (`gaincell.layout`): the KV head's arrays and periphery, shared by the query heads that read it."""
    recorded = surrogate.c2p_design and surrogate.dac_design
    defaults = "" if recorded else " (periphery not recorded in the surrogate: the default C2P and DAC designs)"
    area = head_area(surrogate.design, surrogate.c2p_design or C2PDesign(), surrogate.dac_design or DacDesign(), shape)
    share = model.kv_heads / model.heads
    return [(f"{item.label} ({area.note}{defaults})" if item.label == "cells" else item.label,
             item.um2 * 1e-6 * share, f"{item.count:,.0f} x {item.um2_each:.3g} um^2: {item.how}")
            for item in area.items]


def _phase(figure: tuple[float, str, str], repeats: float) -> tuple[float, float, str, str]:
    value, source, status = figure
    return value, repeats, source, status


def paper_estimate(model: ModelConfig, counts: ActionCounts) -> Estimate:
    """The paper's per-head figures as per-action figures (divided by the paper design's counts)."""
    cells = F.paper_cells_read_per_head()
    written = F.paper_cells_written_per_head()
    c = counts
    rows = [("qk", "QK stage", "QK stage", c.cells_read_qk, "cell read", P.PAPER_E_QK_HEAD_J, cells),
            ("av", "AV stage", "AV stage", c.cells_read_av, "cell read", P.PAPER_E_AV_HEAD_J, cells),
            ("digital", "digital control and routing", "digital", c.query_heads, "query head",
             P.PAPER_E_DIGITAL_HEAD_J, 1),
            ("dac", "DACs", "DACs", c.cells_written, "cell written", P.PAPER_E_DAC_HEAD_J, written)]
    parts = [Part(key, label, group, count, action, cited.value / per_head,
                  f"{cited.source}" + (f" / {per_head} per head (paper design)" if per_head != 1 else ""),
                  PAPER_INFERRED if per_head != 1 else CITED)
             for key, label, group, count, action, cited, per_head in rows]
    phases = [Phase("token, all phases (not split in the paper)", P.PAPER_LATENCY_S.value, c.read_phases,
                    P.PAPER_LATENCY_S.source, CITED)]
    area = [("head with control", P.PAPER_AREA_HEAD_MM2.value, P.PAPER_AREA_HEAD_MM2.source),
            ("KV arrays", P.PAPER_AREA_KV_HEAD_MM2.value, P.PAPER_AREA_KV_HEAD_MM2.source)]
    return Estimate("paper", model, counts, parts, phases, area, P.PAPER_AREA_HEAD_MM2.value)


@dataclass
class EnergyReport:
    """Both estimates for one model, the counts they share, and the GPU comparison."""

    model: ModelConfig
    figures: str  # which estimate is the headline
    counts: ActionCounts
    own: Estimate | None
    paper: Estimate
    gpus: list[GpuBaseline]
    gpu_note: str
    settings: dict = field(default_factory=dict)

    @property
    def primary(self) -> Estimate:
        return self.paper if self.figures == "paper" else self.own


def estimate(model: str | ModelConfig, surrogate_path: str | Path | None = None, *, figures: str = "surrogate",
             window: int | None = None, tile: int | None = None, tokens: int = 4, seed: int = 0,
             gpu_baseline: str | Path | None = None, digital_scale: float = 1.0, hardware: dict | None = None) -> EnergyReport:
    """Latency, energy and area per token of `model` (gpt2, smollm2, a config folder or a ModelConfig).

    The action counts come from decoding `tokens` tokens of one layer built from the surrogate (the shipped
    paper-reference surrogate when none is given, allowed with figures="paper" only); `window` and `tile`
    default to its hardware configuration; `hardware`: fields of it set for a study (recorded in the settings)."""
    from gaincell.resources import data_path
    from gaincell.surrogate.file import Surrogate

    if figures not in FIGURE_SETS:
        raise ConfigError("--figures", f"must be one of {', '.join(FIGURE_SETS)}; got {figures!r}")
    if not isinstance(digital_scale, (int, float)) or not digital_scale > 0 or digital_scale == float("inf"):
        raise ConfigError("--digital-scale", f"must be a positive number; got {digital_scale!r}")
    config = model if isinstance(model, ModelConfig) else load_model_config(model)
    if surrogate_path is None and figures == "surrogate":
        raise ConfigError("--surrogate", "is needed for --figures surrogate (this project's SPICE figures); give a "
                                         "surrogate file from `gaincell fit`, or use --figures paper")
    path = Path(surrogate_path) if surrogate_path is not None else data_path("paper_reference.h5")
    surrogate = Surrogate.load(path)
    surrogate.hardware = surrogate.hardware.overridden(**(hardware or {}))
    window = surrogate.hardware.window_tokens if window is None else window
    tile = surrogate.hardware.rows_per_tile if tile is None else tile
    # retention during the decode: the time of a token, the query heads of a KV head reading in turn
    clock = token_time_s(surrogate.hardware, config.layers, config.heads // config.kv_heads)
    counts = count_decode_actions(surrogate, config.heads, config.kv_heads, config.head_dim, window=window,
                                  tile=tile, tokens=tokens, seed=seed, token_period_s=clock)
    own = None
    if surrogate_path is not None:
        try:
            own = surrogate_estimate(surrogate, config, counts, window=window, tile=tile,
                                     digital_scale=digital_scale, where=str(path))
        except ConfigError:
            if figures == "surrogate":
                raise
    if gpu_baseline is not None:
        gpus, note = [load_gpu_baseline(gpu_baseline)], "measured baseline (--gpu-baseline)"
    else:
        gpus, note = paper_gpu_baselines(), "no measured baseline given: the paper's GPU measurements are used"
    settings = {"surrogate": str(path), "window": window, "tile": tile, "tokens": tokens, "seed": seed,
                "token_clock_s": clock, "hardware_overrides": list(surrogate.hardware.overrides)}
    return EnergyReport(config, figures, counts, own, paper_estimate(config, counts), gpus, note, settings)
