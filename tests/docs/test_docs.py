"""The docs match the code: hooks, CLI commands and options, the public API, and the examples run.

docs/cli.md's option tables are generated from the Typer commands. When a command or option
changes, regenerate them with::

    GENKIT_UPDATE_DOCS=1 python -m pytest tests/docs/test_docs.py -k cli

A new command needs its own ``## genkit ...`` section holding an empty
``<!-- options: genkit ... -->`` / ``<!-- end options -->`` pair first; the update fills it.
"""

from __future__ import annotations

import inspect
import os
import re
import shlex
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

import genkit
import genkit.plugin_api
from genkit import hookspecs
from genkit.components import loading as plugins
from genkit.cli.app import build_app
from genkit.cli.component_flags import ComponentCommand, chosen_components, declared_flags
from genkit.cli.sampling_flags import SamplingCommand
from fixtures_real_formats import CELEBA_NAMES, write_celeba

DOCS = Path(__file__).resolve().parents[2] / "docs"
UPDATE = os.environ.get("GENKIT_UPDATE_DOCS") == "1"
BLOCK = re.compile(r"<!-- options: (?P<path>[^>]+?) -->\n(?P<body>.*?)<!-- end options -->", re.S)


def hook_specs() -> dict[str, list[str]]:
    return {name: list(inspect.signature(fn).parameters)
            for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("register_")}


def sections(text: str, level: str = "## ") -> dict[str, str]:
    """Heading line (without the hashes) -> the text up to the next heading of that level."""
    parts = re.split(rf"^{re.escape(level)}(.+)$", text, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def code_blocks(text: str, languages: tuple[str, ...]) -> list[str]:
    return [m.group(2) for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M)
            if m.group(1) in languages]


# --- hooks.md ------------------------------------------------------------------------------

def hook_sections() -> dict[str, tuple[list[str], str]]:
    found = {}
    for heading, body in sections((DOCS / "hooks.md").read_text()).items():
        match = re.fullmatch(r"(\w+)\(([^)]*)\)", heading)
        if match:
            args = [a.strip() for a in match.group(2).split(",") if a.strip()]
            found[match.group(1)] = (args, body)
    return found


def test_every_hook_is_documented_with_its_arguments():
    documented = hook_sections()
    for hook, args in hook_specs().items():
        assert hook in documented, f"docs/hooks.md has no section '## {hook}({', '.join(args)})'"
        doc_args, body = documented[hook]
        assert doc_args == args, f"docs/hooks.md documents {hook}({', '.join(doc_args)}); the spec is {args}"
        for arg in args:
            assert re.search(rf"^- `{arg}`: \S", body, re.M), f"argument {arg!r} of {hook} has no '- `{arg}`:' line"
        assert "Returns:" in body, f"docs/hooks.md does not say what {hook} returns"
        examples = code_blocks(body, ("python",))
        assert any(f"def {hook}(" in code and "@genkit.hookimpl" in code for code in examples), \
            f"docs/hooks.md has no example implementing {hook}"
    assert set(documented) <= set(hook_specs()), "docs/hooks.md documents a hook that does not exist"


def test_every_hook_spec_has_a_docstring():
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction):
        if name.startswith("register_"):
            assert inspect.getdoc(fn), f"hook spec {name} has no docstring"


@pytest.fixture
def hook_examples(monkeypatch):
    """The python example of each hook section, loaded and registered as a plugin."""
    plugins.load_plugins()  # installed plugins' errors stay on record
    monkeypatch.setattr(plugins, "_load_errors", [])
    names = []
    for hook, (_, body) in hook_sections().items():
        name = f"docs_hooks_{hook}"
        module = types.ModuleType(name)
        sys.modules[name] = module  # so pickle finds the example's classes by reference
        exec(compile("\n".join(code_blocks(body, ("python",))), f"docs/hooks.md ({hook})", "exec"), module.__dict__)
        assert genkit.register_plugin(module, name=name) == name, genkit.plugin_errors()
        names.append(name)
    yield
    for name in names:
        genkit.unregister_plugin(name)
        sys.modules.pop(name, None)


