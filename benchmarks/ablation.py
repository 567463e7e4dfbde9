"""What each hardware effect costs an adapted model, and why long-range retrieval fails (benchmarks/RESULTS.md).

Part 1, the cost table: the adapted model (`gaincell adapt --out FOLDER`) is scored as adapted, then with one
hardware effect removed at a time - the nonlinear multiply (its least-squares line instead), the query's pulse
widths and the stored levels (exact), the per-tile readout's levels (exact), the retention decay, the C2P's and
the readout's saturation, the heads' trained C2P thresholds, their trained C2P gains - then with all of them
removed, and with the surrogate's variation or read noise added (`--variation-surrogate`, a fit with a Monte Carlo component). Each row: WikiText-2 perplexity (disjoint
`--context` windows) and LAMBADA accuracy (greedy last word), beside the unmodified softmax model.
Part 2, the retrieval probe: on LAMBADA passages, the query that has to find the answer (the last context
token) in every layer - how many keys the softmax teacher attends to (1 / sum p^2), how many the adapted gain-cell
layer does ((sum phi)^2 / sum phi^2), the share of keys with a pulse, of saturated pulses, and of per-tile
readouts clipped at full scale or rounded to zero although charge arrived.
Part 3, context use: the perplexity of the WikiText-2 tokens by how much context precedes them in their window
(1-15 tokens, 16-63, ...), softmax vs adapted: how much each model gains from context further back.
Part 4, where the heads' C2P gains cost (a model with gains other than 1, e.g. from the heads stage): the same
windows' perplexity with every gain 1 and as adapted, by the kind of next token - a rare word recalled from 16+
tokens back, another token that occurs earlier in the window, a token that does not.

Every row is kept in --work (a rerun reuses finished rows). A tiny run for the test suite: --eval-tokens 64
--context 32 --lambada-items 2 --probe-items 1.

    .venv/bin/python benchmarks/ablation.py --model runs/transfer-100 --work runs/ablation --figure benchmarks/ablation
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from smollm2_adaptation import evaluation_arguments  # noqa: E402

LAMBADA_NOTE = "LAMBADA passages"


def rows(layer, variation: bool) -> list[tuple[str, dict]]:
    """(label, layer switches) of every row; `layer` is an adapted layer (its converters' levels)."""
    from gaincell.surrogate.transfers import Quantization

    levels = layer.quantization
    exact = Quantization(0, 0, 0)
    table = [("as adapted: every hardware effect", {}),
             ("- nonlinear multiply (its least-squares line)", {"mode": "linear"}),
             ("- query pulse-width and stored levels (exact)", {"quantization": Quantization(0, 0, levels.out_levels)}),
             ("- per-tile readout levels (exact)", {"quantization": Quantization(levels.q_levels, levels.kv_levels, 0)}),
             ("- retention decay", {"decay": False}),
             ("- C2P and readout saturation", {"saturate": False}),
             ("- per-head C2P thresholds (the cell's offset)", {"thresholds": False}),
             ("- per-head C2P gains (the characterized capacitor)", {"gains": False}),
             ("every effect removed (line, exact, no decay, no saturation)",
              {"mode": "linear", "quantization": exact, "decay": False, "saturate": False})]
    if layer.peak_reference:  # its reference sits one saturation unit below the best score
        table = [(label.replace(", no saturation", ""), {k: v for k, v in switches.items() if k != "saturate"})
                 for label, switches in table if label != "- C2P and readout saturation"]
    if variation:
        table += [("+ cell-to-cell variation (x1)", {"variation_scale": 1.0}),
                  ("+ read noise (x1)", {"read_noise_scale": 1.0})]
    return table


def slug(label: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-")[:60]


def score(model, tokenizer, options) -> dict:
    from gaincell.adapt.evaluate import lambada_accuracy, perplexity
    from gaincell.adapt.text import token_stream

    tokens = token_stream(options.wikitext, tokenizer, options.eval_tokens)
    ppl = perplexity(model, tokens, options.context, options.context, progress=False)
    lambada = lambada_accuracy(model, tokenizer, options.lambada, options.lambada_items, progress=False)
    return {"perplexity": ppl["perplexity"], "tokens_scored": ppl["tokens_scored"], "lambada": lambada["accuracy"],
            "items": lambada["items"]}


def apply(model, switches: dict, base: dict) -> None:
    """Put every layer back to the adapted configuration `base`, then set `switches`."""
    from gaincell.adapt.models import gaincell_layers

    for layer in gaincell_layers(model):
        for name, value in {**base, **switches}.items():
            setattr(layer, name, value)


def cost_table(model, softmax, tokenizer, options, variation) -> list[dict]:
    """Part 1's rows: `softmax` (the base model) first, then the adapted `model` with one effect removed per row."""
    from gaincell.adapt.models import apply_variation, gaincell_layers

    layer = gaincell_layers(model)[0]
    base = {"mode": layer.mode, "quantization": layer.quantization, "quantize": layer.quantize, "decay": layer.decay,
            "saturate": True, "thresholds": True, "gains": True, "variation_scale": 0.0, "read_noise_scale": 0.0}
    if variation is not None:
        from gaincell.surrogate.file import Surrogate

        apply_variation(model, Surrogate.load(options.model / "surrogate.h5"), variation, scale=0.0)
    results = []
    cached = options.work / "row-softmax.json"
    if not cached.is_file():
        write_json(cached, score(softmax, tokenizer, options))
    results.append({"label": "softmax (unmodified model)", **json.loads(cached.read_text())})
    for label, switches in rows(layer, variation is not None):
        cached = options.work / f"row-{slug(label)}.json"
        if not cached.is_file():
            apply(model, switches, base)
            write_json(cached, score(model, tokenizer, options))
            print(f"  {label}: {json.loads(cached.read_text())}", flush=True)
        results.append({"label": label, **json.loads(cached.read_text())})
    apply(model, {}, base)
    return results


def write_json(path: Path, value) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(value, indent=1))
    os.replace(temporary, path)


def capture(model, ids) -> list[tuple]:
    """The (q, k, v) every gain-cell layer receives on `ids` (one sequence), in layer order."""
    from gaincell.adapt.models import gaincell_layers

    seen, hooks = [], []
    for layer in gaincell_layers(model):
        hooks.append(layer.register_forward_pre_hook(lambda module, args: seen.append(tuple(a.detach() for a in args[:3]))))
    try:
        with torch.no_grad():
            model(ids, use_cache=False)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def softmax_concentration(q, k, scale: float) -> dict:
    """The last query's softmax over its causal keys, per head: effective keys 1 / sum p^2 and the top weight."""
    from gaincell.surrogate.functional import expand_kv

    k = expand_kv(k, q.shape[1])
    p = (q[0, :, -1:] @ k[0].transpose(-1, -2) * scale).softmax(-1)[:, 0]  # (heads, keys)
    return {"effective_keys": (1 / (p**2).sum(-1)).mean().item(), "top_weight": p.max(-1).values.mean().item()}


def gaincell_concentration(layer, q, k, v) -> dict:
    """The last query of an adapted layer: its pulses phi over the keys and its per-tile readouts
    (`internals.attention_internals`, the layer's own arithmetic)."""
    from gaincell.surrogate.internals import attention_internals

    with torch.no_grad():
        inside = attention_internals(layer.q_scaler(q), layer.k_scaler(k), layer.v_scaler(v), layer.cell,
                                     decay="surrogate" if layer.decay else None, tile=layer.tile, window=layer.window,
                                     quantize=layer._quantization() or False, linear=layer.mode == "linear",
                                     c2p=layer._c2p())
    phi, readouts = inside["phi"][0, :, -1], inside["readouts"][:, 0, :, -1]  # (H, keys), (tiles, H, D)
    steps = layer._out_steps()
    arrived = readouts != 0
    rounded_away = (readouts.abs() < 0.5 / steps) & arrived if steps else torch.zeros_like(arrived)
    total = phi.sum(-1)
    return {"effective_keys": torch.where(total > 0, total**2 / (phi**2).sum(-1).clamp_min(1e-30), 0 * total).mean().item(),
            "top_share": torch.where(total > 0, phi.max(-1).values / total.clamp_min(1e-30), 0 * total).mean().item(),
            "active_keys": (phi > 0).float().mean().item(), "saturated_keys": (phi >= 1).float().mean().item(),
            "clipped_readouts": (readouts.abs() > 1).float().mean().item(),
            "rounded_to_zero": rounded_away.float().sum().item() / max(1, arrived.sum().item())}


def softmax_base(options):
    """The unmodified base model with its attention swapped in 'ideal' mode (softmax, the same numbers), so that
    the probe can read every layer's q, k."""
    from gaincell.adapt.models import load_pretrained, swap_attention

    teacher, _, _ = load_pretrained(options.base)
    return swap_attention(teacher, options.model / "surrogate.h5", mode="ideal")


def retrieval_probe(model, teacher, tokenizer, options) -> list[dict]:
    """Per layer, averaged over the first --probe-items LAMBADA passages: the teacher's and the adapted layer's
    concentration on the last context token's query."""
    from gaincell.adapt.models import gaincell_layers
    from gaincell.adapt.text import read_items, split_last_word

    layers = gaincell_layers(model)
    per_layer: list[list[dict]] = [[] for _ in layers]
    for number, text in enumerate(read_items(options.lambada, "--lambada")[:options.probe_items], 1):
        context, _ = split_last_word(text, options.lambada, number)
        ids = torch.tensor([tokenizer(context, add_special_tokens=False)["input_ids"]])
        for i, ((tq, tk, _), (q, k, v)) in enumerate(zip(capture(teacher, ids), capture(model, ids))):
            scale = layers[i].softmax_scale or 1 / math.sqrt(tq.shape[-1])
            per_layer[i].append({**{f"softmax_{n}": x for n, x in softmax_concentration(tq, tk, scale).items()},
                                 **gaincell_concentration(layers[i], q, k, v)})
    return [{name: sum(r[name] for r in records) / len(records) for name in records[0]} for records in per_layer]


CONTEXT_EDGES = (1, 16, 64, 128, 256, 512, 1024, 2048)
COMMON_FROM_TOKENS = 100_000  # part 4: the frequent tokens (never "recalled") counted on the text's first so many


def windows(tokens: torch.Tensor, context: int) -> torch.Tensor:
    """The disjoint `context`-token windows of `tokens` (the cost table's), (windows, context)."""
    return tokens[:len(tokens) // context * context].view(-1, context)


def window_losses(model, tokens: torch.Tensor, context: int) -> torch.Tensor:
    """(windows, context - 1) negative log-likelihood of every next token in its window; column p: the token after
    p + 1 tokens of context."""
    losses = []
    with torch.no_grad():
        for window in windows(tokens, context):
            logits = model(window[None], use_cache=False).logits[0, :-1].float()
            losses.append(torch.nn.functional.cross_entropy(logits, window[1:], reduction="none"))
    return torch.stack(losses)


def context_use(losses: torch.Tensor) -> list[dict]:
    """Perplexity of the tokens by the context before them (ranges between CONTEXT_EDGES, up to the window) from
    `window_losses` over the cost table's windows."""
    context = losses.shape[1] + 1
    edges = [e for e in CONTEXT_EDGES if e < context] + [context]
    loss = losses.mean(0)  # index p: the token after p + 1 tokens of context
    return [{"context": f"{low}-{high - 1}", "perplexity": float(loss[low - 1:high - 1].mean().exp()),
             "tokens": len(losses) * (high - low)} for low, high in zip(edges, edges[1:])]


def print_context_use(adapted_losses: torch.Tensor, teacher, tokens: torch.Tensor, options) -> None:
    """Part 3's table: softmax (the unmodified model, `teacher`) and the adapted model (its `window_losses`) on the
    cost table's windows of `tokens`."""
    softmax = context_use(window_losses(teacher, tokens, options.context))
    adapted = context_use(adapted_losses)
    write_json(options.work / "context-use.json", {"softmax": softmax, "adapted": adapted})
    print(f"\nContext use: WikiText-2 perplexity of the tokens by the context before them in their "
          f"{options.context}-token window ({len(tokens) // options.context} windows)\n")
    print("| context before the token (tokens) | scored tokens | softmax ppl | gain-cell ppl | gain-cell / softmax |")
    print("|---|---|---|---|---|")
    for ours, theirs in zip(adapted, softmax):
        print(f"| {ours['context']} | {ours['tokens']} | {theirs['perplexity']:.4g} | {ours['perplexity']:.4g} | "
              f"{ours['perplexity'] / theirs['perplexity']:.2f} |")
    print("(a ratio that grows down the table: the adapted model gains less than softmax from context further back)")


def token_kinds(tokens: torch.Tensor, context: int, common: torch.Tensor) -> dict[str, torch.Tensor]:
    """(windows, context - 1) masks of the next tokens, by what predicting them can use from their window: a rare
    word recalled from far back (`train.recall_tokens`, `common`: the text's frequent tokens), any other token that
    occurs earlier in the window, and a token that does not."""
    from gaincell.adapt.train import recall_tokens

    cut = windows(tokens, context)
    inputs, labels = cut[:, :-1], cut[:, 1:]
    earlier = (labels[:, :, None] == inputs[:, None, :]).tril().any(-1)
    recalled = recall_tokens(inputs, labels, common)
    return {"recalls a rare word from 16+ tokens back": recalled, "occurs earlier in its window otherwise":
            earlier & ~recalled, "does not occur earlier in its window": ~earlier}


def print_gain_cost(model, sharpened: torch.Tensor, tokenizer, tokens: torch.Tensor, options) -> None:
    """Part 4: what the heads' C2P gains cost, by the kind of next token (`token_kinds`), on the cost table's
    windows of `tokens`: the adapted model with its gains (its `window_losses`, `sharpened`) against the same with
    every gain 1."""
    from gaincell.adapt.models import gaincell_layers
    from gaincell.adapt.text import token_stream
    from gaincell.adapt.train import common_count, frequent_tokens

    layers = gaincell_layers(model)
    sharp = sum(int((layer.c2p_gain.detach() != 1).sum()) for layer in layers)
    if not sharp:
        print("\n(every head's C2P gain is 1: no gain cost to split)")
        return
    common = frequent_tokens(token_stream(options.wikitext, tokenizer, COMMON_FROM_TOKENS),
                             common_count(model.config.vocab_size))
    switches = [layer.gains for layer in layers]
    for layer in layers:
        layer.gains = False
    try:
        flat = window_losses(model, tokens, options.context)
    finally:
        for layer, switch in zip(layers, switches):
            layer.gains = switch
    kinds = token_kinds(tokens, options.context, common)
    rows = [{"next token": name, "tokens": int(mask.sum()), "perplexity_gain_1": float(flat[mask].mean().exp()),
             "perplexity": float(sharpened[mask].mean().exp()), "cost_nats": float((sharpened - flat)[mask].sum())}
            for name, mask in [*kinds.items(), ("all", torch.ones_like(flat, dtype=torch.bool))] if mask.any()]
    write_json(options.work / "gain-cost.json", rows)
    print(f"\nWhere the C2P gains cost ({sharp} heads with a gain other than 1): WikiText-2 perplexity of the cost "
          f"table's windows by the kind of next token, every gain 1 vs as adapted\n")
    print("| next token | scored tokens | every gain 1: ppl | as adapted: ppl | the gains' cost (nats, summed) |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['next token']} | {row['tokens']} | {row['perplexity_gain_1']:.4g} | {row['perplexity']:.4g} | "
              f"{row['cost_nats']:+.1f} |")
    print("(a cost on tokens that occur nowhere earlier is paid where there is nothing to retrieve"
          + ("; with the peak-following C2P a head pulses each query's best key, however weakly it matches)"
             if layers[0].peak_reference else ")"))


def probe_figure(probe: list[dict]):
    """Per layer: how many keys the last query attends to, and the strongest key's weight, softmax vs gain-cell."""
    import numpy as np

    from gaincell.plotting import Figure, Panel, Trace

    layers = np.arange(len(probe))

    def series(name):
        return np.array([r[name] for r in probe])

    return Figure("retrieval probe: the last context token's query on LAMBADA passages",
                  [Panel([Trace("softmax (unmodified model)", layers, series("softmax_effective_keys")),
                          Trace("gain-cell (adapted)", layers, series("effective_keys"))],
                         y_label="keys attended to (effective number)", x_label="layer"),
                   Panel([Trace("softmax: weight of the top key", layers, series("softmax_top_weight")),
                          Trace("gain-cell: top key's share of the pulses", layers, series("top_share"))],
                         y_label="strongest key's weight (fraction)", x_label="layer")])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="an adapted folder (gaincell adapt --out)")
    parser.add_argument("--base", default=None, help="its base model (default: the one its manifest names)")
    parser.add_argument("--work", type=Path, default=Path("runs/ablation"))
    parser.add_argument("--variation-surrogate", type=Path, default=None,
                        help="a surrogate with a variation component (from characterize --mc N): adds the variation "
                             "and read-noise rows")
    parser.add_argument("--probe-items", type=int, default=50)
    parser.add_argument("--figure", type=Path, default=None, help="write the probe's figure as FIGURE.png/.html")
    evaluation_arguments(parser, lambada_items=200)
    options = parser.parse_args()
    options.work.mkdir(parents=True, exist_ok=True)
    from gaincell.adapt.models import gaincell_layers, load_adapted, read_manifest

    options.base = options.base or read_manifest(options.model)["base_model"]
    model, tokenizer = load_adapted(options.model)
    variation = None
    if options.variation_surrogate is not None:
        from gaincell.surrogate.file import Surrogate

        variation = Surrogate.load(options.variation_surrogate)
    softmax_model = softmax_base(options)
    table = cost_table(model, softmax_model, tokenizer, options, variation)
    layer = gaincell_layers(model)[0]
    print(f"\nAblation of {options.model} (window {layer.window} tokens, tile {layer.tile}; every scored context is "
          f"at most {options.context} tokens, so the window never cuts one: its cost here is zero)\n")
    softmax = table[0]
    print(f"| configuration | WikiText-2 ppl ({softmax['tokens_scored']} tokens) | x softmax | LAMBADA "
          f"({softmax['items']} items) |")
    print("|---|---|---|---|")
    for row in table:
        print(f"| {row['label']} | {row['perplexity']:.4g} | {row['perplexity'] / softmax['perplexity']:.2f} | "
              f"{100 * row['lambada']:.1f} % |")
    if variation is None:
        print("\n(variation and read noise: not run; give --variation-surrogate, a fit with a Monte Carlo component)")
    from gaincell.adapt.text import token_stream

    tokens = token_stream(options.wikitext, tokenizer, options.eval_tokens)
    losses = window_losses(model, tokens, options.context)  # parts 3 and 4
    print_context_use(losses, softmax_model, tokens, options)
    print_gain_cost(model, losses, tokenizer, tokens, options)
    probe = retrieval_probe(model, softmax_model, tokenizer, options)
    write_json(options.work / "probe.json", probe)
    print(f"\nRetrieval probe: the last context token's query of the first {options.probe_items} {LAMBADA_NOTE}, "
          "per layer (keys: effective number attended to; pulses: share of keys with phi > 0, with phi = 1; "
          "readouts: share of per-tile readouts clipped at full scale, and of those with charge rounded to zero)\n")
    print("| layer | softmax keys | softmax top weight | gain-cell keys | gain-cell top share | pulses > 0 | "
          "pulses = 1 | readouts clipped | readouts rounded to 0 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for i, r in enumerate(probe):
        print(f"| {i} | {r['softmax_effective_keys']:.1f} | {r['softmax_top_weight']:.2f} | {r['effective_keys']:.1f} | "
              f"{r['top_share']:.2f} | {100 * r['active_keys']:.0f} % | {100 * r['saturated_keys']:.1f} % | "
              f"{100 * r['clipped_readouts']:.1f} % | {100 * r['rounded_to_zero']:.0f} % |")
    if options.figure:
        from gaincell.plotting import save_png_and_html

        save_png_and_html(probe_figure(probe), options.figure)
        print(f"(figure: {options.figure}.png and .html)")
    mean = {name: sum(r[name] for r in probe) / len(probe) for name in probe[0]}
    print(f"| mean | {mean['softmax_effective_keys']:.1f} | {mean['softmax_top_weight']:.2f} | "
          f"{mean['effective_keys']:.1f} | {mean['top_share']:.2f} | {100 * mean['active_keys']:.0f} % | "
          f"{100 * mean['saturated_keys']:.1f} % | {100 * mean['clipped_readouts']:.1f} % | "
          f"{100 * mean['rounded_to_zero']:.0f} % |")


if __name__ == "__main__":
    main()
