"""Grids that compare conditions at the same noise (Figure 5): an attribute off and on (:func:`vary`), one
attribute set moving to another (:func:`interpolate`); ``genkit sample --vary/--interpolate`` and the page.

``options`` are the model's sampling options resolved by ``Run.resolve_options`` (None: its defaults).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from genkit.errors import UsageError, shown
from genkit.sampling.attributes import (AttributeRequest, Conditions, check_exclusive, encode_rows, parse_attrs,
                                        partial_condition, stated)
from genkit.sampling.draw import Samples, check_images_fit
from genkit.sampling.run import Run


def vary(run: Run, attrs: str | Sequence[str], names: Sequence[str], n: int, seed: int = 0, rest: str = "off",
         options: Mapping[str, Any] | None = None) -> Samples:
    """Per attribute two rows, off then on over ``attrs``, the same ``n`` codes in every row.

    With ``rest="data"`` each column's other attributes come from a training vector that has the
    varied attribute on; the upper row switches only that attribute off. With ``rest="model"`` the
    attributes not named are left to the model in both rows (the lower row's exclusive family stated
    whole, :func:`genkit.sampling.attributes.stated`; the upper switches only the varied one off).
    """
    run.check_rest(rest)
    names_all = run.attribute_names
    request = parse_attrs(attrs, names_all, run.exclusive_groups)
    varied = _varied_names(run, names, request)  # every name checked before anything is drawn
    check_images_fit(run.config.image_shape, 2 * len(varied) * n, f"n={n} with {len(varied)} varied attribute(s)")
    z = run.noise(n, seed)
    rows, sets, notes = [], [], []
    for name in varied:
        if rest == "off":  # exactly the grid `genkit sample --vary` always drew
            base = run.conditioner.encode(attrs)
            switch = run.conditioner.encode(name)
            off_set = [x for x in request.on if x != name]
            for c, attribute_set in ((base * (1 - switch), off_set), (torch.maximum(base, switch), off_set + [name])):
                rows.append(run.images(c.reshape(1, -1).expand(n, -1).float(), z, options, seed))
                sets += [attribute_set] * n
            continue
        if rest == "model":
            asked = AttributeRequest(on=tuple(dict.fromkeys([*request.on, name])),
                                     off=tuple(x for x in request.off if x != name))
            on = stated(asked, names_all, run.exclusive_groups)
            off = AttributeRequest(on=tuple(x for x in on.on if x != name), off=(*on.off, name))
            for row in (off, on):
                c = partial_condition(run.conditioner, row, names_all, run.exclusive_groups)
                rows.append(run.images(c.reshape(1, -1).expand(n, -1), z, options, seed))
                sets += [list(row.on)] * n
            continue
        cond = run.conditions(attrs, n, seed, rest, force_on=[name])
        if cond.note:
            notes.append(cond.note)
        off_sets = [[x for x in s if x != name] for s in cond.attribute_sets]
        off_vectors = torch.tensor([[1 if a in set(s) else 0 for a in names_all] for s in off_sets], dtype=torch.uint8)
        rows += [run.images(encode_rows(run.conditioner, off_vectors, names_all).float(), z, options, seed),
                 run.images(cond.condition, z, options, seed)]
        sets += off_sets + cond.attribute_sets
    return Samples(torch.cat(rows), sets, notes[0] if notes else None)


def _varied_names(run: Run, names: Sequence[str], request: AttributeRequest) -> list[str]:
    """The attributes ``--vary`` names: one known name each, given once, and on together with
    ``attrs`` without two values of an exclusive group."""
    varied: list[str] = []
    for raw in names:
        item = str(raw).strip()
        name = item.lstrip("+").strip()
        if not name or name.startswith("-") or "," in name:
            raise UsageError(f"--vary takes one attribute name, not {shown(item)}: it is off in the upper row and on "
                             "in the lower one, over --attrs")
        run.conditioner.encode(name)  # an unknown name: the conditioner's message
        if name in varied:
            raise UsageError(f"--vary {name!r} is given twice; give each attribute once")
        check_exclusive(AttributeRequest(on=tuple(dict.fromkeys([*request.on, name])), off=()), run.exclusive_groups)
        varied.append(name)
    return varied


def interpolate(run: Run, pair: tuple[str, str], n: int, steps: int, seed: int = 0, rest: str = "off",
                options: Mapping[str, Any] | None = None) -> Samples:
    """``n`` rows (noise draws) × ``steps`` columns, the condition moving linearly from one set to the other.

    With ``rest="data"`` each end's unlisted attributes are filled per row as for a grid. With
    ``rest="model"`` an attribute either end states (an exclusive family named there, whole) is stated
    at both, off at the end that leaves it open, so no entry moves between unspecified and stated; the
    others are left to the model all the way.
    """
    if steps < 2:
        raise UsageError(f"steps {steps} must be at least 2 (the two ends)")
    run.check_rest(rest)
    check_images_fit(run.config.image_shape, n * steps, f"n={n} with steps={steps}")
    z = run.noise(n, seed)
    ends = _model_ends(run, pair, n) if rest == "model" else [run.conditions(spec, n, seed, rest) for spec in pair]
    weights = torch.linspace(0, 1, steps)
    rows, sets = [], []
    for i in range(n):
        cond = torch.stack([(1 - t) * ends[0].condition[i] + t * ends[1].condition[i] for t in weights])
        rows.append(run.images(cond, z[i:i + 1].expand(steps, *z.shape[1:]), options, seed))
        sets += [ends[0].attribute_sets[i]] + [[]] * (steps - 2) + [ends[1].attribute_sets[i]]
    note = next((e.note for e in ends if e.note), None)
    return Samples(torch.cat(rows), sets, note)


def _model_ends(run: Run, pair: tuple[str, str], n: int) -> list[Conditions]:
    """Both ends of an interpolation with the unnamed attributes left to the model, each stating what the other does."""
    names, groups = run.attribute_names, run.exclusive_groups
    requests = [stated(parse_attrs(spec, names, groups), names, groups) for spec in pair]
    ends = []
    for mine, other in zip(requests, requests[::-1]):
        extra = tuple(name for name in (*other.on, *other.off) if name not in mine.mentioned)
        both = AttributeRequest(mine.on, (*mine.off, *extra))
        condition = partial_condition(run.conditioner, both, names, groups).reshape(1, -1).expand(n, -1)
        ends.append(Conditions(condition, [list(mine.on)] * n, "model"))
    return ends
