"""The language-model verbs: `adapt` (the paper's recipe or attention transfer), `eval` (perplexity,
LAMBADA) and `generate` (softmax and gain-cell continuations side by side)."""
from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path

import click

from ... import __version__
from ...errors import ConfigError, GaincellError
from ...outputs import REPORT, atomic_write_text, guard_output, output_lock
from .options import Quantity, force_option, hardware_option, option_group, surrogate_file

TRAINING_PRECISIONS = ("auto", "float32", "bfloat16")  # adapt.train.PRECISIONS, without importing torch here


@click.command()
@click.option("--model", "model_spec", default="smollm2", show_default=True,
              help="smollm2 (packaged SmolLM2-135M), a Hugging Face model folder (e.g. a GPT-2), or an adapted "
                   "model - smollm2-gaincell (shipped, adapted to the paper's cell) or an adapted folder - which is "
                   "re-targeted to --surrogate (scalers carried over, then transfer/distill from its base model).")
@click.option("--surrogate", "surrogate", default="paper", show_default=True,
              help="'paper' (shipped fit of the paper's cell) or a surrogate file from `gaincell fit`.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Adapted model folder (reloads with `gaincell eval --model OUT`); resumes if it exists.")
@click.option("--train-text", type=click.Path(dir_okay=False), required=True,
              help="Fine-tuning text (.txt, or .jsonl with 'text'); its first tokens are the calibration batch.")
@click.option("--stages", default="linear,calibrate,nonlinear", show_default=True,
              help="Comma-separated subset of linear,calibrate,transfer,nonlinear,distill,mlp,heads (run in that "
                   "order): the paper's recipe is linear,calibrate,nonlinear; the cheap one transfer,distill,mlp,heads "
                   "(mlp: distillation through LoRA on the MLPs alone; heads: a larger C2P gain for the softmax "
                   "teacher's retrieving heads, kept by later distillations).")
@option_group("steps",
              click.option("--steps", type=click.IntRange(1, 10**7), default=200, show_default=True,
                           help="Optimizer steps of the linear and nonlinear stages."),
              click.option("--transfer-steps", type=click.IntRange(1, 10**7), default=200, show_default=True,
                           help="Optimizer steps of the transfer stage."),
              click.option("--distill-steps", type=click.IntRange(1, 10**7), default=50, show_default=True,
                           help="Optimizer steps of the distill stage."),
              click.option("--mlp-steps", type=click.IntRange(1, 10**7), default=30, show_default=True,
                           help="Optimizer steps of the mlp stage."))
@click.option("--lora-rank", type=click.IntRange(0, 4096), default=16, show_default=True,
              help="Rank of the LoRA adapters on the attention projections in transfer/distill (0: scalers only) "
                   "and on the MLP projections in mlp.")
@option_group("objective",
              click.option("--lr", type=Quantity("", 0.0, 10.0), default=None,
                           help="Peak learning rate (AdamW) of every stage run; default per stage: linear and "
                                "nonlinear 2e-4, transfer 2e-3, distill 5e-4 (the adapters' rate in transfer/distill), "
                                "mlp 1e-3."),
              click.option("--scaler-lr", type=Quantity("", 0.0, 10.0), default=1e-2, show_default=True,
                           help="Peak learning rate of the scalers in transfer/distill (--lr is the adapters')."),
              click.option("--distill", type=Quantity("", 0.0, 1.0), default=None,
                           help="Weight of knowledge distillation from the unmodified model in the loss (0..1): "
                                "default 0 in the linear/nonlinear stages, 1 (KL only) in the distill and mlp "
                                "stages."),
              click.option("--c2p-gain", type=Quantity("", 0.25, 8.0), default=None,
                           help="Every head's C2P gain (pulse width per unit charge, x the characterized C2P) before "
                                "the stages (transfer and distill train it from there). Default: the model's own (1 for a "
                                "base model)."),
              click.option("--retrieval-heads", type=click.IntRange(1, 1 << 20), default=40, show_default=True,
                           help="Heads stage: how many heads (the teacher's most retrieving) get --retrieval-gain."),
              click.option("--retrieval-gain", type=Quantity("", 0.25, 8.0), default=3.0, show_default=True,
                           help="Heads stage: their C2P gain (x the characterized C2P); distill keeps it."),
              click.option("--recall-weight", type=Quantity("", 0.0, 1000.0), default=0.0, show_default=True,
                           help="Extra weight in the loss of the tokens that recall a rare word from 16 or more tokens "
                                "back in the window (the retrieval LAMBADA scores; linear, nonlinear, distill, "
                                "mlp)."),
              click.option("--repetition-weight", type=Quantity("", 0.0, 100.0), default=0.0, show_default=True,
                           help="mlp stage: weight of the sentence-repetition loss (DITTO) beside distillation: "
                                "sentences of the training text repeated, each repetition taught to be half as "
                                "likely as the one before, against greedy loops."),
              click.option("--attention-weight", type=Quantity("", 0.0, 100.0), default=0.0, show_default=True,
                           help="Transfer stage: weight of the attention-weight divergence (KL of the softmax "
                                "teacher's weights to the normalised C2P pulses, last 64 queries of each sequence) "
                                "beside the output error."))
