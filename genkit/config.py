"""``config.json``: everything needed to rebuild a run's data, conditioner, model and loss.

Like a diffusers config, the file round-trips: ``RunConfig.from_json(cfg.to_json()) == cfg``,
and :func:`genkit.components.build_components` rebuilds the same objects from it. Component
options are stored fully resolved (defaults filled in), so a later change of a plugin's default
does not silently change an old run.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from genkit.errors import UsageError

CONFIG_FORMAT = 1


@dataclass
class ComponentSpec:
    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataSpec:
    name: str
    options: dict[str, Any] = field(default_factory=dict)
    root: str | None = None
    image_size: tuple[int, int] = (64, 64)
    limit: int | None = None
    attribute_names: list[str] = field(default_factory=list)
    cache_fingerprint: str | None = None
    #: attribute families that hold exactly one value per image, as the dataset declares them
    exclusive_groups: list[str] = field(default_factory=list)


@dataclass
class TrainSpec:
    epochs: int = 6
    batch_size: int = 16
    lr: float = 2e-3
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    compile: bool = False
    log_every: int = 25
    data_in: str = "auto"
    workers: int = 0
    checkpoint_every: int = 0


@dataclass
class RunConfig:
    data: DataSpec
    conditioner: ComponentSpec
    model: ComponentSpec
    loss: ComponentSpec
    train: TrainSpec = field(default_factory=TrainSpec)
    genkit_version: str = ""
    format: int = CONFIG_FORMAT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "RunConfig":
        """The config ``raw`` describes; a :class:`UsageError` for one written by a newer genkit."""
        check_format(raw, "this config")
        data = dict(raw["data"])
        data["image_size"] = tuple(data.get("image_size", (64, 64)))
        return cls(
            data=DataSpec(**data),
            conditioner=ComponentSpec(**raw["conditioner"]),
            model=ComponentSpec(**raw["model"]),
            loss=ComponentSpec(**raw["loss"]),
            train=TrainSpec(**raw.get("train", {})),
            genkit_version=raw.get("genkit_version", ""),
            format=raw.get("format", CONFIG_FORMAT),
        )

    @classmethod
    def from_json(cls, text: str) -> "RunConfig":
        return cls.from_dict(json.loads(text))

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
            check_format(raw, str(path))
            return cls.from_dict(raw)
        except FileNotFoundError:
            raise UsageError(f"{path} does not exist; is this a genkit run folder?") from None
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise UsageError(f"{path} is not a valid genkit config ({type(exc).__name__}: {exc})") from None
        except OSError as exc:
            raise UsageError(f"{path} cannot be read ({exc.strerror or exc}); check that it is a readable file") from None

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
