"""Shipped adapted models (adapt.shipped): exported as low-rank differences, rebuilt into the same model, and
refused for another base model or altered files."""
import json

import pytest
import torch

from gaincell.adapt.models import load_adapted
from gaincell.adapt.recipe import AdaptOptions, adapt
from gaincell.adapt.shipped import FORMAT, export_shipped, shipped_files, shipped_model_folder
from gaincell.adapt.train import TrainConfig
from gaincell.errors import ModelLoadError
from gaincell.resources import data_path
from gaincell.surrogate.file import sha256_of
from lm_helpers import TEXT, tiny_llama


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
                            {"command": "test", "scores": []})
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

