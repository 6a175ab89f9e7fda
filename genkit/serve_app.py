"""The sampler page of ``genkit serve``: tick attributes, move the seed, see the images change.

The page's logic lives in plain functions and one :class:`RunPage` per run, testable without a
browser: the controls become an ``--attrs`` spec (:meth:`RunPage.spec`), the spec becomes images
through :mod:`genkit.sampling` (the same code as ``Run.sample`` and ``genkit sample``), and every
view shows the ``genkit sample`` command line that draws the same grid. :func:`build_page` lays
it out with Gradio (the optional extra ``serve``) and :func:`serve` runs it offline: no analytics,
no fonts or scripts from a CDN, no share tunnel; images travel inside the page as data URLs, and
Gradio's file, upload and proxy routes are closed, so no request reads or writes a file.

Which ``group::value`` families hold one value per image is the dataset's declaration
(``config.data.exclusive_groups``); the page never guesses it from the names.
"""

from __future__ import annotations

import base64
import errno
import html
import io
import os
import random
import shlex
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from genkit import sampling
from genkit.errors import GenkitError, UsageError, shown

MAX_N = 64
ANY = "any"
FLAG_CHOICES = ["any", "on", "off"]
#: Gradio routes that read, write or fetch files or expose developer tools; the page needs none of them.
CLOSED_ROUTES = ("/file=", "/file/", "/upload", "/proxy=", "/stream/", "/run-history", "/vibe", "/dev/",
                 "/monitoring", "/process_recording", "/profiling", "/custom_component", "/login", "/logout",
                 "/deep_link")
INSTALL_HINT = 'genkit serve needs Gradio: pip install "genkit-cvae[serve]"'


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
    """The page's own bounds: n a whole number in 1-64, a seed in 0 ... 2**63 - 1, rest data or off (the
    model checks its own sampling options). Values come from the network as they are: any JSON."""
    from genkit.limits import check_seed

    if not _whole(n):
        raise UsageError(f"number of samples {shown(n)} must be a whole number from 1 to {MAX_N}")
    if not 1 <= n <= MAX_N:
        raise UsageError(f"number of samples {shown(n)} is outside 1-{MAX_N}; choose 1 to {MAX_N}")
    if not _whole(seed):
        raise UsageError(f"seed {shown(seed)} must be a whole number from 0 to 2**63 - 1")
    seed_value = check_seed(int(seed), "seed")
    return int(n), seed_value, sampling.check_rest(rest)


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
    from PIL import Image

    import numpy as np

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

    def __init__(self, run, label: str, defaults: dict[str, Any] | None = None, run_path: str | Path | None = None):
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

    def sampling(self, options: dict[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
        """The model's options for a request (the page's defaults for those not sent), checked, and the flags
        that give them on the command line."""
        from genkit.cli.sampling_flags import command_flags

        resolved = self.run.resolve_options({**self.defaults, **{k: v for k, v in (options or {}).items()
                                                                 if v is not None}})
        return resolved, command_flags(resolved, self.options)

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
        n, seed, rest = check_request(n, seed, rest)
        options, flags = self.sampling(options)
        self.run.condition(attrs)
        result = sampling.generate(self.run, attrs, n=n, seed=seed, rest=rest, options=options)
        nrow = min(8, n)
        return View(image_html(grid_png(result.images, nrow), "genkit-grid.png", f"{n} samples of [{attrs}]"),
                    sets_html(result.attribute_sets, nrow), self.public(result.note or ""),
                    command_line(self.run_path, attrs, n, seed, rest, flags))

    def vary(self, attrs: str, name: str, n: Any, seed: Any, rest: str, options: dict[str, Any] | None = None) -> View:
        n, seed, rest = check_request(n, seed, rest)
        options, flags = self.sampling(options)
        if name not in self.run.attribute_names:
            raise UsageError(f"attribute {shown(name)} is not in this run; choose one from the list")
        self.run.condition(attrs)
        result = sampling.vary(self.run, attrs, [name], n, seed, rest, options)
        return View(image_html(grid_png(result.images, n), "genkit-vary.png", f"{name} off and on over [{attrs}]"),
                    sets_html(result.attribute_sets, n), self.public(result.note or ""),
                    command_line(self.run_path, attrs, n, seed, rest, flags, vary=name))

    def interpolate(self, start: str, end: str, n: Any, steps: Any, seed: Any, rest: str,
                    options: dict[str, Any] | None = None) -> View:
        n, seed, rest = check_request(n, seed, rest)
        options, flags = self.sampling(options)
        if not (_whole(steps) and 2 <= steps <= 16):
            raise UsageError("steps must be a whole number from 2 to 16")
        steps = int(steps)
        n = min(n, 16)
        for spec in (start, end):
            if not isinstance(spec, str):
                raise UsageError(f"an interpolation end is {shown(spec)}; type attributes as A,B,-C")
            self.run.condition(spec)
        result = sampling.interpolate(self.run, (start, end), n, steps, seed, rest, options)
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


# --- the Gradio page ------------------------------------------------------------------------

def _offline_environment() -> None:
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("GRADIO_SERVER_NAME", "127.0.0.1")
    os.environ["HF_HUB_OFFLINE"] = "1"


def import_gradio():
    """Gradio, with analytics off; a one-line install hint when the extra is missing."""
    _offline_environment()
    try:
        import gradio
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    return gradio


def offline_theme(gr):
    """Gradio's default look with the system fonts instead of Google's (nothing fetched from a CDN)."""
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "Consolas", "monospace"])


