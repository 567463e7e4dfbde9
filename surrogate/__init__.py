"""Stage 4: the surrogate file (schema, load/validate) and the torch attention layer built from it."""
