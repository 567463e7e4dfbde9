"""The torch layer's answer for one SPICE attention tile (`gaincell.circuits.tile`): what the tile's
`TileResult.compare` is checked against.

    reference = tile_reference(surrogate, query_frac, keys_v, values_v)
    result.compare(reference, surrogate["c2p"].param("t_max_s"))
"""
from __future__ import annotations

import numpy as np
import torch

from gaincell.circuits.tile import MAX_TILE
from gaincell.compact import decay_factor

from .cellmodel import CellModel
from .internals import attention_internals


def tile_reference(surrogate, query_frac, keys_v, values_v, ages_s=None,
                   product_form: bool = False) -> dict[str, np.ndarray]:
    """The torch gain-cell attention built from `surrogate` on a tile's inputs (no quantization): the newest
    query's C2P outputs `phi` (tokens,) and `output` (dim,). `ages_s` (one per token, the keys' and values'
    time in the array) ages the stored voltages as the layer's decay does (`CellModel.aged_expansion`); None: no
    decay. `product_form`: decay as the paper's layer does instead (each product times the reference level's
    decay factor at its age), for comparison."""
    k = torch.tensor(np.asarray(keys_v, dtype=float))[None, None]  # (1, 1, T, D)
    v = torch.tensor(np.asarray(values_v, dtype=float))[None, None]
    q = torch.zeros_like(k)
    q[0, 0, -1] = torch.tensor(np.asarray(query_frac, dtype=float))  # the newest position sees every key
    cell = CellModel.from_surrogate(surrogate)
    decay = None
    if ages_s is not None:  # the layer's tables are by age in steps: the newest query meets token s at step T-1-s
        tokens = k.shape[2]
        by_step = np.empty(tokens)
        by_step[tokens - 1 - np.arange(tokens)] = np.asarray(ages_s, dtype=float)
        decay = cell.aged_expansion(by_step)
        if product_form:  # the paper's: every product times the reference level's decay factor
            decay = torch.tensor(decay_factor(*cell.decay_model, by_step))
    internals = attention_internals(q, k, v, cell, decay=decay, tile=MAX_TILE)
    return {"phi": internals["phi"][0, 0, -1].numpy(), "output": internals["output"][0, 0, -1].numpy()}
