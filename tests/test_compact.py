"""The compact-model module: one home for the equations (fitting/ fits, surrogate/ compiles); the one token clock
(`gaincell.hardware.token_time_s`) shared by the decay, the latency and the energy report."""
import dataclasses

import numpy as np
import pytest
import torch

from gaincell.compact import (C2P, EKV, EXPONENTIAL, LEAKAGE, MODELS, POLY, STRETCHED, decay_factor, poly_at_input,
                              poly_exponents, poly_name, quantize, quantize_readout, spec, tau_1e)
from gaincell.hardware import phase_durations, token_time_s
from gaincell.paper import PAPER_LATENCY_PER_LAYER_S
from gaincell.model_shapes import KNOWN
from gaincell.energy.model import estimate
from gaincell.errors import ConfigError, FitError
from gaincell.fitting.fit import figures
from gaincell.resources import data_path
from gaincell.surrogate.cellmodel import CellModel
from gaincell.surrogate.file import Surrogate
from gaincell.surrogate.transfers import quantize_ste

PAPER = data_path("paper_reference.h5")
SPICE_TIMING = {"t_max_s": 15e-9, "write_time_s": 5e-9, "t_c2p_conversion_s": 15.5e-9}


def test_coefficient_names_and_the_polynomial_at_a_fixed_input():
    assert poly_name(2, 1) == "c21" and poly_exponents("c21") == (2, 1)
    config = {"order": 2, "vin_order": 1, "y0_v": 0.45, "vin0_v": 0.9}
    params = {"c00": 1.0, "c01": 2.0, "c10": 3.0, "c11": 4.0, "c20": 5.0}
    assert poly_at_input(config, params, 1.0) == pytest.approx([1.0 + 2.0 * 0.1, 3.0 + 4.0 * 0.1, 5.0])


def test_retention_time_constant_is_where_the_decay_reaches_1_over_e():
    config, params = {"hold_v": 0.0, "ref_v": 0.45}, {"rate_v_per_s": 80.0, "vt_v": 0.025, "dibl_per_v": 0.5}
    tau = tau_1e(LEAKAGE, config, params)
    assert decay_factor(LEAKAGE, config, params, np.array([tau]))[0] == pytest.approx(np.exp(-1), rel=1e-4)


def test_quantizers_in_numpy_and_torch_and_straight_through():
    x = np.array([0.0, 0.1, 0.47, 0.9])
    assert quantize(x, 4, 0.0, 0.9).tolist() == pytest.approx([0.0, 0.0, 0.6, 0.9])
    assert quantize_readout(torch.tensor([-0.52, 0.03, 0.97]), 15).tolist() == pytest.approx([-8 / 15, 0.0, 1.0])
    t = torch.tensor([0.1, 0.44], requires_grad=True)
    quantize_ste(t, 4, 0.0, 0.9).sum().backward()
    assert t.grad.tolist() == [1.0, 1.0]


def test_token_clock_of_the_paper_and_of_a_spice_surrogate():
    paper = Surrogate.load(PAPER).hardware
    assert token_time_s(paper, 12) == pytest.approx(12 * PAPER_LATENCY_PER_LAYER_S)
    assert token_time_s(paper, 30, 3) == pytest.approx(30 * 3 * 65e-9)  # grouped-query heads read in turn
    spice = dataclasses.replace(paper, **phase_durations(SPICE_TIMING))
    assert token_time_s(spice, 1) == pytest.approx(5e-9 + 2 * (15e-9 + 15.5e-9))
    assert token_time_s(spice, 12, 3) == pytest.approx(12 * (5e-9 + 3 * 2 * (15e-9 + 15.5e-9)))
    assert token_time_s(dataclasses.replace(paper, **phase_durations({"t_max_s": 15e-9})), 1) == \
        PAPER_LATENCY_PER_LAYER_S  # no timing of its own: the paper's
    with pytest.raises(ConfigError, match="layers"):
        token_time_s(paper, 0)


def spice_timed_reference() -> Surrogate:
    """The paper-reference surrogate with the timing and energy figures `gaincell fit` gives a SPICE cell."""
    surrogate = Surrogate.load(PAPER)
    surrogate.components["timing"] = figures(SPICE_TIMING)
    surrogate.components["energy"] = figures({"e_read_cell_per_s_w": 1e-6, "e_write_cell_j": 1e-15})
    surrogate.hardware = dataclasses.replace(surrogate.hardware, **phase_durations(SPICE_TIMING))
    return surrogate


def test_decay_latency_and_energy_run_on_the_one_token_clock(tmp_path):
    """SmolLM2 has 3 query heads per KV head: the ages of stored tokens, the latency and the energy report all
    count the three read phases of every layer."""
    surrogate = spice_timed_reference()
    path = surrogate.save(tmp_path / "spice-timed.h5")
    for model in ("gpt2", "smollm2"):
        config = KNOWN[model]
        clock = token_time_s(surrogate.hardware, config.layers, config.group)
        assert CellModel.from_surrogate(surrogate, layers=config.layers, read_phases=config.group).token_period_s \
            == pytest.approx(clock)
        report = estimate(model, path, window=128, tile=64, tokens=1)
        assert report.settings["token_clock_s"] == pytest.approx(clock)
        assert report.own.latency_model_s == pytest.approx(clock)
    assert KNOWN["smollm2"].group == 3


def test_the_adaptation_runs_on_the_one_token_clock(llama_folder):
    from gaincell.adapt.models import gaincell_layers, load_pretrained, swap_attention

    model, _, _ = load_pretrained(str(llama_folder))
    swap_attention(model, spice_timed_reference(), window=128)
    config = model.config
    group = config.num_attention_heads // config.num_key_value_heads
    expected = token_time_s(spice_timed_reference().hardware, config.num_hidden_layers, group)
    periods = [layer.cell.token_period_s for layer in gaincell_layers(model)]
    assert group == 2 and len(periods) == config.num_hidden_layers
    assert periods == pytest.approx([expected] * len(periods))


def test_every_model_spec_carries_its_parameters_ranges_and_fit_start():
    """One typed spec per model id: each parameter has a described, unit-bearing plausible range, and the fit
    starts from a value for each parameter, inside that range."""
    configs = {POLY: {"order": 3, "vin_order": 1, "y0_v": 0.45}, EKV: {"vdd_v": 0.9},
               C2P: {}, **{m: {"hold_v": 0.0, "ref_v": 0.45} for m in (EXPONENTIAL, STRETCHED, LEAKAGE)}}
    scales = {C2P: {"charge": np.linspace(0, 2e-12, 20), "width": np.clip(np.linspace(-2e-9, 18e-9, 20), 0, 15e-9),
                    "t_max_s": 15e-9}, **{m: {"tau_s": 5e-3} for m in (EXPONENTIAL, STRETCHED, LEAKAGE)}}
    assert set(configs) == set(MODELS)
    for model_id, config in configs.items():
        model = spec(model_id)
        names = model.param_names(config)
        start = model.start(config, **scales.get(model_id, {}))
        assert set(start.initial) == set(names) and set(start.bounds) | set(start.fixed) <= set(names), model_id
        for name in names:
            rule = model.plausible(name)
            assert rule is not None and rule.meaning and rule.allows(start.initial[name]), (model_id, name)
    with pytest.raises(FitError, match="does not resolve the converter's ramp"):
        spec(C2P).start({}, charge=np.zeros(3), width=np.zeros(3), t_max_s=15e-9)