def _status(message: str) -> str:
    return f"⚠️ {html.escape(message)}" if message else ""


def build_page(pages: Sequence[RunPage]):
    """The Gradio Blocks: a run picker, and per run its controls and three views."""
    gr = import_gradio()
    with gr.Blocks(title="genkit sampler", analytics_enabled=False) as demo:
        gr.Markdown("## genkit sampler")
        picker = gr.Dropdown([p.label for p in pages], value=pages[0].label, label="run",
                             visible=len(pages) > 1, elem_id="run-picker")
        panels = []
        for index, page in enumerate(pages):
            with gr.Column(visible=index == 0) as panel:
                _build_panel(gr, demo, page, index)
            panels.append(panel)
        if len(pages) > 1:
            picker.change(lambda label: [gr.update(visible=p.label == label) for p in pages], picker, panels,
                          preprocess=False)
    return demo


def _short_choices(names: Sequence[str]) -> list[tuple[str, str]]:
    """``("circle", "shape::circle")``: the value shown under its group's label, the full name sent."""
    return [(name.split("::", 1)[1], name) for name in names]


def _build_panel(gr, demo, page: RunPage, index: int) -> None:
    controls = page.controls
    gr.Markdown(page.describe(), elem_id=f"describe-{index}")
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            search = gr.Textbox(label="filter attributes", placeholder="type part of a name", elem_id=f"search-{index}")
            inputs, keys = [], []
            for group, names in controls.exclusive.items():
                inputs.append(gr.Dropdown([(ANY, ANY), *_short_choices(names)], value=ANY, label=f"{group} (one)", elem_id=f"x-{index}-{group}"))
                keys.append((group, names))
            for group, names in controls.families.items():
                inputs.append(gr.Dropdown(_short_choices(names), value=[], multiselect=True, label=f"{group} (any number)",
                                          elem_id=f"f-{index}-{group}"))
                keys.append((group, names))
            for name in controls.flags:
                inputs.append(gr.Radio(FLAG_CHOICES, value=ANY, label=name, elem_id=f"a-{index}-{name}"))
                keys.append((name, [name]))
        with gr.Column(scale=2):
            with gr.Row():
                seed = gr.Number(0, label="seed", precision=0, elem_id=f"seed-{index}")
                randomize = gr.Button("randomize", elem_id=f"randomize-{index}")
                n = gr.Slider(1, MAX_N, value=16, step=1, label="samples", elem_id=f"n-{index}")
                rest = gr.Radio(list(sampling.REST_MODES), value="data", label="unlisted attributes",
                                elem_id=f"rest-{index}")
            with gr.Row():
                option_controls = [_option_control(gr, option, page.defaults[name], index)
                                   for name, option in page.options.items()]
            status = gr.Markdown("", elem_id=f"status-{index}")
            note = gr.Markdown("", elem_id=f"note-{index}")
            with gr.Tab("grid"):
                grid_image = gr.HTML("", elem_id=f"grid-{index}")
                grid_sets = gr.HTML("")
                grid_command = gr.Textbox(label="the same grid from the command line", elem_id=f"command-{index}",
                                          interactive=False)
            with gr.Tab("vary one attribute"):
                vary_name = gr.Dropdown(page.run.attribute_names, value=page.run.attribute_names[0],
                                        label="attribute (off above, on below, same noise)",
                                        elem_id=f"vary-name-{index}")
                vary_button = gr.Button("vary", elem_id=f"vary-{index}")
                vary_image = gr.HTML("", elem_id=f"vary-image-{index}")
                vary_sets = gr.HTML("")
                vary_command = gr.Textbox(label="the same grid from the command line", interactive=False,
                                          elem_id=f"vary-command-{index}")
            with gr.Tab("interpolate"):
                with gr.Row():
                    start = gr.Textbox(label="from (A,B,-C)", elem_id=f"from-{index}")
                    end = gr.Textbox(label="to (A,B,-C)", elem_id=f"to-{index}")
                    steps = gr.Slider(2, 16, value=8, step=1, label="steps")
                lerp_button = gr.Button("interpolate", elem_id=f"interpolate-{index}")
                lerp_image = gr.HTML("", elem_id=f"interpolate-image-{index}")
                lerp_sets = gr.HTML("")
                lerp_command = gr.Textbox(label="the same grid from the command line", interactive=False)
            from genkit.serve_edit import build_edit_tab  # the edit tab: its own module

            build_edit_tab(gr, page, index)

    settings = [n, seed, rest, *option_controls]
    option_names = list(page.options)

    def split_settings(values) -> tuple[Any, Any, Any, dict[str, Any]]:
        n_value, seed_value, rest_value, *option_values = values
        return n_value, seed_value, rest_value, dict(zip(option_names, option_values))

    def guarded(view_fn, outputs_count: int):
        def run(*args):
            try:
                view = view_fn(*args)
            except GenkitError as exc:
                return [_status(page.public(str(exc))), gr.update()] + [gr.update()] * outputs_count
            except Exception as exc:  # a bug must not take the server down; show it and keep serving
                detail = page.public(shown(str(exc), quote=False))
                return [_status(f"internal error ({type(exc).__name__}: {detail})"), gr.update()] + \
                    [gr.update()] * outputs_count
            return ["", view.note and _status(view.note), view.html, view.sets, view.command]
        return run

    def grid_fn(*args):
        values = args[:len(inputs)]
        n_value, seed_value, rest_value, options = split_settings(args[len(inputs):])
        return page.grid(page.spec(values), n_value, seed_value, rest_value, options)

    def vary_fn(*args):
        values, name = args[:len(inputs)], args[len(inputs)]
        n_value, seed_value, rest_value, options = split_settings(args[len(inputs) + 1:])
        return page.vary(page.spec(values), name, n_value, seed_value, rest_value, options)

    def lerp_fn(a, b, steps_value, *rest_args):
        n_value, seed_value, rest_value, options = split_settings(rest_args)
        return page.interpolate(a, b, n_value, steps_value, seed_value, rest_value, options)

    # preprocess=False: the views get the values as sent and check them themselves (RunPage, check_request),
    # so a value no control could send is refused in one line, not echoed back whole by Gradio's checks
    grid_outputs = [status, note, grid_image, grid_sets, grid_command]
    gr.on([c.change for c in [*inputs, *settings]], guarded(grid_fn, 3), [*inputs, *settings], grid_outputs,
          trigger_mode="always_last", preprocess=False)
    demo.load(guarded(grid_fn, 3), [*inputs, *settings], grid_outputs, preprocess=False)
    vary_button.click(guarded(vary_fn, 3), [*inputs, vary_name, *settings],
                      [status, note, vary_image, vary_sets, vary_command], preprocess=False)
    lerp_button.click(guarded(lerp_fn, 3), [start, end, steps, *settings],
                      [status, note, lerp_image, lerp_sets, lerp_command], preprocess=False)
    randomize.click(lambda: random.randrange(2**31), None, seed)

    def filter_fn(query: Any):
        query = query if isinstance(query, str) else ""
        return [gr.update(visible=matches(query[:200], key, names)) for key, names in keys]

    search.change(filter_fn, search, inputs, preprocess=False)


