"""HDF5 files that point into other files (external raw storage, external and soft links, virtual datasets) are
refused by every reader, by name, before any data is read: nothing of the other file reaches the output. So is
a file declaring a dataset larger than the machine's memory (which would be read as fill values)."""
import shutil

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from gaincell.app.cli import main
from gaincell.errors import InputFileError, SurrogateError
from gaincell.hdf5_trust import outside_reference, oversized_dataset
from gaincell.resources import data_path
from gaincell.store import read_sweep
from gaincell.surrogate.file import Surrogate

SECRET = b"SECRET-LINE-OF-ANOTHER-FILE\n" * 64
def _other_files(folder):
    secret = folder / "secret.bin"
    secret.write_bytes(SECRET)
    other = folder / "other.h5"
    with h5py.File(other, "w") as f:
        f["status"] = np.ones(4, dtype="i1")
        f["values"] = np.full(8, 7.0)
    return secret, other


def _replace(f, name, other, secret, kind):
    """Put an indirection of `kind` where the dataset `name` was."""
    old = f[name]
    shape, dtype = old.shape, old.dtype
    del f[name]
    source = "status" if dtype.kind in "iu" else "values"
    if kind == "external storage":
        f.create_dataset(name, shape=shape, dtype=dtype, external=[(str(secret), 0, len(SECRET))])
    elif kind == "external link":
        f[name] = h5py.ExternalLink(str(other), source)
    elif kind == "soft link":
        f[name + "_real"] = np.zeros(shape, dtype)
        f[name] = h5py.SoftLink("/" + name + "_real")
    else:
        with h5py.File(other, "r") as o:
            n = o[source].shape[0]
        layout = h5py.VirtualLayout(shape=(n,), dtype=dtype)
        layout[:] = h5py.VirtualSource(str(other), source, shape=(n,))
        f.create_virtual_dataset(name, layout)


KINDS = {"external storage": "has external raw storage", "external link": "is an external link",
         "soft link": "is a soft link", "virtual dataset": "is a virtual dataset"}


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def refused(result, *phrases):
    assert result.exit_code == 1, result.output
    assert "error:" in result.output and "Traceback" not in result.output, result.output
    assert "SECRET" not in result.output
    for phrase in phrases:
        assert phrase in result.output, result.output


@pytest.fixture(params=KINDS)
def linked_sweep(request, ac_file, tmp_path):
    secret, other = _other_files(tmp_path)
    path = tmp_path / "linked.h5"
    shutil.copy(ac_file, path)
    with h5py.File(path, "a") as f:
        _replace(f, "ac/status", other, secret, request.param)
    return path, request.param


@pytest.fixture(params=KINDS)
def linked_surrogate(request, tmp_path):
    secret, other = _other_files(tmp_path)
    path = tmp_path / "linked-surrogate.h5"
    shutil.copy(data_path("paper_reference.h5"), path)
    with h5py.File(path, "a") as f:
        _replace(f, "multiply/values", other, secret, request.param)
    return path, request.param


def test_each_kind_of_indirection_is_found_and_named(linked_sweep):
    path, kind = linked_sweep
    with h5py.File(path, "r") as f:
        assert KINDS[kind] in outside_reference(f) and "/ac/status" in outside_reference(f)
    with pytest.raises(InputFileError, match=KINDS[kind]):
        read_sweep(path, "ac")


def test_a_file_gaincell_wrote_holds_no_indirection(ac_file):
    for path in (ac_file, data_path("paper_reference.h5")):
        with h5py.File(path, "r") as f:
            assert outside_reference(f) is None


@pytest.mark.parametrize("verb", ["inspect", "export", "plot", "fit"])
def test_every_sweep_reader_refuses_a_linked_file(linked_sweep, tmp_path, verb):
    path, kind = linked_sweep
    out = tmp_path / "out"
    args = {"inspect": [], "export": ["--sweep", "ac", "--format", "csv", "--out", f"{out}.csv"],
            "plot": ["--sweep", "ac", "--signal", "v(out)", "--out", f"{out}.png"],
            "fit": ["--out", f"{out}.h5"]}[verb]
    refused(invoke(verb, path, *args), str(path), "/ac/status", KINDS[kind])
    assert not list(tmp_path.glob("out*"))


def test_every_surrogate_reader_refuses_a_linked_file(linked_surrogate, tmp_path, gpt2_folder):
    path, kind = linked_surrogate
    text = tmp_path / "text.txt"
    text.write_text("Some text to score.\n")
    with pytest.raises(SurrogateError, match=KINDS[kind]):
        Surrogate.load(path)
    for args in (["inspect", path], ["attention", path, "--out", tmp_path / "layer"],
                 ["energy", "--surrogate", path, "--out", tmp_path / "energy"],
                 ["eval", "--model", gpt2_folder, "--surrogate", path, "--data", text]):
        refused(invoke(*args), str(path), "/multiply/values", KINDS[kind])
    assert not (tmp_path / "layer").exists() and not (tmp_path / "energy").exists()


def _oversized(path, name):
    """Replace dataset `name` with one declaring 2**47 values (1 PiB of float64) in a few bytes of file."""
    with h5py.File(path, "a") as f:
        del f[name]
        f.create_dataset(name, shape=(2**47,), dtype="f8", chunks=(2**20,), compression="gzip")


def test_a_dataset_declared_larger_than_memory_is_refused_by_name(ac_file, tmp_path):
    sweep, surrogate = tmp_path / "sweep.h5", tmp_path / "surrogate.h5"
    shutil.copy(ac_file, sweep)
    shutil.copy(data_path("paper_reference.h5"), surrogate)
    _oversized(sweep, "ac/status")
    _oversized(surrogate, "multiply/values")
    assert sweep.stat().st_size < 10**6
    for args, dataset in ((["inspect", sweep], "/ac/status"), (["fit", sweep, "--out", tmp_path / "s.h5"], "/ac/status"),
                          (["inspect", surrogate], "/multiply/values"),
                          (["attention", surrogate, "--out", tmp_path / "layer"], "/multiply/values")):
        refused(invoke(*args), str(args[1]), dataset, "1.05e+06 GiB", "more than this machine's memory")
    assert not (tmp_path / "s.h5").exists() and not (tmp_path / "layer").exists()


def test_an_empty_dataset_is_not_taken_for_an_oversized_one(tmp_path):
    with h5py.File(tmp_path / "e.h5", "w") as f:
        f["empty"] = h5py.Empty("f8")
        f["small"] = np.zeros(4)
        assert oversized_dataset(f, limit=1 << 20) is None and "/small" in oversized_dataset(f, limit=8)
