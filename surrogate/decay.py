"""The retention in the attention layer: a decay resolved for a ring of ages, as terms (`DecayTerms`).

Each term is a transfer of the stored voltage (k -> f_r(k), v -> g_r(v)) times a table by age in tokens
(d_r); stage 1 and stage 2 (`functional`) sum the terms. Two forms:
- the circuit's (decay="surrogate"): the stored voltage leaks toward the hold level and the aged cell is read
  by the fitted multiply, f(v_held(v, age)), expanded in a few separable terms (`CellModel.aged_expansion`;
  the transfers are its tabulated terms, `transfers.Tabulated`);
- the paper's product form: one term, the fitted curve times one table (a rate per step, a given table, or the
  surrogate's decay at the reference level where that form is within the expansion's tolerance).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.weak import WeakIdKeyDictionary

from gaincell.errors import ConfigError

from .cellmodel import AGED_TOLERANCE, AgedExpansion, CellModel


def decay_table_for(decay, length: int, cell: CellModel | None, dtype, device) -> torch.Tensor:
    """Decay factors by age 0..length-1 from `decay`: None (off), a rate per step (exp(-rate * age)),
    "surrogate" (the cell's retention and token clock) or a 1-D table of factors (extended with zeros)."""
    if decay is None:
        return torch.ones(length, dtype=dtype, device=device)
    if isinstance(decay, str):
        if decay != "surrogate" or cell is None:
            raise ConfigError("decay", f"must be None, a rate per step, a table or 'surrogate'; got {decay!r}")
        return torch.as_tensor(cell.decay_table(length), dtype=dtype, device=device)
    if isinstance(decay, (int, float)):
        if not (decay >= 0 and math.isfinite(decay)):
            raise ConfigError("decay", f"a rate per step must be finite and >= 0; got {decay}")
        return torch.exp(-float(decay) * torch.arange(length, dtype=dtype, device=device))
    table = torch.as_tensor(decay, dtype=dtype, device=device).flatten()
    if table.numel() < length:
        table = torch.cat([table, table.new_zeros(length - table.numel())])
    return table[:length]


@dataclass(frozen=True, eq=False)
class DecayTerms:
    """A decay resolved for a ring: `tables` (terms, ages) by age in tokens and, for the aged-voltage form, the
    expansion whose tabulated transfers k and v go through (None: one term, the fitted curve)."""

    tables: torch.Tensor
    aged: AgedExpansion | None = None


def decay_terms(decay, length: int, cell: CellModel | None, dtype, device, window: int | None = None) -> DecayTerms:
    """`decay` for ages 0..length-1 tokens: "surrogate" is the circuit's aged-voltage decay at the cell's token
    clock (`CellModel.aged_expansion`, its terms found for the ages a `window` reaches, or the whole decay
    without one), run in the paper's product form when that is within the expansion's tolerance; an
    `AgedExpansion` is used as given (its tables extended with zeros); anything else is the product form
    (`decay_table_for`)."""
    aged = decay
    if isinstance(decay, str) and decay == "surrogate" and cell is not None and cell.decay_model is not None:
        period = cell.token_period_s
        aged = cell.aged_expansion(np.arange(length) * period, None if window is None else (window - 1) * period)
        if aged.product_error <= AGED_TOLERANCE:
            aged = None
    if not isinstance(aged, AgedExpansion):
        return DecayTerms(decay_table_for(decay, length, cell, dtype, device)[None])
    tables = torch.as_tensor(aged.tables[:, :length], dtype=dtype, device=device)
    return DecayTerms(torch.nn.functional.pad(tables, (0, length - tables.shape[1])), aged)


def as_terms(x: torch.Tensor) -> torch.Tensor:
    """f(k) or g(v) with a leading terms dimension: (B, H, T, D) -> (1, B, H, T, D); 5-D stays."""
    return x if x.dim() == 5 else x[None]


def term_tables(decay, terms: int, length: int, cell: CellModel | None, dtype, device) -> torch.Tensor:
    """Tables (terms, length): `decay` as given when 2-D, else the product form's one table (`decay_table_for`)."""
    if isinstance(decay, torch.Tensor) and decay.dim() == 2:
        table = decay.to(dtype=dtype, device=device)  # the same tensor when it fits (the kernel caches by tensor)
        if table.shape[1] != length:
            table = torch.nn.functional.pad(table[:, :length], (0, max(0, length - table.shape[1])))
    else:
        table = decay_table_for(decay, length, cell, dtype, device)[None]
    if table.shape[0] != terms:
        raise ConfigError("decay", f"has {table.shape[0]} table(s) for the {terms} term(s) of f(k), g(v); the "
                                   "aged-voltage decay's tables and transfers come together from `decay_terms`")
    return table


# The decay tables as the Triton kernels read them (`kernel.py`): one contiguous block per key tile distance.

def decay_blocks(table: torch.Tensor, tile: int, ring: int) -> torch.Tensor:
    """The decay (x causal and window mask) of query row r against key c of the aligned tile `distance`
    tiles back: blocks[..., distance, r, c] = table[..., distance * tile + r - c] for ages 0..ring-1, else 0;
    distance 0..ring // tile. `table` ((terms,) ages) holds at least `ring` ages."""
    age, valid = _block_ages(tile, ring, table.device)
    return torch.where(valid, table[..., age], table.new_zeros(()))


@functools.cache
def _block_ages(tile: int, ring: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Ages of `decay_blocks` (clamped into the table) and where they are inside the window."""
    steps = torch.arange(tile, device=device)
    age = torch.arange(ring // tile + 1, device=device)[:, None, None] * tile + steps[None, :, None] - steps[None, None, :]
    return age.clamp(0, ring - 1), (age >= 0) & (age < ring)


_BLOCKS = WeakIdKeyDictionary()  # table -> {(tile, ring, table version): decay blocks}


def cached_decay_blocks(table: torch.Tensor, tile: int, ring: int) -> torch.Tensor:
    """`decay_blocks` of `table` (zero past its end), built once while the table lives unchanged: the attention
    layer keeps one table per length, and building the blocks costs three launches per call."""
    per_table = _BLOCKS.setdefault(table, {})
    key = (tile, ring, table._version)
    if key not in per_table:
        for stale in [k for k in per_table if k[2] != table._version]:
            del per_table[stale]
        padded = table.detach()
        if padded.shape[-1] < ring:
            padded = torch.nn.functional.pad(padded, (0, ring - padded.shape[-1]))
        per_table[key] = decay_blocks(padded, tile, ring)
    return per_table[key]
