"""Latency and energy model: counts from a real decode, the paper's figures reproduced, labelled fallbacks,
bad input, GPU baselines."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gaincell.paper import PAPER_LATENCY_S
from gaincell.model_shapes import load_model_config
from gaincell.energy.counting import ArrayProbe, closed_form_counts, count_decode_actions
from gaincell.energy.gpu import load_gpu_baseline, paper_gpu_baselines
from gaincell.energy.model import NOT_CHARACTERIZED, SPICE, estimate, paper_estimate, surrogate_estimate
from gaincell.errors import ConfigError
from gaincell.fitting.fit import figures
from gaincell.resources import data_path
from gaincell.surrogate.attention import GainCellAttention
from gaincell.surrogate.file import Surrogate
from gaincell.surrogate.options import Execution

ROOT = Path(__file__).resolve().parent.parent
SMALL = dict(heads=4, kv_heads=2, head_dim=16, window=128, tile=32)


def spice_surrogate(tmp_path, **extra_energy) -> Path:
    """The reference surrogate with SPICE-style per-action figures (values of the default cell's demo)."""
    surrogate = Surrogate.load(data_path("paper_reference.h5"))
    surrogate.components["energy"] = figures({"e_read_cell_j": 44.4e-15, "e_read_cell_per_s_w": 44.4e-15 / 15e-9,
                                              "e_write_cell_j": 1.17e-15, **extra_energy}, source="test")
    surrogate.components["timing"] = figures({"t_max_s": 15e-9, "write_time_s": 5e-9}, source="test")
    return surrogate.save(tmp_path / "spice.h5")


def small_counts(**options):
    size = {k: v for k, v in SMALL.items() if k not in ("window", "tile")}
    return count_decode_actions(data_path("paper_reference.h5"), **size, window=SMALL["window"], tile=SMALL["tile"],
                                **options)


def test_decode_counts_match_the_closed_form():
    counts = small_counts(tokens=3)
    expected = closed_form_counts(**SMALL)
    for name in ("cells_written", "cells_read_qk", "cells_read_av", "c2p_stage1", "c2p_stage2", "tile_reads_qk",
                 "tile_reads_av", "adds", "query_heads", "kv_arrays", "cells_held"):
        assert getattr(counts, name) == getattr(expected, name), name
    assert counts.read_phases == 2  # 4 query heads share 2 KV arrays
    assert 0 < counts.pulse_cells_qk < counts.cells_read_qk and 0 <= counts.pulse_cells_av < counts.cells_read_av


def test_probe_reads_pulse_widths_from_the_decode():
    """Full-scale queries (q' = 1 after the scaler) drive every cell for T_max; zero queries drive none, so
    nothing reaches stage 2 and no counter ticks."""
    layer = GainCellAttention.from_surrogate(data_path("paper_reference.h5"), heads=2, head_dim=8, tile=16, window=32,
                                             execution=Execution(kernel="torch"))
    for q_value, expected in ((0.5, 1.0), (-0.5, 0.0)):
        cache = layer.new_cache()
        kv = torch.full((1, 2, 32, 8), 0.2)
        with torch.no_grad():
            layer(torch.zeros(1, 2, 32, 8), kv, kv, cache=cache)
            with ArrayProbe(cache, 16, 15) as probe:
                layer(torch.full((1, 2, 1, 8), q_value), kv[:, :, :1], kv[:, :, :1], cache=cache)
        counts = probe.counts
        assert counts.cells_read_qk == 2 * 32 * 8 and counts.cells_written == 2 * 2 * 8
        assert counts.pulse_cells_qk == pytest.approx(expected * counts.cells_read_qk)
        if expected == 0.0:
            assert counts.pulse_cells_av == 0 and counts.counter_ticks == 0


def test_paper_figures_give_the_papers_numbers_for_its_design():
    counts = closed_form_counts(12, 12, 64, 1024, 64)
    paper = paper_estimate(load_model_config("gpt2"), counts)
    assert paper.latency_layer_s == pytest.approx(65e-9, rel=1e-12)
    assert paper.energy_head_j == pytest.approx(1120e-12 + 700e-12 + 4000e-12 + 330e-12, rel=1e-12)
    assert paper.group_energy_head_j() == pytest.approx({"QK stage": 1120e-12, "AV stage": 700e-12,
                                                         "digital": 4000e-12, "DACs": 330e-12}, rel=1e-12)


@pytest.mark.slow
def test_energy_command_with_paper_figures_reproduces_65ns_and_6150pJ(tmp_path):
    done = subprocess.run([sys.executable, "-m", "gaincell.app.cli", "energy", "--figures", "paper", "--model", "gpt2",
                           "--tokens", "1", "--out", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "paper figures: latency per token, one layer                    65 ns" in out
    assert "paper figures: energy per token per query head                 6.15 nJ" in out
    assert (tmp_path / "energy-breakdown.png").stat().st_size > 1000
    assert "energy per token per query head" in (tmp_path / "energy-breakdown.html").read_text()
    report = estimate("gpt2", figures="paper", tokens=1)  # the same through the API, exactly
    assert report.primary.latency_layer_s == pytest.approx(65e-9, rel=1e-12)
    assert report.primary.energy_head_j == pytest.approx(6150e-12, rel=1e-12)
    assert report.own is None


def test_own_figures_use_spice_and_label_the_fallbacks(tmp_path):
    counts = small_counts(tokens=2)
    model = load_model_config("smollm2")
    own = surrogate_estimate(Surrogate.load(spice_surrogate(tmp_path)), model, counts, window=64, tile=64)
    parts = {p.key: p for p in own.parts}
    assert parts["write"].status == SPICE and parts["write"].energy_j == pytest.approx(1.17e-15 * counts.cells_written)
    assert parts["qk_read"].energy_j == pytest.approx(44.4e-15 * counts.pulse_cells_qk)
    for key in ("c2p1", "c2p2", "dac"):
        assert parts[key].status == NOT_CHARACTERIZED and "paper" in parts[key].source
    phases = {p.label: p for p in own.phases}
    assert phases["stage 1: C2P"].status == NOT_CHARACTERIZED
    assert phases["stage 1: Q pulses"].total_s == pytest.approx(15e-9 * counts.read_phases)
    assert own.characterized_energy_layer_j() < own.energy_layer_j

    characterized = Surrogate.load(spice_surrogate(tmp_path, e_c2p_conversion_j=50e-15,
                                                   e_c2p_signed_conversion_j=20e-15, e_dac_write_j=17e-15))
    characterized.components["timing"] = figures({"t_max_s": 15e-9, "write_time_s": 5e-9,
                                                  "t_c2p_conversion_s": 3e-9})
    own = surrogate_estimate(characterized, model, counts, window=64, tile=64)
    parts = {p.key: p for p in own.parts}
    assert parts["c2p1"].status == SPICE and parts["c2p1"].energy_j == pytest.approx(50e-15 * counts.c2p_stage1)
    assert parts["c2p2"].status == SPICE and parts["c2p2"].energy_j == pytest.approx(20e-15 * counts.c2p_stage2)
    assert parts["dac"].status == SPICE and parts["dac"].energy_j == pytest.approx(17e-15 * counts.cells_written)
    assert own.characterized_energy_layer_j() == pytest.approx(own.energy_layer_j)  # nothing falls back
    assert own.latency_layer_s == pytest.approx(5e-9 + counts.read_phases * (2 * 15e-9 + 2 * 3e-9))


def test_model_configs_known_and_from_config_json(tmp_path):
    smol = load_model_config("SmolLM2")
    assert (smol.layers, smol.heads, smol.kv_heads, smol.head_dim, smol.width) == (30, 9, 3, 64, 576)
    llama = tmp_path / "llama"
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 4,
                                                   "num_attention_heads": 8, "num_key_value_heads": 2,
                                                   "hidden_size": 256}))
    config = load_model_config(str(llama))
    assert (config.layers, config.heads, config.kv_heads, config.head_dim) == (4, 8, 2, 32)
    gpt = tmp_path / "gpt"
    gpt.mkdir()
    (gpt / "config.json").write_text(json.dumps({"n_layer": 2, "n_head": 4, "n_embd": 128}))
    assert load_model_config(str(gpt)).kv_heads == 4