def test_hook_examples_run_together(hook_examples, tmp_path):
    assert [e for e in genkit.plugin_errors() if e.plugin.startswith("docs_hooks_")] == []
    config = genkit.plan_run("linear-cvae", "greys", "embedded-bias", "l1-elbo", image_size=8, epochs=1,
                             batch_size=16, device="cpu")
    genkit.train(config, out_dir=tmp_path / "run", cache_dir=tmp_path / "cache")
    run = genkit.load_run(tmp_path / "run", device="cpu")
    assert run.attribute_names == ["bright"]
    assert run.sample("bright", n=2).shape == (2, 3, 8, 8)
    laplace = genkit.plan_run("linear-cvae", "greys", "embedded-bias", "laplace-elbo", image_size=8, epochs=1,
                              batch_size=16, device="cpu")
    genkit.train(laplace, out_dir=tmp_path / "laplace", cache_dir=tmp_path / "cache")
    assert (tmp_path / "laplace" / "loss.safetensors").is_file()  # the loss's own parameter, saved
    trained = genkit.load_run(tmp_path / "laplace", device="cpu").loss.log_b
    assert float(trained.detach()) != 0.0 and trained.requires_grad
    judge = genkit.registry("classifiers").get("linear-judge").create((3, 8, 8), ["bright"])
    assert judge(run.sample("bright", n=2)).shape == (2, 1)
    result = CliRunner().invoke(build_app(), ["list-datasets"])
    assert result.exit_code == 0 and "greys: Flat grey images" in result.output
    # the flow example: its own loss, the EMA it asks for, an inversion but no posterior, its sampling options
    flow = genkit.plan_run("tiny-flow", "greys", image_size=8, epochs=1, batch_size=16, device="cpu")
    assert flow.loss.name == "velocity-mse" and flow.train.ema == 0.99
    genkit.train(flow, out_dir=tmp_path / "flow", cache_dir=tmp_path / "cache")
    flow_run = genkit.load_run(tmp_path / "flow", device="cpu")
    assert flow_run.capabilities == {"posterior": False, "invert": True, "partial_invert": True,
                                     "log_likelihood": False, "partial_conditions": False}
    assert flow_run.sample("bright", n=2, steps=3, guidance_from=0.5).shape == (2, 3, 8, 8)
    with pytest.raises(genkit.UsageError, match="'ModelOutput' object has no attribute 'predicted'"):
        genkit.plan_run("linear-cvae", "greys", "tiled-onehot", "velocity-mse", image_size=8)
    assert run.sample("bright", n=2, temperature=0.5).shape == (2, 3, 8, 8)


def test_the_dataset_variant_example_reads_celeba(hook_examples, tmp_path):
    fixture = write_celeba(tmp_path / "celeba")
    example = sys.modules["docs_hooks_register_datasets"]
    index = example.CelebAThree().scan(fixture.root)
    assert index.attribute_names == ["Smiling", "Male", "Eyeglasses"]
    assert np.array_equal(index.attributes, fixture.attributes[:, [CELEBA_NAMES.index(n) for n in example.KEEP]])
    assert {k: v.tolist() for k, v in index.splits.items()} == {s: fixture.split(s) for s in ("train", "valid", "test")}
    assert index.reader(0, (8, 8)).shape == (8, 8, 3)


# --- cli.md ---------------------------------------------------------------------------------

def command_tree() -> dict[str, object]:
    """``"genkit data info"`` -> its click command, for genkit's own commands (not third-party plugins')."""
    found: dict[str, object] = {}

    def walk(command, path: str) -> None:
        module = getattr(command.callback, "__module__", "") or ""
        if command.callback is not None and not module.startswith(("genkit.", "genkit_plugins")):
            return
        found[path] = command
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            walk(sub, f"{path} {name}")

    walk(typer.main.get_command(build_app()), "genkit")
    return found


def _default(param) -> str:
    if param.required:
        return "required"
    if getattr(param, "is_flag", False):
        return "on" if param.default else "" if param.default is None else "off"  # None: decided at run time
    if param.default in (None, "", (), []):
        return ""
    if isinstance(param.default, (list, tuple)):
        return ", ".join(f"`{v}`" for v in param.default)
    return f"`{param.default}`"


def _type_name(param) -> str:
    """What typer's help shows between angle brackets (``int``, ``Path``, ``a|b``)."""
    described = getattr(param, "type_descriptor", None)
    if described is None:  # a plain click parameter
        return param.type.name
    if described.is_choice:
        return "|".join(str(c) for c in described.choices)
    return param.bare_type()


def render_options(command) -> str:
    rows = ["| option | type | default | meaning |", "| --- | --- | --- | --- |"]
    for param in command.params:
        if getattr(param, "hidden", False):
            continue
        if param.param_type_name == "argument":
            names = f"`{param.name.upper()}` (argument)"
        else:
            names = ", ".join(f"`{o}`" for o in [*param.opts, *param.secondary_opts])
        kind = "flag" if getattr(param, "is_flag", False) else f"`{_type_name(param)}`"
        if getattr(param, "multiple", False):
            kind += " (repeatable)"
        meaning = " ".join((getattr(param, "help", None) or "").split())
        cells = [c.replace("|", "\\|") for c in (names, kind, _default(param), meaning)]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def test_cli_reference_lists_every_command_and_option():
    path = DOCS / "cli.md"
    text = path.read_text()
    tree = command_tree()
    headings = {h.strip("` ") for h in re.findall(r"^#{2,3} (.+)$", text, re.M)}
    missing = [p for p in tree if p != "genkit" and p not in headings]
    assert not missing, f"docs/cli.md has no section for: {', '.join(missing)}; add '## <command>' with an " \
                        "options block (see tests/docs/test_docs.py)"
    blocks = {m.group("path"): m for m in BLOCK.finditer(text)}
    stale = sorted(set(blocks) - set(tree))
    assert not stale, f"docs/cli.md documents commands that do not exist: {', '.join(stale)}"
    wanted = {p: render_options(c) for p, c in tree.items() if c.params}
    absent = [p for p in wanted if p not in blocks]
    assert not absent, f"docs/cli.md lacks an options block for: {', '.join(absent)}"
    if UPDATE:
        path.write_text(BLOCK.sub(lambda m: f"<!-- options: {m.group('path')} -->\n"
                                            f"{wanted.get(m.group('path'), '')}<!-- end options -->", text))
        return
    outdated = [p for p, body in wanted.items() if blocks[p].group("body") != body]
    assert not outdated, f"the options of {', '.join(outdated)} changed; regenerate docs/cli.md with " \
                         "GENKIT_UPDATE_DOCS=1 python -m pytest tests/docs/test_docs.py -k cli"


