"""The scripts and benchmarks refuse a bad argument with one clear error line naming it (argparse's `error:` or the
project's error), never a traceback, and before any expensive work; an output is checked up front and never
replaces a file of another kind; `--help` prints help and writes nothing; and the commands quoted in
benchmarks/RESULTS.md still parse."""
import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VICTIM = "print('a file of another kind: must stay as it is')\n"


def run(script: str, *args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, check=False)


def refused(script: str, *args, names: str, cwd: Path, status: int | None = None) -> str:
    """Run `script ARGS`, expect a refusal naming `names` on stderr's last line, without a traceback; its stderr."""
    done = run(script, *args, cwd=cwd)
    assert done.returncode != 0, done.stdout[-2000:]
    if status is not None:
        assert done.returncode == status, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert "error" in last and names in last, done.stderr[-2000:]
    return done.stderr


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def victim(tmp_path):
    """A .py file an output option must not replace."""
    path = tmp_path / "victim.py"
    path.write_text(VICTIM)
    return path


@pytest.fixture
def garbage(tmp_path):
    path = tmp_path / "garbage.h5"
    path.write_bytes(b"\x00\xffnot what any script reads\xfe" * 8)
    return path


# --- scripts/make_golden.py ---------------------------------------------------------------------------------------

def test_make_golden_help_prints_help_and_leaves_the_golden_file(tmp_path):
    golden = ROOT / "tests" / "golden" / "cell_golden.h5"
    before = digest(golden), golden.stat().st_mtime_ns
    done = run("scripts/make_golden.py", "--help", cwd=tmp_path)
    assert done.returncode == 0 and "usage:" in done.stdout and "--out" in done.stdout
    refused("scripts/make_golden.py", "--bogus", names="--bogus", cwd=tmp_path, status=2)
    assert (digest(golden), golden.stat().st_mtime_ns) == before


def test_make_golden_refuses_an_out_of_another_kind_or_a_folder(tmp_path, victim):
    refused("scripts/make_golden.py", "--out", victim, names="--out", cwd=tmp_path, status=2)
    assert victim.read_text() == VICTIM
    refused("scripts/make_golden.py", "--out", tmp_path, names="--out", cwd=tmp_path, status=2)


