"""Shipped adapted models (adapt.shipped): exported as low-rank differences, rebuilt into the same model, and
refused for another base model or altered files; the packaged smollm2-gaincell's files agree; re-targeting an
adapted model to another cell (adapt.retarget)."""
import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gaincell.adapt.manifest import held_heads
from gaincell.adapt.models import gaincell_layers, load_adapted, load_pretrained, read_manifest, swap_attention
from gaincell.adapt.recipe import AdaptOptions, adapt
from gaincell.adapt.retarget import retarget
from gaincell.adapt.shipped import FORMAT, export_shipped, shipped_files, shipped_model_folder
from gaincell.adapt.train import TrainConfig
from gaincell.adapt.transfer import layer_errors
from gaincell.errors import ConfigError, ModelLoadError
from gaincell.resources import data_path
from gaincell.surrogate.file import Surrogate, sha256_of
from lm_helpers import TEXT, tiny_llama

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def adapted(tmp_path_factory):
    root = tmp_path_factory.mktemp("shipped")
    base = tiny_llama(root / "base")
    text = root / "train.txt"
    text.write_text(TEXT)
    options = AdaptOptions(model=str(base), surrogate=data_path("paper_reference.h5"), out=root / "adapted",
                           train_text=text, stages=("transfer", "distill"), lora_rank=4, calibration_tokens=64,
                           transfer=TrainConfig(steps=3, batch=2, seq=32, lr=1e-2, scaler_lr=3e-2, checkpoint_every=10),
                           distill=TrainConfig(steps=2, batch=2, seq=32, lr=1e-2, distill_weight=1.0,
                                               checkpoint_every=10))
    adapt(options, say=lambda *a: None)
    return root


def test_a_shipped_model_rebuilds_into_the_adapted_one(adapted, tmp_path, monkeypatch):
    monkeypatch.setenv("GAINCELL_CACHE", str(tmp_path / "cache"))
    record = export_shipped(adapted / "adapted", tmp_path / "ship", "tiny-gaincell", "paper",
                            {"command": "test", "scores": []}, tolerance=1e-4, dtype=torch.float32)
    # two merged rank-4 stages: every projection's difference has rank <= 8, kept exactly (float32 factors)
    assert record["format"] == FORMAT and record["max_relative_error_of_factors"] < 1e-5
    assert record["base_sha256"] == sha256_of(adapted / "base" / "model.safetensors")
    weights, _ = shipped_files("tiny-gaincell", tmp_path / "ship")
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as handle:
        ranks = {handle.get_tensor(k).shape[1] for k in handle.keys() if k.endswith("/up")}
    assert ranks and max(ranks) <= 8
    folder = shipped_model_folder("tiny-gaincell", progress=lambda *a: None, source=tmp_path / "ship")
    rebuilt, tokenizer = load_adapted(folder)
    original, _ = load_adapted(adapted / "adapted")
    ids = torch.tensor([tokenizer(TEXT[:200], add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        a, b = rebuilt(ids).logits, original(ids).logits
    assert (a - b).abs().max() <= 1e-4 * b.abs().max()
    assert shipped_model_folder("tiny-gaincell", source=tmp_path / "ship") == folder  # built once


def test_the_sharpened_heads_survive_packaging_and_a_later_stage(adapted, tmp_path, monkeypatch):
    """A model adapted further after its heads stage (its manifest holds the heads, not the stage) ships them,
    and its rebuilt folder holds them for the next re-targeting."""
    monkeypatch.setenv("GAINCELL_CACHE", str(tmp_path / "cache"))
    text, paper = adapted / "train.txt", data_path("paper_reference.h5")
    heads = adapt(AdaptOptions(model=str(adapted / "adapted"), surrogate=paper, train_text=text, stages=("heads",),
                               retrieval_heads=2, retrieval_gain=3.0, out=tmp_path / "heads"),
                  say=lambda *a: None)["stages"]["heads"]["heads"]
    later = adapt(AdaptOptions(model=str(tmp_path / "heads"), surrogate=paper, train_text=text, stages=("mlp",),
                               lora_rank=2, mlp=TrainConfig(steps=1, batch=1, seq=32, distill_weight=1.0),
                               out=tmp_path / "later"),
                  say=lambda *a: None)
    assert "heads" not in later["stages"] and later["held_heads"] == heads
    record = export_shipped(tmp_path / "later", tmp_path / "ship", "tiny-gaincell", "paper", {"command": "test"})
    assert record["held_heads"] == heads
    folder = shipped_model_folder("tiny-gaincell", progress=lambda *a: None, source=tmp_path / "ship")
    assert held_heads(read_manifest(folder)) == heads


def test_ship_model_script_packages_a_folder_and_refuses_a_bad_tolerance(adapted, tmp_path):
    scores = tmp_path / "eval.json"
    scores.write_text(json.dumps([{"data": "test.txt", "kind": "perplexity", "perplexity": 12.5, "nll": 2.5}]))
    script = [sys.executable, str(ROOT / "scripts" / "ship_model.py"), "--from", str(adapted / "adapted"),
              "--name", "tiny-gaincell", "--command", "gaincell adapt ...", "--train-text", "TEXT",
              "--scores", str(scores), "--out", str(tmp_path / "ship")]
    done = subprocess.run([*script, "--tolerance", "0.5"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "ship" / "tiny-gaincell.json").read_text())
    assert record["rank_tolerance"] == 0.5 and record["max_rank"] == 64 and record["train_text"] == "TEXT"
    assert record["scores"] == [{"data": "test.txt", "kind": "perplexity", "perplexity": 12.5}]
    assert record["max_relative_error_of_factors"] > 1e-3  # half the largest singular value: directions dropped
    for bad in ("1", "much"):
        refused = subprocess.run([*script, "--tolerance", bad], capture_output=True, text=True)
        assert refused.returncode == 2 and "--tolerance: must be a number in [0, 1)" in refused.stderr
        assert "Traceback" not in refused.stderr


def test_another_base_model_or_altered_files_are_refused(adapted, tmp_path, monkeypatch):
    monkeypatch.setenv("GAINCELL_CACHE", str(tmp_path / "cache"))
    export_shipped(adapted / "adapted", tmp_path / "ship", "tiny-gaincell", "paper", {"command": "test"})
    weights, manifest = shipped_files("tiny-gaincell", tmp_path / "ship")
    record = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**record, "base_sha256": "0" * 64}))
    with pytest.raises(ModelLoadError, match="was made for base model .* but the installed one"):
        shipped_model_folder("tiny-gaincell", source=tmp_path / "ship")
    manifest.write_text(json.dumps(record))
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ModelLoadError, match="do not match; reinstall"):
        shipped_model_folder("tiny-gaincell", source=tmp_path / "ship")



