"""Layer-wise attention transfer: every layer's gain-cell attention learns its own softmax attention's output.

One teacher pass per micro-batch (softmax attention, adapters off) records, with hooks, the inputs and the
output of every attention module (the output after the output projection). Then each layer's attention runs
again on its recorded inputs with gain-cell attention, and its loss - the mean squared error to the recorded
output relative to that output's variance - is back-propagated at once. A loss reaches only its own layer's
parameters (the inputs are the teacher's, not the student's), so all layers train together in one step and
each ends exactly where training it alone on the teacher's inputs would have put it (clipping is per layer and
per kind: scalers and adapters are separate optimizer groups).

Trainable: the scalers of every layer and, with `rank` > 0, low-rank adapters (LoRA, through peft) on the
attention projections (q, k, v, o; GPT-2's fused c_attn and its attention c_proj); the rest stays frozen.
`merge_adapters` folds the adapters into the projection weights, so an adapted folder is a normal model.
Source ideas: LoLCATs and Hedgehog (Zhang et al. 2024), which transfer softmax attention to linear attention.
"""
from __future__ import annotations

import contextlib
import math
import warnings

import torch

from gaincell.errors import ConfigError

from gaincell.surrogate.scalers import head_statistics
from gaincell.surrogate.functional import expand_kv

from .calibrate import softmax_targets
from .models import attention_modules, gaincell_layers


def attention_projections(model) -> list[str]:
    """Full names of the projections inside every attention module (the modules LoRA adapts)."""
    names = {id(module): name for name, module in model.named_modules()}
    found = []
    for module in attention_modules(model):
        for child_name, child in module.named_children():
            if child_name != "gaincell" and hasattr(child, "weight") and child.weight.dim() == 2:
                found.append(f"{names[id(module)]}.{child_name}")
    return found


def mlp_projections(model) -> list[str]:
    """Full names of the projections inside every MLP block (Llama's gate/up/down, GPT-2's c_fc/c_proj)."""
    return [f"{name}.{child_name}" for name, module in model.named_modules() if name.rsplit(".", 1)[-1] == "mlp"
            for child_name, child in module.named_children() if hasattr(child, "weight") and child.weight.dim() == 2]


def add_adapters(model, rank: int, alpha: float | None = None, seed: int = 0, targets: list[str] | None = None,
                 circuit: bool = True):
    """Wrap `model` with LoRA adapters of `rank` on `targets` (default: its attention projections; peft, initialised
    from `seed`); freezes everything but the adapters, then, with `circuit`, makes the gain-cell scalers, C2P
    thresholds and gains trainable again. rank 0: no adapters, only the scalers train."""
    model.requires_grad_(False)
    targets = attention_projections(model) if targets is None else targets
    if rank > 0:
        smallest = min(min(module.weight.shape) for name, module in model.named_modules() if name in set(targets))
        if rank > smallest:
            raise ConfigError("--lora-rank", f"must be at most {smallest} (the smallest projection dimension it "
                                             f"adapts in this model); got {rank}")
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError as exc:
            raise ConfigError("--lora-rank", "needs the peft package (pip install -e '.[lm]')") from exc
        from transformers.pytorch_utils import Conv1D

        transposed = any(isinstance(module, Conv1D) for name, module in model.named_modules() if name in targets)
        config = LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else 2 * rank, lora_dropout=0.0,
                            target_modules=targets, bias="none",
                            fan_in_fan_out=transposed)  # GPT-2's projections are Conv1D (weights stored transposed)
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            # peft reads transformers' deprecated `is_gradient_checkpointing`: their warning, not the user's
            warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
            torch.manual_seed(seed)
            model = get_peft_model(model, config)
    for layer in gaincell_layers(model) if circuit else []:
        for scaler in layer.scalers().values():
            scaler.requires_grad_(True)
        layer.c2p_threshold.requires_grad_(True)
        layer.c2p_gain.requires_grad_(True)
    return model