@option_group("loop",
              click.option("--batch", type=click.IntRange(1, 4096), default=4, show_default=True,
                           help="Sequences per micro-batch."),
              click.option("--seq", type=click.IntRange(2, 1 << 20), default=256, show_default=True,
                           help="Tokens per training sequence."),
              click.option("--accumulate", type=click.IntRange(1, 4096), default=1, show_default=True,
                           help="Micro-batches per optimizer step."),
              click.option("--checkpoint-every", type=click.IntRange(1, None), default=50, show_default=True),
              click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True),
              click.option("--precision", type=click.Choice(TRAINING_PRECISIONS), default="auto", show_default=True,
                           help="Training passes under bfloat16 autocast (the gain-cell layers stay float32 on the "
                                "CPU): auto = on CUDA only; bfloat16 on the CPU trains faster where it has bf16 "
                                "instructions (benchmarks/RESULTS.md)."))
@option_group("calibration",
              click.option("--calibration-tokens", type=click.IntRange(1, 1 << 24), default=512, show_default=True),
              click.option("--calibration-iterations", type=click.IntRange(1, 10**6), default=100, show_default=True),
              click.option("--max-train-tokens", type=click.IntRange(1, None), default=None,
                           help="Use only the first N tokens of the text."))
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@hardware_option
def adapt(model_spec, surrogate, out_dir, train_text, stages, steps, lora_rank, objective, loop, calibration, device,
          hardware):
    """Adapt a pre-trained LM to gain-cell attention: the paper's linear fine-tune -> calibration -> nonlinear
    fine-tune, or layer-wise attention transfer -> distillation."""
    from ...adapt.models import ADAPTED_MANIFEST, STAGING
    from ...adapt.recipe import STAGE_LR, AdaptOptions, adapt as run_adapt
    from ...adapt.text import check_text_file
    from ...adapt.train import TrainConfig

    check_text_file(train_text, "--train-text")  # before any model is loaded
    stage_names = tuple(s.strip() for s in stages.split(",") if s.strip())
    refuse_options_of_other_stages(click.get_current_context(), stage_names, adapted=is_adapted_model(model_spec))
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError("--out", f"{out_dir} exists and is not a folder")
    lock = out / ".gaincell-adapt"
    names = {p.name for p in out.iterdir()} - {f".{lock.name}.lock"} if out.is_dir() else set()
    if names and not names & {ADAPTED_MANIFEST, STAGING, "checkpoints"}:
        raise ConfigError("--out", f"{out_dir} is a folder with other files in it, not an adapted model folder; "
                                   "give a new or empty folder (an interrupted `gaincell adapt` folder resumes)")
    for source in (train_text, surrogate, model_spec):
        if Path(source).exists() and out.resolve() in (Path(source).resolve(), *Path(source).resolve().parents):
            raise ConfigError("--out", f"{out_dir} holds the input {source}; choose a folder outside it")
    train = vars(loop)
    lr, distill = objective.lr, objective.distill
    recall = {"recall_weight": objective.recall_weight}  # the stages trained on the language-model loss

    def rate(stage: str) -> float:
        return STAGE_LR[stage] if lr is None else lr
    options = AdaptOptions(model_spec, surrogate_file(surrogate), out, Path(train_text),
                           stage_names,
                           TrainConfig(steps=steps.steps, lr=rate("linear"), distill_weight=distill or 0.0, **recall,
                                       **train),
                           TrainConfig(steps=steps.steps, lr=rate("nonlinear"), distill_weight=distill or 0.0, **recall,
                                       **train),
                           TrainConfig(steps=steps.transfer_steps, lr=rate("transfer"), scaler_lr=objective.scaler_lr,
                                       attention_weight=objective.attention_weight, **train),
                           TrainConfig(steps=steps.distill_steps, lr=rate("distill"), scaler_lr=objective.scaler_lr,
                                       distill_weight=1.0 if distill is None else distill, **recall, **train),
                           lora_rank, calibration.calibration_tokens, calibration.calibration_iterations,
                           max_train_tokens=calibration.max_train_tokens, device=device, hardware=hardware,
                           c2p_gain=objective.c2p_gain, retrieval_heads=objective.retrieval_heads,
                           retrieval_gain=objective.retrieval_gain,
                           mlp=TrainConfig(steps=steps.mlp_steps, lr=rate("mlp"),
                                           distill_weight=1.0 if distill is None else distill, **recall,
                                           repetition_weight=objective.repetition_weight, **train))
    created = not out.exists()
    try:
        with output_lock(lock):
            manifest = run_adapt(options, say=click.echo)
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()  # only while still empty: a refusal leaves no folder behind, a started run its work
        raise
    click.echo(f"adapted model in {out_dir}: stages done {', '.join(manifest['stages_done'])}")