@pytest.mark.parametrize("spec, content, message", [
    ("gpt3", None, "neither a known model"),
    ("folder", "{not json", "cannot read"),
    ("folder", json.dumps({"n_layer": 2}), "has none of n_head, num_attention_heads"),
    ("folder", json.dumps({"n_layer": 2, "n_head": 3, "n_embd": 96, "num_key_value_heads": 2}), "must divide"),
])
def test_bad_model_names_the_option_and_what_is_allowed(tmp_path, spec, content, message):
    if content is not None:
        spec = str(tmp_path)
        (tmp_path / "config.json").write_text(content)
    with pytest.raises(ConfigError) as info:
        load_model_config(spec)
    assert info.value.parameter == "--model" and message in str(info.value)
    if message == "neither a known model":
        assert "gpt2, smollm2" in str(info.value)


def test_bad_options_name_the_parameter(tmp_path):
    for options, parameter in ((dict(figures="mine"), "--figures"), (dict(window=100), "--window"),
                               (dict(window=1 << 20), "--window"),
                               (dict(tokens=0), "--tokens"), (dict(digital_scale=-1.0), "--digital-scale")):
        with pytest.raises(ConfigError) as info:
            estimate("gpt2", figures=options.pop("figures", "paper"), **options)
        assert info.value.parameter == parameter
    with pytest.raises(ConfigError, match="--surrogate: is needed"):
        estimate("gpt2")
    with pytest.raises(ConfigError, match="--surrogate: .* no SPICE per-action figures"):
        estimate("gpt2", data_path("paper_reference.h5"), tokens=1, window=64)
    (tmp_path / "bad.json").write_text(json.dumps({"file_kind": "gaincell gpu attention baseline", "batch": 0}))
    with pytest.raises(ConfigError, match="--gpu-baseline: .*'batch' must be a positive number"):
        load_gpu_baseline(tmp_path / "bad.json")
    (tmp_path / "deep.json").write_text("[" * 100_000)
    (tmp_path / "huge.json").write_text(" " * (2 << 20))
    for name, phrase in (("deep.json", "nested too deeply"), ("huge.json", "bytes; a baseline is a few hundred")):
        with pytest.raises(ConfigError, match=f"--gpu-baseline: cannot read .*{name} .*{phrase}"):
            load_gpu_baseline(tmp_path / name)