def merge_adapters(model):
    """The plain model with any LoRA adapters folded into its weights; every parameter trainable again."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.requires_grad_(True)
    return model


def layer_groups(model, lr: float, scaler_lr: float | None = None) -> list[dict]:
    """Optimizer groups: per layer, its trainable scalers, C2P thresholds and gains (at `scaler_lr`, default `lr`,
    without weight decay: these are circuit settings, 0 is not a neutral value for them) and its adapters (at
    `lr`), each clipped on its own so that layers stay independent."""
    groups = []
    for module in attention_modules(model):
        scalers = [p for p in module.gaincell.parameters() if p.requires_grad]
        own = {id(p) for p in scalers}
        adapters = [p for p in module.parameters() if p.requires_grad and id(p) not in own]
        groups += [{"params": scalers, "lr": scaler_lr or lr, "weight_decay": 0.0}] + (
            [{"params": adapters, "lr": lr}] if adapters else [])
    if not any(g["params"] for g in groups):
        raise ConfigError("model", "has no trainable attention parameters (swap_attention, then add_adapters)")
    return groups


@contextlib.contextmanager
def softmax_teacher(model):
    """Within the block the model is the unmodified one: adapters off, every layer in 'ideal' (softmax) mode."""
    layers = gaincell_layers(model)
    modes = [layer.mode for layer in layers]
    adapters_off = model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()
    try:
        with adapters_off:
            for layer in layers:
                layer.mode = "ideal"
            yield model
    finally:
        for layer, mode in zip(layers, modes):
            layer.mode = mode


class _LastAttentionDone(Exception):
    """Raised by the last attention module's hook to end a teacher pass early."""