STAGE_OPTIONS = {  # adapt options that only some stages read
    "steps": ("linear", "nonlinear"), "transfer_steps": ("transfer",), "distill_steps": ("distill",),
    "mlp_steps": ("mlp",), "lora_rank": ("transfer", "distill", "mlp"), "scaler_lr": ("transfer", "distill"),
    "attention_weight": ("transfer",), "recall_weight": ("linear", "nonlinear", "distill", "mlp"),
    "repetition_weight": ("mlp",),
    "retrieval_heads": ("heads",), "retrieval_gain": ("heads",),
    "distill": ("linear", "nonlinear", "distill", "mlp"),
    "calibration_tokens": ("calibrate", "transfer", "distill"),  # transfer and distill measure layer errors on it
    "calibration_iterations": ("calibrate",),
}


def is_adapted_model(model_spec: str) -> bool:
    """Whether --model names an adapted model (shipped, or a folder with an adapted manifest), which `adapt`
    re-targets to another cell before any stage, measuring the calibration batch."""
    from ...adapt.models import ADAPTED_MANIFEST, SHIPPED

    return str(model_spec) in SHIPPED or (Path(model_spec) / ADAPTED_MANIFEST).is_file()


def refuse_options_of_other_stages(context: click.Context, stages: tuple[str, ...], adapted: bool = False) -> None:
    """An option given on the command line for stages that --stages does not run is a mistake: say so. `adapted`:
    --model is an adapted model, whose re-targeting reads --calibration-tokens whatever the stages."""
    for name, readers in STAGE_OPTIONS.items():
        if adapted and name == "calibration_tokens":
            continue
        if context.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE and not set(readers) & set(
                stages):
            option = "--" + name.replace("_", "-")
            named = readers[0] if len(readers) == 1 else f"{', '.join(readers[:-1])} and {readers[-1]}"
            raise ConfigError(option, f"is read only by the {named} stage{'s' if len(readers) > 1 else ''}, which "
                                      f"--stages ({','.join(stages)}) does not run")


@click.command(name="eval")
@click.option("--model", "model_spec", required=True,
              help="An adapted folder (gaincell adapt), smollm2-gaincell (shipped), smollm2, or a Hugging Face model "
                   "folder.")
@click.option("--data", "data_paths", multiple=True, required=True,
              help="Text file (.txt: sliding-window perplexity) or LAMBADA .jsonl (last-word accuracy); repeatable.")
@click.option("--surrogate", default=None,
              help="Plain model only: swap its attention for gain-cell attention from this surrogate ('paper' or a "
                   "file) with initial scalers (the naive swap).")
@click.option("--mode", type=click.Choice(["nonlinear", "linear", "ideal"]), default=None,
              help="Gain-cell mode (default: the adapted folder's, or nonlinear for a naive swap).")
@option_group("scoring",
              click.option("--max-tokens", type=click.IntRange(2, None), default=None,
                           help="Perplexity on the first N tokens only."),
              click.option("--context", type=click.IntRange(2, 1 << 20), default=1024, show_default=True,
                           help="Perplexity window."),
              click.option("--stride", type=click.IntRange(1, 1 << 20), default=512, show_default=True,
                           help="Perplexity window step."),
              click.option("--limit", type=click.IntRange(1, None), default=None, help="LAMBADA: the first N items only."))
