"""The benchmarks' commands still run (a user copies them from benchmarks/RESULTS.md): each at a tiny size, its
two sides compared as the full run compares them."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run(script: str, *args: str, cwd: Path) -> str:
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def run_in_process(script: str, *args: str, cwd: Path, monkeypatch, capsys) -> tuple[int, str]:
    """A benchmark's command line run in this process (no interpreter to start: for its quick refusals); its exit
    status and what it wrote to stderr. An exception other than the exit a refusal makes fails the test."""
    import runpy

    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", [str(BENCHMARKS / script), *args])
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    capsys.readouterr()
    try:
        runpy.run_path(str(BENCHMARKS / script), run_name="__main__")
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
        if isinstance(stop.code, str):
            print(stop.code, file=sys.stderr)
    return code, capsys.readouterr().err


def test_bench_attention_runs_both_decay_forms_and_its_sides_agree(tmp_path):
    common = ("--batch", "1", "--heads", "2", "--tokens", "128", "--window", "64", "--repeats", "1",
              "--methods", "tiled,torch,naive")
    out = run("bench_attention.py", *common, cwd=tmp_path)
    assert "decay: the product form" in out and "tiled and naive agree" in out and "torch and naive agree" in out
    out = run("bench_attention.py", *common[:-1], "tiled,naive", "--aged-token-period-s", "5.85e-6", cwd=tmp_path)
    assert "decay: aged voltages at 5.85e-06 s per token" in out and "tiled and naive agree" in out


def test_decode_benchmark_runs_and_its_ring_decode_equals_the_parallel_pass(tmp_path, llama_folder):
    from gaincell.resources import data_path

    out = run("bench_decode.py", "--model", str(llama_folder), "--surrogate", str(data_path("paper_reference.h5")),
              "--new-tokens", "6,12", "--check-steps", "12", "--threads", "1", "--repeats", "2", cwd=tmp_path)
    assert "| 12 |" in out and "gain-cell ring decode = parallel pass, every layer, over the prompt and 12 tokens" in out


@pytest.mark.slow
def test_aged_tile_benchmark_runs_and_writes_its_figure(tmp_path):
    out = run("aged_tile.py", "--random", "1", "--tokens", "6", "--dims", "6", "--figure", str(tmp_path / "aged"),
              cwd=tmp_path)
    assert "the layer (aged voltages): phi RMS" in out and "the paper's product form" in out
    assert (tmp_path / "aged.png").stat().st_size > 10_000


@pytest.mark.slow
def test_smollm2_transfer_benchmark_runs_its_commands(tmp_path, llama_folder):
    """The commands behind RESULTS.md's SmolLM2 transfer and ablation tables, at a tiny budget: every `gaincell
    adapt` and `eval` the transfer script runs is accepted (it passes --calibration-tokens to the transfer stage,
    which reads it), and the ablation runs on the folder it adapted; on a tiny Llama (the commands are SmolLM2's
    but for --model)."""
    text = Path(__file__).resolve().parents[1] / "data" / "pride_and_prejudice_ch1-3.txt"
    lambada = tmp_path / "lambada.jsonl"
    lambada.write_text('{"text": "She walked to the garden and met her sister in the garden"}\n'
                       '{"text": "He read the letter twice before he put the letter"}\n')
    out = run("smollm2_transfer.py", "--model", str(llama_folder), "--work", str(tmp_path / "work"), "--train-text", str(text), "--wikitext", str(text),
              "--lambada", str(lambada), "--eval-tokens", "96", "--context", "32", "--lambada-items", "2",
              "--steps-list", "1", "--distill-steps", "1", "--batch", "1", "--seq", "32", "--lora-rank", "2",
              cwd=tmp_path)
    assert "| transfer, 1 steps |" in out and "softmax baseline" in out
    # the ablation's command on the adapted folder it made: every row scored, the probe over every layer
    out = run("ablation.py", "--model", str(tmp_path / "work" / "transfer-1"), "--work", str(tmp_path / "ablation"),
              "--wikitext", str(text), "--lambada", str(lambada), "--eval-tokens", "64", "--context", "32",
              "--lambada-items", "2", "--probe-items", "1", "--figure", str(tmp_path / "probe"), cwd=tmp_path)
    assert "| as adapted: every hardware effect |" in out and "| - C2P and readout saturation |" in out
    assert "| 1 |" in out and "| mean |" in out and (tmp_path / "probe.png").stat().st_size > 10_000
    assert "| 1-15 | 30 |" in out and "| 16-31 | 32 |" in out  # context use: 2 windows of 32 tokens
    assert "Where the C2P gains cost" in out and "| all | 62 |" in out  # part 4: the transfer trained the gains


@pytest.mark.slow
def test_smollm2_recipe_benchmark_runs_the_shipped_models_commands(tmp_path, llama_folder):
    """The command behind RESULTS.md's end-to-end recipe table at a tiny budget: its five `gaincell adapt` steps
    (transfer, distill, narrative distill, MLP + heads, MLP with the repetition loss) run into their folders, each
    is scored, and the
    table adds up every stage's seconds and tokens; a rerun reuses everything (no stage trains twice) and does not
    score a step's folder that a later step has trained further."""
    text = Path(__file__).resolve().parents[1] / "data" / "pride_and_prejudice_ch1-3.txt"
    lambada = tmp_path / "lambada.jsonl"
    lambada.write_text('{"text": "She walked to the garden and met her sister in the garden"}\n')
    args = ("smollm2_recipe.py", "--model", str(llama_folder), "--work", str(tmp_path / "work"), "--train-text",
            str(text), "--narrative-text", str(text), "--wikitext", str(text), "--lambada", str(lambada),
            "--eval-tokens", "64", "--context", "32", "--lambada-items", "1", "--transfer-steps", "1",
            "--distill-steps", "1", "--narrative-steps", "1", "--mlp-steps", "1", "--retrieval-heads", "1",
            "--repetition-steps", "1", "--batch", "1", "--seq", "32", "--lora-rank", "2")
    out = run(*args, cwd=tmp_path)
    rows = json.loads((tmp_path / "work" / "table.json").read_text())
    assert [[r.get("steps") for r in records] if records else None for _, records, _ in rows] == [
        None, [1], [1], [1], [1, None], [1]]  # softmax; transfer; distill; narrative distill; mlp, heads; mlp
    assert rows[-2][1][-1]["gain"] == 4.0 and len(rows[-2][1][-1]["heads"]) == 1  # the heads stage
    final = json.loads((tmp_path / "work" / "final" / "adapted.json").read_text())
    assert final["stages_done"] == ["mlp", "heads"] and "c2p_gain_start" not in final  # the trained gains kept
    unloop = json.loads((tmp_path / "work" / "unloop" / "adapted.json").read_text())
    assert unloop["held_heads"] == final["stages"]["heads"]["heads"]  # the sharpened heads kept through it
    assert unloop["stages"]["mlp"]["config"]["repetition_weight"] == 0.3 and "trained_behind" in unloop["stages"]["mlp"]
    assert "| + narrative distill, 1 steps |" in out and "training wall time in all" in out
    (tmp_path / "work" / "eval-step1.json").unlink()  # as if the transfer step had run before this script
    again = run(*args, cwd=tmp_path)
    assert "already done" in again and "stage transfer\n" not in again
    assert "| transfer, 1 steps | not scored: its folder was trained further" in again  # not the distilled folder
    assert again.splitlines()[-4:] == out.splitlines()[-4:]  # the other rows and the total as before


@pytest.mark.slow
def test_training_benchmark_runs_both_precisions_and_compares_their_losses(tmp_path, llama_folder):
    """bench_training.py's command at a tiny size: both sides run `gaincell adapt --stages mlp`, their table and
    ratio are printed, and a tolerance their first-step losses exceed fails the run loudly."""
    from gaincell.resources import data_path

    text = Path(__file__).resolve().parents[1] / "data" / "pride_and_prejudice_ch1-3.txt"
    common = ("--model", str(llama_folder), "--surrogate", str(data_path("paper_reference.h5")), "--stage", "mlp",
              "--steps", "2", "--batch", "1", "--seq", "32", "--text", str(text))
    report = tmp_path / "training.json"
    done = subprocess.run([sys.executable, str(BENCHMARKS / "bench_training.py"), *common, "--out", str(report),
                           "--loss-tolerance", "1e-9"], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode != 0 and "the two sides disagree" in done.stderr  # fails loudly, after its table
    assert "| float32 |" in done.stdout and "| bfloat16 |" in done.stdout and "bfloat16 / float32 speed:" in done.stdout
    rows = json.loads(report.read_text())["rows"]
    assert [len(r["losses"]) for r in rows] == [2, 2] and rows[0]["losses"] != rows[1]["losses"]
    out = run("bench_training.py", *common, "--out", str(report), cwd=tmp_path)  # replaces its own report
    assert f"wrote {report}" in out and json.loads(report.read_text())["rows"][0]["losses"] == rows[0]["losses"]


def test_ablation_splits_the_gains_cost_by_the_kind_of_next_token(tmp_path, llama_folder, capsys, monkeypatch):
    """Part 4 of the ablation on a tiny adapted Llama with one head at C2P gain 3: the kinds of next token
    partition the scored tokens, their costs add up to the whole, and the whole is the cost table's perplexity."""
    import argparse

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import ablation

    from gaincell.adapt.evaluate import perplexity
    from gaincell.adapt.models import gaincell_layers, load_pretrained, swap_attention
    from gaincell.adapt.text import token_stream
    from gaincell.resources import data_path

    tokens = torch.tensor([5, 6, 7, 5, 8, 9, 6, 10])  # windows of 4: [5 6 7 5], [8 9 6 10]
    kinds = ablation.token_kinds(tokens, 4, common=torch.tensor([7]))
    assert kinds["does not occur earlier in its window"].tolist() == [[True, True, False], [True, True, True]]
    assert not kinds["recalls a rare word from 16+ tokens back"].any()  # nothing is 16 tokens back in 4
    model, tokenizer, _ = load_pretrained(llama_folder)
    model = swap_attention(model, data_path("paper_reference.h5"))
    with torch.no_grad():
        gaincell_layers(model)[1].c2p_gain[0] = 3.0
    text = Path(__file__).resolve().parents[1] / "data" / "pride_and_prejudice_ch1-3.txt"
    options = argparse.Namespace(wikitext=text, eval_tokens=96, context=32, work=tmp_path)
    tokens = token_stream(text, tokenizer, 96)
    ablation.print_gain_cost(model, ablation.window_losses(model, tokens, 32), tokenizer, tokens, options)
    out = capsys.readouterr().out
    assert "Where the C2P gains cost (1 heads with a gain other than 1)" in out and "| all | 93 |" in out
    rows = json.loads((tmp_path / "gain-cost.json").read_text())
    assert sum(r["tokens"] for r in rows[:-1]) == rows[-1]["tokens"] == 93  # 3 windows of 31 next tokens
    assert abs(sum(r["cost_nats"] for r in rows[:-1]) - rows[-1]["cost_nats"]) < 1e-3
    scored = perplexity(model, token_stream(text, tokenizer, 96), 32, 32, progress=False)
    assert abs(rows[-1]["perplexity"] - scored["perplexity"]) < 1e-3 * scored["perplexity"]
    assert rows[-1]["cost_nats"] != 0 and float(gaincell_layers(model)[1].c2p_gain.detach()[0]) == 3.0  # gains back on



def test_score_jitter_scores_the_saved_model_and_each_perturbed_copy(tmp_path, llama_folder, monkeypatch, capsys):
    """The command behind RESULTS.md's jitter table, on a tiny adapted Llama: the saved model and two perturbed
    copies scored on the same rows, the spread summarised, the rows written; bad arguments refused clearly."""
    from gaincell.adapt.models import load_pretrained, save_adapted, swap_attention
    from gaincell.resources import data_path

    model, tokenizer, _ = load_pretrained(llama_folder)
    paper = data_path("paper_reference.h5")
    adapted = save_adapted(swap_attention(model, paper), tokenizer, tmp_path / "adapted", paper,
                           {"base_model": str(llama_folder)})
    text = Path(__file__).resolve().parents[1] / "data" / "pride_and_prejudice_ch1-3.txt"
    lambada = tmp_path / "lambada.jsonl"
    lambada.write_text('{"text": "She walked to the garden and met her sister in the garden"}\n')
    common = ("--model", str(adapted), "--wikitext", str(text), "--lambada", str(lambada), "--eval-tokens", "96",
              "--context", "32", "--lambada-items", "1")
    out = run("score_jitter.py", *common, "--seeds", "2", "--eps", "1e-3", "--out", str(tmp_path / "jitter.json"),
              cwd=tmp_path)
    assert "| saved |" in out and "seed 2 |" in out and "| all 3: mean +- standard deviation |" in out
    rows = json.loads((tmp_path / "jitter.json").read_text())["rows"]
    assert [r["seed"] for r in rows] == [0, 1, 2] and all(r["tokens_scored"] == rows[0]["tokens_scored"] for r in rows)
    assert len({r["perplexity"] for r in rows}) > 1  # the perturbation reaches the scores
    assert "| saved |" in run("score_jitter.py", *common, "--seeds", "1", "--out", str(tmp_path / "jitter.json"),
                              cwd=tmp_path)  # its own output is replaced; an input never is
    for bad, message in ((("--eps", "0.5"), "--eps: must be within"), (("--seeds", "0"), "--seeds: must be within"),
                         (("--context", "0"), "argument --context: must be a positive integer; got '0'")):
        code, said = run_in_process("score_jitter.py", *common, *bad, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
        assert code == 2 and message in said
    code, said = run_in_process("score_jitter.py", *common[:1], str(tmp_path / "nothing"), *common[2:], cwd=tmp_path,
                                monkeypatch=monkeypatch, capsys=capsys)
    assert code == 1 and "score_jitter:" in said
    code, said = run_in_process("score_jitter.py", *common, "--out", str(lambada), cwd=tmp_path, monkeypatch=monkeypatch,
                                capsys=capsys)
    assert code == 1 and "is also an input" in said and "garden" in lambada.read_text()


def test_repeated_ngrams_counts_each_run_that_occurred_earlier():
    from gaincell.adapt.generate import repeated_ngrams
    from gaincell.errors import ConfigError

    loop = [1, 2, 3, 1, 2, 3, 1]
    assert repeated_ngrams(loop, 2) == 3 and repeated_ngrams(loop, 3) == 2 and repeated_ngrams(loop, 4) == 1
    assert repeated_ngrams([5, 6, 7, 8, 5, 6], 4) == 0 and repeated_ngrams([1, 2, 3], 4) == 0 and repeated_ngrams([], 1) == 0
    assert repeated_ngrams([9] * 10, 4) == 6  # a one-token loop: every run after the first
    with pytest.raises(ConfigError, match="--ngram"):
        repeated_ngrams(loop, 0)


def test_repetition_benchmark_counts_both_models_repeats_per_prompt(tmp_path, llama_folder, monkeypatch, capsys):
    """The command behind RESULTS.md's repetition rows, on a tiny adapted Llama and a prompts file: a row per
    prompt with both models' repeated phrases, totals that add the rows, the rows written; bad arguments refused."""
    from gaincell.adapt.models import load_pretrained, save_adapted, swap_attention
    from gaincell.resources import data_path

    model, tokenizer, _ = load_pretrained(llama_folder)
    paper = data_path("paper_reference.h5")
    adapted = save_adapted(swap_attention(model, paper), tokenizer, tmp_path / "adapted", paper,
                           {"base_model": str(llama_folder)})
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("It is a truth\n\n  She walked to the | garden  \n")
    common = ("--model", str(adapted), "--prompts", str(prompts), "--new-tokens", "12", "--ngram", "2")
    out = run("repetition.py", *common, "--out", str(tmp_path / "repeats.json"), cwd=tmp_path)
    record = json.loads((tmp_path / "repeats.json").read_text())
    rows = record["rows"]
    assert [r["prompt"] for r in rows] == ["It is a truth", "She walked to the | garden"]
    assert record["ngram"] == 2 and record["labels"]["softmax"] == f"softmax, base model {llama_folder}"
    softmax, gaincell = (sum(r[f"{side}_repeats"] for r in rows) for side in ("softmax", "gaincell"))
    assert f"| all 2 prompts | {softmax} | {gaincell} | |" in out and "| She walked to the \\| garden |" in out
    assert all(0 <= r["gaincell_repeats"] <= 10 and r["gaincell"] for r in rows)
    for bad, message in ((("--ngram", "0"), "argument --ngram: must be a positive integer"),
                         (("--new-tokens", "5000"), "--new-tokens: must be at most 1024")):
        code, said = run_in_process("repetition.py", *common, *bad, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
        assert code == 2 and message in said
    (tmp_path / "blank.txt").write_text("\n  \n")
    (tmp_path / "binary.txt").write_bytes(b"It is\0a truth")
    for given, message in (("blank.txt", "holds no prompt"), ("binary.txt", "is a binary file")):
        code, said = run_in_process("repetition.py", *common[:2], "--prompts", str(tmp_path / given), cwd=tmp_path,
                                    monkeypatch=monkeypatch, capsys=capsys)
        assert code == 1 and said.startswith("repetition: --prompts") and message in said
    code, said = run_in_process("repetition.py", *common, "--out", str(prompts), cwd=tmp_path, monkeypatch=monkeypatch,
                                capsys=capsys)
    assert code == 1 and "is also an input" in said and "garden" in prompts.read_text()
