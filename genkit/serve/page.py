"""The sampler page's logic, one :class:`RunPage` per run, testable without a browser or Gradio.

The controls become an ``--attrs`` spec (:meth:`RunPage.spec`), the spec becomes images through
``Run.draw`` and :mod:`genkit.sampling.compare` (the same code as ``Run.sample`` and ``genkit sample``), and every view
shows the ``genkit sample`` command line that draws the same grid. Values arrive as a browser sent
them and are checked here (:func:`check_request`), whatever the page's controls allowed.

Which ``group::value`` families hold one value per image is the dataset's declaration
(``config.data.exclusive_groups``); the page never guesses it from the names.
"""

from __future__ import annotations

import base64
import html
import io
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from genkit.errors import UsageError, shown
from genkit.sampling import attributes, compare
from genkit.sampling.draw import Samples
from genkit.sampling.run import Run

MAX_N = 64
ANY = "any"
FLAG_CHOICES = ["any", "on", "off"]


# --- controls -> spec -----------------------------------------------------------------------

@dataclass
class Controls:
    """The page's attribute controls for one run, in the order the page lays them out."""

    exclusive: dict[str, list[str]] = field(default_factory=dict)  # group -> its names: one choice or "any"
    families: dict[str, list[str]] = field(default_factory=dict)   # group -> its names: a multi-select
    flags: list[str] = field(default_factory=list)                 # independent names: on / off / any

    def count(self) -> int:
        return len(self.exclusive) + len(self.families) + len(self.flags)


def attribute_controls(names: Sequence[str], exclusive_groups: Sequence[str]) -> Controls:
    """Exclusive groups as one choice each, other ``group::value`` families as multi-selects, the rest flags."""
    controls = Controls()
    declared = set(exclusive_groups)
    for name in names:
        group = name.split("::", 1)[0] if "::" in name else None
        if group is None:
            controls.flags.append(name)
        elif group in declared:
            controls.exclusive.setdefault(group, []).append(name)
        else:
            controls.families.setdefault(group, []).append(name)
    return controls


def spec_from_values(controls: Controls, values: Sequence[Any]) -> str:
    """The ``--attrs`` spec of the controls' values (in :class:`Controls` order): "any" names nothing."""
    values = list(values)
    if len(values) != controls.count():
        raise UsageError(f"the page sent {len(values)} attribute values for {controls.count()} controls; reload it")
    items: list[str] = []
    position = 0
    for group, names in controls.exclusive.items():
        value = values[position]
        position += 1
        if value in (None, "", ANY):
            continue
        if value not in names:
            raise UsageError(f"{shown(value)} is not a value of {group!r}; choose one of the list or any")
        items.append(value)
    for group, names in controls.families.items():
        chosen = values[position] or []
        position += 1
        if not isinstance(chosen, list):
            raise UsageError(f"{group!r} takes a list of values, not {shown(chosen)}; choose from the list")
        for value in chosen:
            if value not in names:
                raise UsageError(f"{shown(value)} is not a value of {group!r}; choose from the list")
            items.append(value)
    for name in controls.flags:
        value = values[position] or ANY
        position += 1
        if value == "on":
            items.append(name)
        elif value == "off":
            items.append(f"-{name}")
        elif value != ANY:
            raise UsageError(f"{name}: {shown(value)} is not on, off or any")
    return ",".join(items)


def matches(query: str, group: str, names: Sequence[str]) -> bool:
    """Whether a control is shown for the search text: the group's or one of its values' names contains it."""
    query = query.strip().lower()
    return not query or query in group.lower() or any(query in n.lower() for n in names)


# --- requests -------------------------------------------------------------------------------

def check_request(n: Any, seed: Any, rest: Any) -> tuple[int, int, str]:
    """The page's own bounds: n a whole number in 1-64, a seed in 0 ... 2**63 - 1, rest a known mode (the
    run checks that it can take it, the model its own sampling options). Values come from the network as
    they are: any JSON."""
    from genkit.components.limits import check_seed

    if not _whole(n):
        raise UsageError(f"number of samples {shown(n)} must be a whole number from 1 to {MAX_N}")
    if not 1 <= n <= MAX_N:
        raise UsageError(f"number of samples {shown(n)} is outside 1-{MAX_N}; choose 1 to {MAX_N}")
    if not _whole(seed):
        raise UsageError(f"seed {shown(seed)} must be a whole number from 0 to 2**63 - 1")
    seed_value = check_seed(int(seed), "seed")
    return int(n), seed_value, attributes.check_rest(rest)


