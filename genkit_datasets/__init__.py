"""Dataset reading and the HDF5 cache: the layer below ``genkit``, which imports nothing of it.

Readers turn a dataset on disk (or a procedural generator) into a :class:`~genkit_datasets.source.SourceIndex`;
the cache decodes and resizes every image once into an HDF5 file; ``CachedImageDataset`` trains
from it. Nothing here knows about models.

Modules: ``errors`` (the base errors genkit re-exports), ``source`` (``SourceIndex``),
``annotations`` (reading annotation files), ``preprocess`` and ``image_files`` (decoding and
resizing), ``celeba``, ``cub``, ``folder``, ``shapes`` (the bundled formats), ``cache`` (the HDF5
cache) and ``torch_dataset``. This file imports none of them, so ``genkit_datasets.errors`` stays
as cheap to import as ``genkit`` itself. Plugin authors use these through ``genkit.plugin_api``;
this package's own layout may change.
"""