def _option_control(gr, option, value: Any, index: int):
    """One control for a model's sampling option: a choice, a checkbox, a number or a text box."""
    common = {"label": option.name.replace("_", " "), "info": option.help, "elem_id": f"{option.name}-{index}"}
    if option.choices:
        return gr.Dropdown(list(option.choices), value=value, **common)
    if option.type is bool:
        return gr.Checkbox(value=value, **common)
    if option.type in (int, float):
        return gr.Number(value, precision=0 if option.type is int else None, **common)
    return gr.Textbox(value, **common)


def demo_for(directories: Sequence[str | Path], device: str = "auto"):
    """The page for these run folders as a Gradio Blocks, e.g. for a Hugging Face Space's ``app.py``.

    Launch it with ``demo.launch(**LAUNCH_OPTIONS)`` (system fonts, no footer links, no SSR).
    """
    from genkit.runs import load_run

    directories = [Path(d) for d in directories]
    runs = [load_run(d, device=device) for d in directories]
    return build_page([RunPage(r, label) for r, label in zip(runs, page_labels(directories))])


def launch_options() -> dict[str, Any]:
    """``Blocks.launch`` keywords for the offline look: system fonts, no footer links, no SSR, no share link,
    and Gradio's per-session state capped as under ``genkit serve``."""
    from genkit.serve_guard import SESSION_CAPACITY

    gr = import_gradio()
    return {"theme": offline_theme(gr), "footer_links": [], "ssr_mode": False, "share": False,
            "state_session_capacity": SESSION_CAPACITY}


