"""The `paper-reference` surrogate: the paper's compact model fitted here to its public SPICE IV data.

Leroux et al., Nat. Comput. Sci. 5, 813 (2025); data: the SPICE read current of the paper's cell
(`gaincell_iv_spice.npz` from the authors' public code, see ../shared/reference/gaincellattention).
- `multiply`: the least-squares cubic in y = V_store - 0.45 V at V_in = 0.9 V (the paper's
  f(y) = 0.52136 + 13.61226 y - 2.62045 y^2 + 46.05484 y^3 uA), as charge = pulse_s * f;
- `multiply_2d`: the full cubic surface over (y, V_in), for reference (its RMS error is in the file);
- `decay`: exponential, tau = 5 ms (the paper's silicon cell); `c2p`: S_sat = 80 uA x T_max;
- `energy`, `timing`: the paper's per-token figures (65 ns; 1120 / 700 / 4000 / 330 pJ per head).
Its design (`PAPER_REFERENCE`) is the paper's operating point (VDD 0.9 V, V_in 0.9 V, T_max 15 ns); the
paper publishes no transistor sizes or models, so the rest are cmos-generic's and it is no design to simulate.
"""
from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path

import numpy as np

from gaincell.compact import EXPONENTIAL, POLY, spec
from gaincell.hardware import PAPER_HARDWARE
from gaincell.paper import (PAPER_E_AV_HEAD_J, PAPER_E_DAC_HEAD_J, PAPER_E_DIGITAL_HEAD_J, PAPER_E_QK_HEAD_J,
                            PAPER_LATENCY_PER_LAYER_S, PAPER_T_MAX_S)
from gaincell.design import PRESETS
from gaincell.errors import InputFileError
from gaincell.surrogate.file import Component, Surrogate, sha256_of

from .fit import c2p_paper_default, figures, fit_model

T_MAX_S = PAPER_T_MAX_S
PAPER_REFERENCE = dataclasses.replace(
    PRESETS["cmos-generic"], name="paper-reference", vdd_v=0.9, v_in_v=0.9, t_max_s=T_MAX_S,
    source="Leroux et al., Nat. Comput. Sci. 5, 813 (2025), doi 10.1038/s43588-025-00854-1")
PAPER_FIGURES = {"latency_per_token_s": PAPER_LATENCY_PER_LAYER_S, "e_qk_stage_per_token_head_j": PAPER_E_QK_HEAD_J.value,
                 "e_av_stage_per_token_head_j": PAPER_E_AV_HEAD_J.value,
                 "e_digital_per_token_head_j": PAPER_E_DIGITAL_HEAD_J.value, "e_dac_per_token_head_j": PAPER_E_DAC_HEAD_J.value}


ARRAYS = ("Vstore", "Vin", "Iout")  # stored voltages (n), input voltages (m), currents (n, m)


def read_iv(source: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Refuse (InputFileError naming the file) anything but an .npz of finite float arrays Vstore (n), Vin (m) and
    Iout (n, m), read without unpickling."""
    what = f"IV_FILE {source}"
    if not source.is_file():
        raise InputFileError(f"{what}: no such file" if not source.exists() else f"{what}: is not a file")
    try:
        with open(source, "rb") as handle:
            if handle.read(4) != b"PK\x03\x04":
                raise InputFileError(f"{what}: is not an .npz archive (a zip file of arrays); expected the paper's "
                                     f"gaincell_iv_spice.npz ({', '.join(ARRAYS)})")
        with np.load(source, allow_pickle=False) as data:
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise InputFileError(f"{what}: is a single .npy array, not an .npz archive of {', '.join(ARRAYS)}")
            missing = [name for name in ARRAYS if name not in data.files]
            if missing:
                raise InputFileError(f"{what}: has no array {', '.join(missing)} (it holds {', '.join(data.files) or 'none'});"
                                     f" expected the paper's gaincell_iv_spice.npz ({', '.join(ARRAYS)})")
            stored, vin, current = (np.asarray(data[name]) for name in ARRAYS)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InputFileError(f"{what}: cannot be read as an .npz archive of numbers ({exc}); expected the paper's "
                             f"gaincell_iv_spice.npz ({', '.join(ARRAYS)})") from None
    if not all(np.issubdtype(a.dtype, np.number) and np.isfinite(a).all() for a in (stored, vin, current)):
        raise InputFileError(f"{what}: {', '.join(ARRAYS)} must hold finite numbers")
    if stored.ndim != 1 or vin.ndim != 1 or current.shape != (stored.size, vin.size) or min(stored.size, vin.size) < 4:
        raise InputFileError(f"{what}: expected Vstore (n), Vin (m) and Iout (n, m) with n, m >= 4; got shapes "
                             f"{stored.shape}, {vin.shape}, {current.shape}")
    return stored, vin, current


def fit_reference(iv_path: str | Path) -> Surrogate:
    """Fit the paper's IV data into the paper-reference surrogate."""
    stored, vin, current = read_iv(Path(iv_path))
    at_09 = int(np.argmin(np.abs(vin - PAPER_REFERENCE.v_in_v)))
    slice_inputs = {"stored_v": stored, "pulse_s": np.ones_like(stored), "vin_v": np.full_like(stored, vin[at_09])}
    cubic_config = {"order": 3, "vin_order": 0, "y0_v": PAPER_REFERENCE.zero_v, "vin0_v": 0.0}
    cubic = fit_model(POLY, cubic_config, slice_inputs, current[:, at_09], spec(POLY).start(cubic_config),
                      "least-squares cubic of the paper's SPICE IV data at V_in = 0.9 V (charge per second of pulse)")
    cubic.component.validity = {"stored_v": [0.0, PAPER_REFERENCE.vdd_v], "pulse_s": [0.0, T_MAX_S],
                                "vin_v": [PAPER_REFERENCE.v_in_v] * 2}
    grid_s, grid_v = np.meshgrid(stored, vin, indexing="ij")
    surface_inputs = {"stored_v": grid_s.ravel(), "pulse_s": np.ones(grid_s.size), "vin_v": grid_v.ravel()}
    surface_config = {"order": 3, "vin_order": 3, "y0_v": PAPER_REFERENCE.zero_v, "vin0_v": 0.0}
    surface = fit_model(POLY, surface_config, surface_inputs, current.ravel(), spec(POLY).start(surface_config),
                        "least-squares cubic surface of the paper's SPICE IV data over V_store and V_in")
    surface.component.validity["pulse_s"] = [0.0, T_MAX_S]
    decay = Component(EXPONENTIAL, ["tau_s"], [5e-3], config={"hold_v": 0.0, "ref_v": 0.45},
                      source="paper: retention tau = 5 ms for the silicon gain cell")
    components = {
        "multiply": cubic.component,
        "multiply_2d": surface.component,
        "decay": decay,
        "c2p": c2p_paper_default(T_MAX_S),
        "energy": figures({k: v for k, v in PAPER_FIGURES.items() if k.startswith("e_")},
                          source="paper: energy per token per head by stage"),
        "timing": figures({"t_max_s": T_MAX_S, "latency_per_token_s": PAPER_FIGURES["latency_per_token_s"]},
                          source="paper: T_max = 15 ns, 65 ns per token"),
    }
    return Surrogate(components, PAPER_REFERENCE, "gaincell_iv_spice.npz (paper's public code)", sha256_of(iv_path),
                     hardware=PAPER_HARDWARE)
