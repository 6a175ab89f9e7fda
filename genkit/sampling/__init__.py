"""A trained run loaded back and sampled: capabilities, attribute requests, grids, editing."""