def _whole(value: Any) -> bool:
    """A whole number, as JSON sends it (5 or 5.0), and not true/false."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and value == value and abs(value) != float("inf") and value == int(value)


def command_line(run_dir: str | Path, attrs: str, n: int, seed: int, rest: str, flags: Sequence[str] = (),
                 vary: str | None = None, interpolate: tuple[str, str] | None = None, steps: int = 8) -> str:
    """The ``genkit sample`` invocation that draws the same grid; ``flags`` set the model's sampling options."""
    parts = ["genkit", "sample", "--run", str(run_dir)]
    if interpolate is None:
        parts += ["--attrs", attrs] if attrs else []
    if vary is not None:
        parts += ["--vary", vary]
    if interpolate is not None:
        parts += ["--interpolate", interpolate[0], interpolate[1], "--steps", str(steps)]
    parts += ["--n", str(n), "--seed", str(seed), *flags, "--rest", rest]
    return " ".join(shlex.quote(p) for p in parts)


def grid_png(images, nrow: int) -> bytes:
    """A batch of images in [0, 1] as one PNG grid, pixel for pixel what ``genkit sample`` writes.

    The layout and rounding are torchvision's ``make_grid`` + ``save_image`` (2-pixel white
    padding; a single image unpadded), done in numpy on one thread: torch's parallel kernels
    stall for tens of milliseconds on small tensors when other processes hold the cores.
    """
    import numpy as np
    from PIL import Image

    array = images.detach().float().cpu().numpy()
    count, channels, height, width = array.shape
    if count == 1:
        grid = array[0]
    else:
        pad = 2
        columns = min(nrow, count)
        rows = -(-count // columns)
        grid = np.ones((channels, rows * (height + pad) + pad, columns * (width + pad) + pad), dtype=np.float32)
        for i in range(count):
            y, x = divmod(i, columns)
            top, left = y * (height + pad) + pad, x * (width + pad) + pad
            grid[:, top:top + height, left:left + width] = array[i]
    pixels = np.clip(np.clip(grid, 0, 1) * np.float32(255) + np.float32(0.5), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0))).save(buffer, format="PNG")
    return buffer.getvalue()


def image_html(png: bytes, filename: str, alt: str) -> str:
    """The grid inside the page as a data URL, with a link that downloads it as a PNG."""
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    # the link takes the image's own URL when clicked, so the page carries the PNG once
    return (f'<div class="genkit-grid"><img src="{url}" alt="{html.escape(alt)}" '
            'style="width:100%;max-width:720px;image-rendering:pixelated"/>'
            f'<p><a href="#" download="{html.escape(filename)}" '
            """onclick="this.href = this.closest('.genkit-grid').querySelector('img').src">Download PNG</a></p></div>""")


def sets_html(attribute_sets: Sequence[Sequence[str]], columns: int) -> str:
    """Which attribute set each sample was drawn with, numbered in grid order (row by row)."""
    lines = []
    for i, names in enumerate(attribute_sets):
        row, col = divmod(i, columns)
        lines.append(f"<li>row {row + 1}, col {col + 1}: {html.escape(', '.join(names) or '(none on)')}</li>")
    return ('<details class="genkit-sets"><summary>attribute set of each sample</summary><ol>'
            + "".join(lines) + "</ol></details>")


@dataclass
class View:
    """What a view hands back to the page: the image HTML, the sets, a note and the command line."""

    html: str
    sets: str
    note: str
    command: str