def stronger_cell(path):
    """The paper's surrogate with a 1.5x stronger multiply: another cell for re-targeting."""
    surrogate = Surrogate.load(data_path("paper_reference.h5"))
    surrogate.components["multiply"].values = surrogate.components["multiply"].values * 1.5
    return surrogate.save(path)


def test_re_targeting_carries_the_adaptation_to_another_cell(adapted, tmp_path):
    """An adapted model re-targeted to a new cell starts near where it was (scalers carried, outputs matched per
    head; better than the naive swap), and its transfer learns from the base model."""
    cell = stronger_cell(tmp_path / "stronger.h5")
    model, tokenizer = load_adapted(adapted / "adapted")
    base, _, _ = load_pretrained(adapted / "base")
    batch = torch.tensor([tokenizer(TEXT, add_special_tokens=False)["input_ids"][:64]])
    before = sum(layer_errors(model, batch, base))
    retarget(model, cell, batch)
    carried = sum(layer_errors(model, batch, base))
    naive, _ = load_adapted(adapted / "adapted")
    swap_attention(naive, cell)
    assert carried <= 1.5 * before and carried < sum(layer_errors(naive, batch, base))
    text = adapted / "train.txt"
    out = tmp_path / "retargeted"
    manifest = adapt(AdaptOptions(model=str(adapted / "adapted"), surrogate=cell, out=out, train_text=text,
                                  stages=("transfer",), lora_rank=4, calibration_tokens=64,
                                  transfer=TrainConfig(steps=3, batch=2, seq=32, lr=1e-2, scaler_lr=3e-2,
                                                       checkpoint_every=10)), say=lambda *a: None)
    assert manifest["base_model"] == str(adapted / "base") and manifest["adapted_from"] == str(adapted / "adapted")
    errors = manifest["stages"]["transfer"]["layer_errors"]
    assert sum(errors["after"]) < sum(errors["before"]) <= 1.5 * before
    assert load_adapted(out)[0].config and sha256_of(out / "surrogate.h5") == sha256_of(cell)
    with pytest.raises(ConfigError, match="re-target it with transfer and distill"):
        adapt(AdaptOptions(model=str(adapted / "adapted"), surrogate=cell, out=tmp_path / "other", train_text=text,
                           stages=("calibrate",)), say=lambda *a: None)


