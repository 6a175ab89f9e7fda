"""Which attribute vectors to sample for: parsing ``--attrs`` and filling the attributes left unspecified.

``"A,B,-C"`` names A and B on and C off. The attributes not named at all are *the rest*:

* ``rest="off"`` switches them off, exactly as the conditioner's ``encode(spec)`` does (the paper's
  figures were drawn that way);
* ``rest="data"`` takes them, per sample, from an attribute vector of the training data that
  agrees with every named one, drawn in proportion to how often it occurs (seeded, so the same
  seed gives the same vectors). For CelebA that gives ``Smiling`` a plausible face instead of
  "Smiling and nothing else"; for ``shapes`` a colour for a shape asked for without one. When no
  training vector agrees, the rest falls back to off and the result says so;
* ``rest="model"`` leaves them unspecified (the conditioner's ``encode_partial``), for the model to
  fill as it learned to, for a model trained with attributes left out (``Run.capabilities
  ["partial_conditions"]``; ``Run.check_rest`` refuses it for another). A family the dataset declares
  exclusive with a value named on is stated whole first (its other values off,
  :func:`stated`): one value per image, so naming one says the others are off.

The training vectors come from ``RUN/train_attributes.safetensors`` (written when training
starts: the distinct vectors of the training split and their counts), else from the dataset's
cache when it is on this machine; without either, the rest is off, with a note.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from genkit.config import RunConfig
from genkit.errors import UsageError, shown

REST_MODES = ("data", "off", "model")


ATTRIBUTES_FILE = "train_attributes.safetensors"


@dataclass(frozen=True)
class AttributeRequest:
    """The attributes a user named: ``on`` and ``off``, in the order given."""

    on: tuple[str, ...] = ()
    off: tuple[str, ...] = ()

    @property
    def mentioned(self) -> set[str]:
        return set(self.on) | set(self.off)

    def spec(self) -> str:
        """Back to ``"A,B,-C"``."""
        return ",".join([*self.on, *(f"-{name}" for name in self.off)])


def parse_attrs(spec: str | Sequence[str], names: Sequence[str], exclusive_groups: Sequence[str] = ()) -> AttributeRequest:
    """``"A,B,-C"`` (or a list of items) to an :class:`AttributeRequest`, checked against ``names``.

    Refuses an unknown name, a name both on and off, and two values of one exclusive group.
    """
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    known = set(names)
    state: dict[str, bool] = {}
    for raw in items:
        item = str(raw).strip()
        if not item:
            continue
        on = not item.startswith("-")
        name = item[1:].strip() if item[0] in "+-" else item  # one sign at most: "+-large" says nothing clear
        if not name or name[0] in "+-":
            raise UsageError(f"{shown(item)} names no attribute clearly; write NAME to switch one on and -NAME to "
                             "switch it off")
        if name not in known:
            raise UsageError(f"unknown attribute {name!r}; list the valid ones with `genkit data info`")
        if state.get(name, on) != on:
            raise UsageError(f"attribute {name!r} is asked for both on and off; list it once")
        state[name] = on
    request = AttributeRequest(on=tuple(n for n, v in state.items() if v),
                               off=tuple(n for n, v in state.items() if not v))
    check_exclusive(request, exclusive_groups)
    return request


def check_exclusive(request: AttributeRequest, exclusive_groups: Sequence[str]) -> None:
    """Two values of a group the dataset declares exclusive cannot both be on."""
    for group in exclusive_groups:
        values = [name for name in request.on if name.startswith(f"{group}::")]
        if len(values) > 1:
            raise UsageError(f"{values[0]!r} and {values[1]!r} are both values of {group!r}, which holds exactly "
                             f"one value per image; keep one of them")


def check_rest(rest: str, called: str = "rest") -> str:
    """``rest`` if it is a known mode; a one-line :class:`UsageError` naming them otherwise (``Run.check_rest``
    also refuses ``model`` for a run that cannot)."""
    if rest not in REST_MODES:
        raise UsageError(f"{called} {shown(rest)} is not known; choose data (unlisted attributes from the training "
                         "data), off (unlisted attributes off) or model (unlisted attributes left to the model)")
    return rest


def stated(request: AttributeRequest, names: Sequence[str], exclusive_groups: Sequence[str]) -> AttributeRequest:
    """``request`` with what exclusivity implies: a family that holds one value per image and has a value on
    has its other values off. The conditioner knows no exclusivity, so ``rest="model"`` states it first."""
    off = list(request.off)
    for group in exclusive_groups:
        prefix = f"{group}::"
        if any(name.startswith(prefix) for name in request.on):
            off += [name for name in names if name.startswith(prefix) and name not in request.on and name not in off]
    return AttributeRequest(request.on, tuple(off))


def partial_condition(conditioner, request: AttributeRequest, names: Sequence[str],
                      exclusive_groups: Sequence[str]) -> torch.Tensor:
    """The condition (dim,) of ``request`` with every attribute it leaves open unspecified (``rest="model"``)."""
    encode = getattr(conditioner, "encode_partial", None)
    if not callable(encode):
        raise UsageError(f"rest model needs a conditioner that can leave attributes unspecified; "
                         f"{type(conditioner).__name__} cannot: use rest data or rest off")
    return encode(stated(request, names, exclusive_groups).spec()).to(torch.float32)


@dataclass
class AttributeTable:
    """The distinct attribute vectors of a training split and how many images carry each."""

    names: list[str]
    vectors: torch.Tensor  # uint8 (K, A)
    counts: torch.Tensor   # int64 (K,)

    @classmethod
    def from_rows(cls, names: Sequence[str], rows: torch.Tensor | np.ndarray) -> "AttributeTable":
        rows = torch.as_tensor(np.asarray(rows)).round().to(torch.uint8).reshape(-1, len(names))
        vectors, counts = torch.unique(rows, dim=0, return_counts=True)
        return cls(list(names), vectors.contiguous(), counts.to(torch.int64))

    def save(self, run_dir: str | Path) -> Path:
        """``RUN/train_attributes.safetensors``, written atomically."""
        from genkit.store.weights import save_tensors

        path = Path(run_dir) / ATTRIBUTES_FILE
        save_tensors({"vectors": self.vectors, "counts": self.counts}, path,
                     {"attribute_names": json.dumps(self.names)})
        return path

    @classmethod
    def load(cls, run_dir: str | Path, names: Sequence[str]) -> "AttributeTable":
        from safetensors import SafetensorError, safe_open

        path = Path(run_dir) / ATTRIBUTES_FILE
        try:
            with safe_open(str(path), framework="pt") as f:
                stored = json.loads((f.metadata() or {}).get("attribute_names", "null"))
                vectors, counts = f.get_tensor("vectors"), f.get_tensor("counts")
        except (SafetensorError, OSError, ValueError, KeyError) as exc:
            raise UsageError(f"{path} is not a readable attribute table ({exc}); delete it, and unlisted "
                             "attributes come from the dataset cache or are off") from None
        if stored != list(names) or vectors.ndim != 2 or vectors.shape[1] != len(names) or \
                counts.shape != (vectors.shape[0],):
            raise UsageError(f"{path} does not match the run's attribute names; delete it, and unlisted attributes "
                             "come from the dataset cache or are off")
        problem = _table_problem(vectors, counts)
        if problem:
            raise UsageError(f"{path} is damaged ({problem}); delete it, and unlisted attributes come from the dataset "
                             "cache or are off")
        return cls(list(names), vectors.to(torch.uint8), counts.to(torch.int64))

    def agreeing(self, request: AttributeRequest) -> torch.Tensor:
        """Indices of the vectors that agree with every attribute named."""
        index = {name: i for i, name in enumerate(self.names)}
        mask = torch.ones(len(self.vectors), dtype=torch.bool)
        for name in request.on:
            mask &= self.vectors[:, index[name]] == 1
        for name in request.off:
            mask &= self.vectors[:, index[name]] == 0
        return torch.nonzero(mask).flatten()

    def draw(self, request: AttributeRequest, n: int, seed: int) -> torch.Tensor | None:
        """``n`` training vectors (n, A) agreeing with ``request``, drawn by frequency; None when none agrees."""
        candidates = self.agreeing(request)
        if len(candidates) == 0:
            return None
        weights = self.counts[candidates].double().numpy()
        rng = np.random.default_rng([int(seed) % 2**63, 0x7E57])
        picks = rng.choice(len(candidates), size=n, p=weights / weights.sum())
        return self.vectors[candidates[torch.from_numpy(picks)]].clone()


def _table_problem(vectors: torch.Tensor, counts: torch.Tensor) -> str | None:
    """What is wrong with a table's vectors (0/1 each) and counts (whole, not negative, some above 0), if anything."""
    if vectors.dtype.is_floating_point or vectors.dtype.is_complex or counts.dtype.is_floating_point \
            or counts.dtype.is_complex:
        return "its vectors and counts must be whole numbers"
    if len(vectors) == 0 or not bool(((vectors == 0) | (vectors == 1)).all()):
        return "its vectors must hold only 0 and 1" if len(vectors) else "it holds no vectors"
    if bool((counts < 0).any()) or int(counts.sum()) <= 0:
        return "its counts must be 0 or more, and not all 0"
    return None