@pytest.mark.slow
@pytest.mark.spice
def test_make_golden_writes_a_whole_characterization_file(tmp_path):
    from gaincell.outputs import SWEEP_FILE, file_kind

    out = tmp_path / "golden.h5"
    for _ in range(2):  # a fresh file, then over the one it wrote
        done = run("scripts/make_golden.py", "--out", out, cwd=tmp_path, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert file_kind(out) == SWEEP_FILE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["golden.h5"]  # no temporary file left beside it


# --- scripts/make_docs.py -----------------------------------------------------------------------------------------

def test_make_docs_help_writes_nothing_and_unknown_options_are_refused(tmp_path):
    pages = [ROOT / "docs" / "cli.md", ROOT / "docs" / "design-files.md"]
    before = [(digest(p), p.stat().st_mtime_ns) for p in pages]
    done = run("scripts/make_docs.py", "--help", cwd=tmp_path)
    assert done.returncode == 0 and "usage:" in done.stdout and "--check" in done.stdout
    refused("scripts/make_docs.py", "--chek", names="--chek", cwd=tmp_path, status=2)
    assert [(digest(p), p.stat().st_mtime_ns) for p in pages] == before


def test_make_docs_writes_its_pages_whole(tmp_path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("make_docs", ROOT / "scripts" / "make_docs.py")
    docs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(docs)
    monkeypatch.setattr(docs, "ROOT", tmp_path)
    (tmp_path / "docs").mkdir()
    assert docs.main(["--check"]) == 1 and not any((tmp_path / "docs").iterdir())  # --check writes nothing
    assert docs.main([]) == 0
    for relative, text in docs.pages().items():
        assert (tmp_path / relative).read_text() == text
    assert sorted(p.name for p in (tmp_path / "docs").iterdir()) == ["cli.md", "design-files.md"]
    assert docs.main(["--check"]) == 0
    assert "up to date" in capsys.readouterr().out


# --- scripts/make_reference_surrogate.py --------------------------------------------------------------------------

def test_make_reference_surrogate_help_and_unreadable_inputs(tmp_path, garbage):
    import numpy as np

    target = ROOT / "data" / "paper_reference.h5"
    before = digest(target), target.stat().st_mtime_ns
    done = run("scripts/make_reference_surrogate.py", "--help", cwd=tmp_path)
    assert done.returncode == 0 and "usage:" in done.stdout
    error = refused("scripts/make_reference_surrogate.py", garbage, names=str(garbage), cwd=tmp_path, status=2)
    assert "IV_FILE" in error and "not an .npz" in error
    refused("scripts/make_reference_surrogate.py", tmp_path / "absent.npz", names="IV_FILE", cwd=tmp_path, status=2)
    other = tmp_path / "other.npz"
    np.savez(other, a=np.zeros(3))
    error = refused("scripts/make_reference_surrogate.py", other, names=str(other), cwd=tmp_path, status=2)
    assert "has no array Vstore, Vin, Iout" in error
    truncated = tmp_path / "truncated.npz"
    np.savez(truncated, Vstore=np.zeros(50), Vin=np.zeros(51), Iout=np.zeros((50, 51)))
    truncated.write_bytes(truncated.read_bytes()[:300])
    refused("scripts/make_reference_surrogate.py", truncated, names=str(truncated), cwd=tmp_path, status=2)
    assert (digest(target), target.stat().st_mtime_ns) == before


# --- scripts/ship_model.py ----------------------------------------------------------------------------------------

@pytest.fixture
def adapted_folder(tmp_path):
    """A folder that passes ship_model's up-front checks (a manifest, the packaged surrogate), with a tiny Llama's
    config and a truncated model.safetensors."""
    import shutil

    import torch
    from safetensors.torch import save_file

    from gaincell.resources import data_path

    folder = tmp_path / "adapted"
    folder.mkdir()
    (folder / "adapted.json").write_text(json.dumps({"layer": {}, "files": {}, "base_model": "smollm2"}))
    shutil.copy(data_path("paper_reference.h5"), folder / "surrogate.h5")
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
        "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2, "vocab_size": 300,
        "max_position_embeddings": 512}))
    save_file({"model.embed_tokens.weight": torch.zeros(300, 64)}, str(folder / "model.safetensors"))
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    return folder


def ship(folder, *extra, tmp_path, out=None):
    return ["--from", folder, "--command", "gaincell adapt ...", "--train-text", "TEXT",
            "--out", out or tmp_path / "ship", *extra]


@pytest.mark.parametrize("case, names", [
    ("no folder", "--from"), ("surrogate", "--surrogate"), ("binary scores", "--scores"), ("list scores", "--scores"),
    ("object scores", "--scores"), ("name", "--name"), ("max rank", "--max-rank"), ("out file", "--out")])
def test_ship_model_refuses_bad_arguments_before_reading_the_model(case, names, adapted_folder, tmp_path, victim):
    scores = tmp_path / "scores.json"
    folder, extra, out = adapted_folder, [], None
    if case == "no folder":
        folder = tmp_path / "absent"
    elif case == "surrogate":
        extra = ["--surrogate", "bogus"]
    elif case.endswith("scores"):
        scores.write_bytes(b"\x00\xff\xfe\x80 binary" if case == "binary scores" else
                           b"[1, 2]" if case == "list scores" else b'{"perplexity": 1}')
        extra = ["--scores", scores]
    elif case == "name":
        extra = ["--name", "../../escaped"]
    elif case == "max rank":
        extra = ["--max-rank", "-1"]
    else:
        out = victim
    error = refused("scripts/ship_model.py", *ship(folder, *extra, tmp_path=tmp_path, out=out), names=names,
                    cwd=tmp_path, status=2)
    if case == "surrogate":
        assert "'paper'" in error
    assert victim.read_text() == VICTIM
    assert not (tmp_path / "ship").exists() and not list(tmp_path.parent.glob("escaped*"))


