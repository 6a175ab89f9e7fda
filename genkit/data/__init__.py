"""Datasets opened for a run: the cache prepared, training batches placed, combinations held out."""