def training_attributes(directory: str | Path, config: RunConfig) -> tuple[AttributeTable | None, str | None]:
    """A run's training attribute table: from its folder, else the dataset cache; or a note why none.

    ``Run.training_attributes`` keeps what this returns, so it is read once per run.
    """
    names = list(config.data.attribute_names)
    directory = Path(directory)
    if (directory / ATTRIBUTES_FILE).is_file():
        return AttributeTable.load(directory, names), None
    rows = _rows_from_cache(config)
    if rows is not None:
        return AttributeTable.from_rows(names, rows), None
    return None, (f"{directory} has no {ATTRIBUTES_FILE} (runs trained before genkit wrote it) and its dataset cache "
                  "is not on this machine, so the attributes not listed are off")


def _rows_from_cache(config: RunConfig) -> torch.Tensor | None:
    """The training split's attribute vectors from the cache the run was trained on, if it is here."""
    from genkit.data.holdout import without_held_out
    from genkit.data.prepare import dataset_cache_path
    from genkit_datasets.cache import read_cache_info
    from genkit_datasets.torch_dataset import CachedImageDataset

    data = config.data
    path = dataset_cache_path(data.name, tuple(data.image_size), data.options,
                              Path(data.root) if data.root else None)
    info = read_cache_info(path)
    if info is None or info.fingerprint != data.cache_fingerprint or info.attribute_names != list(data.attribute_names):
        return None
    try:
        return without_held_out(CachedImageDataset(path, "train", limit=data.limit), data).attributes
    except UsageError:
        return None


