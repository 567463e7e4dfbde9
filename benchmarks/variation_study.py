"""SmolLM2-135M perplexity against device variation and read noise in gain-cell attention.

The model is an adapted folder (`gaincell adapt`, default: the 400-step transfer + distill run of
benchmarks/smollm2_transfer.py). Every layer gets a frozen per-cell instance of the variation
(`configure_variation`, seed 0: layer i seed i) at scales 0, 0.5, 1, 2 x the figures, with read noise off and on
(1x); then a short noise-aware transfer at --tune-scale (default 1; read noise on): the scalers of every layer
learn, on the same cells, to match the softmax teacher's attention output (`adapt.transfer.TransferObjective`), and
the model is evaluated again on those cells. WikiText-2 test (../shared/data; skipped with a reason when absent),
the first --tokens tokens in disjoint --context windows.

The figures come from `--variation FILE`, a surrogate with a fitted `variation` group (`gaincell characterize --mc
N` then `gaincell fit`), applied to the model's own cell; without it, a Pelgrom estimate for the paper-reference
cell (`pelgrom_variation`): stated assumptions, not foundry data. Results go to --out/results.json point by point
(a rerun skips finished points), then variation_study.png / .html.

    OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/variation_study.py --tokens 1024
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DEFAULT_MODEL = Path("/work/runs/bench/transfer-400")

# Pelgrom estimate (Pelgrom et al., IEEE JSSC 24, 1433 (1989): sigma_Vt = A_Vt / sqrt(W L), sigma_beta / beta =
# A_beta / sqrt(W L)); coefficients assumed typical of a 28-40 nm bulk process: A_Vt = 2.5 mV um, A_beta = 1 % um.
A_VT_V_UM = 2.5e-3
A_BETA_UM = 0.01
SUBTHRESHOLD_N = 1.5  # slope factor of the write device's leakage
THERMAL_V = 0.02585
C2P_OFFSET_FRACTION = 0.01  # converter offset sigma: 1 % of q_sat (a ~5 mV comparator offset on its ramp)
GAMMA_NOISE = 2.0 / 3.0
BOLTZMANN_T = 1.380649e-23 * 300.0


def pelgrom_variation(surrogate, cells: int = 4000, seed: int = 0):
    """A `Variation` for the surrogate's design from Pelgrom's law (constants above): the read branch's
    threshold mismatch shifts the stored voltage and its current-factor mismatch scales the read current
    (I_cell(y) = (1 + db) I(y - dV), cubic refitted per cell); the write device's threshold mismatch sets the
    leakage, so sigma ln tau = sigma_Vt / (n U_T); read noise: the read transistor's channel thermal noise
    4 kT gamma g_m integrated over T_max with g_m = 2 I_max / 0.2 V."""
    from gaincell.surrogate.variation import Variation

    design = surrogate.design
    area = {name: getattr(design, name).w_m * getattr(design, name).l_m * 1e12 for name in ("read_n", "read_p", "write")}
    sigma_vt = math.sqrt(np.mean([A_VT_V_UM ** 2 / area[n] for n in ("read_n", "read_p")]))
    sigma_beta = math.sqrt(np.mean([A_BETA_UM ** 2 / area[n] for n in ("read_n", "read_p")]))
    part = surrogate["multiply"]
    y0 = float(part.config["y0_v"])
    stored = np.linspace(0.0, design.vdd_v, 91)
    rng = np.random.default_rng(seed)
    coefficients = []
    for shift, gain in zip(rng.normal(0, sigma_vt, cells), rng.normal(0, sigma_beta, cells)):
        current = (1 + gain) * surrogate.evaluate("multiply", stored_v=stored - shift, pulse_s=np.ones_like(stored),
                                                  vin_v=np.full_like(stored, design.v_in_v))
        coefficients.append(np.polynomial.polynomial.polyfit(stored - y0, current, 3))
    coefficients = np.array(coefficients)
    i_max = float(np.abs(surrogate.evaluate("multiply", stored_v=stored, pulse_s=np.ones_like(stored),
                                            vin_v=np.full_like(stored, design.v_in_v))).max())
    t_max = design.t_max_s
    read_noise = math.sqrt(4 * BOLTZMANN_T * GAMMA_NOISE * (2 * i_max / 0.2) * t_max / 2)
    q_sat = surrogate["c2p"].param("q_sat_c")
    ln_sigma = A_VT_V_UM / math.sqrt(area["write"]) / (SUBTHRESHOLD_N * THERMAL_V)
    source = (f"Pelgrom estimate for {design.name} (benchmarks/variation_study.py): A_Vt {A_VT_V_UM * 1e3:g} mV um, "
              f"A_beta {A_BETA_UM * 100:g} % um; read sigma_Vt {sigma_vt * 1e3:.2f} mV, sigma_beta "
              f"{sigma_beta * 100:.2f} %; write sigma_Vt -> sigma ln tau / (n={SUBTHRESHOLD_N} U_T); C2P offset "
              f"{C2P_OFFSET_FRACTION:.0%} of q_sat; thermal read noise over T_max")
    return Variation(y0, tuple(coefficients.mean(0)), np.cov(coefficients.T), ln_sigma, C2P_OFFSET_FRACTION * q_sat,
                     read_noise, cells, source)


def load(model_folder: Path, variation_file: str | None):
    """The adapted model with the variation attached to every layer's cell model (scale 0 until a point sets
    it), its tokenizer and the variation."""
    import dataclasses

    from gaincell.adapt.models import apply_variation, load_adapted
    from gaincell.surrogate.file import Surrogate

    model, tokenizer = load_adapted(model_folder)
    surrogate = Surrogate.load(model_folder / "surrogate.h5")
    source = (Surrogate.load(variation_file) if variation_file
              else dataclasses.replace(surrogate, variation=pelgrom_variation(surrogate)))
    apply_variation(model, surrogate, source, scale=0.0)
    return model, tokenizer, source.variation


def evaluate(model, tokens: torch.Tensor, context: int, noise_seed: int = 0) -> dict:
    from gaincell.adapt.evaluate import perplexity

    torch.manual_seed(noise_seed)
    started = time.time()
    with torch.no_grad():
        result = perplexity(model, tokens, context=context, stride=context, progress=False)
    return {"perplexity": result["perplexity"], "tokens_scored": result["tokens_scored"],
            "seconds": round(time.time() - started, 1)}


def noise_aware_transfer(model, stream: torch.Tensor, steps: int, seq: int, lr: float) -> dict:
    """`steps` steps of the transfer objective on the scalers of every layer, with the variation and noise on."""
    from gaincell.adapt.models import gaincell_layers
    from gaincell.adapt.text import random_windows
    from gaincell.adapt.transfer import TransferObjective

    model.requires_grad_(False)
    parameters = [p for layer in gaincell_layers(model) for p in layer.parameters()]
    for p in parameters:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0)
    objective = TransferObjective(model)
    losses, started = [], time.time()
    try:
        for step in range(steps):
            optimizer.zero_grad()
            losses.append(objective(model, random_windows(stream, 1, seq, seed=1000 + step), 1.0))
            optimizer.step()
            print(f"  transfer step {step + 1}/{steps}: mean layer error {losses[-1]:.3f}", flush=True)
    finally:
        objective.remove()
        model.requires_grad_(False)
    return {"steps": steps, "seq": seq, "lr": lr, "losses": losses, "seconds": round(time.time() - started, 1)}


def figure(results: dict, stem: Path) -> None:
    from gaincell.plotting import Figure, Panel, Trace, save_png_and_html

    traces = []
    for noise, name in ((0.0, "read noise off"), (1.0, "read noise on (1x)")):
        points = sorted((p["scale"], p["perplexity"]) for p in results["points"].values()
                        if p.get("read_noise") == noise and not p.get("tuned"))
        if points:
            traces.append(Trace(name, np.array([s for s, _ in points]), np.array([v for _, v in points]), "line"))
    tuned = [(p["scale"], p["perplexity"]) for p in results["points"].values() if p.get("tuned")]
    if tuned:
        traces.append(Trace("after a noise-aware transfer", np.array([s for s, _ in tuned]),
                            np.array([v for _, v in tuned]), "markers"))
    panel = Panel(traces, y_label="WikiText-2 perplexity", x_label="variation scale (x the fitted sigma)")
    save_png_and_html(Figure("SmolLM2-135M, gain-cell attention: perplexity vs device variation", [panel],
                             share_x=False), stem)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="an adapted folder (gaincell adapt --out)")
    parser.add_argument("--variation", help="a surrogate with a fitted variation group (default: Pelgrom estimate)")
    parser.add_argument("--text", type=Path, default=SHARED / "wikitext-2" / "test.txt")
    parser.add_argument("--train-text", type=Path, default=SHARED / "wikitext-2" / "valid.txt")
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--scales", default="0,0.5,1,2")
    parser.add_argument("--transfer-steps", type=int, default=8)
    parser.add_argument("--transfer-seq", type=int, default=256)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--tune-scale", type=float, default=1.0,
                        help="variation scale (read noise on) of the noise-aware transfer and its evaluation")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "variation-study")
    options = parser.parse_args()
    for path, what in ((options.text, "WikiText-2 test"), (options.train_text, "WikiText-2 valid"),
                       (options.model / "adapted.json", "the adapted model")):
        if not path.is_file():
            print(f"skipped: {what} is not at {path}")
            return
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from gaincell.adapt.models import gaincell_layers
    from gaincell.adapt.text import token_stream
    from gaincell.outputs import atomic_write_text
    from gaincell.surrogate.attention import configure_variation

    options.out.mkdir(parents=True, exist_ok=True)
    results_path = options.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {"points": {}}
    model, tokenizer, variation = load(options.model, options.variation)
    results["setup"] = {"model": str(options.model), "tokens": options.tokens, "context": options.context,
                        "variation": {"source": variation.source, "retention_ln_sigma": variation.retention_ln_sigma,
                                      "offset_sigma_c": variation.offset_sigma_c, "read_noise_c": variation.read_noise_c,
                                      "multiply_sigma_a": np.sqrt(np.diag(variation.multiply_covariance)).tolist(),
                                      "cells": variation.cells}}
    tokens = token_stream(options.text, tokenizer, options.tokens)
    layers = gaincell_layers(model)

    def point(key: str, scale: float, noise: float, tuned: bool = False) -> None:
        if key in results["points"]:
            print(f"{key}: done ({results['points'][key]['perplexity']:.4g})")
            return
        configure_variation(layers, scale=scale, read_noise_scale=noise, seed=0)
        result = {"scale": scale, "read_noise": noise, "tuned": tuned, **evaluate(model, tokens, options.context)}
        results["points"][key] = result
        atomic_write_text(results_path, json.dumps(results, indent=2) + "\n")
        print(f"{key}: perplexity {result['perplexity']:.4g} ({result['seconds']} s)", flush=True)

    scales = [float(s) for s in options.scales.split(",")]
    for noise in (0.0, 1.0):
        for scale in scales:
            point(f"scale={scale:g} noise={noise:g}", scale, noise)
    if options.transfer_steps and "tuned" not in results:
        configure_variation(layers, scale=options.tune_scale, read_noise_scale=1.0, seed=0)
        stream = token_stream(options.train_text, tokenizer, 20_000)
        results["tuned"] = noise_aware_transfer(model, stream, options.transfer_steps, options.transfer_seq, options.lr)
        torch.save({k: v for k, v in model.state_dict().items() if ".gaincell." in k}, options.out / "tuned-scalers.pt")
        atomic_write_text(results_path, json.dumps(results, indent=2) + "\n")
    if "tuned" in results:
        state = torch.load(options.out / "tuned-scalers.pt", weights_only=True)
        model.load_state_dict(state, strict=False)
        point(f"tuned scale={options.tune_scale:g} noise=1", options.tune_scale, 1.0, tuned=True)
        point("tuned scale=0 noise=0", 0.0, 0.0, tuned=True)
    figure(results, options.out / "variation_study")
    print("\n| variation scale | read noise | WikiText-2 ppl |\n|---|---|---|")
    for key, p in results["points"].items():
        print(f"| {p['scale']:g}{' (after noise-aware transfer)' if p['tuned'] else ''} | "
              f"{'on' if p['read_noise'] else 'off'} | {p['perplexity']:.4g} |")


if __name__ == "__main__":
    main()
