"""Folders someone hands over are untrusted: a crafted checkpoint, pickled weights or a manifest of the wrong shape
never runs code and is refused by name; a reading verb never changes a folder; links in a model folder are refused
by the writer that would follow them."""
import os
import pickle

import pytest
import torch
from click.testing import CliRunner

from gaincell.adapt.checkpoint import load_state, save_state
from gaincell.adapt.models import (ADAPTED_MANIFEST, GAINCELL_WEIGHTS, STAGING, load_adapted, load_pretrained,
                                   save_adapted, swap_attention)
from gaincell.adapt.train import TrainConfig, finetune
from gaincell.app.cli import main
from gaincell.errors import InputFileError, ModelLoadError
from gaincell.resources import data_path
from gaincell.surrogate.file import sha256_of

PAPER = data_path("paper_reference.h5")


class Payload:
    """Unpickling this creates the file `marker`: proof that a pickle was executed."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _pickle_bomb(path, marker):
    path.write_bytes(pickle.dumps({"model": Payload(marker)}))


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def refused(result, *phrases):
    assert result.exit_code == 1, result.output
    assert "error:" in result.output and "Traceback" not in result.output and "internal error" not in result.output
    for phrase in phrases:
        assert phrase in result.output, result.output


@pytest.fixture
def text(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    return path


@pytest.fixture
def adapted(tmp_path, gpt2_folder):
    model, tokenizer, _ = load_pretrained(gpt2_folder)
    return save_adapted(swap_attention(model, PAPER), tokenizer, tmp_path / "adapted", PAPER,
                        {"base_model": str(gpt2_folder), "surrogate_sha256": sha256_of(PAPER), "stages_done": [],
                         "stages": {}})


def test_a_checkpoint_round_trips_tensors_and_plain_data(tmp_path):
    state = {"step": 3, "losses": [1.5, float("inf")], "config": {"lr": 2e-4, "warmup": None},
             "model": {"w": torch.arange(6.0).reshape(2, 3)},
             "optimizer": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(2)}},
                           "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.95), "params": [0]}]}}
    save_state(state, tmp_path / "c.safetensors")
    back = load_state(tmp_path / "c.safetensors")
    assert back["step"] == 3 and back["losses"] == [1.5, float("inf")] and back["config"] == state["config"]
    assert torch.equal(back["model"]["w"], state["model"]["w"])
    assert torch.equal(back["optimizer"]["state"][0]["exp_avg"], torch.ones(2))  # integer keys come back as such
    assert back["optimizer"]["param_groups"][0]["betas"] == [0.9, 0.95]
    assert not list(tmp_path.glob("*.partial"))


def test_a_pickled_checkpoint_is_refused_without_running_it(tmp_path, gpt2_folder):
    model = load_pretrained(gpt2_folder)[0]
    stream = torch.randint(0, 100, (400,))
    marker = tmp_path / "pwned"
    checkpoint = tmp_path / "linear.safetensors"
    _pickle_bomb(checkpoint, marker)
    with pytest.raises(InputFileError, match="not a readable safetensors checkpoint"):
        finetune(model, stream, TrainConfig(steps=2, batch=1, seq=16), checkpoint, progress=False)
    assert not marker.exists()


def test_a_checkpoint_of_the_wrong_shape_is_refused_by_name(tmp_path, gpt2_folder):
    model = load_pretrained(gpt2_folder)[0]
    checkpoint = tmp_path / "linear.safetensors"
    save_state({"step": "many", "model": {"x": 1}}, checkpoint)
    with pytest.raises(InputFileError, match="not a gaincell training checkpoint"):
        finetune(model, torch.randint(0, 100, (400,)), TrainConfig(steps=2, batch=1, seq=16), checkpoint,
                 progress=False)


def test_the_adapt_verb_never_unpickles_what_it_finds_in_its_output_folder(tmp_path, gpt2_folder, adapted, text):
    marker = tmp_path / "pwned"
    (adapted / "checkpoints").mkdir()
    for name in ("nonlinear.pt", "nonlinear.safetensors"):
        _pickle_bomb(adapted / "checkpoints" / name, marker)
    result = invoke("adapt", "--model", gpt2_folder, "--surrogate", PAPER, "--out", adapted, "--train-text", text,
                    "--stages", "nonlinear", "--steps", "2", "--batch", "1", "--seq", "16")
    refused(result, "nonlinear.safetensors", "not a readable safetensors checkpoint")
    assert not marker.exists()


def test_pickled_weights_in_a_model_folder_are_never_read(tmp_path, gpt2_folder, text):
    folder = tmp_path / "model"
    folder.mkdir()
    for name in os.listdir(gpt2_folder):
        if not name.endswith(".safetensors"):
            (folder / name).write_bytes((gpt2_folder / name).read_bytes())
    marker = tmp_path / "pwned"
    _pickle_bomb(folder / "pytorch_model.bin", marker)
    refused(invoke("eval", "--model", folder, "--data", text), str(folder), "pickled weights (pytorch_model.bin)")
    with pytest.raises(ModelLoadError):
        load_pretrained(folder)
    assert not marker.exists()


@pytest.mark.parametrize("manifest,phrase", [("[1, 2]", "is not a JSON object"), ("{", "not a readable JSON manifest"),
                                             ('{"layer": [], "files": {}}', "lacks or mistypes layer (dict)"),
                                             ('{"layer": {}, "files": {"../x": "00"}}', "not a plain file")])
def test_a_manifest_of_the_wrong_shape_is_refused_by_name(adapted, text, manifest, phrase):
    (adapted / ADAPTED_MANIFEST).write_text(manifest)
    with pytest.raises(ModelLoadError, match="adapted"):
        load_adapted(adapted)
    refused(invoke("eval", "--model", adapted, "--data", text), phrase)


def test_a_reading_verb_never_touches_a_linked_staging_folder(tmp_path, adapted, text):
    other = tmp_path / "someone-elses"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    (other / ADAPTED_MANIFEST).write_text("{}")
    (adapted / STAGING).symlink_to(other)
    before = (adapted / ADAPTED_MANIFEST).read_bytes()
    model, _ = load_adapted(adapted)  # reads the folder as it is
    assert model is not None
    assert invoke("eval", "--model", adapted, "--data", text, "--context", "16", "--stride", "8").exit_code == 0
    assert sorted(p.name for p in other.iterdir()) == [ADAPTED_MANIFEST, "notes.txt"]
    assert (adapted / ADAPTED_MANIFEST).read_bytes() == before
    assert not (adapted / "notes.txt").exists()


def test_the_writer_refuses_a_linked_staging_folder_or_linked_entries(tmp_path, gpt2_folder, adapted, text):
    other = tmp_path / "someone-elses"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    (adapted / STAGING).symlink_to(other)
    args = ["adapt", "--model", gpt2_folder, "--surrogate", PAPER, "--out", adapted, "--train-text", text,
            "--stages", "nonlinear", "--steps", "1", "--batch", "1", "--seq", "16"]
    refused(invoke(*args), "is a symbolic link or not a folder")
    assert (other / "notes.txt").read_text() == "mine"
    (adapted / STAGING).unlink()
    (adapted / STAGING).mkdir()
    (adapted / STAGING / ADAPTED_MANIFEST).write_text("{}")
    (adapted / STAGING / GAINCELL_WEIGHTS).symlink_to(other / "notes.txt")
    refused(invoke(*args), "which are links or folders")
    assert (other / "notes.txt").read_text() == "mine"