@dataclass
class Conditions:
    """The condition batch for ``n`` samples and the attribute set each was drawn with."""

    condition: torch.Tensor           # (n, conditioner.dim)
    attribute_sets: list[list[str]]   # names on, per sample
    rest: str                         # the mode actually used ("off" after a fallback from "data")
    note: str | None = None           # why the rest fell back to off


def _names_on(vector: torch.Tensor, names: Sequence[str]) -> list[str]:
    return [name for name, v in zip(names, vector.tolist()) if v]


def _encode_full(conditioner, vector: torch.Tensor, names: Sequence[str]) -> torch.Tensor:
    """Every attribute stated, on or off: the vector exactly, whatever the conditioner's default for the rest."""
    return conditioner.encode([name if v else f"-{name}" for name, v in zip(names, vector.tolist())])


def encode_rows(conditioner, vectors: torch.Tensor, names: Sequence[str]) -> torch.Tensor:
    unique, inverse = torch.unique(vectors, dim=0, return_inverse=True)
    encoded = torch.stack([_encode_full(conditioner, row, names) for row in unique])
    return encoded[inverse]


def conditions(conditioner, names: Sequence[str], exclusive_groups: Sequence[str], attrs: str | Sequence[str], n: int,
               seed: int = 0, rest: str = "data", force_on: Sequence[str] = (),
               table: Callable[[], tuple[AttributeTable | None, str | None]] | None = None) -> Conditions:
    """Conditions for ``n`` samples of ``attrs``; ``force_on`` names are treated as asked for (``vary``).

    ``table`` gives the training attribute table (or a note why there is none) for ``rest="data"``;
    it is asked only then (``Run.training_attributes``). ``rest="model"`` needs a model that can take it
    (``Run.conditions`` checks, this does not know the model).
    """
    check_rest(rest)
    request = parse_attrs(attrs, names, exclusive_groups)
    if rest == "off" and not force_on:
        condition = conditioner.encode(attrs).to(torch.float32).reshape(1, -1).expand(n, -1)
        return Conditions(condition, [list(request.on)] * n, "off")
    if force_on:
        request = AttributeRequest(on=tuple(dict.fromkeys([*request.on, *force_on])),
                                   off=tuple(x for x in request.off if x not in force_on))
        check_exclusive(request, exclusive_groups)
    if rest == "model":
        condition = partial_condition(conditioner, request, names, exclusive_groups).reshape(1, -1).expand(n, -1)
        return Conditions(condition, [list(request.on)] * n, "model")
    note = None
    vectors = None
    if rest == "data":
        found, note = table() if table is not None else (None, None)
        if found is not None:
            vectors = found.draw(request, n, seed)
            if vectors is None:
                asked = shown(request.spec(), quote=False) if request.spec() else "no attributes"
                note = f"no training image has [{asked}]; the attributes not listed are off for these samples"
    if vectors is None and not force_on:  # fall back to exactly what rest="off" gives
        condition = conditioner.encode(attrs).to(torch.float32).reshape(1, -1).expand(n, -1)
        return Conditions(condition, [list(request.on)] * n, "off", note)
    used = "data"
    if vectors is None:
        vectors = torch.tensor([[1 if name in request.on else 0 for name in names]], dtype=torch.uint8).expand(n, -1)
        used = "off"
    condition = encode_rows(conditioner, vectors, names).to(torch.float32)
    return Conditions(condition, [_names_on(v, names) for v in vectors], used, note)
