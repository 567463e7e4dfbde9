"""Stage 6: latency, energy and area per token of gain-cell attention, from the surrogate's circuit figures
(SPICE), cited figures for what is not simulated, and the action counts of a real decode; GPU baselines."""
