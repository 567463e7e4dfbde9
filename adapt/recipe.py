"""`gaincell adapt`: the paper's recipe as resumable stages writing one adapted folder.

Stages, in this order (any subset). The paper's recipe: `linear` (fine-tune the linear intermediate model,
recording every scaler's target statistics), `calibrate` (the nonlinear model's scalers set from those targets
without gradients; with no linear stage the targets come from the softmax model, see adapt.calibrate),
`nonlinear` (fine-tune the nonlinear model: forward with the fitted curve, backward with the line's gradient).
The cheap recipe: `transfer` (every layer's gain-cell attention trained to reproduce its softmax attention on the
teacher's inputs, all layers at once; adapt.transfer) then `distill` (end-to-end KL divergence to the softmax
model's logits). Both train only the scalers and, with `lora_rank` > 0, LoRA adapters on the attention
projections, merged into the weights when the stage ends. `mlp` distils the same way with LoRA adapters on the MLP
projections alone, with the sentence-repetition loss beside when its weight is set (adapt.repetition): attention
and its circuit settings stay as they are (before `heads`: MLPs distilled behind sharpened heads learn to discount
them, benchmarks/RESULTS.md; after it, those heads are softened while the MLPs train).
`heads` (last; adapt.heads) gives the softmax teacher's most retrieving heads a larger C2P gain, which later
distillations keep.
Starting from an adapted model (an adapted folder, or a shipped one such as `smollm2-gaincell`) re-targets it to
the surrogate (`adapt.retarget`) unless it was made for that surrogate and hardware: its layers move to the new
cell with their scalers carried over, and transfer and distill learn from its base model.
After each stage the folder `out` is saved (`save_adapted`) and its manifest lists the stages done; a stage
interrupted mid-way resumes from `out/checkpoints/<stage>.safetensors`, and running the same command again skips the
stages already done.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from gaincell.errors import ConfigError
from gaincell import progress
from gaincell.surrogate.file import Surrogate, sha256_of
from gaincell.surrogate.attention import C2P_GAIN_RANGE

from .calibrate import calibrate, softmax_targets
from .heads import (check_head_indices, check_heads, hold_heads, retrieval_scores, scoring_windows, sharpen_heads,
                    unsharpened, word_starts)
from .manifest import held_heads
from .models import (ADAPTED_MANIFEST, finish_interrupted_save, gaincell_layers, load_adapted, load_pretrained,
                     read_manifest, save_adapted, set_mode, swap_attention)
from .repetition import sentence_spans
from .retarget import retarget
from .shipped import model_folder
from .text import token_stream
from .train import TrainConfig, distributed, finetune
from .transfer import add_adapters, layer_errors, layer_groups, merge_adapters, mlp_projections, train_transfer

STAGES = ("linear", "calibrate", "transfer", "nonlinear", "distill", "mlp", "heads")
STAGE_LR = {"linear": 2e-4, "nonlinear": 2e-4, "transfer": 2e-3, "distill": 5e-4, "mlp": 1e-3}  # peak rates
# (adapters in transfer/distill/mlp); the transfer's scalers train at 1e-2


@dataclass
class AdaptOptions:
    model: str
    surrogate: Path
    out: Path
    train_text: Path | None = None
    stages: tuple[str, ...] = STAGES
    linear: TrainConfig = field(default_factory=lambda: TrainConfig(steps=200, lr=STAGE_LR["linear"]))
    nonlinear: TrainConfig = field(default_factory=lambda: TrainConfig(steps=200, lr=STAGE_LR["nonlinear"]))
    transfer: TrainConfig = field(default_factory=lambda: TrainConfig(steps=200, lr=STAGE_LR["transfer"],
                                                                      scaler_lr=1e-2))
    distill: TrainConfig = field(default_factory=lambda: TrainConfig(steps=50, lr=STAGE_LR["distill"],
                                                                     distill_weight=1.0))
    lora_rank: int = 16
    calibration_tokens: int = 512
    calibration_iterations: int = 100
    max_std_ratio: float | None = 2.0
    max_train_tokens: int | None = None
    device: str = "auto"
    hardware: dict = field(default_factory=dict)  # fields of the surrogate's hardware configuration set for a study
    c2p_gain: float | None = None  # every head's C2P gain before training (None: the model's own; 1 for a base model)
    retrieval_heads: int = 40  # the heads stage: how many of the teacher's retrieving heads get `retrieval_gain`
    retrieval_gain: float = 3.0
    mlp: TrainConfig = field(default_factory=lambda: TrainConfig(steps=30, lr=STAGE_LR["mlp"], distill_weight=1.0))

    def __post_init__(self):
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown or not self.stages:
            raise ConfigError("--stages", f"must be a comma-separated subset of {','.join(STAGES)}; got {self.stages}")
        self.stages = tuple(s for s in STAGES if s in self.stages)
        if self.train_text is None:
            raise ConfigError("--train-text", "is needed (fine-tuning text and the calibration batch): a .txt or "
                                              ".jsonl path, e.g. from scripts/get_training_text.py")
        if not isinstance(self.lora_rank, int) or self.lora_rank < 0:
            raise ConfigError("--lora-rank", f"must be an integer >= 0 (0: scalers only); got {self.lora_rank!r}")
        if "transfer" in self.stages and "linear" in self.stages:
            raise ConfigError("--stages", "transfer learns from the model's own weights as the softmax teacher, and "
                                          "the linear stage changes them: run transfer without linear")
        for stage, config in (("distill", self.distill), ("mlp", self.mlp)):
            if stage in self.stages and config.distill_weight == 0:
                raise ConfigError("--distill", f"must be > 0 for the {stage} stage (the weight of the KL term)")
        if "mlp" in self.stages and self.lora_rank == 0:
            raise ConfigError("--lora-rank", "must be > 0 for the mlp stage (it trains LoRA adapters on the MLPs only)")
        if self.c2p_gain is not None and not C2P_GAIN_RANGE[0] <= self.c2p_gain <= C2P_GAIN_RANGE[1]:
            raise ConfigError("--c2p-gain", f"must be within {C2P_GAIN_RANGE[0]:g} .. {C2P_GAIN_RANGE[1]:g} (the "
                                            f"integration capacitors the C2P offers); got {self.c2p_gain!r}")
        check_heads(self.retrieval_heads, self.retrieval_gain)
        if self.calibration_tokens < 16:
            raise ConfigError("--calibration-tokens", f"must be >= 16; got {self.calibration_tokens}")


def pick_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; or an explicit torch device name."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError("--device", f"must be auto, cpu, cuda or cuda:N; got {name!r}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device", "cuda was asked for but torch sees no CUDA device")
    return device


def adapt(options: AdaptOptions, say=progress.say) -> dict:
    """Run the stages not done yet; returns the final manifest."""
    out, device = Path(options.out), pick_device(options.device)
    rank, world = distributed()
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
    surrogate_sha = sha256_of(options.surrogate)
    Surrogate.load(options.surrogate)  # refuse a bad surrogate before any model work
    finish_interrupted_save(out)
    model, tokenizer, manifest, fresh = _open(options, out, surrogate_sha)
    base = manifest["base_model"]
    check_head_indices(model, held_heads(manifest), options.model)
    model.to(device)
    todo = [s for s in options.stages if s not in manifest["stages_done"]]
    retargeted = "adapted_from" in manifest
    if retargeted and any(s in todo for s in ("linear", "calibrate", "nonlinear")):
        raise ConfigError("--stages", f"{options.model} is an adapted model: re-target it with transfer and distill")
    if "transfer" in todo and any(s in manifest["stages_done"] for s in ("linear", "nonlinear", "distill")):
        raise ConfigError("--stages", f"{out} has been fine-tuned ({', '.join(manifest['stages_done'])}): transfer "
                                      "needs the unmodified weights as its teacher; choose a new --out")
    if not todo:
        say(f"{out}: stages {', '.join(manifest['stages_done'])} already done")
        return manifest
    stream = token_stream(options.train_text, tokenizer, options.max_train_tokens, "--train-text")
    # the repetition loss's sentences found before any stage trains (a text without them is refused first)
    sentences = sentence_spans(stream, tokenizer) if "mlp" in todo and options.mlp.repetition_weight else None
    calibration_batch = stream[: options.calibration_tokens].unsqueeze(0)
    say(f"training text: {stream.numel()} tokens from {options.train_text}; stages to run: {', '.join(todo)}")
    if retargeted and fresh and manifest["same_cell"]:
        say(f"{options.model} was adapted to this surrogate and hardware: its layers are kept as they are")
    elif retargeted and fresh:
        retarget(model, options.surrogate, calibration_batch, options.hardware)
        say(f"re-targeted {options.model} to {options.surrogate}: scalers carried over, outputs matched per head")
    if fresh and options.c2p_gain is not None:
        for layer in gaincell_layers(model):
            layer.c2p_gain.data.fill_(options.c2p_gain)
        manifest["c2p_gain_start"] = options.c2p_gain
        manifest.pop("held_heads", None)  # the source's sharpened heads are gone: nothing for distillation to keep
        say(f"every head's C2P gain set to {options.c2p_gain:g} before the stages")
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    for stage in todo:
        started, cpu_started = time.perf_counter(), time.process_time()
        say(f"stage {stage}")
        checkpoint = out / "checkpoints" / f"{stage}.safetensors"
        if stage == "calibrate":
            record = _calibrate(model, calibration_batch, options, say)
        elif stage == "heads":
            record = _sharpen(model, stream, word_starts(tokenizer), options, _frozen_teacher(base, device), say)
        elif stage == "mlp":
            model, record = _train_mlp(model, stream, options, checkpoint, _frozen_teacher(base, device),
                                       held_heads(manifest), sentences)
        elif stage in ("transfer", "distill"):
            model, record = _train_attention(model, stream, calibration_batch, options, stage, checkpoint, device, say,
                                             base if retargeted else None, held_heads(manifest))
        else:
            record = _finetune(model, stream, options, stage, checkpoint, device)
        record["seconds"] = round(time.perf_counter() - started, 1)
        record["stage_cpu_seconds"] = round(time.process_time() - cpu_started, 1)
        record["device"] = str(device) if device.type == "cpu" else torch.cuda.get_device_name(device)
        manifest["stages"][stage] = record
        manifest["stages_done"].append(stage)
        if rank == 0:  # under torchrun only rank 0 writes; the others wait for it
            save_adapted(model, tokenizer, out, options.surrogate, manifest)
            checkpoint.unlink(missing_ok=True)
            say(f"stage {stage} done: " + ", ".join(f"{k} {v}" for k, v in record.items()
                                                    if k not in ("config", "losses", "layer_errors", "weights")))
        if world > 1:
            torch.distributed.barrier()
    return manifest


def _open(options: AdaptOptions, out: Path, surrogate_sha: str):
    """(model, tokenizer, manifest, fresh): the adapted folder `out` to resume, or the model to start from (a base
    model swapped to the surrogate, or an adapted one, re-targeted by the caller unless made for this cell)."""
    if (out / ADAPTED_MANIFEST).is_file():
        manifest = read_manifest(out)
        if (manifest.get("adapted_from", manifest.get("base_model")) != str(options.model)
                or manifest.get("surrogate_sha256") != surrogate_sha):
            raise ConfigError("--out", f"{out} holds an adaptation of {manifest.get('base_model')} to another surrogate or "
                                       "model; choose a new --out")
        # a folder continued on its source's own cell kept the source's hardware fields without --hardware
        given = {} if manifest.get("same_cell") else manifest["layer"].get("hardware", {})
        if given != options.hardware:
            raise ConfigError("--hardware", f"{out} was adapted with the hardware fields {given or 'of its source'}; "
                                            "give the same, or a new --out")
        manifest.setdefault("stages_done", [])
        if not isinstance(manifest.setdefault("stages", {}), dict):
            raise ConfigError("--out", f"{out}/{ADAPTED_MANIFEST}: its stages entry is not a JSON object; choose a new --out")
        model, tokenizer = load_adapted(out)
        return model, tokenizer, manifest, False
    model, tokenizer, source = load_pretrained(model_folder(options.model))
    manifest = {"base_model": str(options.model), "surrogate_sha256": surrogate_sha, "stages_done": [], "stages": {}}
    if gaincell_layers(model):  # an adapted model
        made = read_manifest(source)
        manifest.update(base_model=made["base_model"], adapted_from=str(options.model), held_heads=held_heads(made),
                        same_cell=made.get("surrogate_sha256") == surrogate_sha and not options.hardware)
    else:
        swap_attention(model, options.surrogate, hardware=options.hardware)
    return model, tokenizer, manifest, True


def _calibrate(model, batch, options: AdaptOptions, say) -> dict:
    set_mode(model, "nonlinear", linear_backward=False)
    layers = gaincell_layers(model)
    source = "linear stage EMA"
    if any(torch.isnan(s.target_mean).any() for layer in layers for s in layer.scalers().values()):
        softmax_targets(model, batch)
        source = "softmax model (no linear stage)"
    result = calibrate(model, batch, iterations=options.calibration_iterations, max_std_ratio=options.max_std_ratio)
    say(f"calibration: {result.iterations} iterations, converged={result.converged}, last change "
        f"{result.changes[-1]:.3g}, targets from the {source}")
    return {"iterations": result.iterations, "converged": result.converged, "final_change": result.changes[-1],
            "targets": source, "batch_tokens": int(batch.numel()), "max_std_ratio": options.max_std_ratio}


def _finetune(model, stream, options: AdaptOptions, stage: str, checkpoint: Path, device) -> dict:
    config = options.linear if stage == "linear" else options.nonlinear
    if stage == "linear":
        set_mode(model, "linear", linear_backward=False)
    else:
        set_mode(model, "nonlinear", linear_backward=True)
    teacher = _frozen_teacher(options.model, device) if config.distill_weight > 0 else None
    result = finetune(model, stream, config, checkpoint, teacher=teacher, track_statistics=stage == "linear")
    return {**result, "config": asdict(config)}


def _frozen_teacher(base: str, device):
    """The unmodified base model, frozen, for distillation and for measuring per-layer errors."""
    return load_pretrained(base)[0].to(device).eval().requires_grad_(False)


def _sharpen(model, stream, starts, options: AdaptOptions, teacher, say) -> dict:
    windows = scoring_windows(stream.numel())
    scores, queries = retrieval_scores(teacher, stream, starts, windows)
    heads = sharpen_heads(model, scores, options.retrieval_heads, options.retrieval_gain)
    say(f"C2P gain {options.retrieval_gain:g} on the teacher's {len(heads)} most retrieving heads (of "
        f"{scores.numel()}; weight on the recalled word, {queries} recalling queries): layers "
        f"{', '.join(str(layer) for layer in sorted({layer for layer, _ in heads}))}")
    return {"heads": heads, "gain": options.retrieval_gain, "recalling_queries": queries, "windows_read": windows,
            "weights": [[round(float(x), 4) for x in row] for row in scores]}


def _train_attention(model, stream, batch, options: AdaptOptions, stage: str, checkpoint: Path, device, say,
                     base: str | None = None, held: list | None = None):
    """The transfer or distill stage: scalers and LoRA adapters train, the rest is frozen; returns the model with
    the adapters merged, and the stage's record (including the per-layer error before and after, measured
    against the unmodified model). `base`: the base model of a re-targeted adapted model (the teacher of both
    stages; else the transfer's teacher is the model's own softmax pass and distill's `options.model`); `held`:
    heads whose C2P gain and threshold distillation keeps (`heads.hold_heads`)."""
    config = options.transfer if stage == "transfer" else options.distill
    set_mode(model, "nonlinear", linear_backward=False)
    if stage == "transfer":
        teacher = _frozen_teacher(base, device) if base else None
        model, result = train_transfer(model, stream, batch, config, checkpoint, lora_rank=options.lora_rank,
                                       teacher=teacher)
    else:
        teacher = _frozen_teacher(base or options.model, device)
        before = layer_errors(model, batch, teacher)
        model = add_adapters(model, options.lora_rank, seed=config.seed)
        hold_heads(model, held or [])
        result = finetune(model, stream, config, checkpoint, teacher=teacher,
                          groups=layer_groups(model, config.lr, config.scaler_lr), dropout=False, desc="distill")
        model = merge_adapters(model).eval()
        result["layer_errors"] = {"before": before, "after": layer_errors(model, batch, teacher)}
    errors = result["layer_errors"]
    say(f"per-layer relative error (mean over layers): {sum(errors['before']) / len(errors['before']):.3f} before "
        f"{stage}, {sum(errors['after']) / len(errors['after']):.3f} after")
    return model, {**result, "lora_rank": options.lora_rank, "config": asdict(config)}


def _train_mlp(model, stream, options: AdaptOptions, checkpoint: Path, teacher, held: list[list[int]],
               sentences: torch.Tensor | None):
    """The mlp stage: KL distillation to the base model through LoRA adapters on every MLP projection, plus the
    sentence-repetition loss when its weight is set (adapt.repetition); attention weights, scalers, C2P
    thresholds and gains stay frozen, and heads a heads stage sharpened (`held`) train at the others' median gain
    (`heads.unsharpened`); `sentences`: the repetition loss's (`repetition.sentence_spans`). Returns the model
    with the adapters merged."""
    config = options.mlp
    set_mode(model, "nonlinear", linear_backward=False)
    model = add_adapters(model, options.lora_rank, seed=config.seed, targets=mlp_projections(model), circuit=False)
    adapters = [p for p in model.parameters() if p.requires_grad]
    with unsharpened(model, held):
        result = finetune(model, stream, config, checkpoint, teacher=teacher, sentences=sentences,
                          groups=[{"params": adapters, "lr": config.lr}], dropout=False, desc="mlp")
    record = {**result, "lora_rank": options.lora_rank, "config": asdict(config)}
    if held:
        record["trained_behind"] = f"{len(held)} sharpened heads at the other heads' median C2P gain"
    return merge_adapters(model).eval(), record
