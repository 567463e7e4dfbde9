"""Design-space exploration: every combination of the design-field values given, each point taken through the
stages (characterize with the periphery, fit, validate against fresh SPICE, retention at 85 C, latency and energy
per token, and optionally the shipped gain-cell SmolLM2-135M re-targeted to the point's cell and scored), run as
Dask tasks, gathered into one xarray-readable dataset (exploration.nc) and a report with the Pareto front.

Each point lives in OUT/points/NAME/: its design file (design.yaml, which `--design` of every command takes), its
artifacts, and result.json, written last and atomically. A re-run skips the points with a result and resumes the
others (their characterization resumes its sweeps); a point that fails (a simulation error, a fit outside the
tolerance) records the reason, and the exploration goes on.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, GaincellError
from ..fields import shown
from ..outputs import atomic_write_text, output_lock
from .. import progress

PLAN = "exploration.json"  # the plan (base design, varied fields) a re-run must match
DATASET = "exploration.nc"
SAMPLINGS = ("grid", "one-at-a-time")  # every combination, or the base (every field's first value) and one change each
# Small explorations on the presets (`--preset`): one field changed at a time from the design's own values
PRESETS = {
    "cmos-generic-small": ("cmos-generic", [("cs_f", [3e-15, 6e-15]), ("write.w_m", [100e-9, 200e-9]),
                                            ("dac_levels", [8, 4]), ("c2p.counter_levels", [16, 8])]),
    "sky130-small": ("sky130", [("cs_f", [10e-15, 20e-15]), ("write.w_m", [0.42e-6, 0.84e-6]),
                                ("dac_levels", [8, 4]), ("c2p.counter_levels", [16, 8])]),
}
SPICE_SUFFIXES = {"t": 1e12, "g": 1e9, "meg": 1e6, "k": 1e3, "m": 1e-3, "u": 1e-6, "n": 1e-9, "p": 1e-12,
                  "f": 1e-15, "a": 1e-18}


@dataclass(frozen=True)
class Point:
    """One design point: the varied fields' values, its folder name and its design-file table."""

    values: tuple[tuple[str, object], ...]
    table: dict

    @property
    def name(self) -> str:
        text = "_".join(f"{field}-{value:g}" if isinstance(value, float) else f"{field}-{value}"
                        for field, value in self.values)
        return re.sub(r"[^A-Za-z0-9._+-]", "-", text)[:120]


def parse_value(text: str):
    """A --vary value: an integer, a number with an optional SPICE suffix (2f, 1.5meg) or a word."""
    text = text.strip()
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    match = re.fullmatch(r"([+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)(meg|[tgkmunpfa])?", text.lower())
    if match:
        return float(match.group(1)) * SPICE_SUFFIXES.get(match.group(2) or "", 1.0)
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", text):
        return text
    raise ConfigError("--vary", f"{shown(text)} is not a number (with an optional SPICE suffix: 2f, 10n) or a word")


