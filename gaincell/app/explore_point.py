"""What one point of an exploration runs (`run_point`, a Dask task): the stages on its own design file, in its
own folder, each artifact where the stage's command writes it; result.json last."""
from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

from ..errors import GaincellError
from ..outputs import atomic_write_text, output_lock

RESULT = "result.json"
DESIGN_FILE = "design.yaml"
# every figure of a point: name -> (unit, description); the dataset's variables and the report's columns
FIGURES = {
    "perplexity": ("", "perplexity of the re-targeted SmolLM2-135M on held-out text (lm-eval.txt)"),
    "lambada": ("", "LAMBADA last-word accuracy of the re-targeted SmolLM2-135M (0 .. 1)"),
    "energy_per_token_j": ("J", "attention energy per token of SmolLM2-135M (30 layers)"),
    "latency_per_token_s": ("s", "attention latency per token of SmolLM2-135M (layers in sequence)"),
    "area_mm2_per_head": ("mm^2", "silicon area per query head: cell arrays, DACs, C2Ps, counters, drawn with the "
                                  "design's layout rules (gaincell.layout)"),
    "retention_27c_s": ("s", "shortest retention 1/e time over the stored levels at 27 C"),
    "retention_85c_s": ("s", "shortest retention 1/e time over the stored levels at 85 C"),
    "fit_rms": ("", "multiply fit RMS error on the characterization grid, fraction of full scale"),
    "validation_rms": ("", "multiply RMS error at fresh SPICE points, fraction of full scale"),
    "dac_settle_s": ("s", "longest write-DAC settling time"),
    "seconds": ("s", "wall time of the point"),
}


@dataclasses.dataclass(frozen=True)
class PointSettings:
    """What every point shares: SPICE processes per point, the validation tolerance and the language model."""

    spice_workers: int = 1
    max_validation_rms: float = 0.05  # fraction of full scale; above it the point is "out of tolerance"
    lm_steps: int = 0  # distillation steps of the re-targeting; 0: no language model
    lambada: str | None = None
    lambada_items: int = 50


def scoring(settings: PointSettings) -> list[str]:
    """The `gaincell eval` arguments every scored model shares: the sample's held-out text, LAMBADA if given."""
    data = ["--data", "lm-eval.txt"] + (["--data", settings.lambada] if settings.lambada else [])
    return [*data, "--max-tokens", "1024", "--context", "512", "--stride", "512", "--limit",
            str(settings.lambada_items)]


def lm_commands(settings: PointSettings) -> list[list[str]]:
    """The language-model commands of a point: re-target the shipped model to its cell, then score it."""
    from .demo_lm import LM_FOLDER

    return [["adapt", "--model", "smollm2-gaincell", "--surrogate", "surrogate.h5", "--train-text", "lm-train.txt",
             "--stages", "distill", "--distill-steps", str(settings.lm_steps), "--batch", "1", "--seq", "512",
             "--calibration-tokens", "512", "--out", LM_FOLDER],
            ["eval", "--model", LM_FOLDER, *scoring(settings), "--out", "lm-eval.json"]]


def point_commands(settings: PointSettings) -> list[list[str]]:
    """The gaincell commands a point runs, in its folder (what its report line says remakes it)."""
    commands = [["characterize", "--design", DESIGN_FILE, "--c2p", "--dac", "--out", "char.h5"],
                ["fit", "char.h5", "--out", "surrogate.h5"],
                ["validate", "surrogate.h5", "--out", "validation.h5"],
                ["energy", "--surrogate", "surrogate.h5", "--model", "smollm2", "--out", "."]]
    return commands + (lm_commands(settings) if settings.lm_steps else [])


def run_point(folder: str, table: dict, base_dir: str, settings: PointSettings, gaincell=None) -> dict:
    """Take one design point through the stages into `folder` and return (and write) its result: the figures
    of `FIGURES`, `status` ("ok", "out of tolerance" or "failed") and the `reason`. `gaincell`: the CLI's click
    group, which runs the language-model commands (needed when settings.lm_steps)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with output_lock(folder / ".gaincell-point", wait=True):  # a worker left over from a killed run finishes first
        if (folder / RESULT).is_file():
            return json.loads((folder / RESULT).read_text())
        started = time.perf_counter()
        result: dict = {"status": "ok", "reason": ""}
        try:
            result |= _circuit_figures(folder, table, Path(base_dir), settings)
            if result["validation_rms"] > settings.max_validation_rms:
                result |= {"status": "out of tolerance",
                           "reason": f"the fit's error at fresh SPICE points is {100 * result['validation_rms']:.2f} "
                                     f"% of full scale (tolerance {100 * settings.max_validation_rms:g} %)"}
            elif settings.lm_steps:
                result |= _language_model_figures(folder, settings, gaincell)
        except GaincellError as exc:
            result |= {"status": "failed", "reason": str(exc)}
        result["seconds"] = time.perf_counter() - started
        atomic_write_text(folder / RESULT, json.dumps(result, indent=1) + "\n")
        return result


def _circuit_figures(folder: Path, table: dict, base_dir: Path, settings: PointSettings) -> dict:
    from ..circuits.characterize import characterization_sweeps, characterize, summarize
    from ..circuits.sweep import run_sweep
    from ..design import setup_from_table
    from ..energy.model import estimate
    from ..fitting.fit import fit_characterization
    from ..fitting.validate import validate_cell
    from ..store import read_sweep

    atomic_write_text(folder / DESIGN_FILE, json.dumps(table, indent=1) + "\n")  # JSON is YAML: a design file
    setup = setup_from_table(table, f"point {folder.name}", base_dir)
    workers = settings.spice_workers
    characterize(setup.cell, folder / "char.h5", setup.grid, workers=workers, progress=False, c2p=True, dac=True,
                 c2p_design=setup.c2p, dac_design=setup.dac)
    summary = summarize(folder / "char.h5")
    surrogate, _ = fit_characterization(folder / "char.h5")
    surrogate.save(folder / "surrogate.h5")
    validation = validate_cell(surrogate, setup.cell, folder / "validation.h5", workers=workers, progress=False)
    hot = dataclasses.replace(setup.cell, temp_c=85.0)
    retention = next(s for s in characterization_sweeps(hot, setup.grid) if s.name == "retention")
    run_sweep(retention, folder / "retention-85c.h5", workers=workers, progress=False)
    tau_hot = read_sweep(folder / "retention-85c.h5", "retention").scalars["tau_1e_s"]
    report = estimate("smollm2", folder / "surrogate.h5", tokens=2)
    own = report.own
    return {"energy_per_token_j": own.energy_model_j, "latency_per_token_s": own.latency_model_s,
            "area_mm2_per_head": own.area_head_mm2,
            "retention_27c_s": summary["retention_tau_1e_min_s"], "retention_85c_s": float(min(tau_hot)),
            "fit_rms": surrogate["multiply"].residuals["rms_rel_full_scale"],
            "validation_rms": validation.rms_rel_full_scale,
            "dac_settle_s": summary.get("dac_settle_max_s", math.nan),
            "failed_spice_points": summary["failed_points"]}


def _language_model_figures(folder: Path, settings: PointSettings, gaincell) -> dict:
    from .demo_lm import run_in_folder, split_sample

    split_sample(folder)
    for command in lm_commands(settings):
        run_in_folder(gaincell, folder, command, lambda *a: None)
    scores = json.loads((folder / "lm-eval.json").read_text())
    return {"perplexity": scores[0]["perplexity"],
            "lambada": scores[1]["accuracy"] if settings.lambada else math.nan}
