"""Editing real images: the same image drawn again with some attributes changed.

An edit keeps what the model's code holds of an image and changes only its condition. How the
code is found is the model's capability (:mod:`genkit.sampling.capabilities`), never its name:

* ``posterior`` (``encode``/``decode``): the code is z = μ, the *mean* of q(z|x, y), so an edit
  is deterministic and as sharp as the decoder can draw (a draw z ~ q would add the posterior's
  noise to every edit). When the model has a conditional prior (``prior_params``), z is carried
  to the new attributes through it, z' = μ_p(y') + σ_p(y')/σ_p(y)·(z − μ_p(y)): the same
  position relative to each condition's prior, the way ``sample`` maps one noise to
  corresponding images across conditions. Then ``decode(z', y')``.
* ``invert``: the code is the noise ``invert(x, y, **options)`` that the sampler maps back to the
  image; the edit is ``sample(y', noise, **options)`` with the same sampling options. A model with
  ``partial_invert`` may stop part of the way (``depth`` below 1): the code is then the sampler's
  state at time 1 − depth, ``invert_partway(x, y, depth)``, and the edit ``sample_partway(code, y',
  depth)``, so what the path settles before 1 − depth (layout, background) is kept. The inversion may
  take sampling options of its own (``invert_options``: a sampler with classifier-free guidance may
  invert more exactly without it).

What the model draws from the code is the *drawing*; the reconstruction is the drawing under the
image's own attributes. How an edit is made from drawings is the edit *mode*:

* ``redraw`` (the default): the drawing under y' itself (the edit that changes nothing is the
  reconstruction).
* ``residual``: x + (drawing under y' − drawing under y), clamped to [0, 1]. The
  model's error in drawing x cancels, so the edit that changes nothing is x exactly, and a pixel
  the change does not move stays x (a background the model draws flat stays as it was).

``redraw`` is the default because its edits do what was asked and nothing else more often (the
``edit_clean`` of :mod:`genkit.evaluation.edits`, measured in docs/editing.md): ``residual`` keeps
more, but where a change moves a shape the image's old one shows through.

Changes are written as ``--attrs`` is
(:func:`genkit.sampling.attributes.parse_attrs`): ``NAME`` on, ``-NAME`` off; a value of an exclusive family
(``color::blue``) replaces the image's old value of that family. Conditions are attribute vectors,
exactly as training feeds them to the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch

from genkit.errors import UsageError, shown
from genkit.sampling.attributes import AttributeRequest, parse_attrs
from genkit.sampling.capabilities import has, sampling_options
from genkit.sampling.draw import sample_images

#: images encoded and decoded at once
EDIT_BATCH = 256
#: the most pixels an image file may have (a 8192x8192 image): bigger ones are refused before decoding
METHODS = ("posterior", "invert")
#: how an edit is made from the model's drawings (see the module docstring); the first is the default
EDIT_MODES = ("redraw", "residual")
DEFAULT_EDIT_MODE = EDIT_MODES[0]


# --- what to change -----------------------------------------------------------------------------

def parse_change(spec: str | Sequence[str], names: Sequence[str], exclusive_groups: Sequence[str] = (),
                 flag: str = "--set") -> AttributeRequest:
    """A change (``"color::blue,-outline"``), checked: not empty, known names, one value per exclusive family,
    and no value of an exclusive family switched off (the family would have none: switch another on)."""
    text = spec if isinstance(spec, str) else ",".join(spec)
    for item in text.split(","):
        name = item.strip().lstrip("+-").strip()
        if name and name not in set(names):
            listing = ", ".join(names) if len(names) <= 40 else "list them with `genkit data info`"
            raise UsageError(f"{flag} {shown(text)}: unknown attribute {shown(name)}; valid attributes: {listing}")
    try:
        request = parse_attrs(text, names, exclusive_groups)
    except UsageError as exc:
        raise UsageError(f"{flag} {shown(text)}: {exc}") from None
    if not request.mentioned:
        raise UsageError(f"{flag} {shown(text)} changes nothing; name attributes to switch on (NAME) or off (-NAME), "
                         "for example color::blue,-outline")
    for name in request.off:
        group = exclusive_group(name, exclusive_groups)
        if group is not None:
            raise UsageError(f"{flag} switches {name!r} off, but {group!r} holds exactly one value per image; switch "
                             f"another value of {group!r} on instead, which replaces it")
    return request


def apply_change(vectors: torch.Tensor, request: AttributeRequest, names: Sequence[str],
                 exclusive_groups: Sequence[str] = ()) -> torch.Tensor:
    """``vectors`` (B, A) with ``request`` applied: named values on or off; a value of an exclusive family
    switches that family's other values off."""
    out = vectors.clone()
    position = {name: i for i, name in enumerate(names)}
    for name in request.on:
        group = exclusive_group(name, exclusive_groups)
        if group is not None:
            for other in names:
                if other.startswith(f"{group}::"):
                    out[:, position[other]] = 0
        out[:, position[name]] = 1
    for name in request.off:
        out[:, position[name]] = 0
    return out


