"""SPICE text shipped with gaincell: model cards (`*.lib`) and subcircuits (`*.sub`).

Found at run time with `gaincell.resources.netlist_path(name)` (importlib.resources), so an installed,
non-editable copy works too.
"""