def serve_folders(directories: Sequence[str | Path], device: str = "auto", host: str | None = None,
                  port: int | None = None) -> None:
    """Serve the page for these run folders as ``genkit serve`` does (its bounds and closed routes), until Ctrl-C.

    For a Hugging Face Space's ``app.py``: the host and port default to ``GRADIO_SERVER_NAME`` and
    ``GRADIO_SERVER_PORT`` (which Spaces set), else 127.0.0.1:7860. A bad folder or a taken port
    is one line on stderr and exit code 2, as on the command line.
    """
    import sys

    from genkit.runs import load_run

    host = host if host is not None else os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1")
    try:
        port = port if port is not None else int(os.environ.get("GRADIO_SERVER_PORT", "7860"))
        directories = [Path(d) for d in directories]
        runs = [load_run(d, device=device) for d in directories]
        check_port(host, port)
        import_gradio()
    except (GenkitError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code if isinstance(exc, GenkitError) else 2) from None
    pages = [RunPage(r, label) for r, label in zip(runs, page_labels(directories))]
    serve(pages, host=host, port=port,
          on_ready=lambda: print(f"serving {len(pages)} run(s) on {host}:{port} (Ctrl-C stops)", file=sys.stderr))


# --- the server -----------------------------------------------------------------------------

def check_port(host: str, port: int) -> None:
    """Refuse a port that is taken (or a host that cannot be bound) before anything starts."""
    if not 1 <= port <= 65535:
        raise UsageError(f"--port {port} is outside 1-65535")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UsageError(f"--host {host!r} cannot be resolved ({exc.strerror}); use 127.0.0.1 or an address "
                         "of this machine") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                raise UsageError(f"--host {host} is not an address of this machine; use 127.0.0.1 (this machine only), "
                                 "0.0.0.0 (every interface) or one of its own addresses") from None
            raise UsageError(f"port {port} on {host} is not free ({exc.strerror}); pass --port with a free port, "
                             "or stop the server using it") from None


def build_app(pages: Sequence[RunPage]):
    """The ASGI app: the Gradio page with its file, upload and proxy routes closed."""
    gr = import_gradio()
    import fastapi
    from fastapi.responses import PlainTextResponse

    from genkit.serve_guard import MAX_REQUEST_BYTES, SESSION_CAPACITY, BodyLimit

    app = fastapi.FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def close_file_routes(request, call_next):
        path = request.url.path
        if any(part in path for part in CLOSED_ROUTES):
            return PlainTextResponse("not served: the genkit sampler reads and writes no files", status_code=403)
        return await call_next(request)

    demo = build_page(pages)
    demo.state_session_capacity = SESSION_CAPACITY  # read when mounted: the sessions whose state Gradio keeps
    mounted = gr.mount_gradio_app(app, demo, path="", footer_links=[], allowed_paths=[], ssr_mode=False,
                                  show_error=False, max_file_size=1, pwa=False, mcp_server=False,
                                  theme=offline_theme(gr), enable_monitoring=False)
    limited = BodyLimit(mounted, MAX_REQUEST_BYTES)  # outermost: a large body is refused before anything reads it
    limited.blocks = demo  # the Gradio Blocks it serves (its per-session state, for tests)
    return limited


def serve(pages: Sequence[RunPage], host: str = "127.0.0.1", port: int = 7860, on_ready=None,
          threads: int = 1) -> None:
    """Serve the page until Ctrl-C (which returns normally).

    Each request runs with ``threads`` intra-op threads (default 1): a page's request is small
    (at most 64 images), Gradio runs concurrent requests in their own threads, and torch's
    multi-threaded kernels stall on small tensors when other processes hold the cores (a
    16-image 64x64 grid measured 46 ms on one thread against 266 ms on two on a loaded 2-core
    machine; see benchmarks/serve.py).
    """
    import tempfile

    import torch

    from genkit.serve_guard import MAX_CONNECTIONS, quiet_gradio_tracebacks

    torch.set_num_threads(threads)

    with tempfile.TemporaryDirectory(prefix="genkit-serve-") as scratch:
        os.environ["GRADIO_TEMP_DIR"] = scratch  # gradio's own scratch space, private and removed on exit
        app = build_app(pages)
        quiet_gradio_tracebacks()
        import uvicorn

        config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                limit_concurrency=MAX_CONNECTIONS)
        server = uvicorn.Server(config)
        if on_ready is not None:
            original = server.startup

            async def startup(*args, **kwargs):
                await original(*args, **kwargs)
                if server.started:
                    on_ready()
            server.startup = startup
        try:
            server.run()
        except KeyboardInterrupt:
            pass
