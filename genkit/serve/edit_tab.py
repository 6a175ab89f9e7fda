"""The edit tab of ``genkit serve``: pick a test image or upload one, toggle attributes, see
original | reconstruction | edit, the edit made in the mode a radio chooses (redraw or residual).

The logic lives in :class:`EditTab`, testable without a browser; :func:`build_edit_tab` lays it out with
Gradio inside the run's panel. Edits are ``genkit edit``'s, and every view shows the line that makes it.

Uploads never reach Gradio's upload or file routes (``serve_app`` closes them): the browser reads
the chosen file, refuses one over :data:`MAX_UPLOAD_BYTES` itself, and sends it as a data URL
inside an ordinary event. The server checks the size again, decodes it with Pillow only after its
header says it has at most :data:`MAX_UPLOAD_PIXELS` pixels (a bomb is refused unread), brings it to
the run's size, and keeps only that small image and its code in the session's state; nothing is written.
"""

from __future__ import annotations

import base64
import binascii
import html
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from genkit.errors import GenkitError, UsageError, shown
from genkit.sampling.editing import DEFAULT_EDIT_MODE, EDIT_MODES, check_edit_mode
from genkit.sampling.run import Run

#: the largest upload, in bytes of the file: with base64's third on top it stays below the request-body cap
#: that serve_app's middleware puts on every request (about 8 MiB)
MAX_UPLOAD_BYTES = 4 * 2**20
#: the most pixels an uploaded image may declare (a 4096x4096 image); bigger ones are refused before decoding
MAX_UPLOAD_PIXELS = 4096 * 4096
#: the longest data URL an upload event may carry: the base64 of MAX_UPLOAD_BYTES and a short header
MAX_DATA_URL_CHARS = 4 * -(-MAX_UPLOAD_BYTES // 3) + 128
THUMBNAILS_PER_PAGE = 24
#: how large the three images are drawn on the page, in CSS pixels
SHOWN_SIZE = 192


@dataclass
class Picked:
    """The session's image: uint8 (3, H, W) at the run's size, its attribute vector, its code, where it came from."""

    pixels: torch.Tensor
    vector: torch.Tensor
    code: torch.Tensor
    source: str
    #: how ``genkit edit`` names the image: ``--split test --index 17`` or ``--image YOUR_IMAGE``
    command_args: tuple[str, ...]


@dataclass
class EditView:
    """What a view hands back to the page: the three images, the attributes used, the command line."""

    html: str
    attributes: str
    command: str


class EditTab:
    """One run's edit tab: its test images (when the cache is here), uploads, and edits."""

    def __init__(self, run: Run, controls, split: str = "test", cache_dir: str | Path | None = None):
        """``controls``: the run's attribute controls, as the sampler lays them out
        (:func:`genkit.serve.page.attribute_controls`)."""
        self.run = run
        self.split = split
        self.cache_dir = cache_dir
        self.controls = controls
        self.unavailable: str | None = None
        self.dataset = None
        self.data_note = ""
        self._classifier = None
        try:  # one editor per mode: the code of an image is the same in both, only the edit differs
            self.editors = {mode: run.editor(edit_mode=mode) for mode in EDIT_MODES}
        except UsageError as exc:
            self.unavailable = str(exc)
            return
        self.dataset, self.data_note = _test_split(run, split, cache_dir)

    # -- images ------------------------------------------------------------------------------
    def pages(self) -> int:
        return 0 if self.dataset is None else -(-len(self.dataset) // THUMBNAILS_PER_PAGE)

    def thumbnails(self, page: Any) -> tuple[str, str, int]:
        """The HTML of one page of test images (each carries its row), the page's label, and the page shown."""
        if self.dataset is None:
            return f"<p>{html.escape(self.data_note)}</p>", "", 0
        page = min(max(_whole(page, "page"), 0), self.pages() - 1)
        first = page * THUMBNAILS_PER_PAGE
        rows = list(range(first, min(first + THUMBNAILS_PER_PAGE, len(self.dataset))))
        pixels, _ = self.dataset.read_uint8(rows)
        cells = "".join(
            f'<img class="genkit-thumb" data-row="{row}" title="{self.split} image {row}" alt="{self.split} image {row}" '
            f'src="{_data_url(image)}"/>' for row, image in zip(rows, pixels))
        label = f"{self.split} images {rows[0]}-{rows[-1]} of {len(self.dataset)} (page {page + 1}/{self.pages()})"
        return f'<div class="genkit-thumbs">{cells}</div>', label, page

    def pick(self, row: Any) -> Picked:
        """Test image ``row``, with its labels."""
        if self.dataset is None:
            raise UsageError(self.data_note)
        row = _whole(row, "image")
        if not 0 <= row < len(self.dataset):
            raise UsageError(f"{self.split} image {row} does not exist; choose 0-{len(self.dataset) - 1}")
        pixels, vectors = self.dataset.read_uint8([row])
        return self._picked(pixels[0], (vectors[0] > 0.5).float(), f"{self.split} image {row}",
                            ("--split", self.split, "--index", str(row)))

    def upload(self, name: Any, size: Any, data: Any) -> Picked:
        """An uploaded file (a ``data:`` URL the browser read), bounded, decoded by Pillow, read by the classifier."""
        from genkit.evaluation.classifier import run_classifier
        from genkit.sampling.edit_images import read_attributes, read_image

        label = f"uploaded file {shown(str(name or 'image'))}"
        declared = size if isinstance(size, int) and not isinstance(size, bool) else None
        if declared is not None and declared > MAX_UPLOAD_BYTES:
            raise UsageError(f"{label} is {_mib(declared)}; the page takes images up to {_mib(MAX_UPLOAD_BYTES)}, "
                             "so scale it down or use `genkit edit --image`")
        if not isinstance(data, str) or not data:
            raise UsageError(f"{label} came without its contents; choose the file again")
        if len(data) > MAX_DATA_URL_CHARS:
            raise UsageError(f"{label} is more than {_mib(MAX_UPLOAD_BYTES)}; the page takes images up to "
                             f"{_mib(MAX_UPLOAD_BYTES)}, so scale it down or use `genkit edit --image`")
        header, comma, body = data.partition(",")
        if not comma or not header.startswith("data:") or not header.endswith(";base64"):
            raise UsageError(f"{label} did not arrive as a data URL; reload the page and choose it again")
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise UsageError(f"{label} did not arrive intact (bad base64); choose it again") from None
        if len(raw) > MAX_UPLOAD_BYTES:
            raise UsageError(f"{label} is {_mib(len(raw))}; the page takes images up to {_mib(MAX_UPLOAD_BYTES)}")
        pixels = read_image(raw, tuple(self.run.config.data.image_size), what=label, max_pixels=MAX_UPLOAD_PIXELS)
        if self._classifier is None:
            self._classifier = run_classifier(self.run, cache_dir=self.cache_dir)
        vector = read_attributes(self._classifier, pixels[None], self.run.attribute_names,
                                 self.run.exclusive_groups)[0]
        return self._picked(pixels, vector, f"{label} (attributes as the classifier reads them)",
                            ("--image", "YOUR_IMAGE"))

    def _picked(self, pixels: torch.Tensor, vector: torch.Tensor, source: str, args: tuple[str, ...]) -> Picked:
        return Picked(pixels, vector, self.editors[DEFAULT_EDIT_MODE].encode(pixels[None], vector[None]), source, args)

    # -- attributes <-> controls -------------------------------------------------------------
    def values(self, vector: torch.Tensor) -> list[Any]:
        """The controls' values for an attribute vector: each exclusive family's value, each other family's
        values, then the flags that are on."""
        on = {name for name, v in zip(self.run.attribute_names, vector.tolist()) if v > 0.5}
        values: list[Any] = []
        for names in self.controls.exclusive.values():
            values.append(next((n for n in names if n in on), names[0]))
        for names in self.controls.families.values():
            values.append([n for n in names if n in on])
        values.append([n for n in self.controls.flags if n in on])
        return values

    def vector(self, values: Sequence[Any]) -> torch.Tensor:
        """The attribute vector the controls show; a :class:`UsageError` for a value no control offers."""
        values = list(values)
        expected = len(self.controls.exclusive) + len(self.controls.families) + 1
        if len(values) != expected:
            raise UsageError(f"the page sent {len(values)} attribute values for {expected} controls; reload it")
        on: set[str] = set()
        position = 0
        for group, names in self.controls.exclusive.items():
            if values[position] not in names:
                raise UsageError(f"{shown(str(values[position]))} is not a value of {group!r}; choose one of the list")
            on.add(values[position])
            position += 1
        for group, names in [*self.controls.families.items(), ("flags", self.controls.flags)]:
            chosen = values[position] or []
            position += 1
            if not isinstance(chosen, list) or any(v not in names for v in chosen):
                raise UsageError(f"the page sent values that {group!r} does not have; reload it")
            on.update(chosen)
        return torch.tensor([1.0 if name in on else 0.0 for name in self.run.attribute_names])

    # -- the edit ----------------------------------------------------------------------------
    def view(self, picked: Picked | None, values: Sequence[Any], mode: str = DEFAULT_EDIT_MODE) -> EditView:
        """original | reconstruction | edit of the picked image, the edit's attributes taken from the controls and
        made in ``mode`` (redraw or residual)."""
        if picked is None:
            raise UsageError("pick a test image or upload one first")
        editor = self.editors[check_edit_mode(mode, "edit mode")]
        target = self.vector(values)
        before = picked.vector[None]
        drawn = editor.draw(picked.code, before, before)
        reconstruction = drawn[0]
        edited = editor.decode(picked.code, before, target[None], picked.pixels[None], drawn)[0]
        change = change_spec(picked.vector, target, self.run.attribute_names, self.run.exclusive_groups)
        original = picked.pixels.float().div(255)
        figures = [(original, "original"), (reconstruction, "reconstruction"), (edited, f"edit: {change or 'nothing'}")]
        cells = "".join(
            f'<figure style="margin:0 8px 0 0"><img src="{_data_url(image)}" alt="{html.escape(caption)}" '
            f'style="width:{SHOWN_SIZE}px;height:auto;image-rendering:pixelated"/>'
            f'<figcaption style="font-size:0.85em">{html.escape(caption)}</figcaption></figure>'
            for image, caption in figures)
        names = [n for n, v in zip(self.run.attribute_names, picked.vector.tolist()) if v > 0.5]
        attributes = f"{picked.source}: {', '.join(names) or '(none on)'}"
        return EditView(f'<div class="genkit-edit" style="display:flex;flex-wrap:wrap">{cells}</div>',
                        html.escape(attributes), self.command(picked, change, mode))

    def command(self, picked: Picked, change: str, mode: str = DEFAULT_EDIT_MODE) -> str:
        """The ``genkit edit`` line that makes the same edit (an upload's attributes are read the same way there)."""
        if not change:
            unchanged = "the image itself" if mode == "residual" else "the reconstruction"
            return f"(change an attribute: the edit that changes nothing is {unchanged})"
        parts = ["genkit", "edit", "--run", str(self.run.directory), *picked.command_args, "--set", change]
        if mode != DEFAULT_EDIT_MODE:
            parts += ["--edit-mode", mode]
        return " ".join(p if p == "YOUR_IMAGE" else shlex.quote(p) for p in parts)


def change_spec(before: torch.Tensor, after: torch.Tensor, names: Sequence[str], exclusive_groups: Sequence[str]) -> str:
    """The ``--set`` that turns ``before`` into ``after``: new values on (a swap names only the new value),
    other attributes switched off as ``-NAME``."""
    from genkit.sampling.editing import exclusive_group

    items = []
    for name, b, a in zip(names, before.tolist(), after.tolist()):
        if a > 0.5 and b <= 0.5:
            items.append(name)
        elif a <= 0.5 and b > 0.5 and exclusive_group(name, exclusive_groups) is None:
            items.append(f"-{name}")
    return ",".join(items)


def _test_split(run: Run, split: str, cache_dir):
    """The run's ``split`` from its cache when the cache is on this machine (nothing is built here)."""
    from genkit.data.prepare import dataset_cache_path
    from genkit_datasets.cache import read_cache_info
    from genkit_datasets.torch_dataset import CachedImageDataset

    data = run.config.data
    path = dataset_cache_path(data.name, tuple(data.image_size), data.options, Path(data.root) if data.root else None,
                              cache_dir)
    info = read_cache_info(path)
    if info is None or list(info.attribute_names) != list(run.attribute_names) or not info.split_sizes.get(split):
        return None, (f"the run's {data.name} {split} images are not on this machine (no cache at {path}); upload an "
                      "image instead, or build the cache with `genkit data prepare`")
    return CachedImageDataset(info.path, split), ""


def _whole(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise UsageError(f"{what} {shown(str(value))} must be a whole number")
    return int(value)


def _mib(count: int) -> str:
    return f"{count / 2**20:.1f} MiB"


def _data_url(image: torch.Tensor) -> str:
    """An image (3, H, W; uint8, or float in [0, 1]) as a PNG data URL."""
    import io

    import numpy as np
    from PIL import Image

    if image.dtype != torch.uint8:
        image = image.float().clamp(0, 1).mul(255).add(0.5).clamp(0, 255).to(torch.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image.permute(1, 2, 0).numpy())).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


# --- the Gradio tab -------------------------------------------------------------------------

#: a click on a thumbnail sends its row (a delegated listener: the thumbnails are re-rendered per page)
THUMBNAIL_JS = """
element.addEventListener('click', (event) => {
  const cell = event.target.closest('[data-row]');
  if (cell) { trigger('click', {row: Number(cell.dataset.row)}); }
});
"""
THUMBNAIL_CSS = (".genkit-thumbs{display:flex;flex-wrap:wrap;gap:3px}"
                 ".genkit-thumb{display:block;width:48px;height:48px;cursor:pointer;image-rendering:pixelated}"
                 ".genkit-thumb:hover{outline:2px solid #f97316}")
#: the browser reads the chosen file itself and sends it inside an event: no upload route is involved
UPLOAD_HTML = ('<label style="display:block">upload an image (at most {limit}): '
               '<input type="file" accept="image/*" class="genkit-upload-input"/></label>')
UPLOAD_JS = """
const input = element.querySelector('input[type=file]');
input.addEventListener('change', () => {
  const file = input.files[0];
  if (!file) { return; }
  if (file.size > %(limit)d) {
    trigger('submit', {name: file.name, size: file.size, data: ''});
    input.value = '';
    return;
  }
  const reader = new FileReader();
  reader.onload = () => { trigger('submit', {name: file.name, size: file.size, data: reader.result}); input.value = ''; };
  reader.onerror = () => { trigger('submit', {name: file.name, size: file.size, data: ''}); input.value = ''; };
  reader.readAsDataURL(file);
});
"""


def build_edit_tab(gr, page, index: int, cache_dir: str | Path | None = None) -> None:
    """The edit tab of run panel ``index`` (called inside the panel's tabs by ``serve_layout``)."""
    with gr.Tab("edit an image"):
        try:
            tab = EditTab(page.run, page.controls, cache_dir=cache_dir)
        except GenkitError as exc:  # a stale cache, an unreadable split: the rest of the page still works
            gr.Markdown(f"⚠️ {html.escape(str(exc))}", elem_id=f"edit-status-{index}")
            return
        if tab.unavailable:
            gr.Markdown(f"⚠️ {html.escape(tab.unavailable)}", elem_id=f"edit-status-{index}")
            return
        _layout(gr, tab, index)


def _layout(gr, tab: EditTab, index: int) -> None:
    controls = tab.controls
    picked = gr.State(None)
    page_number = gr.State(0)
    first_html, first_label, _ = tab.thumbnails(0)
    gr.Markdown("Pick a test image or upload one, then change its attributes on the right: the edit is drawn "
                "from the image's own code, in the edit mode chosen there (the sampler's controls do not apply "
                "here).")
    with gr.Row():
        with gr.Column(scale=3, min_width=300):
            thumbs = gr.HTML(first_html, js_on_load=THUMBNAIL_JS, elem_id=f"edit-thumbs-{index}",
                             css_template=THUMBNAIL_CSS)
            with gr.Row():
                previous = gr.Button("◀ previous", size="sm", elem_id=f"edit-previous-{index}")
                following = gr.Button("next ▶", size="sm", elem_id=f"edit-next-{index}")
            page_label = gr.Markdown(first_label, elem_id=f"edit-page-{index}")
            upload = gr.HTML(UPLOAD_HTML.format(limit=_mib(MAX_UPLOAD_BYTES)),
                             js_on_load=UPLOAD_JS % {"limit": MAX_UPLOAD_BYTES}, elem_id=f"edit-upload-{index}")
        with gr.Column(scale=2, min_width=240):
            inputs = []
            for group, names in controls.exclusive.items():
                inputs.append(gr.Dropdown([(n.split("::", 1)[1], n) for n in names], value=names[0],
                                          label=f"{group} (one)", elem_id=f"edit-x-{index}-{group}"))
            for group, names in controls.families.items():
                inputs.append(gr.Dropdown([(n.split("::", 1)[1], n) for n in names], value=[], multiselect=True,
                                          label=f"{group} (any number)", elem_id=f"edit-f-{index}-{group}"))
            inputs.append(gr.CheckboxGroup(controls.flags, value=[], label="attributes",
                                           elem_id=f"edit-flags-{index}", visible=bool(controls.flags)))
            mode = gr.Radio(list(EDIT_MODES), value=DEFAULT_EDIT_MODE, label="edit mode",
                            info="redraw: the model's drawing under the new attributes; residual: the image "
                                 "plus what the change alters (the rest stays)",
                            elem_id=f"edit-mode-{index}")
    status = gr.Markdown("", elem_id=f"edit-status-{index}")
    attributes = gr.Markdown("", elem_id=f"edit-attributes-{index}")
    result = gr.HTML("", elem_id=f"edit-result-{index}")
    command = gr.Textbox(label="the same edit from the command line", interactive=False,
                         elem_id=f"edit-command-{index}")

    def failed(exc: Exception) -> str:
        if isinstance(exc, GenkitError):
            return f"⚠️ {html.escape(str(exc))}"
        return f"⚠️ internal error ({html.escape(type(exc).__name__)}: {html.escape(str(exc))})"

    def show(choice: Picked, how: str) -> list[Any]:
        values = tab.values(choice.vector)
        view = tab.view(choice, values, how)
        return [choice, "", view.attributes, view.html, view.command, *values]

    def on_thumbnail(state, how, evt):
        data = evt._data if isinstance(evt._data, dict) else {}
        try:
            return show(tab.pick(data.get("row")), how)
        except Exception as exc:  # a bad request must not take the server down: one line, and keep serving
            return [state, failed(exc), *[gr.update()] * (3 + len(inputs))]

    def on_upload(state, how, evt):
        data = evt._data if isinstance(evt._data, dict) else {}
        try:
            return show(tab.upload(data.get("name"), data.get("size"), data.get("data")), how)
        except Exception as exc:
            return [state, failed(exc), *[gr.update()] * (3 + len(inputs))]

    def on_toggle(state, how, *values):
        try:
            view = tab.view(state, values, how)
        except Exception as exc:
            return [failed(exc), gr.update(), gr.update()]
        return ["", view.html, view.command]

    def on_page(number, step):
        html_page, label, shown_page = tab.thumbnails(number + step)
        return html_page, label, shown_page

    on_thumbnail.__annotations__ = {"evt": gr.EventData}
    on_upload.__annotations__ = {"evt": gr.EventData}
    picked_outputs = [picked, status, attributes, result, command, *inputs]
    thumbs.click(on_thumbnail, [picked, mode], picked_outputs)
    upload.submit(on_upload, [picked, mode], picked_outputs)
    gr.on([c.input for c in (*inputs, mode)], on_toggle, [picked, mode, *inputs], [status, result, command],
          trigger_mode="always_last")
    previous.click(lambda n: on_page(n, -1), page_number, [thumbs, page_label, page_number])
    following.click(lambda n: on_page(n, 1), page_number, [thumbs, page_label, page_number])
