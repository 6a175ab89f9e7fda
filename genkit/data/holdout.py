"""Held-out attribute combinations: training never sees an image that carries all of a combination's attributes.

``genkit train --hold-out "shape::circle+color::red"`` (repeatable; ``plan_run(hold_out=[...])``)
leaves out of training every training image that has *every* attribute of one of the
combinations (``+`` joins attributes that are on). The validation and test splits keep them, so
``genkit evaluate`` can measure how the model draws attribute sets it never saw
(``heldout_conformity``, :mod:`genkit.evaluation.conformity`).

The combinations are checked at planning, against the dataset's own labels, before anything is
written: each name must be an attribute, a combination may not hold two values of an exclusive
family (no image has both: nothing would be left out), and the training images that remain must
still show every attribute that the training split shows at all (holding out ``color::red``
alone would leave the model no red to learn) and may not be none. They are stored in
``config.json`` (``data.hold_out``) and applied wherever genkit reads training images for the
model: the trainer's training split and the run's ``train_attributes.safetensors`` (so
``--rest data`` never fills attributes in to a held-out combination). The attribute classifier,
which judges, is trained on the whole training split: it is the dataset's, not the run's.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from genkit.errors import UsageError, shown

#: what joins the attributes of one combination
JOIN = "+"
EXAMPLE = "shape::circle+color::red"


def parse_hold_out(items: Sequence[str] | None, names: Sequence[str], exclusive_groups: Sequence[str] = ()
                   ) -> list[str]:
    """``["a+b", ...]`` checked against the attribute ``names``; returned normalised (``"a+b"``, spaces removed).

    A one-line :class:`UsageError` for an empty item, an unknown or negated name, a name listed
    twice, two values of an exclusive family, or a combination given twice.
    """
    if isinstance(items, str):
        items = [items]
    known = set(names)
    combinations: list[str] = []
    for raw in items or ():
        text = str(raw)
        parts = [p.strip() for p in text.split(JOIN)]
        if not text.strip() or any(not p for p in parts):
            raise UsageError(f"--hold-out {shown(text)} names no attribute between '{JOIN}' signs; join attribute "
                             f"names with '{JOIN}', for example --hold-out {EXAMPLE}")
        for part in parts:
            if part.startswith("-"):
                raise UsageError(f"--hold-out {shown(text)}: {shown(part)} is negated; a combination lists attributes "
                                 f"that are on, for example --hold-out {EXAMPLE}")
            if part not in known:
                listing = ", ".join(names) if len(names) <= 40 else "list them with `genkit data info`"
                raise UsageError(f"--hold-out {shown(text)}: unknown attribute {shown(part)}; valid attributes: "
                                 f"{listing}")
            if parts.count(part) > 1:
                raise UsageError(f"--hold-out {shown(text)} lists {part!r} twice; list each attribute once")
        for group in exclusive_groups:
            values = [p for p in parts if p.startswith(f"{group}::")]
            if len(values) > 1:
                raise UsageError(f"--hold-out {shown(text)}: {values[0]!r} and {values[1]!r} are both values of "
                                 f"{group!r}, which holds one value per image, so no image has both and nothing "
                                 "would be held out; keep one of them")
        combination = JOIN.join(parts)
        if combination in combinations:
            raise UsageError(f"--hold-out {shown(combination)} is given twice; give each combination once")
        combinations.append(combination)
    return combinations


def held_out_rows(attributes: Any, names: Sequence[str], hold_out: Sequence[str]) -> np.ndarray:
    """A boolean mask over the rows of ``attributes`` (N, A): true where a row has every attribute of a combination."""
    rows = np.asarray(attributes) > 0.5
    rows = rows.reshape(-1, len(names))
    mask = np.zeros(len(rows), dtype=bool)
    position = {name: i for i, name in enumerate(names)}
    for combination in hold_out:
        columns = [position[name] for name in combination.split(JOIN)]
        mask |= rows[:, columns].all(axis=1)
    return mask


def combination_of(vector: Any, names: Sequence[str], hold_out: Sequence[str]) -> str | None:
    """The first held-out combination whose attributes are all on in ``vector``, or None."""
    on = {name for name, value in zip(names, np.asarray(vector).reshape(-1).tolist()) if value > 0.5}
    return next((c for c in hold_out if set(c.split(JOIN)) <= on), None)


def check_training_left(hold_out: Sequence[str], names: Sequence[str], train_attributes: Any) -> int:
    """The number of training images ``hold_out`` leaves out; a :class:`UsageError` when it leaves none to
    train on, or leaves an attribute that training images show with no training image at all."""
    if not hold_out:
        return 0
    rows = np.asarray(train_attributes).reshape(-1, len(names)) > 0.5
    mask = held_out_rows(rows, names, hold_out)
    given = " ".join(f"--hold-out {c}" for c in hold_out)
    if len(rows) and mask.all():
        raise UsageError(f"{given} leaves out every one of the {len(rows)} training images; hold out a narrower "
                         f"combination (more attributes joined with '{JOIN}')")
    lost = rows.any(axis=0) & ~rows[~mask].any(axis=0)
    if lost.any():
        name = names[int(np.flatnonzero(lost)[0])]
        family = f" (a value of {name.split('::', 1)[0]!r})" if "::" in name else ""
        raise UsageError(f"{given} leaves no training image with {name!r}{family}: every one that has it is held "
                         f"out, so the model could not learn it; hold out a combination of it with another "
                         f"attribute, for example --hold-out {EXAMPLE}")
    return int(mask.sum())


def without_held_out(dataset, data_spec):
    """``dataset`` (a training split) without the images the run's ``data.hold_out`` leaves out."""
    hold_out = list(getattr(data_spec, "hold_out", None) or [])
    if not hold_out:
        return dataset
    names = list(data_spec.attribute_names)
    parse_hold_out(hold_out, names, data_spec.exclusive_groups)  # a config edited by hand: one line, not a KeyError
    mask = held_out_rows(dataset.attributes.numpy(), names, hold_out)
    if mask.all():
        raise UsageError(f"the run's data.hold_out {hold_out} leaves out every training image; plan the run again "
                         "with a narrower --hold-out")
    return dataset.subset(~mask)


