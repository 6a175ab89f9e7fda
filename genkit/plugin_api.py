"""What a plugin author needs to write a dataset, model, conditioner or loss, in one place.

``genkit`` itself holds the hook marker, the component contracts and the errors
(``genkit.hookimpl``, ``genkit.ModelOutput``, ``genkit.UsageError``, ...); this module adds the
helpers genkit's bundled plugins are written with, so a third-party plugin can do everything they
do. Every name here is documented in docs/api.md and stable across minor versions; the modules
they come from (``genkit_datasets.*``, ``genkit.evaluation.gaussian``) may be reorganised.

- Dataset sources: :class:`SourceIndex` (what ``scan`` returns), :class:`ImageFileReader` and
  :func:`center_crop_resize` (decode, crop and resize image files exactly as the bundled datasets
  do), and the annotation-file helpers (:func:`find_file`, :func:`read_lines`, :func:`bad_row`,
  :func:`parse_int`, :func:`list_images`, :func:`has_images`, :func:`fingerprint`, ...), whose
  errors are one-line ``UsageError`` naming the file and line.
- The bundled formats' readers and constants (:func:`celeba_index`, :func:`cub_index`,
  :func:`folder_index`, :func:`shapes_index`, ...), to build a variant of a bundled dataset.
- Losses: :func:`gaussian_kl`, the closed-form KL that ``beta-elbo`` trains with and
  ``genkit evaluate`` reports, and :func:`float32_option`, which refuses an option the loss
  would compute with in float32 but float32 cannot hold (``1e300`` overflows, ``1e-300`` rounds
  to zero) in one line, before any training.
- Flows on the straight path, outside the network (a third-party flow brings only its network):
  the path (:func:`draw_path`, :func:`draw_times`, :data:`TIME_SAMPLINGS`, :func:`straight_path`,
  :class:`PathPoint`, :func:`preconditioned`, and the resolution's time shift :func:`shift_times`,
  :func:`check_shift`), classifier-free guidance over one or more
  conditions with a guidance interval (:func:`guided_velocity`, :func:`guided_field`,
  :func:`drop_conditions`, :func:`network_passes`, :func:`check_guidance_interval`) and the ODE
  solvers, forwards and backwards over all or part of [0, 1] (:func:`integrate`, :data:`SOLVERS`);
  average velocities for sampling in 1 to 4 steps (MeanFlow: :func:`draw_interval`,
  :func:`average_velocity_target`, :func:`check_interval_share`, and the ``mean`` solver).
  The bundled ``flow`` is written with exactly these.
"""

from __future__ import annotations

from genkit.components.limits import float32_option
from genkit.evaluation.gaussian import gaussian_kl
from genkit.transport.average import average_velocity_target, check_interval_share, draw_interval
from genkit.transport.guidance import (check_guidance_interval, drop_conditions, guided_field, guided_velocity,
                                       network_passes)
from genkit.transport.path import (TIME_SAMPLINGS, PathPoint, check_shift, draw_path, draw_times, preconditioned,
                                   shift_times, straight_path)
from genkit.transport.solvers import SOLVERS, integrate
from genkit_datasets.annotations import (IMAGE_SUFFIXES, bad_row, file_digest, find_file, fingerprint, has_images,
                                         list_images, parse_int, read_lines)
from genkit_datasets.celeba import ATTRIBUTE_NAMES as CELEBA_ATTRIBUTE_NAMES, HINT as CELEBA_HINT, celeba_index
from genkit_datasets.cub import CERTAINTIES as CUB_CERTAINTIES, HINT as CUB_HINT, cub_index
from genkit_datasets.folder import CSV_NAME as FOLDER_CSV_NAME, folder_index, hash_splits
from genkit_datasets.image_files import ImageFileReader
from genkit_datasets.preprocess import center_crop_resize
from genkit_datasets.shapes import ATTRIBUTE_NAMES as SHAPES_ATTRIBUTE_NAMES, shapes_index
from genkit_datasets.source import ImageReader, SourceIndex

__all__ = [
    "CELEBA_ATTRIBUTE_NAMES",
    "CELEBA_HINT",
    "CUB_CERTAINTIES",
    "CUB_HINT",
    "FOLDER_CSV_NAME",
    "IMAGE_SUFFIXES",
    "ImageFileReader",
    "ImageReader",
    "PathPoint",
    "SHAPES_ATTRIBUTE_NAMES",
    "SOLVERS",
    "SourceIndex",
    "TIME_SAMPLINGS",
    "average_velocity_target",
    "bad_row",
    "celeba_index",
    "center_crop_resize",
    "check_guidance_interval",
    "check_interval_share",
    "check_shift",
    "cub_index",
    "draw_interval",
    "draw_path",
    "draw_times",
    "drop_conditions",
    "file_digest",
    "find_file",
    "fingerprint",
    "float32_option",
    "folder_index",
    "gaussian_kl",
    "guided_field",
    "guided_velocity",
    "has_images",
    "hash_splits",
    "integrate",
    "list_images",
    "network_passes",
    "parse_int",
    "preconditioned",
    "read_lines",
    "shapes_index",
    "shift_times",
    "straight_path",
]
