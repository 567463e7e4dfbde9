"""Fine-tuning loop for the adaptation stages: resumable, DDP-ready, optional distillation.

AdamW (betas 0.9/0.95, weight decay 0.1 as in the paper), linear warm-up then cosine decay to 10 % of the
peak rate, gradient clipping (1.0), gradient accumulation, bf16 autocast (`precision`: on CUDA by default, on
the CPU when asked; the gain-cell layers compute in float32 there, `surrogate.options.float32_on_cpu`). Batches are random
windows of the training token stream drawn from a generator seeded by (seed, step, rank), so a resumed run
sees exactly the batches the uninterrupted run would have. A checkpoint (model, optimizer, schedule, step,
tokens seen; tensors and plain data in one safetensors file, `adapt.checkpoint`, never a pickle) is written atomically every `checkpoint_every` steps, at the end, and when the run is interrupted
(Ctrl-C or SIGTERM stop it after the step under way; a second signal at once); `finetune` resumes from it
when it exists.

Under torchrun (WORLD_SIZE > 1) the model is wrapped in DistributedDataParallel, each rank draws its own
batches, and only rank 0 writes checkpoints. Loss: next-token cross-entropy, or, with `distill_weight` > 0,
a mix with the KL divergence to a frozen teacher (the unmodified model), useful when text is scarce.
"""
from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch

from gaincell.errors import ConfigError, InputFileError
from gaincell.progress import bar as progress_bar, say

from .checkpoint import load_state, save_state
from .repetition import repeated_rows, repetition_loss
from .text import random_windows


PRECISIONS = ("auto", "float32", "bfloat16")  # of the training passes' matmuls; auto: bfloat16 on CUDA only