def doc_commands() -> list[tuple[str, str]]:
    """Every ``genkit ...`` command line shown in a shell block of the docs: ``(file, line)``."""
    found = []
    for path in sorted([*DOCS.glob("*.md"), *DOCS.glob("examples/*/README.md")]):
        for block in code_blocks(path.read_text(), ("console", "bash", "sh", "shell")):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.strip().removeprefix("$ ")
                if line.startswith("genkit ") or line == "genkit":
                    found.append((path.relative_to(DOCS.parent).as_posix(), line))
    return found


def installed_sampling_flags() -> dict[str, object]:
    """flag -> sampling option, over every installed model (each built on the meta device at 32x32)."""
    from genkit.sampling.capabilities import sampling_options
    from genkit.components.build import model_outline

    flags = {}
    for component in genkit.registry("models"):
        try:
            config = genkit.plan_run(component.name, "shapes", data_options={"count": 100}, image_size=32)
            model = model_outline(config)
        except genkit.UsageError:
            continue
        flags.update({option.flag: option for option in sampling_options(model).values()})
    return flags


def test_docs_show_only_commands_and_options_that_exist():
    tree = command_tree()
    commands = doc_commands()
    assert len(commands) > 10
    for source, line in commands:
        tokens = shlex.split(line, comments=True)
        cut = next((i for i, t in enumerate(tokens) if t in ("|", ">", ">>", "&&", ";")), len(tokens))
        tokens = tokens[:cut]
        path = "genkit"
        rest = tokens[1:]
        while rest and f"{path} {rest[0]}" in tree:
            path = f"{path} {rest.pop(0)}"
        default = getattr(tree[path], "default_command", None)  # `genkit runs PATH` is `genkit runs list PATH`
        if default and not (rest and rest[0] in ("--help", "-h")):
            path = f"{path} {default}"
        command = tree[path]
        assert not (hasattr(command, "commands") and rest and not rest[0].startswith("-")), \
            f"{source}: `{line}` runs an unknown command {rest[0]!r}"
        options = {o: p for p in command.params for o in (*getattr(p, "opts", ()), *getattr(p, "secondary_opts", ()))}
        if isinstance(command, ComponentCommand):  # the chosen components' own flags
            for _, _, flag in declared_flags(chosen_components(command, rest)):
                options[flag.flag] = types.SimpleNamespace(is_flag=isinstance(flag.default, bool))
        if isinstance(command, SamplingCommand):  # the sampling options of some installed model
            for flag, option in installed_sampling_flags().items():
                options.setdefault(flag, types.SimpleNamespace(is_flag=option.type is bool))
        takes_value = False
        for token in rest:
            if takes_value:
                takes_value = False
                continue
            if token.startswith("-") and token != "-":
                name = token.split("=", 1)[0]
                assert name in options or name == "--help", f"{source}: `{line}`: {path} has no option {name}"
                param = options.get(name)
                takes_value = param is not None and "=" not in token and not getattr(param, "is_flag", False)


# --- api.md ---------------------------------------------------------------------------------

def test_every_public_name_is_documented():
    headings = re.findall(r"^#{2,4} `genkit\.([\w.]+)", (DOCS / "api.md").read_text(), re.M)
    documented = {h for h in headings if not h.startswith("plugin_api.")}
    public = set(genkit.__all__)
    assert public - documented == set(), f"docs/api.md does not document: {sorted(public - documented)}"
    assert documented - public == set(), f"docs/api.md documents names not in genkit.__all__: " \
                                         f"{sorted(documented - public)}"
    for name in public:
        assert hasattr(genkit, name), f"genkit.__all__ lists {name!r}, which genkit does not define"
    helpers = {h.removeprefix("plugin_api.") for h in headings if h.startswith("plugin_api.")}
    offered = set(genkit.plugin_api.__all__)
    assert offered - helpers == set(), f"docs/api.md does not document: " \
                                       f"{sorted('genkit.plugin_api.' + n for n in offered - helpers)}"
    assert helpers - offered == set(), f"docs/api.md documents names not in genkit.plugin_api.__all__: " \
                                       f"{sorted(helpers - offered)}"
    for name in offered:
        assert hasattr(genkit.plugin_api, name), f"genkit.plugin_api.__all__ lists {name!r}, which it does not define"
