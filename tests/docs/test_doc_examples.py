"""Every ```python snippet and every `genkit ...` command line in README.md and docs/*.md is exercised.

The docs are read as a user follows them: block by block in the order written, each ``## ``
section of a file in a fresh working folder (a section is what a reader follows on its own, as
"Reproducing everything" is).

* A **command** (a line starting ``genkit``, after ``$ `` in console blocks, after ``&&``, or the
  ``genkit`` part of a ``torchrun ... -m genkit`` line) runs through the real CLI, in this process.
  Commands that would train or build for minutes stop right after planning (:data:`STOPS`: the
  function that starts the heavy work is replaced, for that command only, by one that records
  it): every name, option and path is checked, and ``train`` writes the ``config.json`` it
  planned, so a later command that reuses the folder (``sweep``, ``--resume``) is checked
  against it. A command that needs a run folder (``--run``, ``--resume``, a path in a snippet)
  gets a tiny trained run of the same recipe at that path. The rest run as written, on that run.
* A **snippet** runs in one namespace per file (so later snippets see earlier ones), after the
  substitutions of :data:`SUBSTITUTIONS`, which shrink what it trains or loads; ``test_*``
  functions it defines are called.
* :data:`SKIP` lists, with the reason, what cannot run here (real CelebA/CUB folders, a GPU,
  several nodes); those commands are still parsed by the real CLI, component flags included.

A new doc (or a new block in one) is covered without touching this file. Should it need a
substitution or a skip, add it to the tables here, with its reason.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import socket
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import genkit
import genkit.evaluation.classifier  # noqa: F401  imported before any stop is set, so none keeps a stopped function
import genkit.evaluation.metrics  # noqa: F401
import genkit.training.resuming  # noqa: F401
import genkit.sweep.report  # noqa: F401
from genkit.cli.app import build_app
from genkit.cli.component_flags import ComponentCommand, chosen_components, given_flags

ROOT = Path(__file__).resolve().parents[2]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = ("bash", "sh", "shell", "console")
#: the small data every tiny run trains on
TINY_DATA = {"count": 160, "seed": 3}

#: (file or "*", text in the docs, text run here, why): applied to snippets and command lines alike
SUBSTITUTIONS = [
    ("*", "runs/NAME", "runs/g-learned-lp", "a placeholder for each name listed above it"),
    ("README.md", 'genkit.load_dataset("shapes", split="train")',
     'genkit.load_dataset("shapes", split="train", image_size=16, count=160, seed=3)', "a small shapes set"),
    ("README.md", 'genkit.plan_run(data="shapes", epochs=2)',
     'genkit.plan_run(data="shapes", epochs=1, image_size=16, data_options={"count": 160, "seed": 3}, '
     'batch_size=32, device="cpu")', "a small shapes set, one epoch"),
    ("docs/api.md", 'data_options={"count": 2000}, image_size=32, epochs=2',
     'data_options={"count": 160, "seed": 3}, image_size=16, epochs=1, batch_size=32, device="cpu"',
     "a small shapes set, one epoch"),
    ("docs/api.md", 'image_size=32, count=2000', 'image_size=16, count=160, seed=3', "the same small set"),
    ("docs/editing.md", 'genkit.load_dataset("shapes", split="test")',
     'genkit.load_dataset("shapes", split="test", image_size=16, count=160, seed=3)', "the tiny runs' data"),
    ("docs/evaluation.md", 'genkit.load_dataset("shapes", split="test", limit=256)',
     'genkit.load_dataset("shapes", split="test", image_size=16, count=160, seed=3)', "the tiny runs' data"),
]
#: extra arguments per command, appended to the doc's (the last value of an option wins), and why
EXTRA_ARGS = {
    ("evaluate",): (["--samples", "2", "--limit", "8"], "2 importance samples on 8 images: the same code, in a second"),
    ("serve",): (["--port", "{free_port}"], "a port free on this machine (7860 may be taken)"),
}
#: (pattern in a command line, why it cannot run here): parsed only
SKIP = [
    (r"--data (celeba|cub)\b|(--run|--resume) runs/(celeba|cub|mine)\b", "needs the real CelebA or CUB files, or a "
                                                                          "run of them"),
    (r"--data folder", "needs the reader's own image folder"),
    (r"--device cuda", "needs a CUDA GPU"),
    (r" /shared/", "torchrun across several nodes, on their shared filesystem"),
]
#: (file, first line of a snippet, why): snippets that are not code to run
SKIP_SNIPPETS = [
    ("docs/hooks.md", "register(name: str, factory: Callable, *, description: str = \"\",",
     "the register callback's signature, not a call"),
]
#: (file, snippet index): module name under which the snippet is also importable (it is a file the docs create)
SNIPPET_MODULES = {("docs/writing-a-plugin.md", 0): "genkit_laplace"}
#: files whose snippet modules are registered as plugins, as `pip install -e .` would do
PLUGIN_MODULES = {"docs/writing-a-plugin.md": ["genkit_laplace"]}


class Planned(Exception):
    """A command reached the work it would do for minutes; it was planned and checked up to there."""


# --- reading the docs ----------------------------------------------------------------------------

def blocks(path: Path) -> list[tuple[int, str, str]]:
    """``(section, language, body)`` of every fenced block, in order; ``section`` counts the ``## `` headings before it."""
    text = path.read_text()
    return [(len(re.findall(r"^## ", text[:m.start()], re.M)), m.group(1), m.group(2))
            for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M)]