def parse_varies(items) -> list[tuple[str, list]]:
    """--vary FIELD=V1,V2,... texts as [(field, values)]; a field given twice or with no values is refused."""
    varies: list[tuple[str, list]] = []
    for item in items:
        field, sep, values = str(item).partition("=")
        field = field.strip()
        if not sep or not re.fullmatch(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?", field) or not values.strip():
            raise ConfigError("--vary", f"{shown(item)} is not FIELD=V1,V2,... (a design field, or TABLE.FIELD for "
                                        "[c2p], [dac], [grid] and the transistors' tables)")
        if field in dict(varies):
            raise ConfigError("--vary", f"{field} is given twice")
        parsed = [parse_value(v) for v in values.split(",")]
        if len(set(map(repr, parsed))) != len(parsed):
            raise ConfigError("--vary", f"{field} lists a value twice: {values}")
        varies.append((field, parsed))
    if not varies:
        raise ConfigError("--vary", "give at least one FIELD=V1,V2,...")
    return varies


def base_table(design: str) -> tuple[dict, Path]:
    """The design-file table a preset or a file stands for, and the folder its relative paths start from."""
    from ..design import PRESETS, setup_from_table
    from ..design_text import read_design_table
    from ..pdk_presets import PDK_TABLES

    if design in PRESETS:
        return {"base": design}, Path.cwd()
    if design in PDK_TABLES:
        return dict(PDK_TABLES[design]()), Path.cwd()
    path = Path(design)
    if not path.is_file():
        from ..design import preset_names

        raise ConfigError("--design", f"{shown(design)} is neither a preset ({', '.join(preset_names())}) nor a "
                                      "TOML/YAML file")
    table = read_design_table(path)
    # checked as a design first: a YAML file's anchors can make a short text a huge table when copied
    setup_from_table(table, f"design file {path}", path.parent)
    return json.loads(json.dumps(dict(table))), path.resolve().parent


def combinations(varies: list[tuple[str, list]], sampling: str = "grid") -> list[tuple]:
    """The points' values: every combination ("grid"), or the first values and each other value alone
    ("one-at-a-time")."""
    if sampling == "grid":
        return list(itertools.product(*(values for _, values in varies)))
    base = tuple(values[0] for _, values in varies)
    return [base] + [base[:i] + (value,) + base[i + 1:] for i, (_, values) in enumerate(varies) for value in values[1:]]


def plan_points(design: str, varies: list[tuple[str, list]], sampling: str = "grid") -> tuple[list[Point], Path]:
    """The plan's points (`combinations`), each checked as a design (a bad field or value is refused before
    anything runs, naming it)."""
    from ..design import setup_from_table

    table, base_dir = base_table(design)
    if isinstance(table.get("model_libraries"), list):  # the point files live elsewhere: paths made absolute
        table["model_libraries"] = [str((base_dir / p).resolve()) for p in table["model_libraries"]]
    points = []
    for combination in combinations(varies, sampling):
        point_table = json.loads(json.dumps(table))
        for (field, _), value in zip(varies, combination):
            group, dot, key = field.partition(".")
            if dot:
                inner = point_table.setdefault(group, {})
                if not isinstance(inner, dict):
                    raise ConfigError("--vary", f"{field}: {group} is not a table of the design")
                inner[key] = value
            else:
                point_table[field] = value
        point = Point(tuple((field, value) for (field, _), value in zip(varies, combination)), point_table)
        try:
            setup_from_table(point_table, f"point {point.name}", base_dir)
        except ConfigError as exc:
            raise ConfigError("--vary", f"{exc.parameter}: {exc.problem}") from None
        points.append(point)
    return points, base_dir


def check_plan(out: Path, design: str, varies: list[tuple[str, list]], settings, sampling: str = "grid") -> None:
    """Record the plan in a new exploration folder; a re-run must give the same one (it resumes), and a folder
    that is not an exploration is refused."""
    plan = {"design": design, "vary": [[field, values] for field, values in varies],
            "settings": dataclasses.asdict(settings)} | ({"sampling": sampling} if sampling != "grid" else {})
    if out.exists() and not out.is_dir():
        raise ConfigError("--out", f"{out} is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / PLAN).is_file():
            raise ConfigError("--out", f"{out} exists and is not an exploration folder (no {PLAN}); choose another")
        try:
            before = json.loads((out / PLAN).read_text())
        except (OSError, ValueError):
            raise ConfigError("--out", f"{out / PLAN} is not the plan gaincell explore writes") from None
        if before != json.loads(json.dumps(plan)):
            raise ConfigError("--out", f"{out} holds an exploration of another plan ({out / PLAN}); re-run it with "
                                       "the same --design, --vary and settings to resume it, or choose another folder")
        return
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / PLAN, json.dumps(plan, indent=1) + "\n")


def explore(out: Path, design: str, varies: list[tuple[str, list]], settings, *, sampling: str = "grid",
            scheduler: str = "local", workers: int = 2, say=progress.say, gaincell=None) -> tuple[Path, list[dict]]:
    """Run every point not yet finished on Dask (`scheduler`: "local" for a LocalCluster of `workers` processes,
    or a scheduler's address), then write the dataset and the report; returns the report's path and the results
    in the order of the points. `gaincell`: the CLI's click group, which runs the language-model commands."""
    from .explore_point import RESULT
    from .explore_report import write_dataset, write_exploration_report

    points, base_dir = plan_points(design, varies, sampling)
    check_plan(out, design, varies, settings, sampling)
    with output_lock(out / ".gaincell-explore"):
        results: dict[str, dict] = {}
        for point in points:
            done = out / "points" / point.name / RESULT
            if done.is_file():
                results[point.name] = json.loads(done.read_text())
        missing = [p for p in points if p.name not in results]
        say(f"{len(points)} points: {len(points) - len(missing)} finished before, {len(missing)} to run on "
            f"{'a local Dask cluster of ' + str(workers) + ' processes' if scheduler == 'local' else scheduler}")
        if missing:
            results |= _run_on_dask(out, missing, base_dir, settings, scheduler, workers, say,
                                    len(points) - len(missing), len(points), gaincell)
        ordered = [results[p.name] for p in points]
        if settings.lm_steps:
            _softmax_reference(out, settings, gaincell)
        write_dataset(out / DATASET, varies, points, ordered)
        report = write_exploration_report(out, design, varies, points, ordered, settings, sampling)
    return report, ordered


def _run_on_dask(out: Path, points: list[Point], base_dir: Path, settings, scheduler: str, workers: int, say,
                 finished: int, total: int, gaincell) -> dict[str, dict]:
    from .explore_point import run_point

    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise GaincellError("gaincell explore needs dask.distributed: pip install 'dask[distributed]'") from None
    cluster = None
    if scheduler == "local":
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=":0")  # a free port: explorations side by side do not collide
        client = Client(cluster)
    else:
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise ConfigError("--scheduler", f"no Dask scheduler answers at {shown(scheduler)} ({exc})") from None
    results: dict[str, dict] = {}
    started = time.perf_counter()
    try:
        futures = {client.submit(run_point, str(out / "points" / p.name), p.table, str(base_dir), settings, gaincell,
                                 key=f"gaincell-point-{p.name}", pure=False): p for p in points}
        for future in as_completed(futures):
            point = futures[future]
            try:
                result = future.result()
            except GaincellError as exc:
                result = {"status": "failed", "reason": str(exc)}
            except Exception as exc:  # the worker died under the point (KilledWorker and kin): a re-run retries it
                result = {"status": "failed", "reason": f"the Dask worker failed: {type(exc).__name__}: {exc}"}
            results[point.name] = result
            finished += 1
            say(f"[{finished}/{total}] {point.name}: {result['status']}"
                + (f" ({result['reason']})" if result.get("reason") else "")
                + f"; {time.perf_counter() - started:.0f} s")
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return results


def _softmax_reference(out: Path, settings, gaincell) -> None:
    """The unmodified SmolLM2-135M scored on the same text once (the report's reference line)."""
    from .demo_lm import run_in_folder, split_sample
    from .explore_point import scoring

    if (out / "softmax-eval.json").is_file():
        return
    split_sample(out)
    run_in_folder(gaincell, out, ["eval", "--model", "smollm2", *scoring(settings), "--out", "softmax-eval.json"],
                  lambda *a: None)
