"""Small data shipped with gaincell (reference surrogates, golden results), found via importlib.resources."""
