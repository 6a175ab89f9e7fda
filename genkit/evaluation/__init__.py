"""Metrics of a trained run: likelihood, attribute accuracy, diversity, fd, edits, conformity."""
