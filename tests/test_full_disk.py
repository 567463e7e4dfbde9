"""A full disk is one clear error in every writer: exit 1, 'no space left on <folder>', the previous results intact,
no temporary file left, and never an h5py traceback or a crash while a half-written file is closed. The disk is
a real tmpfs of a few hundred kB (mounting one needs root, as CI has; elsewhere these tests skip)."""
import os
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from gaincell.app.cli import main
from gaincell.resources import data_path
from lm_helpers import TEXT


@pytest.fixture
def small_disk(tmp_path):
    """A factory of tmpfs mounts of a given size under tmp_path, unmounted afterwards."""
    mounts = []

    def mount(size: str):
        folder = tmp_path / f"disk{len(mounts)}"
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                              capture_output=True, text=True)
        if done.returncode:  # CI runs as root: there a failed mount is a failure, not a skip
            why = f"cannot mount a tmpfs here ({done.stderr.strip()}); needs root"
            pytest.fail(why) if os.environ.get("CI") == "true" else pytest.skip(why)
        mounts.append(folder)
        return folder

    yield mount
    for folder in mounts:
        subprocess.run(["umount", str(folder)], check=False)


def one_clear_error(code, text, folder):
    assert code == 1, text[-2000:]
    errors = [line for line in text.splitlines() if "error:" in line]
    assert len(errors) == 1 and "no space left on" in errors[0] and str(folder) in errors[0], text[-2000:]
    assert "Traceback" not in text and "Exception ignored" not in text, text[-2000:]
    assert not [p for p in folder.rglob("*") if ".tmp" in p.name or p.name.endswith(".partial")]


@pytest.mark.slow
def test_characterize_onto_a_full_disk_is_one_error_and_resumes_elsewhere(small_disk, tmp_path):
    disk = small_disk("2m")
    done = subprocess.run([sys.executable, "-m", "gaincell.app.cli", "characterize", "--out", str(disk / "c.h5"),
                           "--workers", "2"], capture_output=True, text=True, timeout=600)
    one_clear_error(done.returncode, done.stdout + done.stderr, disk)


def test_fit_onto_a_full_disk_keeps_the_previous_surrogate(small_disk, monkeypatch):
    disk = small_disk("200k")
    previous = disk / "s.h5"
    shutil.copy(data_path("paper_reference.h5"), previous)
    before = previous.read_bytes()
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    (disk / "filler").write_bytes(b"\0" * (free - 8192))  # a few kB left: less than a surrogate file
    from gaincell.surrogate.file import Surrogate
    from gaincell.errors import OutputError

    with pytest.raises(OutputError, match=f"no space left on {disk}"):
        Surrogate.load(data_path("paper_reference.h5")).save(previous)
    assert previous.read_bytes() == before
    assert sorted(p.name for p in disk.iterdir()) == ["filler", "s.h5"]


@pytest.mark.slow
def test_adapt_onto_a_full_disk_is_one_error(small_disk, tmp_path, gpt2_folder):
    disk = small_disk("1m")
    text = tmp_path / "train.txt"
    text.write_text(TEXT)
    result = CliRunner().invoke(main, ["adapt", "--model", str(gpt2_folder), "--surrogate", "paper", "--out",
                                       str(disk / "adapted"), "--train-text", str(text), "--steps", "2", "--batch",
                                       "1", "--seq", "16"])
    one_clear_error(result.exit_code, result.output, disk)
    assert not (disk / "adapted" / ".staging").exists()
