"""gaincell: gain-cell analog in-memory attention from SPICE netlists to language models.

Stages (each a subpackage, each reading only the previous stage's artifacts):
circuits (netlists, simulation, sweeps) -> fitting -> surrogate -> adapt / energy.
"""
__version__ = "0.1.0"