def test_continuing_on_the_same_cell_keeps_the_layers_as_they_are(adapted, tmp_path):
    """Adapting an adapted model further on the surrogate and hardware it was made for re-targets nothing: its
    output scalers stay as trained (re-targeting would refit them); --hardware still re-targets."""
    text, paper = adapted / "train.txt", data_path("paper_reference.h5")
    said = []
    options = dict(model=str(adapted / "adapted"), surrogate=paper, train_text=text, stages=("heads",),
                   retrieval_heads=1, retrieval_gain=2.0)
    manifest = adapt(AdaptOptions(**options, out=tmp_path / "same"), say=said.append)
    assert manifest["same_cell"] and any("kept as they are" in line for line in said)
    before, after = (gaincell_layers(load_adapted(folder)[0]) for folder in (adapted / "adapted", tmp_path / "same"))
    for old, new in zip(before, after):
        torch.testing.assert_close(new.out_scaler.a, old.out_scaler.a, rtol=0, atol=0)
    other = adapt(AdaptOptions(**options, out=tmp_path / "other", hardware={"c2p_reference": "peak"}),
                  say=lambda *a: None)
    assert not other["same_cell"]
    refitted = gaincell_layers(load_adapted(tmp_path / "other")[0])
    assert any(not torch.equal(new.out_scaler.a, old.out_scaler.a) for old, new in zip(before, refitted))


def test_a_continued_adaptation_with_its_source_s_hardware_resumes_under_the_same_command(adapted, tmp_path):
    """A folder adapted from an adapted model on that model's cell keeps the source's --hardware fields without
    being given them: the same command again resumes it (says its stages are done), and the command with
    --hardware added is refused as another layer."""
    text, paper = adapted / "train.txt", data_path("paper_reference.h5")
    peak = {"c2p_reference": "peak"}
    heads = dict(surrogate=paper, train_text=text, stages=("heads",), retrieval_heads=1, retrieval_gain=2.0)
    adapt(AdaptOptions(model=str(adapted / "base"), out=tmp_path / "source", hardware=peak, **heads),
          say=lambda *a: None)
    continued = AdaptOptions(model=str(tmp_path / "source"), out=tmp_path / "continued", **heads)
    assert adapt(continued, say=lambda *a: None)["same_cell"]
    assert read_manifest(tmp_path / "continued")["layer"]["hardware"] == peak
    said = []
    adapt(continued, say=said.append)
    assert any("already done" in line for line in said)
    with pytest.raises(ConfigError, match="of its source"):
        adapt(dataclasses.replace(continued, hardware=peak), say=lambda *a: None)


def test_re_targeting_keeps_how_the_layer_computes_and_its_thresholds_and_gains(adapted, tmp_path):
    """A model adapted with the reference-column normalization and the peak C2P reference keeps both (and its
    heads' thresholds and gains) on the new cell; a user's --hardware still overrides them."""
    model, tokenizer, _ = load_pretrained(adapted / "base")
    swap_attention(model, data_path("paper_reference.h5"),
                   hardware={"normalization": "reference-column", "c2p_reference": "peak"})
    with torch.no_grad():
        for layer in gaincell_layers(model):
            layer.c2p_threshold.copy_(torch.linspace(-0.1, 0.2, layer.heads))
            layer.c2p_gain.copy_(torch.linspace(1.0, 2.5, layer.heads))
    batch = torch.tensor([tokenizer(TEXT, add_special_tokens=False)["input_ids"][:64]])
    retarget(model, stronger_cell(tmp_path / "stronger.h5"), batch)
    for layer in gaincell_layers(model):
        assert layer.normalized and layer.peak_reference
        torch.testing.assert_close(layer.c2p_threshold.detach(), torch.linspace(-0.1, 0.2, layer.heads))
        torch.testing.assert_close(layer.c2p_gain.detach(), torch.linspace(1.0, 2.5, layer.heads))
    retarget(model, tmp_path / "stronger.h5", batch, hardware={"c2p_reference": "offset"})
    assert all(layer.normalized and not layer.peak_reference for layer in gaincell_layers(model))


def test_the_packaged_model_s_files_agree():
    weights, manifest = shipped_files("smollm2-gaincell")
    record = json.loads(manifest.read_text())
    assert record["format"] == FORMAT and sha256_of(weights) == record["weights_sha256"]
    assert record["base_model"] == "smollm2" and record["surrogate"] == "paper"
    assert record["surrogate_sha256"] == sha256_of(data_path("paper_reference.h5"))
    assert weights.stat().st_size < 20 * 2**20 and record["command"] and record["scores"]
    assert len(record["held_heads"]) == 20  # its sharpened heads, which a re-targeting keeps
    scripts = re.findall(r"python (\S+\.py)", record["command"])  # the command that remakes it names scripts here
    assert scripts and all((ROOT / script).is_file() for script in scripts), scripts
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as handle:
        assert {handle.get_tensor(k).dtype for k in handle.keys() if k.endswith(("/up", "/down"))} == {torch.float16}
