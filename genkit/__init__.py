"""genkit: attribute-conditioned generative image models, built from plugins.

The public API, stable across minor versions, is what ``__all__`` lists: the hook markers for
plugin authors, the component contracts, the errors, and the notebook functions mirroring the
CLI (``load_dataset``, ``plan_run``/``train``, ``load_run``); plus :mod:`genkit.plugin_api`, the
helpers plugins are written with. Names other than the errors and hook markers are imported on
first use, so ``import genkit`` costs 0.04 s instead of 4 s (see the note below).
"""

from __future__ import annotations

__version__ = "0.1.0"

from genkit.errors import GenkitError, GenkitRuntimeError, PluginError, UsageError, shown  # noqa: E402
from genkit.hookspecs import hookimpl, hookspec  # noqa: E402

# Everything else loads on first use (PEP 562). This no longer dodges an import cycle (genkit_datasets
# imports nothing of genkit); it stays because it keeps start-up cheap. Measured on the 2-core dev
# machine, median of 7 interleaved runs: `python -c "import genkit"` 0.04 s lazy vs 4.0 s eager
# (eager pulls in torch, h5py and matplotlib), `genkit --help` 2.3 s vs 3.8 s. A plugin that does
# only `import genkit` at its top, or a script that needs only genkit.UsageError, pays nothing.
_LAZY = {
    "Conditioner": "genkit.types", "DatasetSource": "genkit.types", "Loss": "genkit.types",
    "LossResult": "genkit.types", "Model": "genkit.types", "ModelOutput": "genkit.types",
    "SourceIndex": "genkit.types",
    "ComponentSpec": "genkit.config", "DataSpec": "genkit.config", "RunConfig": "genkit.config",
    "TrainSpec": "genkit.config", "Bounds": "genkit.options",
    "list_plugins": "genkit.components.loading", "plugin_errors": "genkit.components.loading", "register_plugin": "genkit.components.loading",
    "registry": "genkit.components.loading", "unregister_plugin": "genkit.components.loading",
    "load_dataset": "genkit.data.prepare", "prepare_dataset": "genkit.data.prepare",
    "Run": "genkit.sampling.run", "load_run": "genkit.sampling.run",
    "TrainingStep": "genkit.training.step",
    "plan_run": "genkit.training.planning", "train": "genkit.training.trainer", "resume": "genkit.training.resuming",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'genkit' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "Bounds",
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
    "TrainingStep",
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
    "resume",
    "shown",
    "train",
    "unregister_plugin",
]
