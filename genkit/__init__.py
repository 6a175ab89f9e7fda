"""genkit: attribute-conditioned generative image models, built from plugins.

The public API, stable across minor versions, is what ``__all__`` lists: the hook markers for
plugin authors, the component contracts, the errors, and the notebook functions mirroring the
CLI (``load_dataset``, ``plan_run``/``train``, ``load_run``).
"""

from __future__ import annotations

__version__ = "0.1.0"

from genkit.errors import GenkitError, GenkitRuntimeError, PluginError, UsageError  # noqa: E402
from genkit.hookspecs import hookimpl, hookspec  # noqa: E402
from genkit.types import (  # noqa: E402
    Conditioner,
    DatasetSource,
    Loss,
    LossResult,
    Model,
    ModelOutput,
    SourceIndex,
)
from genkit.config import ComponentSpec, DataSpec, RunConfig, TrainSpec  # noqa: E402
from genkit.plugins import list_plugins, plugin_errors, register_plugin, registry, unregister_plugin  # noqa: E402
from genkit.data import load_dataset, prepare_dataset  # noqa: E402
from genkit.runs import Run, load_run  # noqa: E402
from genkit.training import plan_run, train  # noqa: E402

__all__ = [
    "ComponentSpec",
    "Conditioner",
    "DataSpec",
    "DatasetSource",
    "GenkitError",
    "GenkitRuntimeError",
    "Loss",
    "LossResult",
    "Model",
    "ModelOutput",
    "PluginError",
    "Run",
    "RunConfig",
    "SourceIndex",
    "TrainSpec",
    "UsageError",
    "__version__",
    "hookimpl",
    "hookspec",
    "list_plugins",
    "load_dataset",
    "load_run",
    "plan_run",
    "plugin_errors",
    "prepare_dataset",
    "register_plugin",
    "registry",
    "train",
    "unregister_plugin",
]
