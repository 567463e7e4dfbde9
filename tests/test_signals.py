"""Ctrl-C and SIGTERM behave alike in every verb: one line, exit 130, no temporary file left, no traceback from the
process or its simulator workers, and a re-run resumes. The signal goes to the whole process group, as a
terminal's Ctrl-C and `timeout` send it."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from gaincell.app.cli import main
from lm_helpers import TEXT

STOPPED = re.compile(r"stopped by SIG(INT|TERM): stopped; temporary files were removed")


def stop_when(args, marker: str, number: int, cwd, timeout_s: float = 180):
    """Run `gaincell ARGS` in its own process group, send `number` to the group once `marker` is printed;
    (exit status, everything printed)."""
    log = cwd / "console.log"
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "gaincell.app.cli", *map(str, args)], stdout=out,
                                   stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while marker not in log.read_text(errors="replace"):
            assert process.poll() is None, f"finished before {marker!r}:\n{log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"no {marker!r} within {timeout_s} s"
            time.sleep(0.05)
        os.killpg(process.pid, number)
        process.wait(timeout=120)
    return process.returncode, log.read_text(errors="replace")


def assert_stopped_cleanly(code, text, folder):
    assert code == 130, text[-3000:] + "\n".join(re.findall(r"Exception ignored.{0,2000}", text, re.S))
    assert STOPPED.search(text), text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    leftovers = [p.name for p in folder.rglob("*") if re.search(r"\.tmp|\.partial|\.lock$", p.name)]
    assert not leftovers, leftovers


@pytest.mark.slow
@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_characterize_stops_cleanly_and_resumes(tmp_path, number):
    args = ["characterize", "--out", "c.h5", "--mc", "1000", "--workers", "2"]
    code, text = stop_when(args, "sweep mc_read", number, tmp_path)
    assert_stopped_cleanly(code, text, tmp_path)
    # the re-run simulates none of the finished sweeps again; stop it too once that shows
    code, text = stop_when(args, "read: 768/768 ok, 0 failed (0 simulated now", signal.SIGTERM, tmp_path)
    assert "write: 8/8 ok, 0 failed (0 simulated now" in text
    assert_stopped_cleanly(code, text, tmp_path)


@pytest.mark.slow
def test_eval_and_generate_stop_cleanly(tmp_path, gpt2_folder):
    text_file = tmp_path / "text.txt"
    text_file.write_text(TEXT * 20)
    code, text = stop_when(["eval", "--model", gpt2_folder, "--surrogate", "paper", "--data", text_file,
                            "--context", "256", "--stride", "16", "--out", "e.json"], "perplexity:", signal.SIGTERM,
                           tmp_path)
    assert_stopped_cleanly(code, text, tmp_path)
    assert not (tmp_path / "e.json").exists()
    code, text = stop_when(["generate", "--model", gpt2_folder, "--surrogate", "paper", "--prompt", "It is a truth",
                            "--max-new-tokens", "400", "--json", "g.json"], "Loading weights: 100%", signal.SIGINT,
                           tmp_path)
    assert_stopped_cleanly(code, text, tmp_path)
    assert not (tmp_path / "g.json").exists()


@pytest.mark.slow
def test_a_signal_while_the_command_starts_stops_it_cleanly(tmp_path, gpt2_folder):
    """SIGTERM or Ctrl-C at any moment of the start-up (modules loading, numpy and torch initialising, the model
    loading) through the console script's entry point: the one stop line and 130, never a traceback or a
    half-imported library reported as a bug."""
    text_file = tmp_path / "text.txt"
    text_file.write_text(TEXT * 20)
    args = ["eval", "--model", gpt2_folder, "--surrogate", "paper", "--data", text_file, "--context", "256"]
    for delay, number in ((0.05, signal.SIGINT), (0.15, signal.SIGTERM), (0.3, signal.SIGTERM),
                          (0.45, signal.SIGINT), (0.7, signal.SIGTERM), (1.0, signal.SIGTERM), (1.5, signal.SIGINT)):
        process = subprocess.Popen([sys.executable, "-c", "from gaincell.app.console import run; run()",
                                    *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path,
                                   text=True)
        time.sleep(delay)
        process.send_signal(number)
        text, _ = process.communicate(timeout=120)
        assert_stopped_cleanly(process.returncode, text, tmp_path)
        assert "internal error" not in text, text


def test_fit_stopped_while_writing_leaves_nothing(tmp_path, monkeypatch):
    """SIGTERM arriving while the surrogate file is being written (the process sends it to itself there)."""
    from gaincell.fitting import fit as fitting
    from gaincell.resources import data_path
    from gaincell.surrogate import file as surrogate_file

    paper = surrogate_file.Surrogate.load(data_path("paper_reference.h5"))
    characterization = tmp_path / "c.h5"
    characterization.write_bytes(b"")  # never read: the fit is replaced by the paper's surrogate
    monkeypatch.setattr(fitting, "fit_characterization", lambda *args, **kwargs: (paper, {}))
    monkeypatch.setattr("gaincell.fitting.report.fit_figure", lambda *args: None)  # no fit outcomes to draw
    monkeypatch.setattr("gaincell.plotting.save_png_and_html", lambda *args: None)
    real_record = surrogate_file.design_record

    def record_then_stop(*args):
        os.kill(os.getpid(), signal.SIGTERM)
        return real_record(*args)

    monkeypatch.setattr(surrogate_file, "design_record", record_then_stop)
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        result = CliRunner().invoke(main, ["fit", str(characterization), "--out", str(tmp_path / "s.h5")])
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
    assert result.exit_code == 130, result.output
    assert STOPPED.search(result.output), result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.h5", "s-fit.txt"]  # the report was finished before