@click.option("--harness", is_flag=True, default=False,
              help="Also evaluate each --data through lm-evaluation-harness (lm-eval, in the 'lm' extra) on a task "
                   "built from the local file (no hub): a .txt as one document scored in disjoint windows of "
                   "--context tokens after a prefix token (token/word/byte perplexity, bits per byte; gaincell's "
                   "evaluator on those same windows is printed beside it), a .jsonl as LAMBADA (accuracy).")
@option_group("variation",
              click.option("--variation-scale", type=Quantity("", 0.0, 1000.0), default=0.0, show_default=True,
                           help="Device variation: every cell of every layer's arrays a frozen draw of the fitted "
                                "cell-to-cell variation, at this multiple of its sigma (0: off)."),
              click.option("--read-noise-scale", type=Quantity("", 0.0, 1000.0), default=0.0, show_default=True,
                           help="Read noise, fresh per read, at this multiple of the fitted figure (0: off)."),
              click.option("--variation", "variation_path", type=click.Path(dir_okay=False), default=None,
                           help="Surrogate whose fitted variation component to use (gaincell characterize --mc N, "
                                "then fit); default: the model's own surrogate."),
              click.option("--variation-seed", type=click.IntRange(0, 2**31 - 1), default=0, show_default=True,
                           help="Which cells the variation draws (layer i: its own cells from this seed)."))
@click.option("--out", "out_json", type=click.Path(dir_okay=False), default=None, help="Also write results as JSON.")
@click.option("--device", default="auto", show_default=True)
@hardware_option
@force_option
def eval_command(model_spec, data_paths, surrogate, mode, scoring, harness, variation, out_json, device, hardware, force):
    """Perplexity and LAMBADA accuracy of an adapted or plain model (the same code for baselines)."""
    from ...adapt.evaluate import evaluate_path
    from ...adapt.harness import evaluate_with_harness, harness_summary, require_lm_eval
    from ...adapt.shipped import model_folder
    from ...adapt.models import (ADAPTED_MANIFEST, apply_variation, load_adapted, load_pretrained,
                                swap_attention)
    from ...adapt.recipe import pick_device
    from ...adapt.text import check_data_file
    from ...surrogate.file import Surrogate

    max_tokens, context, stride, limit = scoring.max_tokens, scoring.context, scoring.stride, scoring.limit
    variation_scale, read_noise_scale = variation.variation_scale, variation.read_noise_scale
    variation_path, variation_seed = variation.variation_path, variation.variation_seed
    if out_json:
        guard_output(out_json, REPORT, [*data_paths, model_spec, *([surrogate] if surrogate else []),
                                        *([variation_path] if variation_path else [])], force)
    varied = variation_scale > 0 or read_noise_scale > 0
    if variation_path and not varied:
        raise ConfigError("--variation", "needs --variation-scale or --read-noise-scale above 0")
    if harness:
        require_lm_eval()  # before loading the model
    for path in data_paths:
        check_data_file(path, "--data")  # every --data is checked before the model loads
    folder = model_folder(model_spec)
    if (folder / ADAPTED_MANIFEST).is_file():
        if surrogate or hardware:
            raise ConfigError("--surrogate" if surrogate else "--hardware",
                              "is for plain models; an adapted folder carries its own (set at `gaincell adapt`)")
        model, tokenizer = load_adapted(folder, mode)
        kind = "adapted"
        own_surrogate = folder / "surrogate.h5"
    else:
        model, tokenizer, _ = load_pretrained(folder)
        kind = "plain (softmax)"
        own_surrogate = surrogate_file(surrogate) if surrogate else None
        if surrogate:
            swap_attention(model, own_surrogate, mode=mode or "nonlinear", hardware=hardware)
            kind = f"naive swap ({mode or 'nonlinear'}, initial scalers)"
            kind += "".join(f", {name}={value}" for name, value in hardware.items())  # a study's hardware fields
        elif mode or hardware:
            raise ConfigError("--mode" if mode else "--hardware", "needs --surrogate for a plain model")
    if varied:
        if own_surrogate is None:
            raise ConfigError("--variation-scale", "needs gain-cell attention: an adapted folder, or --surrogate")
        own = Surrogate.load(own_surrogate)
        source = Surrogate.load(variation_path) if variation_path else own
        apply_variation(model, own, source, scale=variation_scale, read_noise_scale=read_noise_scale,
                        seed=variation_seed)
        kind += f", variation {variation_scale:g}x, read noise {read_noise_scale:g}x, seed {variation_seed}"
    model.to(pick_device(device))
    results = []
    for path in data_paths:
        result = {"written_by": f"gaincell {__version__}", "model": str(model_spec), "attention": kind,
                  "hardware": hardware, **evaluate_path(model, tokenizer, path, max_tokens, context, stride, limit)}
        results.append(result)
        figure = result.get("perplexity", result.get("accuracy"))
        if not math.isfinite(figure):
            raise GaincellError(f"{path}: the {result['kind']} came out {figure} ({kind}): the model's outputs are "
                                "not finite (an implausible surrogate or variation, or diverged weights); nothing "
                                "was written")
        metric = (f"perplexity {result['perplexity']:.4g} over {result['tokens_scored']} tokens"
                  if result["kind"] == "perplexity" else f"accuracy {result['accuracy']:.4f} over {result['items']} items")
        click.echo(f"{path}: {metric}  [{kind}]")
        if harness:
            result["harness"] = evaluate_with_harness(model, tokenizer, path, max_tokens=max_tokens, max_length=context,
                                                      limit=limit, cross_check=True)
            click.echo(f"{path}: {harness_summary(result['harness'])}  [{kind}]")
    if out_json:
        atomic_write_text(out_json, json.dumps(results, indent=2) + "\n")
        click.echo(f"wrote {out_json}")


