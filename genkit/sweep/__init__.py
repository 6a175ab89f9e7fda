"""Sweeps: one run per value of any option, evaluated, with the paper's table and figures."""
