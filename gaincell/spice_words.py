"""ngspice command words that no SPICE text gaincell runs may contain: ngspice runs `shell` and `system`
from a netlist. The netlist trust policy (circuits/spice/trust.py) refuses them anywhere in a line; a design
refuses them in every field pasted into netlist text, so the mistake is named where it was made."""
import re

FORBIDDEN_WORD = re.compile(r"\b(shell|system)\b", re.IGNORECASE)
