"""The sampler page laid out with Gradio (the optional extra ``serve``): a run picker, and per run
its attribute controls, the model's sampling options (one control each) and the views.

Everything a control sends goes to :class:`genkit.serve.page.RunPage`, which checks it; nothing
here fetches from a CDN (system fonts) or reports analytics.
"""

from __future__ import annotations

import html
import os
import random
from pathlib import Path
from typing import Any, Sequence

from genkit.errors import GenkitError, UsageError, shown
from genkit.serve.page import ANY, FLAG_CHOICES, MAX_N, RunPage, matches, page_labels

INSTALL_HINT = 'genkit serve needs Gradio: pip install "genkit-cvae[serve]"'


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
            search, inputs, keys = _attribute_column(gr, controls, index)
        with gr.Column(scale=2):
            with gr.Row():
                seed = gr.Number(0, label="seed", precision=0, elem_id=f"seed-{index}")
                randomize = gr.Button("randomize", elem_id=f"randomize-{index}")
                n = gr.Slider(1, MAX_N, value=16, step=1, label="samples", elem_id=f"n-{index}")
                rest = gr.Radio(list(page.run.rest_modes), value="data", label="unlisted attributes",
                                elem_id=f"rest-{index}")
            with gr.Row():
                option_controls = [_option_control(gr, option, page.defaults[name], index)
                                   for name, option in page.options.items()]
            status = gr.Markdown("", elem_id=f"status-{index}")
            note = gr.Markdown("", elem_id=f"note-{index}")
            grid_image, grid_sets, grid_command = _image_tab(gr, "grid", index)
            with gr.Tab("vary one attribute"):
                vary_name = gr.Dropdown(page.run.attribute_names, value=page.run.attribute_names[0],
                                        label="attribute (off above, on below, same noise)",
                                        elem_id=f"vary-name-{index}")
                vary_button = gr.Button("vary", elem_id=f"vary-{index}")
                vary_image, vary_sets, vary_command = _image_outputs(gr, f"vary-image-{index}", f"vary-command-{index}")
            with gr.Tab("interpolate"):
                with gr.Row():
                    start = gr.Textbox(label="from (A,B,-C)", elem_id=f"from-{index}")
                    end = gr.Textbox(label="to (A,B,-C)", elem_id=f"to-{index}")
                    steps = gr.Slider(2, 16, value=8, step=1, label="steps")
                lerp_button = gr.Button("interpolate", elem_id=f"interpolate-{index}")
                lerp_image, lerp_sets, lerp_command = _image_outputs(gr, f"interpolate-image-{index}", None)
            from genkit.serve.edit_tab import build_edit_tab  # the edit tab: its own module

            build_edit_tab(gr, page, index)

    settings = [n, seed, rest, *option_controls]
    option_names = list(page.options)

    def split_settings(values) -> tuple[Any, Any, Any, dict[str, Any]]:
        n_value, seed_value, rest_value, *option_values = values
        return n_value, seed_value, rest_value, dict(zip(option_names, option_values))

    def guarded(view_fn, outputs_count: int):
        return _guarded(gr, page, view_fn, outputs_count)

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


def _guarded(gr, page: RunPage, view_fn, outputs_count: int):
    """``view_fn`` as a Gradio handler: its view shown, a usage error as one status line, a bug as
    an internal error (it must not take the server down)."""
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


def _attribute_column(gr, controls, index: int) -> tuple[Any, list, list]:
    """The filter box and one control per exclusive family, free family and flag, with the names each sets."""
    search = gr.Textbox(label="filter attributes", placeholder="type part of a name", elem_id=f"search-{index}")
    inputs, keys = [], []
    for group, names in controls.exclusive.items():
        inputs.append(gr.Dropdown([(ANY, ANY), *_short_choices(names)], value=ANY, label=f"{group} (one)",
                                  elem_id=f"x-{index}-{group}"))
        keys.append((group, names))
    for group, names in controls.families.items():
        inputs.append(gr.Dropdown(_short_choices(names), value=[], multiselect=True, label=f"{group} (any number)",
                                  elem_id=f"f-{index}-{group}"))
        keys.append((group, names))
    for name in controls.flags:
        inputs.append(gr.Radio(FLAG_CHOICES, value=ANY, label=name, elem_id=f"a-{index}-{name}"))
        keys.append((name, [name]))
    return search, inputs, keys


def _image_tab(gr, name: str, index: int) -> tuple[Any, Any, Any]:
    with gr.Tab(name):
        return _image_outputs(gr, f"{name}-{index}", f"command-{index}")


def _image_outputs(gr, image_id: str, command_id: str | None) -> tuple[Any, Any, Any]:
    """A view's image, the attribute sets it drew, and the same view as a command line."""
    image = gr.HTML("", elem_id=image_id)
    sets = gr.HTML("")
    command = gr.Textbox(label="the same grid from the command line", interactive=False,
                         **({"elem_id": command_id} if command_id else {}))
    return image, sets, command


def _option_control(gr, option, value: Any, index: int):
    """One control for a model's sampling option: a choice, a checkbox, a number or a text box."""
    common = {"label": option.name.replace("_", " "), "info": option.help, "elem_id": f"{option.name}-{index}"}
    if option.choices:
        return gr.Dropdown(list(option.choices), value=value, **common)
    if option.type is bool:
        return gr.Checkbox(value=value, **common)
    if option.type in (int, float):  # a declared range stops the control at its ends; the server checks again
        bounds = option.bounds
        return gr.Number(value, precision=0 if option.type is int else None, **common,
                         minimum=bounds.low if bounds else None, maximum=bounds.high if bounds else None)
    return gr.Textbox(value, **common)


def demo_for(directories: Sequence[str | Path], device: str = "auto"):
    """The page for these run folders as a Gradio Blocks, e.g. for a Hugging Face Space's ``app.py``.

    Launch it with ``demo.launch(**LAUNCH_OPTIONS)`` (system fonts, no footer links, no SSR).
    """
    from genkit.sampling.run import load_run

    directories = [Path(d) for d in directories]
    runs = [load_run(d, device=device) for d in directories]
    return build_page([RunPage(r, label) for r, label in zip(runs, page_labels(directories))])
