"""Files on disk: atomic writes, run folder layout, weights, plots, the index of runs."""