@pytest.mark.slow
def test_ship_model_reports_an_unreadable_model_folder_as_an_error(adapted_folder, tmp_path):
    error = refused("scripts/ship_model.py", *ship(adapted_folder, tmp_path=tmp_path), names=str(adapted_folder),
                    cwd=tmp_path, status=1)
    assert "ship_model.py: error:" in error
    assert not list((tmp_path / "ship").iterdir())


# --- benchmarks/gpu_attention_baseline.py -------------------------------------------------------------------------

@pytest.mark.slow
def test_gpu_baseline_checks_its_out_before_measuring_and_replaces_only_a_baseline(tmp_path, victim):
    script = "benchmarks/gpu_attention_baseline.py"
    common = ("--device", "cpu", "--tokens", "4", "--passes", "1", "--warmup", "0")
    refused(script, *common, "--out", victim, names="--out", cwd=tmp_path, status=2)
    assert victim.read_text() == VICTIM
    refused(script, *common, "--out", tmp_path, names="--out", cwd=tmp_path, status=2)
    out = tmp_path / "cpu.json"
    for _ in range(2):  # a fresh file, then over the baseline it wrote
        done = run(script, *common, "--out", out, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(out.read_text())["file_kind"] == "gaincell gpu attention baseline"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cpu.json", "victim.py"]


# --- the other benchmarks and scripts -----------------------------------------------------------------------------

@pytest.mark.parametrize("script, args, names", [
    ("benchmarks/aged_tile.py", ["--tokens", "100"], "--tokens"),
    ("benchmarks/aged_tile.py", ["--random", "0"], "--random"),
    ("benchmarks/bench_array.py", ["--size", "-1"], "--size"),
    ("benchmarks/bench_array.py", ["--naive-size", "many"], "--naive-size"),
    ("benchmarks/bench_packed_sweep.py", ["--points-per-axis", "-5"], "--points-per-axis"),
    ("benchmarks/monte_carlo.py", ["--cells", "-1"], "--cells"),
    ("benchmarks/monte_carlo.py", ["--cells", "1"], "--cells"),
    ("benchmarks/monte_carlo.py", ["--design", "bogus"], "--design"),
    ("benchmarks/bench_decode.py", ["--new-tokens", "bogus"], "--new-tokens"),
    ("benchmarks/bench_decode.py", ["--new-tokens", "64,,128"], "--new-tokens"),
    ("benchmarks/bench_decode.py", ["--model", "/nonexistent-model"], "--model"),
    ("benchmarks/bench_decode.py", ["--model", "smollm2", "--surrogate", "bogus"], "--surrogate"),
    ("benchmarks/bench_attention.py", ["--batch", "-1"], "--batch"),
    ("benchmarks/bench_attention.py", ["--window", "100"], "--window"),
    ("benchmarks/bench_attention.py", ["--aged-token-period-s", "-1"], "--aged-token-period-s"),
], ids=lambda value: " ".join(value) if isinstance(value, list) else None)
def test_benchmarks_refuse_bad_arguments(script, args, names, tmp_path, monkeypatch, capsys):
    """In this process (each refusal comes before any work, so no interpreter start per case): `main()` exits
    with an error line naming the argument, and nothing else escapes it."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    monkeypatch.chdir(tmp_path)
    spec = importlib.util.spec_from_file_location(Path(script).stem, ROOT / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", [script, *args])
    with pytest.raises(SystemExit) as done:
        module.main()
    assert done.value.code not in (0, None)
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "error" in last and names in last, last
    assert not any(tmp_path.iterdir())


def test_bench_attention_names_the_allowed_methods(tmp_path):
    error = refused("benchmarks/bench_attention.py", "--methods", "tiled,bogus", names="--methods", cwd=tmp_path,
                    status=2)
    assert "'bogus'" in error and "tiled, torch, naive, sdpa" in error


@pytest.mark.slow
def test_monte_carlo_out_must_be_a_characterization_file(tmp_path, victim):
    refused("benchmarks/monte_carlo.py", "--out", victim, names="--out", cwd=tmp_path, status=2)
    assert victim.read_text() == VICTIM
    refused("benchmarks/monte_carlo.py", "--out", tmp_path, names="--out", cwd=tmp_path, status=2)


def test_get_training_text_refuses_a_deb_it_cannot_unpack(tmp_path, garbage):
    out = tmp_path / "text.txt"
    refused("scripts/get_training_text.py", "--deb", tmp_path / "absent.deb", "--out", out, names="--deb",
            cwd=tmp_path, status=2)
    refused("scripts/get_training_text.py", "--out", tmp_path, "--deb", garbage, names="--out", cwd=tmp_path, status=2)
    import shutil

    if shutil.which("dpkg-deb"):
        refused("scripts/get_training_text.py", "--deb", garbage, "--out", out, names=str(garbage), cwd=tmp_path,
                status=1)
    assert not out.exists()


# --- the commands of benchmarks/RESULTS.md still parse ------------------------------------------------------------

PARSE_ONLY = """
import argparse, runpy, sys
from pathlib import Path

class Parsed(Exception):
    pass

def parse_args(self, args=None, namespace=None):
    parse(self, args, namespace)
    raise Parsed

parse, argparse.ArgumentParser.parse_args = argparse.ArgumentParser.parse_args, parse_args
for line in sys.stdin.read().splitlines():
    script, *sys.argv[1:] = line.split("\\t")
    sys.argv[0] = script
    sys.path.insert(0, str(Path(script).parent))
    try:
        runpy.run_path(script, run_name="__main__")
        print("NOT PARSED", line)
    except Parsed:
        print("parsed", line)
    except SystemExit as stop:
        print("REFUSED", line, stop.code)
"""

RESULTS_COMMANDS = [  # as benchmarks/RESULTS.md (and the scripts' docstrings) quote them
    "benchmarks/bench_packed_sweep.py", "benchmarks/bench_packed_sweep.py --points-per-axis 40",
    "benchmarks/bench_attention.py", "benchmarks/bench_attention.py --methods tiled,sdpa",
    "benchmarks/bench_attention.py --methods tiled,torch,sdpa",
    "benchmarks/bench_attention.py --batch 1 --tokens 4096 --methods tiled,torch,sdpa",
    "benchmarks/bench_attention.py --aged-token-period-s 5.85e-6",
    "benchmarks/bench_decode.py", "benchmarks/bench_decode.py --new-tokens 256,1000",
    "benchmarks/bench_decode.py --new-tokens 256 --threads 1", "benchmarks/bench_decode.py --new-tokens 64 --check-steps 16",
    "benchmarks/bench_decode.py --model smollm2 --surrogate paper",
    "benchmarks/bench_array.py --naive-size 24 --size 64", "benchmarks/bench_array.py --naive-size 8 --size 64 --wires",
    "benchmarks/aged_tile.py --random 3", "benchmarks/aged_tile.py --random 2 --tokens 64 --dims 64 --workers 2",
    "benchmarks/monte_carlo.py --cells 200 --workers 2 --out char.h5",
    "benchmarks/monte_carlo.py --design sky130 --cells 200 --workers 2 --out sky.h5",
    "benchmarks/gpu_attention_baseline.py --device cuda --out gpu.json",
    "benchmarks/gpu_attention_baseline.py --device cpu --out cpu-baseline.json",
    "scripts/get_training_text.py --exclude prideprejudice --out runs/text/austen-no-pp.txt",
    ("scripts/ship_model.py --from runs/d150 --name smollm2-gaincell --surrogate paper --command ... --train-text T "
     "--scores runs/d150-eval.json"),
    "scripts/make_docs.py --check", "scripts/make_golden.py", "scripts/make_reference_surrogate.py",
]


def test_the_commands_quoted_in_results_still_parse(tmp_path):
    lines = ["\t".join([str(ROOT / command.split()[0]), *command.split()[1:]]) for command in RESULTS_COMMANDS]
    done = subprocess.run([sys.executable, "-c", PARSE_ONLY], input="\n".join(lines), capture_output=True, text=True,
                          cwd=tmp_path, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    parsed = [line for line in done.stdout.splitlines() if line.startswith("parsed ")]
    assert len(parsed) == len(RESULTS_COMMANDS), done.stdout + done.stderr[-3000:]