def single_changes(vector: Sequence[float], names: Sequence[str], exclusive_groups: Sequence[str] = ()
                   ) -> list[tuple[str, AttributeRequest]]:
    """Every change of one attribute from ``vector``: each other value of an exclusive family the vector has
    a value of (a swap), every other attribute switched on or off. ``(attribute judged, request)`` pairs."""
    on = {name for name, value in zip(names, list(vector)) if value > 0.5}
    changes = []
    for name in names:
        group = exclusive_group(name, exclusive_groups)
        if group is not None:
            if name not in on and any(n.startswith(f"{group}::") for n in on):
                changes.append((name, AttributeRequest(on=(name,))))
        elif name in on:
            changes.append((name, AttributeRequest(off=(name,))))
        else:
            changes.append((name, AttributeRequest(on=(name,))))
    return changes


def exclusive_group(name: str, exclusive_groups: Sequence[str]) -> str | None:
    """The exclusive family ``name`` is a value of (``"color"`` for ``"color::red"``), or None."""
    group = name.split("::", 1)[0] if "::" in name else None
    return group if group in set(exclusive_groups) else None


# --- how the model edits ------------------------------------------------------------------------

def edit_method(model: torch.nn.Module, model_name: str) -> str:
    """How ``model`` finds an image's code: ``"posterior"`` or ``"invert"``; a one-line error for a model
    that can do neither."""
    for method in METHODS:
        if has(model, method):
            return method
    raise UsageError(f"model {model_name!r} can neither encode images (encode/decode) nor invert its sampler "
                     "(invert), so it cannot edit images; see docs/editing.md for the models that can")


def check_edit_mode(mode: Any, flag: str = "--edit-mode") -> str:
    """``mode`` if it is one of :data:`EDIT_MODES`; a one-line :class:`UsageError` naming them otherwise."""
    if mode not in EDIT_MODES:
        raise UsageError(f"{flag} {shown(mode)} is not known; choose residual (the image plus what the change "
                         "alters in the model's drawing) or redraw (the model's drawing under the new attributes)")
    return mode


def check_edit_depth(depth: Any, flag: str = "--edit-depth") -> float:
    """``depth`` (a number, or its text) as a float in (0, 1]; a one-line :class:`UsageError` otherwise."""
    try:
        value = float(depth) if isinstance(depth, (int, float, str)) and not isinstance(depth, bool) else None
    except ValueError:
        value = None
    if value is None or not 0 < value <= 1:  # NaN fails the comparison
        given = shown(depth) if value is None else shown(str(depth).strip(), quote=False)  # a number: as typed
        raise UsageError(f"{flag} {given} must be a number in (0, 1]: the part of the path to invert, from the "
                         "image (1: all of it, the default; 0.5: half)")
    return value


def edit_settings(model: torch.nn.Module, model_name: str, method: str, depth: Any = None,
                  invert_options: Mapping[str, Any] | None = None) -> float:
    """The edit depth (1 when not given), refused in one line where the model cannot use it or
    ``invert_options``: depths below 1 need ``partial_invert``, options of the inversion a model that
    edits by inverting a sampler with sampling options."""
    value = 1.0 if depth is None else check_edit_depth(depth)
    if value != 1 and (method != "invert" or not has(model, "partial_invert")):
        why = "edits by encoding images instead" if has(model, "partial_invert") else "lacks it"
        raise UsageError(f"--edit-depth {value:g} needs a model that inverts its sampler part of the way (the "
                         f"capability partial_invert: invert_partway and sample_partway); model {model_name!r} "
                         f"{why}: leave out --edit-depth")
    if invert_options:
        if method != "invert":
            raise UsageError(f"--invert-opt sets sampling options of the inversion, and model {model_name!r} "
                             "inverts no sampler (it edits by encoding images, which takes no options): leave out "
                             "--invert-opt")
        if not sampling_options(model):
            raise UsageError(f"--invert-opt sets sampling options of the inversion, and model {model_name!r} has "
                             "no sampling options: leave out --invert-opt")
    return value