def commands_in(language: str, body: str) -> list[str]:
    """The genkit command lines of a shell block: ``["train --data shapes ...", ...]`` (without ``genkit``)."""
    found = []
    for line in body.replace("\\\n", " ").splitlines():
        line = line.strip()
        if language == "console":
            if not line.startswith("$ "):
                continue
            line = line[2:]
        for segment in line.split("&&"):
            tokens = shlex.split(segment, comments=True)
            cut = next((i for i, t in enumerate(tokens) if t in ("|", ">", ">>", ";")), len(tokens))
            tokens = tokens[:cut]
            if tokens[:1] == ["genkit"]:
                found.append(shlex.join(tokens[1:]))
            elif tokens[:1] == ["torchrun"] and "genkit" in tokens:
                at = tokens.index("genkit")
                if tokens[at - 1] == "-m":
                    found.append(shlex.join(tokens[at + 1:]))
    return found


def substituted(relative: str, text: str) -> str:
    for where, old, new, _ in SUBSTITUTIONS:
        if where in ("*", relative):
            text = text.replace(old, new)
    return text


def doc_items(path: Path) -> list[tuple[int, str, object]]:
    """``(section, "command", line)`` and ``(section, "snippet", (index, code))`` in the order the file shows them."""
    relative = path.relative_to(ROOT).as_posix()
    items, snippet = [], 0
    for section, language, body in blocks(path):
        if language == "python":
            first = body.strip().splitlines()[0] if body.strip() else ""
            if not any(f == relative and first.startswith(line) for f, line, _ in SKIP_SNIPPETS):
                items.append((section, "snippet", (snippet, body)))
            snippet += 1
        elif language in SHELL:
            items += [(section, "command", line) for line in commands_in(language, body)]
    return items


# --- tiny runs -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """A tiny trained run per recipe (components and their options), trained once and copied where needed."""
    from genkit.evaluation.classifier import read_record, stale_reason, train_classifier
    from genkit.data.prepare import prepare_dataset

    store = tmp_path_factory.mktemp("doc-runs")
    made: dict[str, Path] = {}
    info, _ = prepare_dataset("shapes", image_size=16, options=TINY_DATA)
    if stale_reason(read_record(info), info) is not None:  # the classifier `evaluate` judges with: one quick epoch
        train_classifier(info, epochs=1, device="cpu")

    def for_recipe(config: genkit.RunConfig | None) -> Path:
        recipe = {"model": "cvae", "loss": None, "conditioner": None, "options": {}} if config is None else {
            "model": config.model.name, "loss": config.loss.name, "conditioner": config.conditioner.name,
            "options": {"model_options": config.model.options, "loss_options": config.loss.options,
                        "conditioner_options": config.conditioner.options}}
        key = json.dumps(recipe, sort_keys=True)
        if key not in made:
            names = {k: recipe[k] for k in ("loss", "conditioner") if recipe[k]}
            planned = genkit.plan_run(recipe["model"], "shapes", **names, **recipe["options"], data_options=TINY_DATA,
                                      image_size=16, epochs=1, batch_size=32, device="cpu")
            made[key] = store / f"recipe-{len(made)}"
            genkit.train(planned, out_dir=made[key])
        return made[key]
    return for_recipe


def run_for(folder: str, cwd: Path, tiny_runs) -> Path:
    """The trained run a command naming ``folder`` uses.

    A folder a stopped ``train`` planned keeps its ``config.json`` (a later ``sweep`` or
    ``--resume`` is checked against it) and the command gets a tiny trained run of that recipe
    beside it instead; a folder nothing made gets a tiny run of the default recipe, in place.
    """
    path = cwd / folder
    assert cwd in path.resolve().parents, f"{folder} lies outside the test's folder: add it to SKIP"
    if (path / "model.safetensors").is_file():
        return path
    if (path / "config.json").is_file():
        tiny = cwd / ".tiny" / folder
        if not tiny.exists():
            shutil.copytree(tiny_runs(genkit.RunConfig.load(path / "config.json")), tiny)
        return tiny
    shutil.copytree(tiny_runs(None), path, dirs_exist_ok=True)
    return path