def test_paper_gpu_measurements_give_the_papers_ratios():
    """The paper's ratios (x300 / x7,000 faster, x90,000 / x40,000 less energy) compare one decode step of the
    GPU's batch of 64 with one token of the analog hardware (12 heads x 6.15 nJ, 65 ns)."""
    gpus = {g.label.split(" (")[0]: g for g in paper_gpu_baselines()}
    rtx, jetson = gpus["NVIDIA RTX 4090"], gpus["NVIDIA Jetson Nano"]
    assert (rtx.batch, rtx.heads, rtx.head_dim, rtx.tokens) == (64, 12, 64, 1024)
    analog_s, analog_j = PAPER_LATENCY_S.value, 12 * 6150e-12
    assert 300 <= rtx.latency_per_step_s / analog_s < 400 and 7000 <= jetson.latency_per_step_s / analog_s < 8000
    assert 90e3 <= rtx.energy_per_step_j / analog_j < 100e3 and 40e3 <= jetson.energy_per_step_j / analog_j < 50e3


@pytest.mark.slow
def test_gpu_baseline_script_runs_on_cpu_and_feeds_the_energy_model(tmp_path):
    out = tmp_path / "cpu.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_attention_baseline.py"), "--device", "cpu",
                           "--tokens", "32", "--passes", "1", "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text())
    assert data["device_kind"] == "cpu" and data["energy_per_step_j"] is None and data["latency_per_step_s"] > 0
    baseline = load_gpu_baseline(out)
    assert baseline.device_kind == "cpu" and baseline.energy_per_step_j is None and baseline.tokens == 32
    report = estimate("gpt2", figures="paper", tokens=1, window=128, tile=64, gpu_baseline=out)
    assert report.gpus == [baseline] and report.gpu_note.startswith("measured")


def test_probe_refuses_a_ring_of_the_compiled_step():
    """The compiled CPU step's ring holds level indices and runs no torch products: the probe says so."""
    layer = GainCellAttention.from_surrogate(data_path("paper_reference.h5"), heads=2, head_dim=8, tile=16, window=32,
                                             execution=Execution(kernel="auto"))
    cache = layer.new_cache()
    with torch.no_grad():
        layer(torch.zeros(1, 2, 32, 8), torch.zeros(1, 2, 32, 8), torch.zeros(1, 2, 32, 8), cache=cache)
    assert cache.compiled  # numba is installed with the package's lm extra
    with pytest.raises(ConfigError, match="kernel='torch'"):
        ArrayProbe(cache, 16, 15)
