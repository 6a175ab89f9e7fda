"""A trained run loaded back from its folder, for sampling: :func:`load_run` and :class:`Run`.

The folder's layout is :mod:`genkit.store.run_folder`'s; weights are safetensors, so loading a run
never unpickles code. ``train_attributes.safetensors`` (the training attribute vectors) serves
``rest="data"`` and is checked when the run is loaded; ``loss.safetensors`` holds the loss's own
state when it has some (a learned σ) and is read only when ``Run.loss`` is first used (sampling
never needs it).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch

from genkit.components.build import build_components
from genkit.components.limits import check_seed
from genkit.components.loading import changed_plugin_advice
from genkit.config import RunConfig
from genkit.data.prepare import prepare_dataset
from genkit.errors import UsageError, shown
from genkit.runtime.distributed import resolve_device
from genkit.sampling import capabilities, editing
from genkit.sampling.attributes import (ATTRIBUTES_FILE, REST_MODES, AttributeTable, Conditions, check_rest,
                                        conditions, parse_attrs, training_attributes)
from genkit.sampling.draw import (SAMPLE_BATCH, Samples, check_images_fit, sample_batches, sample_images,
                                  seeded_generator, seeded_noise, warn_note)
from genkit.store.run_folder import CONFIG_FILE, LOSS_WEIGHTS_FILE, WEIGHTS_FILE
from genkit.store.weights import load_weights, loss_has_state
from genkit_datasets.cache import CacheInfo


@dataclass(frozen=True)
class RequestCost:
    """What drawing one request costs the model (:meth:`Run.cost`): its samples, the network passes they take
    (one sample's row through the network once) and the most rows one sample puts into a network call."""

    samples: int
    passes: int
    width: int


class Run:
    """A trained run: its config, the rebuilt model, and sampling by attribute names.

    What the model can do beyond sampling is in :attr:`capabilities`; its sampling options (a
    CVAE's temperature, a flow's guidance and steps) in :attr:`sampling_options`, and they are
    keyword arguments of :meth:`sample` and :meth:`generate`.
    """

    def __init__(self, directory: Path, config: RunConfig, model: torch.nn.Module, conditioner: Any,
                 loss: Any, device: torch.device, loss_state: Path | None = None):
        self.directory = directory
        self.config = config
        self.model = model
        self.conditioner = conditioner
        self._loss = loss
        #: the loss's saved state, read on first use of :attr:`loss`: sampling never needs it
        self._loss_state = loss_state
        self.device = device
        #: the training attribute table and the note why there is none, read on first use (:meth:`training_attributes`)
        self._attribute_table: tuple[AttributeTable | None, str | None] | None = None
        #: network rows one sampler call may take, by the model's declared width (:meth:`bounded`; None: no bound)
        self._max_rows: int | None = None
        #: where a copy costing a request (:meth:`cost`) records each batch it is asked for, drawing nothing
        self._counted: list[tuple[torch.Tensor, Mapping[str, Any] | None]] | None = None

    @property
    def loss(self) -> Any:
        """The run's loss, with its own trained state (``loss.safetensors``) read in when first asked for.

        Sampling never uses the loss, so a run folder without ``loss.safetensors`` (a Space that
        ships only what sampling needs) samples; asking for the loss then names the missing file.
        """
        if self._loss_state is not None:
            load_weights(self._loss, self._loss_state, what="loss")
            self._loss_state = None
            self._loss.to(self.device)
        return self._loss

    @property
    def attribute_names(self) -> list[str]:
        return list(self.config.data.attribute_names)

    @property
    def exclusive_groups(self) -> list[str]:
        """Attribute families with exactly one value per image, as the dataset declared them."""
        return list(self.config.data.exclusive_groups)

    def condition(self, attrs: str | list[str] | torch.Tensor, n: int = 1) -> torch.Tensor:
        """A (n, A) batch of one condition, from ``"A,B,-C"`` (the rest off) or a vector."""
        if isinstance(attrs, torch.Tensor):
            vector = attrs
        else:
            vector = self.conditioner.encode(attrs)  # the conditioner's own checks and messages first
            parse_attrs(attrs, self.attribute_names, self.exclusive_groups)
        return vector.to(self.device, torch.float32).reshape(1, -1).expand(n, -1)

    @property
    def capabilities(self) -> dict[str, bool]:
        """What the model can do besides sampling: ``{"posterior": ..., "invert": ..., "log_likelihood": ...,
        "partial_conditions": ...}``."""
        return capabilities.capabilities(self.model)

    @property
    def rest_modes(self) -> tuple[str, ...]:
        """The ``rest`` modes this run samples with: data and off, and model where :meth:`check_rest` allows it."""
        return tuple(mode for mode in REST_MODES if mode != "model" or self._model_rest_refusal("rest") is None)

    def check_rest(self, rest: str, called: str = "rest") -> str:
        """``rest`` if this run can sample with it; a one-line :class:`UsageError` otherwise, naming the flag
        ``called`` and what to use instead. ``model`` needs a model trained with attributes left unspecified
        (``capabilities["partial_conditions"]``) and a conditioner that encodes them (``encode_partial``)."""
        check_rest(rest, called)
        refusal = self._model_rest_refusal(called) if rest == "model" else None
        if refusal:
            raise UsageError(refusal)
        return rest

    def _model_rest_refusal(self, called: str) -> str | None:
        instead = f"use {called} data or {called} off"
        if not capabilities.has(self.model, "partial_conditions"):
            return (f"{called} model needs a model trained with attributes left unspecified (attribute dropout); "
                    f"this run's model {self.config.model.name!r} was not: {instead}")
        if not callable(getattr(self.conditioner, "encode_partial", None)):
            return (f"{called} model needs a conditioner that can leave attributes unspecified; this run's "
                    f"conditioner {self.config.conditioner.name!r} cannot: {instead}")
        return None

    @property
    def sampling_options(self) -> dict[str, capabilities.SamplingOption]:
        """The options the model's sampler takes (name, flag, default, type, choices, help)."""
        return capabilities.sampling_options(self.model)

    def resolve_options(self, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``options`` over the model's defaults, checked; a :class:`UsageError` naming the model's own otherwise.

        The one place sampling options are resolved: everything below ``Run`` (:mod:`genkit.sampling.draw`,
        grids, editing, evaluation) takes the dict this returns. Resolving a resolved dict returns it unchanged.
        """
        return capabilities.resolve_sampling_options(self.model, options or {}, self.config.model.name)

    def noise(self, n: int, seed: int = 0) -> torch.Tensor:
        """``n`` draws of the model's noise from N(0, I) (shape ``(n, *noise_shape)``), reproducible by seed."""
        check_seed(seed, "seed")
        return seeded_noise(self.model, n, seed).to(self.device)

    def latents(self, n: int, seed: int = 0) -> torch.Tensor:
        """The same as :meth:`noise` (its name before models other than VAEs)."""
        return self.noise(n, seed)

    def training_attributes(self) -> tuple[AttributeTable | None, str | None]:
        """The training attribute vectors ``rest="data"`` draws from, or None and a note why there are none.

        Read once, from ``train_attributes.safetensors`` or else the dataset cache
        (:func:`genkit.sampling.attributes.training_attributes`).
        """
        if self._attribute_table is None:
            self._attribute_table = training_attributes(self.directory, self.config)
        return self._attribute_table

    def conditions(self, attrs: str | Sequence[str], n: int, seed: int = 0, rest: str = "data",
                   force_on: Sequence[str] = ()) -> Conditions:
        """The condition batch for ``n`` samples of ``attrs``, the rest filled as ``rest`` says, and each
        sample's attribute set (:func:`genkit.sampling.attributes.conditions`)."""
        self.check_rest(rest)
        return conditions(self.conditioner, self.attribute_names, self.exclusive_groups, attrs, n, seed, rest,
                          force_on, table=self.training_attributes)

    def batches(self, condition: torch.Tensor, noise: torch.Tensor, options: Mapping[str, Any] | None,
                seed: int = 0, batch_size: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
        """The samples of ``condition`` at ``noise`` with resolved ``options``, a batch at a time:
        ``(start, images)`` on the run's device (:func:`genkit.sampling.draw.sample_batches`). A sampler that
        draws fresh noise of its own gets a generator seeded by ``seed``."""
        return sample_batches(self.model, condition, noise, options, self.device,
                              seeded_generator(self.device, seed), batch_size or self._batch_size(condition, options))

    def images(self, condition: torch.Tensor, noise: torch.Tensor, options: Mapping[str, Any] | None,
               seed: int = 0) -> torch.Tensor:
        """All the samples of :meth:`batches`, on the CPU, in one tensor."""
        if self._counted is not None:  # a copy costing a request: the batch is counted, not drawn
            self._counted.append((condition, options))
            return torch.zeros(len(condition), *self.config.image_shape)
        return sample_images(self.model, condition, noise, options, self.device, seeded_generator(self.device, seed),
                             self._batch_size(condition, options))

    def bounded(self, max_rows: int) -> "Run":
        """A copy of this run, sharing its model, whose sampler calls put at most ``max_rows`` rows through the
        network at once: ``max_rows`` // the width the model's ``sampling_cost`` declares samples a call (at
        least one, at most the loop's usual batch); a model that declares no cost samples in its usual
        batches. A copy, so concurrent requests do not mix."""
        bounded = copy.copy(self)
        bounded._max_rows = max_rows
        return bounded

    def cost(self, draw: Callable[["Run"], Any]) -> RequestCost | None:
        """What ``draw(run)`` would cost the model, counted without drawing: ``draw`` runs on a copy whose
        :meth:`images` records each batch (its conditions built, no network called) and the model's
        ``sampling_cost`` prices them. None for a model that declares no cost."""
        if not callable(getattr(self.model, "sampling_cost", None)):
            return None
        counting = copy.copy(self)
        counting._counted = []
        draw(counting)
        samples = passes = 0
        width = 1
        for condition, options in counting._counted:
            batch_passes, batch_width = capabilities.sampling_cost(self.model, condition, self.resolve_options(options))
            samples, passes, width = samples + len(condition), passes + batch_passes, max(width, batch_width)
        return RequestCost(samples, passes, width)

    def _batch_size(self, condition: torch.Tensor, options: Mapping[str, Any] | None) -> int | None:
        """Samples per sampler call for a bounded copy (:meth:`bounded`); None: the loop's own batch."""
        if self._max_rows is None:
            return None
        cost = capabilities.sampling_cost(self.model, condition, self.resolve_options(options))
        return None if cost is None else max(1, min(SAMPLE_BATCH, self._max_rows // cost[1]))

    def draw(self, attrs: str | Sequence[str], n: int = 16, seed: int = 0, rest: str = "data",
             options: Mapping[str, Any] | None = None) -> Samples:
        """What :meth:`generate` returns, with ``options`` already resolved and the note returned, not warned
        (``genkit sample`` and the page show it themselves)."""
        if n < 1:
            raise UsageError(f"n {n} must be a positive integer")
        self.check_rest(rest)
        check_images_fit(self.config.image_shape, n, f"n={n}")
        noise = self.noise(n, seed)
        cond = self.conditions(attrs, n, seed, rest)
        return Samples(self.images(cond.condition, noise, options, seed), cond.attribute_sets, cond.note)

    @torch.no_grad()
    def sample(self, attrs: str | list[str] | torch.Tensor | Any, n: int | None = None, seed: int = 0,
               rest: str = "data", **options: Any) -> torch.Tensor:
        """Images (N, 3, H, W) in [0, 1] with the attributes asked for; the same seed, the same images.

        ``attrs`` names attributes (``"A,B,-C"`` or a list of names: ``n`` samples, default 16), or is a
        tensor, array or (nested) list of numbers, conditions used as they are: one vector (A,) (``n``
        samples of it, default 16) or B rows (B, A), one sample each (``n`` each when given, row by row). ``rest="data"`` takes the
        attributes not named from training vectors that agree with the named ones (a warning when
        none does, and then they are off); ``rest="off"`` switches them off; ``rest="model"`` leaves
        them to a model trained for it (:attr:`rest_modes`). ``options`` are the model's sampling
        options, by name (:attr:`sampling_options` lists them).
        """
        if isinstance(attrs, str) or (isinstance(attrs, (list, tuple)) and all(isinstance(a, str) for a in attrs)):
            return self.generate(attrs, n=16 if n is None else n, seed=seed, rest=rest, **options).images
        rows = self._condition_rows(attrs)
        each = n if n is not None else 16 if rows.dim() == 1 else 1
        if isinstance(each, bool) or not isinstance(each, int) or each < 1:
            raise UsageError(f"n {shown(each)} must be a positive integer")
        condition = rows.reshape(-1, rows.shape[-1]).repeat_interleave(each, dim=0).to(self.device, torch.float32)
        resolved = self.resolve_options(options)
        check_images_fit(self.config.image_shape, len(condition), f"n={len(condition)}")
        return self.images(condition, self.noise(len(condition), seed), resolved, seed)

    def _condition_rows(self, attrs: Any) -> torch.Tensor:
        """``attrs`` as a tensor of conditions, (A,) or (B, A) with A the conditioner's width; one line otherwise."""
        width = self.conditioner.dim
        expected = f"(B, {width}) (one row of {width} condition values per sample) or ({width},)"
        try:
            rows = torch.as_tensor(attrs)
        except (TypeError, ValueError, RuntimeError):
            raise UsageError(f"attrs must be attribute names (\"A,B,-C\") or a tensor of shape {expected}, not "
                             f"{shown(attrs)}") from None
        if rows.dim() not in (1, 2) or rows.shape[-1] != width or rows.numel() == 0:
            raise UsageError(f"attrs is a tensor of shape {tuple(rows.shape)}; give shape {expected}, "
                             "such as run.condition(\"A,B\", n=4)")
        if rows.is_complex():
            raise UsageError(f"attrs holds {rows.dtype} values; give real numbers")
        return rows

    def generate(self, attrs: str | list[str], n: int = 16, seed: int = 0, rest: str = "data",
                 **options: Any) -> Samples:
        """Like :meth:`sample`, also returning each sample's attribute set and the fallback note."""
        return warn_note(self.draw(attrs, n=n, seed=seed, rest=rest, options=self.resolve_options(options)))

    def editor(self, options: Mapping[str, Any] | None = None, *, edit_mode: str = editing.DEFAULT_EDIT_MODE,
               edit_depth: float | str | None = None,
               invert_options: Mapping[str, Any] | None = None) -> editing.Editor:
        """An :class:`genkit.sampling.editing.Editor` of real images with the model's sampling ``options``.

        ``edit_mode`` is redraw or residual; ``edit_depth`` the part of the path a model with
        ``partial_invert`` inverts (1, the whole way, when None); ``invert_options`` sampling options
        of the inversion only, over ``options``. Checked in that order, after a model that can neither
        encode nor invert its sampler has said so, each refusal one line.
        """
        name = self.config.model.name
        method = editing.edit_method(self.model, name)
        mode = editing.check_edit_mode(edit_mode)
        depth = editing.edit_settings(self.model, name, method, edit_depth, invert_options)
        resolved = self.resolve_options(options)
        inverting = None
        if invert_options:
            try:
                inverting = self.resolve_options({**resolved, **invert_options})
            except UsageError as exc:
                raise UsageError(f"--invert-opt: {exc}") from None
        return editing.Editor(self.model, self.device, method, resolved, mode=mode, depth=depth,
                              invert_options=inverting)

    def edit(self, images: torch.Tensor, attributes: torch.Tensor | str, set: str | list[str],  # noqa: A002
             *, edit_mode: str = editing.DEFAULT_EDIT_MODE, edit_depth: float | str | None = None,
             invert_options: Mapping[str, Any] | None = None, **options: Any) -> editing.Edits:
        """Real ``images`` (B, 3, H, W) with ``attributes`` (a (B, A) 0/1 tensor, or one spec for all) changed
        by ``set`` (``"color::blue,-outline"``, or a list: one edit each); see :mod:`genkit.sampling.editing`.

        Returns a :class:`genkit.sampling.editing.Edits`: ``.original``, ``.reconstruction`` (the model's
        drawing under the image's own attributes), ``.edited`` (one batch per change) and the attribute
        vectors. ``edit_mode``, ``edit_depth`` and ``invert_options`` are :meth:`editor`'s; ``options`` the
        model's sampling options, for a model that edits by inverting its sampler.
        """
        names, groups = self.attribute_names, self.exclusive_groups
        images, before, requests = editing.edit_inputs(images, attributes, set, names, groups,
                                                       tuple(self.config.image_shape))  # checked before any work
        editor = self.editor(options, edit_mode=edit_mode, edit_depth=edit_depth, invert_options=invert_options)
        return editing.edit(editor, images, before, requests, names, groups)


def load_run(directory: str | Path, device: str = "auto") -> Run:
    """Rebuild a run from its folder: ``config.json`` names the components, safetensors holds the weights
    (the model's, and the loss's own state when it has some)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UsageError(f"run folder {directory} does not exist; pass the folder `genkit train` wrote (see --out)")
    config = RunConfig.load(directory / CONFIG_FILE)
    try:
        conditioner, model, loss = build_components(config)  # options and memory are checked first
    except UsageError as exc:
        raise UsageError(f"{directory / CONFIG_FILE}: {exc}") from None
    load_weights(model, directory / WEIGHTS_FILE,
                 advice=changed_plugin_advice(config.plugins.get("model", {}), "models", config.model.name))
    chosen = resolve_device(device)
    model.to(chosen).eval()
    if isinstance(loss, torch.nn.Module):
        loss.to(chosen)
    loaded = Run(directory, config, model, conditioner, loss, chosen,
                 loss_state=directory / LOSS_WEIGHTS_FILE if loss_has_state(loss) else None)
    if (directory / ATTRIBUTES_FILE).is_file():  # checked now, so a damaged table stops `serve` at its start
        loaded.training_attributes()
    return loaded


def open_run_data(run: Run, data: str | None = None, data_options: dict[str, Any] | None = None,
                  root: str | None = None, cache_dir: str | None = None, progress=None) -> CacheInfo:
    """The cache of the data ``run`` is evaluated on: its own, unless another variant is asked for.

    A different dataset name, or data whose attribute names differ from the run's, is a
    :class:`UsageError`: the run's conditioner and the classifier would read the vectors wrongly.
    """
    own = run.config.data
    name = data or own.name
    if name != own.name:
        raise UsageError(f"run {run.directory} was trained on {own.name!r}, not {name!r}; evaluate it on "
                         f"{own.name} (leave out --data) or pass a run trained on {name}")
    options = {**own.options, **(data_options or {})}
    info, _ = prepare_dataset(name, root=root if root is not None else own.root, image_size=own.image_size,
                              cache_dir=cache_dir, options=options, saved=True, progress=progress)
    if list(info.attribute_names) != list(own.attribute_names):
        missing = [a for a in own.attribute_names if a not in info.attribute_names]
        detail = f"it lacks {missing[0]!r}" if missing else "they differ in order or number"
        raise UsageError(f"run {run.directory} was trained on {len(own.attribute_names)} attributes of {own.name} "
                         f"but this {name} data has {len(info.attribute_names)} ({detail}); evaluate it on the data "
                         f"it was trained on")
    return info