def with_runs(args: list[str], cwd: Path, tiny_runs) -> list[str]:
    """``args`` with each run folder (``--run``, ``--resume``, the folders ``genkit runs`` lists or
    diffs) replaced by the run it uses (:func:`run_for`)."""
    args = list(args)
    for i, token in enumerate(args[:-1]):
        if token in ("--run", "-r", "--resume"):
            args[i + 1] = str(run_for(args[i + 1], cwd, tiny_runs))
    if args[:1] == ["runs"]:
        start = 2 if args[1:2] in (["diff"], ["list"]) else 1
        if start == len(args) or args[start].startswith("-"):  # the default folder, runs/, holds a run
            run_for("runs/tiny", cwd, tiny_runs)
        for i in range(start, len(args)):
            if args[i].startswith("-"):
                break
            args[i] = str(run_for(args[i], cwd, tiny_runs))
    return args


def with_images(args: list[str], cwd: Path) -> None:
    """The user's own image a command names (``genkit edit --image my-shape.png``), drawn if it is not there:
    a yellow square on grey, 40x30 pixels, in the format its suffix names."""
    from PIL import Image, ImageDraw

    for token, value in zip(args, args[1:]):
        path = cwd / value
        if token == "--image" and not path.exists():
            image = Image.new("RGB", (40, 30), (128, 128, 128))
            ImageDraw.Draw(image).rectangle((10, 5, 30, 25), fill=(230, 200, 20))
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path)


# --- running a command ---------------------------------------------------------------------------

def _stop(*_args, **_kwargs):
    raise Planned()


def _record_train(config, out_dir=None, *_args, **_kwargs):
    """What ``genkit train`` does before its first step, then stop: check the folder, write the config."""
    from genkit.store.files import check_output_dir
    from genkit.store.run_folder import default_run_dir

    out = Path(out_dir) if out_dir is not None else default_run_dir(config.model.name, config.data.name)
    check_output_dir(out)
    if (out / "config.json").exists():
        raise genkit.UsageError(f"{out} already holds a run; choose another --out, or continue it with --resume")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(config.to_json())
    raise Planned()


#: command -> (module, attribute) replaced by a stop for that command: where the heavy work starts
STOPS = {
    ("train",): [("genkit.training.trainer", "train", _record_train), ("genkit.training.trainer", "Trainer.run", _stop)],
    ("sweep",): [("genkit.sweep.run", "prepare_sweep", _stop)],
    ("classifier", "train"): [("genkit.data.prepare", "prepare_dataset", _stop)],
    ("data", "prepare"): [("genkit.data.prepare", "prepare_dataset", _stop)],
    ("serve",): [("genkit.serve.app", "serve", _stop)],
}


def _owner(module: str, attribute: str) -> tuple[object, str]:
    """The object holding ``attribute`` (``"Trainer.run"``: the class ``Trainer`` of ``module``) and its last name."""
    import importlib

    owner: object = importlib.import_module(module)
    *path, last = attribute.split(".")
    for name in path:
        owner = getattr(owner, name)
    return owner, last