class Editor:
    """Encodes images to the model's code and draws codes with other attributes; see the module docstring.

    ``method`` is :func:`edit_method`'s; ``options`` the sampling options resolved by ``Run.resolve_options``,
    ``invert_options`` those of the inversion (``options`` unless given); ``mode`` one of :data:`EDIT_MODES`;
    ``depth`` the part of the path inverted (below 1 only for ``partial_invert``). ``Run.editor`` makes one,
    every setting checked.
    """

    def __init__(self, model: torch.nn.Module, device: torch.device, method: str, options: Mapping[str, Any],
                 mode: str = DEFAULT_EDIT_MODE, depth: float = 1.0, invert_options: Mapping[str, Any] | None = None):
        self.model, self.device, self.method, self.options = model, device, method, dict(options)
        self.mode, self.depth = check_edit_mode(mode), float(depth)
        self.invert_options = dict(options if invert_options is None else invert_options)

    @torch.no_grad()
    def encode(self, images: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        """The code of each image (float in [0, 1], (B, 3, H, W)) under its attribute vector."""
        model = self.model
        model.eval()
        images, condition = self._inputs(images, vectors)
        if self.method == "posterior":
            mu, _ = model.encode(images, condition)
            return mu
        if self.depth < 1:
            return model.invert_partway(images, condition, self.depth, **self.invert_options)
        return model.invert(images, condition, **self.invert_options)

    @torch.no_grad()
    def draw(self, codes: torch.Tensor, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        """What the model draws from ``codes`` (found under ``before``) with the attribute vectors ``after``, on
        the CPU: the ``redraw`` edit; under ``before`` itself, the reconstruction."""
        model = self.model
        model.eval()
        condition_before = before.to(self.device, torch.float32)
        condition = after.to(self.device, torch.float32)
        if self.method == "posterior":
            z = carry_through_prior(model, codes, condition_before, condition)
            images = model.decode(z, condition)
        elif self.depth < 1:
            images = model.sample_partway(codes.to(self.device), condition, self.depth, **self.options)
        else:  # the codes as the sampler's noise, all in one call
            images = sample_images(model, condition, codes, self.options, self.device, batch_size=len(codes))
        return images.float().clamp(0, 1).cpu()

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, before: torch.Tensor, after: torch.Tensor,
               images: torch.Tensor | None = None, reconstruction: torch.Tensor | None = None) -> torch.Tensor:
        """The edits of ``images`` (whose codes, under ``before``, are ``codes``) to the attribute vectors ``after``,
        on the CPU, made as :attr:`mode` says. ``residual`` needs ``images`` (a row whose attributes do not
        change is then the image itself); ``reconstruction``, the drawing under ``before``, saves drawing it
        again."""
        if self.mode == "redraw":
            return self.draw(codes, before, after)
        if images is None:
            raise ValueError("a residual edit adds the change to the image: pass the images the codes are of")
        originals = _as_float(images)
        same = (before.cpu() == after.cpu()).all(dim=1)
        if bool(same.all()):
            return originals.clone()
        if reconstruction is None:
            reconstruction = self.draw(codes, before, before)
        edited = (originals + (self.draw(codes, before, after) - reconstruction)).clamp(0, 1)
        edited[same] = originals[same]  # exactly the image, whatever the sampler's arithmetic
        return edited

    def _inputs(self, images: torch.Tensor, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if images.dtype == torch.uint8:
            images = images.float().div(255)
        return images.to(self.device, torch.float32), vectors.to(self.device, torch.float32)


def _as_float(images: torch.Tensor) -> torch.Tensor:
    """Images as float in [0, 1] on the CPU (uint8 divided by 255)."""
    images = images.cpu()
    return images.float().div(255) if images.dtype == torch.uint8 else images.float()


def carry_through_prior(model, z: torch.Tensor, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """``z`` moved from the conditional prior of ``before`` to that of ``after`` (unchanged without one)."""
    prior = getattr(model, "prior_params", None)
    if not callable(prior) or torch.equal(before, after):
        return z
    mu_before, logvar_before = prior(before)
    mu_after, logvar_after = prior(after)
    return mu_after + torch.exp(0.5 * (logvar_after - logvar_before)) * (z - mu_before)


@dataclass
class Edits:
    """What :func:`edit` returns: images in [0, 1] on the CPU and the attribute vectors they were drawn with."""

    original: torch.Tensor                 # (B, 3, H, W)
    reconstruction: torch.Tensor           # (B, 3, H, W): the model's drawing under the image's own attributes
    edited: list[torch.Tensor]             # per change, (B, 3, H, W)
    before: torch.Tensor                   # (B, A) 0/1
    after: list[torch.Tensor]              # per change, (B, A) 0/1
    changes: list[str] = field(default_factory=list)  # each change as "A,-B"
    method: str = "posterior"
    mode: str = DEFAULT_EDIT_MODE
    depth: float = 1.0

    def rows(self) -> torch.Tensor:
        """(B, 2 + changes, 3, H, W): per image, original, reconstruction, then each edit."""
        return torch.stack([self.original, self.reconstruction, *self.edited], dim=1)


def edit_inputs(images: torch.Tensor, attributes: torch.Tensor | str | Sequence[str], changes: str | Sequence[str],
                names: Sequence[str], exclusive_groups: Sequence[str], image_shape: tuple[int, int, int]
                ) -> tuple[torch.Tensor, torch.Tensor, list[AttributeRequest]]:
    """What :func:`edit` takes, every part checked before any work: ``images`` (B, 3, H, W; uint8 or float in
    [0, 1]) as a batch, ``attributes`` as (B, A) 0/1 vectors, ``changes`` as requests.

    ``attributes`` is a (B, A) 0/1 tensor, or one ``--attrs`` spec for every image (listed on, the
    rest off). ``changes`` is one change or a list (a column each).
    """
    images = _as_batch(images, image_shape)
    before = _as_vectors(attributes, len(images), names, exclusive_groups)
    specs = [changes] if isinstance(changes, str) else list(changes)
    if not specs:
        raise UsageError("no change given; pass one or more changes such as color::blue,-outline")
    return images, before, [parse_change(spec, names, exclusive_groups) for spec in specs]


def edit(editor: Editor, images: torch.Tensor, before: torch.Tensor, requests: Sequence[AttributeRequest],
         names: Sequence[str], exclusive_groups: Sequence[str] = ()) -> Edits:
    """``images`` with attribute vectors ``before`` edited by each request (:func:`edit_inputs` checks them)."""
    afters = [apply_change(before, request, names, exclusive_groups) for request in requests]
    recon, edited = [], [[] for _ in requests]
    for start in range(0, len(images), EDIT_BATCH):
        part, vectors = images[start:start + EDIT_BATCH], before[start:start + EDIT_BATCH]
        codes = editor.encode(part, vectors)
        recon.append(editor.draw(codes, vectors, vectors))
        for k, after in enumerate(afters):
            edited[k].append(editor.decode(codes, vectors, after[start:start + EDIT_BATCH], part, recon[-1]))
    return Edits(_as_float(images), torch.cat(recon), [torch.cat(e) for e in edited], before, afters,
                 [r.spec() for r in requests], editor.method, editor.mode, editor.depth)


def _as_batch(images: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    images = torch.as_tensor(images)
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4 or tuple(images.shape[1:]) != shape:
        raise UsageError(f"images of shape {tuple(images.shape)} do not fit the run's {shape[1]}x{shape[2]} RGB "
                         f"images; pass a (B, {shape[0]}, {shape[1]}, {shape[2]}) tensor (genkit.sampling.edit_images.read_image "
                         "brings an image file to size)")
    if len(images) == 0:
        raise UsageError("no images given; pass at least one")
    return images


def _as_vectors(attributes, count: int, names: Sequence[str], groups: Sequence[str]) -> torch.Tensor:
    if isinstance(attributes, torch.Tensor):
        vectors = attributes[None] if attributes.ndim == 1 else attributes  # one vector for every image
        if vectors.ndim != 2 or vectors.shape[1] != len(names) or len(vectors) not in (1, count):
            raise UsageError(f"attributes of shape {tuple(attributes.shape)} do not match {count} images of "
                             f"{len(names)} attributes; pass a ({count}, {len(names)}) tensor of 0/1")
        return (vectors > 0.5).float().expand(count, -1).clone()
    request = parse_attrs(attributes, names, groups)
    vector = torch.tensor([[1.0 if name in request.on else 0.0 for name in names]])
    return vector.expand(count, -1).clone()


def names_on(vector: torch.Tensor, names: Sequence[str]) -> list[str]:
    """The attributes on in one vector."""
    return [name for name, value in zip(names, vector.tolist()) if value > 0.5]