class RunPage:
    """One run's controls and views.

    ``defaults`` override the model's own sampling defaults on the page (``genkit serve --guidance 3``).
    ``run_path`` is what the page shows as the run's folder (in the ``genkit sample --run ...``
    line and in notes): the folder as given by default, its label when the page is served beyond
    this machine, where the server's paths are of no use to a visitor.
    """

    def __init__(self, run: Run, label: str, defaults: dict[str, Any] | None = None, run_path: str | Path | None = None):
        self.run = run
        self.label = label
        self.run_path = str(run_path) if run_path is not None else str(run.directory)
        self.controls = attribute_controls(run.attribute_names, run.exclusive_groups)
        self.options = run.sampling_options
        self.defaults = run.resolve_options(defaults)

    def public(self, text: str) -> str:
        """``text`` with the run's folder written as :attr:`run_path`."""
        own = str(self.run.directory)
        return text.replace(own, self.run_path) if own != self.run_path else text

    def spec(self, values: Sequence[Any]) -> str:
        return spec_from_values(self.controls, values)

    def request(self, n: Any, seed: Any, rest: Any) -> tuple[int, int, str]:
        """:func:`check_request`, and a rest mode this run can take: the page offers only those
        (:attr:`genkit.Run.rest_modes`), but a request may still name another."""
        n, seed, rest = check_request(n, seed, rest)
        return n, seed, self.run.check_rest(rest)

    def sampling(self, options: dict[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
        """The model's options for a request (the page's defaults for those not sent), checked, and the flags
        that give them on the command line."""
        from genkit.sampling.capabilities import command_flags

        resolved = self.run.resolve_options({**self.defaults, **{k: v for k, v in (options or {}).items()
                                                                 if v is not None}})
        return resolved, command_flags(resolved, self.options)

    def drawn(self, draw: Callable[[Run], Samples]) -> Samples:
        """``draw(run)`` within what one view may cost the server (:mod:`genkit.serve.guard`): for a model that
        declares its sampling cost, counted first without drawing and refused in one line above
        ``MAX_PASSES`` (or when one sample alone needs more than ``MAX_ROWS`` rows in a call), then drawn in
        network calls of at most ``MAX_ROWS`` rows."""
        from genkit.serve.guard import MAX_PASSES, MAX_ROWS

        cost = self.run.cost(draw)
        if cost is not None and cost.passes > MAX_PASSES:
            raise UsageError(f"this view would take {cost.passes:,} network passes ({cost.samples} samples), more "
                             f"than the {MAX_PASSES:,} one view may take on this server; ask for fewer samples or "
                             "sampling options that cost less, or draw it with the genkit sample command on your "
                             "own machine")
        if cost is not None and cost.width > MAX_ROWS:
            raise UsageError(f"one sample of this view would put {cost.width:,} rows through the network at once, "
                             f"more than the {MAX_ROWS:,} one call may take on this server; name fewer attributes "
                             "or use sampling options that cost less (such as joint guidance), or draw it with "
                             "the genkit sample command on your own machine")
        return draw(self.run.bounded(MAX_ROWS))

    def describe(self) -> str:
        config = self.run.config

        def options(spec) -> str:
            shown = ", ".join(f"{k}={v}" for k, v in spec.options.items())
            return f" ({shown})" if shown else ""

        data = config.data
        return (f"**{html.escape(self.label)}** — dataset `{data.name}` ({len(data.attribute_names)} attributes, "
                f"{data.image_size[0]}×{data.image_size[1]}), model `{config.model.name}`{options(config.model)}, "
                f"loss `{config.loss.name}`{options(config.loss)}")

    def grid(self, attrs: str, n: Any, seed: Any, rest: str, options: dict[str, Any] | None = None) -> View:
        n, seed, rest = self.request(n, seed, rest)
        options, flags = self.sampling(options)
        self.run.condition(attrs)
        result = self.drawn(lambda run: run.draw(attrs, n=n, seed=seed, rest=rest, options=options))
        nrow = min(8, n)
        return View(image_html(grid_png(result.images, nrow), "genkit-grid.png", f"{n} samples of [{attrs}]"),
                    sets_html(result.attribute_sets, nrow), self.public(result.note or ""),
                    command_line(self.run_path, attrs, n, seed, rest, flags))

    def vary(self, attrs: str, name: str, n: Any, seed: Any, rest: str, options: dict[str, Any] | None = None) -> View:
        n, seed, rest = self.request(n, seed, rest)
        options, flags = self.sampling(options)
        if name not in self.run.attribute_names:
            raise UsageError(f"attribute {shown(name)} is not in this run; choose one from the list")
        self.run.condition(attrs)
        result = self.drawn(lambda run: compare.vary(run, attrs, [name], n, seed, rest, options))
        return View(image_html(grid_png(result.images, n), "genkit-vary.png", f"{name} off and on over [{attrs}]"),
                    sets_html(result.attribute_sets, n), self.public(result.note or ""),
                    command_line(self.run_path, attrs, n, seed, rest, flags, vary=name))

    def interpolate(self, start: str, end: str, n: Any, steps: Any, seed: Any, rest: str,
                    options: dict[str, Any] | None = None) -> View:
        n, seed, rest = self.request(n, seed, rest)
        options, flags = self.sampling(options)
        if not (_whole(steps) and 2 <= steps <= 16):
            raise UsageError("steps must be a whole number from 2 to 16")
        steps = int(steps)
        n = min(n, 16)
        for spec in (start, end):
            if not isinstance(spec, str):
                raise UsageError(f"an interpolation end is {shown(spec)}; type attributes as A,B,-C")
            self.run.condition(spec)
        result = self.drawn(lambda run: compare.interpolate(run, (start, end), n, steps, seed, rest, options))
        return View(image_html(grid_png(result.images, steps), "genkit-interpolate.png", f"[{start}] to [{end}]"),
                    sets_html(result.attribute_sets, steps), self.public(result.note or ""),
                    command_line(self.run_path, "", n, seed, rest, flags, interpolate=(start, end),
                                 steps=steps))


def page_labels(directories: Sequence[Path]) -> list[str]:
    """Each run's folder name; where two names collide, as many of the last parts of their paths as
    tell them apart (``a/shapes``, ``b/shapes``), never more of the server's paths than that."""
    parts = [Path(d).resolve().parts for d in directories]
    labels = []
    for mine in parts:
        depth = 1
        while depth < len(mine) and sum(other[-depth:] == mine[-depth:] for other in parts) > 1:
            depth += 1
        labels.append(str(Path(*mine[-depth:])))
    return labels