class AttentionTaps:
    """Hooks recording every attention module's call (arguments) and output while `recording` is on; the students
    are the attention modules of `student` (default: the same model's)."""

    def __init__(self, model, student=None):
        self.modules = attention_modules(model)
        self.students = self.modules if student is None else attention_modules(student)
        self.calls: list = [None] * len(self.modules)
        self.outputs: list = [None] * len(self.modules)
        self.recording = False
        self._handles = []
        for index, module in enumerate(self.modules):
            self._handles.append(module.register_forward_pre_hook(self._call_hook(index), with_kwargs=True))
            self._handles.append(module.register_forward_hook(self._output_hook(index)))

    def _call_hook(self, index):
        def hook(module, args, kwargs):
            if self.recording:
                self.calls[index] = (args, kwargs)
        return hook

    def _output_hook(self, index):
        def hook(module, args, output):
            if self.recording:
                self.outputs[index] = (output[0] if isinstance(output, tuple) else output).detach()
                if index == len(self.modules) - 1:
                    raise _LastAttentionDone  # the rest of the model (last MLP, logits) is not needed
        return hook

    @torch.no_grad()
    def record(self, model, inputs: torch.Tensor) -> None:
        """Run the softmax teacher on `inputs` (B, T) up to its last attention module and keep every attention
        module's inputs and output."""
        self.recording = True
        try:
            with softmax_teacher(model):
                model(inputs, use_cache=False)
        except _LastAttentionDone:
            pass
        finally:
            self.recording = False

    def student(self, index: int) -> torch.Tensor:
        """Layer `index`'s attention output, gain-cell attention on the teacher's recorded inputs."""
        args, kwargs = self.calls[index]
        output = self.students[index](*args, **kwargs)
        return output[0] if isinstance(output, tuple) else output

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def relative_error(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared error relative to the teacher's variance (1.0: no better than predicting its mean)."""
    student, teacher = student.float(), teacher.float()
    return (student - teacher).pow(2).mean() / teacher.var().clamp_min(1e-12)


def attention_divergence(layer, teacher: tuple, student: tuple, queries: int) -> torch.Tensor:
    """KL(w || p) per query, averaged, over the last `queries` queries: w the gain-cell layer's C2P pulses on the
    student's q, k, v normalised over the keys, p the softmax teacher's attention weights on its q, k (windowed,
    causal). 0 when the layer spreads each query's pulses as softmax spreads its weights; large when it puts pulses
    on keys the teacher ignores. This direction seeks the teacher's strongest keys: KL(p || w), tried first, made
    the pulses cover every key the teacher touches, and attention broader (benchmarks/RESULTS.md)."""
    tq, tk = teacher[0].float(), expand_kv(teacher[1], teacher[0].shape[1]).float()
    tokens = tq.shape[2]
    queries = min(queries, tokens)
    scale = layer.softmax_scale or 1 / math.sqrt(tq.shape[-1])
    age = torch.arange(tokens - queries, tokens, device=tq.device)[:, None] - torch.arange(tokens, device=tq.device)
    visible = (age >= 0) & (age < (layer.window or tokens))
    p = (tq[:, :, -queries:] @ tk.transpose(-1, -2) * scale).masked_fill(~visible, float("-inf")).softmax(-1)
    phi = layer.pulses(*student, queries=queries).float()
    w = phi / phi.sum(-1, keepdim=True).clamp_min(1e-6)
    return (w * (torch.log(w.clamp_min(1e-12)) - torch.log(p.clamp_min(1e-12)))).sum(-1).mean()  # finite gradients


class TransferObjective:
    """The transfer loss of one micro-batch (for `train.finetune`): teacher pass, then the relative error of every
    layer (or of the layers numbered in `layers`), plus `attention_weight` x its `attention_divergence` on the last
    `attention_queries` queries, back-propagated at once; returns the mean relative error. `last_errors` and
    `last_divergences` hold the per-layer figures of the latest call."""

    def __init__(self, model, layers: list[int] | None = None, teacher=None, attention_weight: float = 0.0,
                 attention_queries: int = 64):
        self.taps = AttentionTaps(model, None) if teacher is None else AttentionTaps(teacher, model)
        self.model = model if teacher is None else teacher  # the model whose softmax pass is recorded
        self.layers = list(range(len(self.taps.modules))) if layers is None else list(layers)
        self.attention_weight, self.attention_queries = attention_weight, attention_queries
        self.last_errors: list[float] = []
        self.last_divergences: list[float] = []
        self.inputs: dict[str, dict] = {"teacher": {}, "student": {}}  # every gain-cell layer's q, k, v per pass
        self._hooks = []
        if attention_weight:
            layers_seen = {}
            for source in (self.model, model):
                for index, layer in enumerate(gaincell_layers(source)):
                    layers_seen[id(layer)] = (index, layer)
            for index, layer in layers_seen.values():
                self._hooks.append(layer.register_forward_pre_hook(self._keep_inputs(index)))

    def _keep_inputs(self, index: int):
        def hook(module, args):
            self.inputs["teacher" if self.taps.recording else "student"][index] = args[:3]
        return hook

    def __call__(self, trained, window: torch.Tensor, scale: float) -> float:
        self.taps.record(self.model, window[:, :-1])
        errors, divergences = [], []
        layers = gaincell_layers(trained)
        for index in self.layers:
            error = relative_error(self.taps.student(index), self.taps.outputs[index])
            loss = error
            if self.attention_weight:
                divergence = attention_divergence(layers[index], self.inputs["teacher"][index],
                                                  self.inputs["student"][index], self.attention_queries)
                loss = error + self.attention_weight * divergence
                divergences.append(divergence.item())
            (loss * scale).backward()
            errors.append(error.item())
        self.inputs = {"teacher": {}, "student": {}}
        self.last_errors, self.last_divergences = errors, divergences
        return sum(errors) / len(errors)

    def remove(self) -> None:
        self.taps.remove()
        for hook in self._hooks:
            hook.remove()


@torch.no_grad()
def match_statistics(model, batch: torch.Tensor) -> None:
    """The transfer's starting point, layer by layer on the teacher's inputs for `batch` (B, T): the q, k, v
    scalers map the layer's q, k, v onto the hardware's input ranges (calibration's targets, see
    `calibrate.softmax_targets`), then the out scaler maps the gain-cell readout onto the per-head mean and std of
    the softmax attention's output. Unlike the paper's calibration no iteration is needed: every layer's inputs
    are the teacher's, which no scaler changes."""
    batch = batch.to(next(model.parameters()).device)
    softmax_targets(model, batch)
    layers, raw = gaincell_layers(model), {}
    hooks = [layer.register_forward_pre_hook(
        lambda module, args, index=index: raw.__setitem__(index, [head_statistics(x) for x in args[:3]]))
        for index, layer in enumerate(layers)]
    taps = AttentionTaps(model)
    try:
        taps.record(model, batch)
        for hook in hooks:
            hook.remove()
        for index, layer in enumerate(layers):
            for scaler, (mean, std) in zip((layer.q_scaler, layer.k_scaler, layer.v_scaler), raw[index]):
                set_affine(scaler, mean, std)
            fit_output_scaler(layer, lambda: taps.student(index))
    finally:
        for hook in hooks:
            hook.remove()
        taps.remove()


def fit_output_scaler(layer, run) -> None:
    """Set `layer`'s out scaler (its targets already set) so that the pass `run()` through the layer gives each
    head its target mean and std."""
    scaler = layer.out_scaler
    scaler.a.fill_(1.0)
    scaler.b.fill_(0.0)
    scaler.record_batch = True
    try:
        run()
    finally:
        scaler.record_batch = False
    set_affine(scaler, scaler.batch_mean, scaler.batch_std)


def set_affine(scaler, mean: torch.Tensor, std: torch.Tensor) -> None:
    """Make `scaler` map inputs of per-head `mean`, `std` onto its target mean and std. A head whose input is
    (nearly) constant on the batch - e.g. a readout that quantizes to one level - keeps a gain of 1: dividing
    by its std would blow its output up."""
    std = std.to(scaler.a.device)
    usable = std > 1e-3 * std.max().clamp_min(1e-12)
    a = torch.where(usable, scaler.target_std / std.clamp_min(1e-12), torch.ones_like(std))
    scaler.a.copy_(a)
    scaler.b.copy_(scaler.target_mean - a * mean.to(scaler.a.device))


@torch.no_grad()
def layer_errors(model, batch: torch.Tensor, teacher=None) -> list[float]:
    """Per-layer relative error of the gain-cell attention against the softmax attention, on the teacher's inputs
    for `batch` (B, T): where the remaining error of an adaptation sits. The teacher is `teacher` (the unmodified
    model) when given, else `model` itself with adapters off in softmax mode."""
    teacher = model if teacher is None else teacher
    taps = AttentionTaps(teacher)
    students = attention_modules(model)
    try:
        taps.record(teacher, batch.to(next(teacher.parameters()).device))
        errors = []
        for index, (args, kwargs) in enumerate(taps.calls):
            output = students[index](*args, **kwargs)
            errors.append(float(relative_error(output[0] if isinstance(output, tuple) else output,
                                               taps.outputs[index])))
        return errors
    finally:
        taps.remove()


def train_transfer(model, stream: torch.Tensor, batch: torch.Tensor, config, checkpoint, *, lora_rank: int,
                   progress: bool = True, teacher=None):
    """The transfer stage on a swapped model whose weights are the teacher's: statistics match on `batch`, LoRA
    adapters, `train.finetune` with the transfer objective (resuming from `checkpoint`), per-layer errors on
    `batch` before and after (adapters still separate, so the teacher is the original model), adapters merged.
    With `teacher` (the base model of an adapted model being re-targeted, `adapt.retarget`) the softmax passes
    are the teacher's and the scalers start where re-targeting put them.
    Returns (model, finetune's result with 'layer_errors': {'before', 'after'})."""
    from .train import finetune

    if teacher is None:
        match_statistics(model, batch)  # cheap and deterministic; a checkpoint being resumed overwrites the scalers
    before = layer_errors(model, batch, teacher)
    model = add_adapters(model, lora_rank, seed=config.seed)
    objective = TransferObjective(model, teacher=teacher, attention_weight=config.attention_weight)
    try:
        result = finetune(model, stream, config, checkpoint, groups=layer_groups(model, config.lr, config.scaler_lr),
                          objective=objective, dropout=False, desc="transfer", progress=progress)
    finally:
        objective.remove()
    after = layer_errors(model, batch, teacher)
    return merge_adapters(model).eval(), {**result, "layer_errors": {"before": before, "after": after}}