@dataclass
class TrainConfig:
    steps: int
    batch: int = 4
    seq: int = 256
    accumulate: int = 1
    lr: float = 2e-4
    warmup: int | None = None  # default: 10 % of steps (at most 100)
    weight_decay: float = 0.1
    clip: float = 1.0
    distill_weight: float = 0.0
    scaler_lr: float | None = None  # peak rate of the gain-cell scalers when adapters train beside them (None: lr)
    attention_weight: float = 0.0  # transfer: weight of the attention-weight divergence beside the output error
    recall_weight: float = 0.0  # extra weight of the tokens that recall a rare word from far back (`recall_tokens`)
    repetition_weight: float = 0.0  # weight of the sentence-repetition loss beside the others (adapt.repetition)
    temperature: float = 1.0
    checkpoint_every: int = 50
    seed: int = 0
    precision: str = "auto"  # PRECISIONS: the autocast of the forward and backward passes

    def autocast(self, device: torch.device) -> bool:
        """Whether the passes run under bfloat16 autocast on `device`."""
        return self.precision == "bfloat16" or (self.precision == "auto" and device.type == "cuda")

    def __post_init__(self):
        for name in ("steps", "batch", "seq", "accumulate", "checkpoint_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"--{name.replace('_', '-')}", f"must be a positive integer; got {value!r}")
        if not self.lr > 0:
            raise ConfigError("--lr", f"must be > 0; got {self.lr}")
        if self.scaler_lr is not None and not self.scaler_lr > 0:
            raise ConfigError("--scaler-lr", f"must be > 0; got {self.scaler_lr}")
        if not 0 <= self.attention_weight <= 100:
            raise ConfigError("--attention-weight", f"must be in [0, 100]; got {self.attention_weight}")
        if not 0 <= self.recall_weight <= 1000:
            raise ConfigError("--recall-weight", f"must be in [0, 1000]; got {self.recall_weight}")
        if not 0 <= self.repetition_weight <= 100:
            raise ConfigError("--repetition-weight", f"must be in [0, 100]; got {self.repetition_weight}")
        if not 0 <= self.distill_weight <= 1:
            raise ConfigError("--distill", f"weight must be in [0, 1]; got {self.distill_weight}")
        if self.precision not in PRECISIONS:
            raise ConfigError("--precision", f"must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        if self.warmup is None:
            self.warmup = min(100, max(1, self.steps // 10))

    @property
    def tokens_per_step(self) -> int:
        return self.batch * self.seq * self.accumulate


def schedule(config: TrainConfig):
    """Learning-rate factor per step: linear warm-up, cosine to 0.1."""
    def factor(step: int) -> float:
        if step < config.warmup:
            return (step + 1) / config.warmup
        progress = min(1.0, (step - config.warmup) / max(1, config.steps - config.warmup))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def distributed() -> tuple[int, int]:
    """(rank, world size); starts the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (torch.distributed.get_rank(), world) if world > 1 else (0, 1)


@contextlib.contextmanager
def _handlers(handler, signals=(signal.SIGTERM,)):
    import threading

    if threading.current_thread() is not threading.main_thread():  # signals can only be caught there
        yield
        return
    previous = {number: signal.signal(number, handler) for number in signals}
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


class StopAfterStep:
    """Ctrl-C or SIGTERM inside the block asks to stop after the current step (so a checkpoint is never
    taken mid-update); a second signal interrupts at once."""

    def __init__(self):
        self.requested = False

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt("second interrupt")
        self.requested = True

    def __call__(self):
        return _handlers(self._handle, (signal.SIGINT, signal.SIGTERM))


def trainable_state(model) -> dict[str, torch.Tensor]:
    """What a checkpoint keeps: every parameter that trains and every gain-cell buffer (target statistics)."""
    return {name: value for name, value in model.state_dict(keep_vars=True).items()
            if (getattr(value, "requires_grad", False) or ".gaincell." in name)}


def finetune(model, stream: torch.Tensor, config: TrainConfig, checkpoint: str | Path, *, teacher=None,
             track_statistics: bool = False, progress: bool = True, groups=None, objective=None,
             desc: str = "fine-tune", dropout: bool = True, sentences: torch.Tensor | None = None) -> dict:
    """Train `model` on windows of `stream` for `config.steps` optimizer steps, resuming from `checkpoint` if it
    exists. `groups`: lists of parameters clipped separately, or dicts {"params": [...], "lr": peak rate}
    (default: one group, every parameter, at `config.lr`);
    `objective(trained, window, scale=...)`: forward/backward of one micro-batch (token ids (B, seq + 1), the
    loss multiplied by `scale` before backward), returning the loss (default: next-token loss, mixed with distillation from `teacher`); `dropout` False trains in eval
    mode (deterministic forward passes, as the transfer stage needs). Returns {'steps', 'tokens_seen',
    'loss' (mean of the last 10 %), 'seconds', 'cpu_seconds', 'losses' (per step)}. `sentences`: (start, stop)
    of sentences in `stream` (`repetition.sentence_spans`), which `config.repetition_weight` needs."""
    if config.repetition_weight and sentences is None:
        raise ConfigError("--repetition-weight", "needs the training text's sentences (the mlp stage finds them)")
    if config.distill_weight > 0 and teacher is None and objective is None:
        raise ConfigError("--distill", "needs the unmodified model as teacher")
    checkpoint = Path(checkpoint)
    rank, world = distributed()
    device = next(model.parameters()).device
    _track_statistics(model, track_statistics)
    groups = [{"params": list(model.parameters())}] if groups is None else [
        {**g, "params": list(g["params"])} if isinstance(g, dict) else {"params": list(g)} for g in groups]
    optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.95), weight_decay=config.weight_decay)
    groups = [g["params"] for g in groups]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule(config))
    state = {"step": 0, "tokens_seen": 0, "losses": [], "seconds": 0.0, "cpu_seconds": 0.0}
    if checkpoint.is_file():
        state = _resume(checkpoint, config, model, optimizer, scheduler, list(state), device)
        if rank == 0 and progress:
            say(f"resuming from step {state['step']} of {config.steps} ({checkpoint})")
    trained = model
    if world > 1 and objective is None:
        trained = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    if objective is None:
        common = frequent_tokens(stream, common_count(model.config.vocab_size)) if config.recall_weight else None
        objective = partial(_language_model_loss, teacher=teacher, config=config, common=common,
                            repetition=(stream, sentences) if config.repetition_weight else None)

    def save() -> None:
        if rank == 0:
            save_state({**state, "config": asdict(config), "model": trainable_state(model),
                          "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, checkpoint)

    model.train(dropout)
    bar = progress_bar(total=config.steps, initial=state["step"], desc=desc, unit="step", enabled=progress and not rank)
    started, cpu_started = time.perf_counter() - state["seconds"], time.process_time() - state["cpu_seconds"]
    stop = StopAfterStep()
    try:
        with stop():
            while state["step"] < config.steps and not stop.requested:
                loss = _one_step(trained, objective, stream, config, state["step"], rank, world, device)
                if world > 1 and trained is model:
                    _average_gradients(groups, world)
                for group in groups:
                    torch.nn.utils.clip_grad_norm_(group, config.clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state["step"] += 1
                state["tokens_seen"] += config.tokens_per_step * world
                state["losses"].append(loss)
                state["seconds"] = time.perf_counter() - started
                state["cpu_seconds"] = time.process_time() - cpu_started
                bar.update(1)
                tokens_per_s = config.tokens_per_step * world * state["step"] / max(state["seconds"], 1e-9)
                bar.set_postfix(loss=f"{loss:.4g}", lr=f"{scheduler.get_last_lr()[0]:.2e}", tok_s=f"{tokens_per_s:.0f}")
                if state["step"] % config.checkpoint_every == 0 or state["step"] == config.steps:
                    save()
        if stop.requested and state["step"] < config.steps:
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        bar.close()
        save()
        raise KeyboardInterrupt(f"interrupted at step {state['step']}; checkpoint {checkpoint} (run again to resume)")
    finally:
        bar.close()  # before any error message
        _track_statistics(model, False)
        model.eval()
    tail = state["losses"][-max(1, len(state["losses"]) // 10):]
    return {"steps": state["step"], "tokens_seen": state["tokens_seen"], "loss": sum(tail) / len(tail),
            "seconds": state["seconds"], "cpu_seconds": state["cpu_seconds"], "losses": list(state["losses"])}


def _track_statistics(model, on: bool) -> None:
    """Let the gain-cell scalers follow their inputs' statistics while training (the linear stage), or not."""
    from .models import gaincell_layers

    for layer in gaincell_layers(model):
        for scaler in layer.scalers().values():
            scaler.track_statistics = on


def _resume(checkpoint: Path, config: TrainConfig, model, optimizer, scheduler, keys: list[str], device) -> dict:
    """Load a training checkpoint written with the same options into the model, optimizer and schedule; returns
    the saved training state (`keys`)."""
    saved = load_state(checkpoint, device)
    if not (isinstance(saved.get("config"), dict) and isinstance(saved.get("model"), dict)
            and all(isinstance(v, torch.Tensor) for v in saved["model"].values())
            and isinstance(saved.get("step"), int) and isinstance(saved.get("losses"), list)):
        raise InputFileError(f"{checkpoint}: not a gaincell training checkpoint (no config, model tensors, step "
                             "or losses); delete it to start over")
    written = {**asdict(TrainConfig(steps=1)), **saved["config"]}  # a field added later: its default
    if any(written[k] != v for k, v in asdict(config).items() if k not in ("steps", "checkpoint_every", "warmup")):
        raise ConfigError("--resume", f"{checkpoint} was written with other training options "
                                      f"({saved['config']}); use another --out or the same options")
    _load_trainable(model, saved["model"], checkpoint)
    try:
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
    except (KeyError, ValueError, TypeError, IndexError, RuntimeError) as exc:
        raise InputFileError(f"{checkpoint}: its optimizer or schedule state does not fit this run ({exc}); "
                             "delete it to start over, or use another --out") from None
    return {k: saved.get(k, 0.0) for k in keys}


def _load_trainable(model, saved: dict, checkpoint: Path) -> None:
    try:
        missing, unexpected = model.load_state_dict(saved, strict=False)
    except RuntimeError as exc:  # same names, other shapes (e.g. another LoRA rank)
        raise ConfigError("--resume", f"{checkpoint} was written for other trainable parameters (e.g. another "
                                      f"--lora-rank): use another --out or the same options ({str(exc)[:200]})")
    wanted = set(trainable_state(model))
    if unexpected or wanted - set(saved):
        raise ConfigError("--resume", f"{checkpoint} does not match this model's trainable parameters (missing "
                                      f"{sorted(wanted - set(saved))[:3]}, unexpected {unexpected[:3]}); use another "
                                      "--out or the same options")


def _average_gradients(groups, world: int) -> None:
    """Mean of every gradient over the ranks (objectives that call submodules directly bypass DDP)."""
    for group in groups:
        for parameter in group:
            if parameter.grad is not None:
                torch.distributed.all_reduce(parameter.grad)
                parameter.grad /= world


def _one_step(trained, objective, stream, config: TrainConfig, step: int, rank: int, world: int, device) -> float:
    """`objective` over `accumulate` micro-batches (each backward-ed inside it); returns the mean loss."""
    total = 0.0
    for micro in range(config.accumulate):
        seed = ((config.seed * 1_000_003 + step) * config.accumulate + micro) * world + rank
        torch.manual_seed(seed)  # dropout too: a resumed run repeats the uninterrupted one
        window = random_windows(stream, config.batch, config.seq, seed).to(device)
        last = micro == config.accumulate - 1
        sync = trained.no_sync() if world > 1 and not last and hasattr(trained, "no_sync") else contextlib.nullcontext()
        # the backward on this thread: on autograd's device thread each fused-kernel layer's Python backward
        # cost ~250 us more host time on an H200 (benchmarks/RESULTS.md, "GPU check")
        with sync, torch.autocast(device.type, torch.bfloat16, enabled=config.autocast(device)), \
                torch.autograd.set_multithreading_enabled(False):
            total += objective(trained, window, scale=1.0 / config.accumulate)
    return total / config.accumulate


RECALL_GAP = 16  # tokens back beyond which a repeated word counts as recalled
RECALL_RARE = 3  # at most this many earlier occurrences in the window
COMMON_TOKENS = 300  # the training text's most frequent tokens never count


def common_count(vocab_size: int) -> int:
    """How many of a text's most frequent tokens never count as recalled words: COMMON_TOKENS, or a 30th of a
    vocabulary too small for that (a tiny test tokenizer's 300 tokens are all among any text's 300 most frequent)."""
    return min(COMMON_TOKENS, max(1, vocab_size // 30))


def frequent_tokens(stream: torch.Tensor, count: int = COMMON_TOKENS) -> torch.Tensor:
    """The `count` most frequent token ids of a token stream."""
    return torch.bincount(stream).argsort(descending=True)[:count]


def far_occurrences(inputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, label position t, input position s) masks of the inputs equal to label t at least RECALL_GAP positions
    back, and of those equal to it within the last RECALL_GAP."""
    same = labels[:, :, None] == inputs[:, None, :]
    t = torch.arange(labels.shape[1], device=labels.device)
    far = t[None, :] <= t[:, None] - RECALL_GAP + 1
    near = ~far & (t[None, :] <= t[:, None])
    return same & far, same & near


def recall_tokens(inputs: torch.Tensor, labels: torch.Tensor, common: torch.Tensor) -> torch.Tensor:
    """(B, T) mask of the next tokens that recall a rare word from far back in their window: the label occurs among
    the inputs at least RECALL_GAP positions back (1 to RECALL_RARE times), not in the last RECALL_GAP, and is not
    one of the `common` tokens. Predicting them needs one distant key: the retrieval LAMBADA scores."""
    far, near = far_occurrences(inputs, labels)
    count = far.sum(-1)
    return (count >= 1) & (count <= RECALL_RARE) & ~near.any(-1) & ~torch.isin(labels, common)


def _language_model_loss(trained, window: torch.Tensor, scale: float, *, teacher, config: TrainConfig,
                         common: torch.Tensor | None = None, repetition: tuple | None = None) -> float:
    """Per-token next-token cross-entropy, mixed with the KL divergence to `teacher`'s logits when distilling,
    averaged over the tokens with weight 1, or 1 + `recall_weight` for the `recall_tokens` (given `common`); plus
    `repetition_weight` x the sentence-repetition loss on as many rows (`repetition`: the stream and its
    sentences)."""
    inputs, labels = window[:, :-1], window[:, 1:]
    logits = trained(inputs, use_cache=False).logits.float()
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none")
    if config.distill_weight > 0:
        with torch.no_grad():
            target = teacher(inputs, use_cache=False).logits.float()
        t = config.temperature
        kd = torch.nn.functional.kl_div(torch.log_softmax(logits / t, -1).flatten(0, 1),
                                        torch.log_softmax(target / t, -1).flatten(0, 1),
                                        log_target=True, reduction="none").sum(-1) * t * t
        loss = (1 - config.distill_weight) * loss + config.distill_weight * kd
    if config.recall_weight:
        weights = 1.0 + config.recall_weight * recall_tokens(inputs, labels, common.to(labels.device)).flatten()
        loss = (loss * weights).sum() / weights.sum()
    else:
        loss = loss.mean()
    (loss * scale).backward()
    if repetition is None:
        return loss.item()
    # its own forward and backward (one graph at a time in memory; under DDP every forward has its backward)
    ids, lengths = repeated_rows(*repetition, window.shape[0])
    repeated = config.repetition_weight * repetition_loss(trained, ids.to(window.device), lengths)
    (repeated * scale).backward()
    return loss.item() + repeated.item()