def _prefix(args: list[str], table: dict) -> tuple[str, ...] | None:
    return next((key for key in sorted(table, key=len, reverse=True) if tuple(args[:len(key)]) == key), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_command(line: str, cwd: Path, tiny_runs, monkeypatch) -> None:
    args = shlex.split(line)
    if "--help" in args:
        result = CliRunner().invoke(build_app(), args)
        assert result.exit_code == 0, result.output
        return
    args = with_runs(args, cwd, tiny_runs)
    with_images(args, cwd)
    extra = _prefix(args, EXTRA_ARGS)
    if extra:
        args += [a.format(free_port=_free_port()) for a in EXTRA_ARGS[extra][0]]
    stop = _prefix(args, STOPS)
    app = build_app()  # outside the patches: no module imported now may keep a stop
    with monkeypatch.context() as patch:
        for module, attribute, replacement in STOPS.get(stop, []):
            patch.setattr(*_owner(module, attribute), replacement)
        result = CliRunner().invoke(app, args)
    if isinstance(result.exception, Planned):
        return
    assert result.exit_code == 0 and result.exception is None, \
        f"`genkit {line}` exited {result.exit_code}: {result.output[-2000:]}"


def parse_only(line: str) -> None:
    """Parse a command line with the real CLI (options, their types, component flags) without running it."""
    args = shlex.split(line)
    command, path = typer.main.get_command(build_app()), []
    while args and hasattr(command, "commands") and args[0] in command.commands:
        path.append(args[0])
        command = command.commands[args.pop(0)]
    assert not hasattr(command, "commands"), f"`genkit {line}`: no such command"
    ctx = command.make_context(" ".join(["genkit", *path]), list(args))
    if isinstance(command, ComponentCommand):
        given_flags(ctx, chosen_components(command, list(args)))


# --- running a snippet ---------------------------------------------------------------------------

def run_snippet(relative: str, index: int, code: str, namespace: dict, cwd: Path, tiny_runs) -> None:
    if "genkit.train(" not in code:  # a snippet that trains its own run finds it; one that loads a run gets one
        for quote, folder in set(re.findall(r"""(["'])((?:runs|sweeps)/[^"']+)\1""", code)):
            code = code.replace(f"{quote}{folder}{quote}", repr(str(run_for(folder, cwd, tiny_runs))))
    module_name = SNIPPET_MODULES.get((relative, index))
    if module_name:  # a file the docs have the reader create: written and imported as such
        import importlib

        (cwd.parent / "modules").mkdir(exist_ok=True)
        (cwd.parent / "modules" / f"{module_name}.py").write_text(code)
        sys.modules.pop(module_name, None)
        importlib.invalidate_caches()
        namespace[module_name] = importlib.import_module(module_name)
        return
    for name in set(re.findall(r"""["']([\w./-]+\.(?:png|jpg))["']""", code)):  # the user's own image a snippet reads
        with_images(["--image", name], cwd)
    exec(compile(code, f"{relative} (python block {index + 1})", "exec"), namespace)
    for name, value in list(namespace.items()):
        if name.startswith("test_") and callable(value) and getattr(value, "__module__", None) == namespace["__name__"]:
            value()


# --- the tests -----------------------------------------------------------------------------------

def _skipped(line: str) -> str | None:
    return next((why for pattern, why in SKIP if re.search(pattern, line)), None)


EXAMPLE_FILES = [p for p in DOC_FILES if doc_items(p)]


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=[p.relative_to(ROOT).as_posix() for p in EXAMPLE_FILES])
def test_every_snippet_and_command_of_the_file_runs(path, tmp_path, monkeypatch, tiny_runs):
    relative = path.relative_to(ROOT).as_posix()
    items = doc_items(path)
    monkeypatch.syspath_prepend(str(tmp_path / "modules"))
    namespace = {"__name__": f"docs_snippets_{re.sub(r'[^a-z0-9]', '_', relative.lower())}"}
    registered = []
    try:
        for section, kind, item in items:
            cwd = tmp_path / f"section-{section}"
            cwd.mkdir(exist_ok=True)
            monkeypatch.chdir(cwd)
            if kind == "snippet":
                index, code = item
                run_snippet(relative, index, substituted(relative, code), namespace, cwd, tiny_runs)
                for module_name in PLUGIN_MODULES.get(relative, []):
                    if module_name in sys.modules and module_name not in registered:
                        registered.append(genkit.register_plugin(sys.modules[module_name], name=module_name))
                continue
            line = substituted(relative, item)
            if _skipped(line):
                parse_only(line)
            else:
                run_command(line, cwd, tiny_runs, monkeypatch)
    finally:
        for name in registered:
            genkit.unregister_plugin(name)
        for module_name in PLUGIN_MODULES.get(relative, []):
            sys.modules.pop(module_name, None)


def test_the_extraction_finds_the_docs_examples():
    """The mechanism itself: it sees commands in every form the docs use, and the tables point at real text."""
    assert commands_in("console", "$ genkit plugins --json\noutput genkit x\n") == ["plugins --json"]
    assert commands_in("bash", "pip install -e . && genkit train --data shapes  # comment\n") == \
        ["train --data shapes"]
    assert commands_in("bash", "torchrun --nproc_per_node 4 -m genkit train \\\n  --data celeba\n") == \
        ["train --data celeba"]
    everything = {p.relative_to(ROOT).as_posix(): p.read_text() for p in DOC_FILES}
    for where, old, _, why in SUBSTITUTIONS:
        assert any(old in text for f, text in everything.items() if where in ("*", f)), \
            f"the substitution for {old!r} ({why}) matches nothing in the docs any more: remove it"
    for where, first, why in SKIP_SNIPPETS:
        assert first in everything[where], f"the skipped snippet {first!r} ({why}) is gone: remove the entry"
    lines = [line for p in DOC_FILES for _, kind, line in doc_items(p) if kind == "command"]
    assert len(lines) > 60
    for pattern, why in SKIP:
        assert any(re.search(pattern, line) for line in lines), f"the skip {pattern!r} ({why}) matches no command"
    assert sum(1 for line in lines if not _skipped(line)) > 0.7 * len(lines)
