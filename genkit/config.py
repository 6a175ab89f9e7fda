"""``config.json``: everything needed to rebuild a run's data, conditioner, model and loss.

Like a diffusers config, the file round-trips: ``RunConfig.from_json(cfg.to_json()) == cfg``,
and :func:`genkit.components.build.build_components` rebuilds the same objects from it. Component
options are stored fully resolved (defaults filled in), so a later change of a plugin's default
does not silently change an old run.
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from genkit.errors import UsageError, shown
from genkit.options import Bounds, Option

CONFIG_FORMAT = 1


@dataclass
class ComponentSpec:
    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataSpec:
    name: str
    options: dict[str, Any] = field(default_factory=dict)
    #: the folder of the dataset's files; a resume may change it (the data moved)
    root: str | None = field(default=None, metadata={"resumable": True, "help": "Folder holding the dataset's files."})
    image_size: tuple[int, int] = (64, 64)
    limit: int | None = None
    attribute_names: list[str] = field(default_factory=list)
    cache_fingerprint: str | None = None
    #: attribute families that hold exactly one value per image, as the dataset declares them
    exclusive_groups: list[str] = field(default_factory=list)
    #: attribute combinations ("a+b") whose training images are left out of training (genkit.data.holdout)
    hold_out: list[str] = field(default_factory=list)


PRECISIONS = ("fp32", "bf16")
DATA_PLACEMENTS = ("auto", "disk", "ram", "gpu")


def setting(default: Any, help: str, *, bounds: Bounds | None = None, choices: tuple[str, ...] | None = None,
            resumable: bool = False, per_model: bool = False, called: str = "", outcome: bool = True) -> Any:
    """A training setting's field: its default and, once for the CLI, ``--resume`` and messages, what it is.

    ``help`` may name ``{default}``; ``resumable``: ``--resume`` may change it (it does not change what a
    checkpoint means); ``per_model``: a model's ``train_defaults`` may give it, so its flag defaults to
    None; ``called``: what a message about a bad value given as a flag calls it (else its flag);
    ``outcome``: it changes what the run computes (False for where and how it runs: the device, the
    data's placement, logging), so a sweep reuses a run only when every such setting agrees.
    """
    return field(default=default, metadata={"help": help, "bounds": bounds, "choices": choices,
                                            "resumable": resumable, "per_model": per_model, "called": called,
                                            "outcome": outcome})


@dataclass
class TrainSpec:
    """The training settings; each field's metadata is its flag's help, bounds and whether ``--resume`` may change it."""

    epochs: int = setting(6, "Passes over the training split (default {default}, or the model's own, raised by "
                             "--min-steps; given without --min-steps, exactly these).",
                          bounds=Bounds(ge=1, says="a positive integer"), resumable=True, per_model=True)
    #: the epochs are raised until the run takes at least this many optimizer steps (planned_epochs): a small
    #: dataset still gets the updates a model needs; recorded with the raised epochs, so a resume keeps the plan
    min_steps: int = setting(0, "Train at least this many optimizer steps, raising the epochs if needed (default "
                                "{default}: off, or the model's own; 0 when --epochs is given without it).",
                             bounds=Bounds(ge=0, says="0 (off) or a whole number of steps, for example 7200"),
                             resumable=True, per_model=True)
    batch_size: int = setting(16, "Images per optimiser step (global: split over processes; default {default}, or "
                                  "the model's own).", bounds=Bounds(ge=1, says="a positive integer"), per_model=True)
    lr: float = setting(2e-3, "Adam learning rate (default {default}, or the model's own).",
                        bounds=Bounds(gt=0, says="a positive number, for example 1e-3"), resumable=True,
                        per_model=True, called="learning rate")
    seed: int = setting(0, "Seed for weights, shuffling and noise.")
    device: str = setting("auto", "auto, cpu, cuda or cuda:N.", resumable=True, outcome=False)
    precision: str = setting("fp32", "fp32, or bf16 autocast on CUDA.", choices=PRECISIONS)
    compile: bool = setting(False, "torch.compile the model.")
    log_every: int = setting(25, "Steps between progress updates (host syncs).",
                             bounds=Bounds(ge=1, says="a positive integer"), outcome=False)
    data_in: str = setting("auto", "auto, ram, gpu, or disk (stream from the cache).", choices=DATA_PLACEMENTS,
                           resumable=True, outcome=False)
    workers: int = setting(0, "DataLoader workers when streaming from disk.", bounds=Bounds(ge=0), resumable=True,
                           outcome=False)
    checkpoint_every: int = setting(0, "Also checkpoint every N steps (0: at epoch ends only).",
                                    bounds=Bounds(ge=0, says="0 (only at epoch ends) or positive"), outcome=False)
    #: decay of the exponential moving average of the weights that sampling and evaluation use (0: off)
    ema: float = setting(0.0, "Decay of the weights' moving average that sampling uses, e.g. 0.999 (default 0: off, "
                              "or the model's own).", bounds=Bounds(ge=0, lt=1, says="0 (off) or a decay below 1, for "
                                                                                         "example 0.999"),
                         per_model=True)
    #: a step's gradients scaled down when their global norm exceeds this: one bad batch cannot blow the weights up
    grad_clip: float = setting(0.0, "Clip each update's gradients to this global norm, e.g. 1 (default 0: off, or the "
                                    "model's own).", bounds=Bounds(ge=0, says="0 (off) or a positive norm, for "
                                                                              "example 1"),
                               resumable=True, per_model=True, called="gradient clipping")


def training_settings() -> dict[str, Option]:
    """Every training setting as an :class:`Option`, in ``TrainSpec``'s order; ``root`` (``data.root``) last."""
    import typing

    hints = typing.get_type_hints(TrainSpec)
    found = {}
    for f in fields(TrainSpec):
        meta = f.metadata
        flag = "--" + f.name.replace("_", "-")
        found[f.name] = Option(f.name, (hints[f.name],), f.default, meta["choices"], meta["bounds"],
                               meta["help"].format(default=f"{f.default:g}" if isinstance(f.default, float)
                                                   else f.default), flag=flag, label=meta["called"])
    return found


def planned_epochs(epochs: int, min_steps: int, steps_per_epoch: int) -> int:
    """The epochs a run trains: ``epochs``, raised until they take at least ``min_steps`` optimizer steps."""
    return max(epochs, math.ceil(min_steps / max(steps_per_epoch, 1)))


def outcome_settings() -> tuple[str, ...]:
    """The training settings that change what a run computes (not where or how it runs), in ``TrainSpec``'s order."""
    return tuple(f.name for f in fields(TrainSpec) if f.metadata["outcome"])


def setting_metadata(spec: type, name: str) -> Mapping[str, Any]:
    """The metadata of field ``name`` of dataclass ``spec`` (a training setting's help, bounds, ...)."""
    return next(f.metadata for f in fields(spec) if f.name == name)


def resumable_settings() -> tuple[str, ...]:
    """The settings ``--resume`` may change: the training settings marked resumable, and the data's ``root``."""
    return (*(f.name for f in fields(TrainSpec) if f.metadata["resumable"]),
            *(f.name for f in fields(DataSpec) if f.metadata.get("resumable")))


@dataclass
class RunConfig:
    data: DataSpec
    conditioner: ComponentSpec
    model: ComponentSpec
    loss: ComponentSpec
    train: TrainSpec = field(default_factory=TrainSpec)
    genkit_version: str = ""
    format: int = CONFIG_FORMAT
    #: which plugin provided each component when the run was planned, and its version:
    #: ``{"loss": {"plugin": "laplace", "distribution": "genkit-laplace", "version": "0.1.0"}, ...}``
    #: (empty in runs written before it was recorded)
    plugins: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "RunConfig":
        """Rebuild a config from its JSON form; a wrong type or a newer ``format`` is a :class:`UsageError`."""
        if not isinstance(raw, dict):
            raise UsageError(f"the config is a JSON {type(raw).__name__}, not an object")
        check_format(raw, "this config")
        version = raw.get("format", CONFIG_FORMAT)
        if not isinstance(version, int) or isinstance(version, bool):
            raise UsageError(f"format {shown(version)} is not a whole number")
        data = _checked(DataSpec, raw.get("data"), "data")
        data["image_size"] = _image_size(data.get("image_size", (64, 64)))
        for key in ("attribute_names", "exclusive_groups"):
            _names(data.get(key, []), f"data.{key}")
        return cls(
            data=DataSpec(**data),
            conditioner=ComponentSpec(**_checked(ComponentSpec, raw.get("conditioner"), "conditioner")),
            model=ComponentSpec(**_checked(ComponentSpec, raw.get("model"), "model")),
            loss=ComponentSpec(**_checked(ComponentSpec, raw.get("loss"), "loss")),
            train=TrainSpec(**_checked(TrainSpec, raw.get("train", {}), "train")),
            genkit_version=str(raw.get("genkit_version", "")),
            format=version,
            plugins=_plugins(raw.get("plugins", {})),
        )

    @classmethod
    def from_json(cls, text: str) -> "RunConfig":
        return cls.from_dict(json.loads(text))

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise UsageError(f"{path} does not exist; is this a genkit run folder?") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(f"{path} is not a valid genkit config ({type(exc).__name__}: {exc})") from None
        except OSError as exc:
            raise UsageError(f"{path} cannot be read ({exc.strerror or exc}); check that it is a readable file") from None
        check_format(raw, str(path))
        try:
            return cls.from_dict(raw)
        except UsageError as exc:
            raise UsageError(f"{path} is not a config this genkit can use: {exc}") from None
        except (KeyError, TypeError) as exc:
            raise UsageError(f"{path} is not a valid genkit config ({type(exc).__name__}: {exc})") from None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (3, *self.data.image_size)


def check_format(raw: Any, where: str) -> None:
    """A one-line :class:`UsageError` when ``raw`` was written in a newer ``config.json`` format.

    Older formats are read as they are; a newer one may mean fields this genkit would misread.
    """
    found = raw.get("format", CONFIG_FORMAT) if isinstance(raw, dict) else CONFIG_FORMAT
    if isinstance(found, int) and not isinstance(found, bool) and found > CONFIG_FORMAT:
        raise UsageError(f"{where} was written by a newer genkit (format {found}); upgrade genkit "
                         f"(pip install --upgrade genkit-cvae) to read it")


#: the JSON types a field's default value allows (an int where a float is expected is fine)
_ALLOWED = {bool: (bool,), int: (int,), float: (int, float), str: (str,), dict: (dict,), list: (list,),
            tuple: (list, tuple)}


#: settings whose default is None (or required): the type a value must have, and an example
_OPTIONAL = {"root": ((str,), "/data/celeba"), "limit": ((int,), 1000), "cache_fingerprint": ((str,), "ab12")}


def _checked(spec: type, raw: Any, section: str) -> dict[str, Any]:
    """``raw`` as keyword arguments of dataclass ``spec``: known keys only, each of its default's type."""
    if not isinstance(raw, dict):
        raise UsageError(f"section {section!r} is {'missing' if raw is None else 'not a JSON object'}")
    known = {f.name: f for f in fields(spec)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise UsageError(f"section {section!r} has no setting {shown(unknown[0])}; its settings are: "
                         f"{', '.join(known)}")
    for name, f in known.items():
        if name not in raw:
            if f.default is MISSING and f.default_factory is MISSING:
                raise UsageError(f"section {section!r} lacks {name!r}")
            continue
        value = raw[name]
        default = f.default if f.default is not MISSING else (f.default_factory() if f.default_factory is not MISSING
                                                              else None)
        if default is None:
            if value is None and name in _OPTIONAL:
                continue
            allowed, default = _OPTIONAL.get(name, ((str,), "a-name"))
        else:
            allowed = _ALLOWED.get(type(default), (type(default),))
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise UsageError(f"{section}.{name} is {shown(json.dumps(value), quote=False)} ({_json_type(value)}), "
                             f"but it must be {_json_type(default)}, like {json.dumps(default)}")
    return dict(raw)


def _plugins(value: Any) -> dict[str, dict[str, Any]]:
    """The ``plugins`` section: per component section, its plugin's name, distribution and version (text or null)."""
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise UsageError(f"plugins is {shown(json.dumps(value), quote=False)}; it must map each section to an object "
                         'like {"plugin": "laplace", "distribution": "genkit-laplace", "version": "0.1.0"}')
    for section, origin in value.items():
        for key, text in origin.items():
            if text is not None and not isinstance(text, str):
                raise UsageError(f"plugins.{section}.{key} is {shown(json.dumps(text), quote=False)}; it must be "
                                 "text or null")
    return {section: dict(origin) for section, origin in value.items()}


def _image_size(value: Any) -> tuple[int, int]:
    from genkit_datasets.preprocess import parse_image_size

    if not (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise UsageError(f"data.image_size is {shown(json.dumps(value), quote=False)}; it must be [height, width], like [64, 64]")
    return parse_image_size(value)


def _names(value: list, where: str) -> None:
    """A list of names: each a non-empty string, none twice."""
    for i, name in enumerate(value):
        if not isinstance(name, str) or not name:
            raise UsageError(f"{where}[{i}] is {shown(json.dumps(name), quote=False)}, but every name must be "
                             "non-empty text, like \"Smiling\"")
    if len(set(value)) != len(value):
        twice = next(name for name in value if value.count(name) > 1)
        raise UsageError(f"{where} lists {shown(twice)} twice; each name must appear once")


def _json_type(value: Any) -> str:
    return {bool: "true/false", int: "a whole number", float: "a number", str: "text", dict: "an object",
            list: "a list", tuple: "a list"}.get(type(value), type(value).__name__)


def flat_settings(config: RunConfig | dict[str, Any]) -> dict[str, Any]:
    """Every setting of a config by its ``config.json`` path (``train.lr``, ``loss.options.beta``).

    Values are JSON scalars; a list or an object that is a value (``data.image_size``) is its JSON
    text, so two configs compare setting by setting (``genkit runs diff``, TensorBoard's hparams).
    """
    raw = config.to_dict() if isinstance(config, RunConfig) else config
    flat: dict[str, Any] = {}

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict) and ("." not in path or path.endswith(".options")):  # sections, options
            for key, item in value.items():
                walk(item, f"{path}.{key}" if path else str(key))
        elif isinstance(value, (dict, list, tuple)):
            flat[path] = json.dumps(value)
        else:
            flat[path] = value

    walk(raw, "")
    return flat
