"""Dataset reading and the HDF5 cache.

Readers turn a dataset on disk (or a procedural generator) into a :class:`SourceIndex`; the cache
decodes and resizes every image once into an HDF5 file; :class:`CachedImageDataset` trains from
it. Nothing here knows about models.
"""

from genkit_datasets.cache import CacheInfo, cache_path, default_cache_dir, prepare_cache, read_cache_info
from genkit_datasets.preprocess import center_crop_resize, parse_image_size
from genkit_datasets.source import SourceIndex
from genkit_datasets.torch_dataset import CachedImageDataset

__all__ = [
    "CacheInfo",
    "CachedImageDataset",
    "SourceIndex",
    "cache_path",
    "center_crop_resize",
    "default_cache_dir",
    "parse_image_size",
    "prepare_cache",
    "read_cache_info",
]
