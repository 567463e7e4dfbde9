"""The one progress interface: plain lines in a log, nothing when disabled."""
from gaincell import progress


def test_a_bar_in_a_log_writes_plain_lines_with_count_rate_and_values(capsys, monkeypatch):
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)  # a line at every update
    bar = progress.bar(total=3, desc="distill", unit="step", initial=1)  # stderr is not a terminal under pytest
    assert isinstance(bar, progress.LogLines)
    bar.set_postfix(loss="0.81")
    bar.update(1)
    bar.update(1)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "distill: 1/3 step"  # the work has started (resumed at step 1)
    assert lines[1].startswith("distill: 2/3 step, ") and lines[1].endswith("loss=0.81")
    assert lines[2].startswith("distill: 3/3 step") and len(lines) == 4  # the closing line
    assert "\r" not in "".join(lines)


def test_a_bar_over_an_iterable_yields_every_item_and_a_final_line(capsys):
    assert list(progress.bar(range(4), desc="lambada", unit="item")) == [0, 1, 2, 3]
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "lambada: 0/4 item" and lines[1].startswith("lambada: 4/4 item") and len(lines) == 2


def test_a_disabled_bar_says_nothing(capsys, monkeypatch):
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)
    assert list(progress.bar(range(3), desc="quiet", enabled=False)) == [0, 1, 2]
    assert capsys.readouterr().err == ""