@click.command(name="generate")
@click.option("--model", "model_spec", required=True,
              help="An adapted folder (gaincell adapt) or smollm2-gaincell (shipped), or smollm2 / a Hugging Face "
                   "model folder with --surrogate.")
@click.option("--prompt", required=True, help="The text to continue.")
@click.option("--max-new-tokens", type=click.IntRange(1, 1 << 20), default=32, show_default=True,
              help="Tokens to generate (prompt + these must fit the model's context).")
@click.option("--temperature", type=Quantity("", 0.0, 100.0), default=0.0, show_default=True,
              help="0: greedy; above 0: sampled at this temperature.")
@click.option("--top-k", type=click.IntRange(1, None), default=None, help="Sampling: keep the K likeliest tokens only.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True, help="Sampling seed.")
@click.option("--repetition-penalty", type=float, default=1.0, show_default=True,
              help="Above 1: tokens already in the text are made less likely (greedy and sampled; both models).")
@click.option("--surrogate", default=None,
              help="Plain model only: gain-cell attention from this surrogate ('paper' or a file), initial scalers.")
@click.option("--json", "out_json", type=click.Path(dir_okay=False), default=None,
              help="Also write the prompt and both continuations as JSON.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@force_option
def generate_command(model_spec, prompt, max_new_tokens, temperature, top_k, seed, repetition_penalty, surrogate,
                     out_json, device, force):
    """Continue a prompt with the softmax model (transformers' generate) and with the gain-cell model decoding
    token by token through every layer's ring cache (the hardware's decode path); both decoded alike."""
    from ...adapt.generate import REPEAT_NGRAM, Decoding, generate_both, load_generation_models, repeated_ngrams
    from ...adapt.recipe import pick_device

    decoding = Decoding(max_new_tokens, temperature, top_k, seed, repetition_penalty)
    if out_json:
        guard_output(out_json, REPORT, [model_spec, *([surrogate] if surrogate else [])], force, option="--json")
    models = load_generation_models(model_spec, surrogate_file(surrogate) if surrogate else None)
    target = pick_device(device)
    models.gaincell.to(target)
    models.softmax.to(target)
    started = time.perf_counter()
    continuations = generate_both(models, prompt, decoding)
    click.echo(f"prompt: {prompt}")
    for continuation in continuations:
        click.echo(f"\n[{continuation.label}] ({len(continuation.tokens)} tokens, "
                   f"{repeated_ngrams(continuation.tokens)} repeated {REPEAT_NGRAM}-token phrases)\n{continuation.text}")
    click.echo(f"\n{decoding.describe()}, {time.perf_counter() - started:.1f} s on {target}")
    if out_json:
        record = {"written_by": f"gaincell {__version__}", "model": str(model_spec), "prompt": prompt,
                  "decoding": {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_k": top_k,
                               "seed": seed, "repetition_penalty": repetition_penalty},
                  **{key: {"label": c.label, "text": c.text, "tokens": c.tokens,
                           f"repeated_{REPEAT_NGRAM}_token_phrases": repeated_ngrams(c.tokens)}
                     for key, c in zip(("softmax", "gaincell"), continuations)}}
        atomic_write_text(out_json, json.dumps(record, indent=2) + "\n")
        click.echo(f"wrote {out_json}")