# --- sweeps: ``genkit sweep --vary data.hold_out=none,A+B,C+D;E+F`` --------------------------------

#: the ``--vary`` key that sweeps the held-out combinations (one run per value)
HOLD_OUT_KEY = "data.hold_out"
#: a value holding out nothing
NOTHING = "none"
#: joins several combinations held out in one run of a sweep
SEVERAL = ";"


def hold_out_values(text: str, given_as: str) -> tuple[str, ...]:
    """``"none,a+b,c+d;e+f"`` to one value per run (names are checked when each run is planned)."""
    items = [t.strip() for t in (text or "").split(",") if t.strip()]
    if not items:
        raise UsageError(f"{given_as} is empty; give one or more values separated by commas: {NOTHING} (nothing held "
                         f"out) or combinations such as {EXAMPLE} (several in one run joined by '{SEVERAL}')")
    values: list[str] = []
    for item in items:
        value = NOTHING if item == NOTHING else SEVERAL.join(p.strip() for p in item.split(SEVERAL) if p.strip())
        if not value:
            raise UsageError(f"{given_as} value {shown(item)} names no combination; write {NOTHING} or a "
                             f"combination such as {EXAMPLE}")
        if value in values:
            raise UsageError(f"{given_as} value {item} is listed twice; give each value once")
        values.append(value)
    return tuple(values)


def hold_out_argument(value: str) -> list[str]:
    """One sweep value as :func:`genkit.plan_run`'s ``hold_out``."""
    return [] if value == NOTHING else [p for p in value.split(SEVERAL) if p]
