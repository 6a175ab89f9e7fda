"""The layers import in one direction: plugins → genkit's public API → genkit → genkit_datasets.

Read from the source with ``ast`` (imports inside functions count too), so a violation fails here
whether or not the offending line ever runs:

- ``genkit_datasets`` (genkit_datasets/) imports nothing of ``genkit``;
- no import cycle joins a ``genkit`` module and a ``genkit_datasets`` module;
- the bundled plugins (genkit_plugins/) and the example third-party plugin import only ``genkit``'s
  public names (``genkit.__all__`` and ``genkit.plugin_api``), the standard library and genkit's
  third-party dependencies, exactly as an outside plugin would.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import genkit
import genkit.plugin_api
import genkit_datasets.errors

ROOT = Path(__file__).resolve().parents[2]
#: import name -> source folder (pyproject.toml's package-dir)
PACKAGES = {"genkit": ROOT / "genkit", "genkit_datasets": ROOT / "genkit_datasets", "genkit_plugins": ROOT / "genkit_plugins"}
EXAMPLE = ROOT / "docs" / "examples" / "genkit-deep-cvae" / "genkit_deep_cvae"
#: genkit's runtime dependencies (pyproject.toml) by import name; a plugin may use any of them.
THIRD_PARTY = {"torch", "torchvision", "typer", "rich", "pluggy", "numpy", "h5py", "matplotlib", "safetensors",
               "platformdirs", "PIL"}


@dataclass(frozen=True)
class Import:
    path: Path
    line: int
    module: str  # the absolute module imported from
    names: tuple[str, ...]  # for ``from module import a, b``; empty for ``import module``

    def where(self) -> str:
        return f"{shown(self.path)}:{self.line}"


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def modules(package: str, folder: Path) -> dict[str, Path]:
    """Every module of ``package`` (sub-packages included) by its dotted name."""
    found = {}
    for path in sorted(folder.rglob("*.py")):
        parts = list(path.relative_to(folder).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join([package, *parts])] = path
    return found


def imports_of(name: str, path: Path) -> list[Import]:
    """The imports written in ``path`` (module ``name``), relative ones made absolute."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [Import(path, node.lineno, alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.append(Import(path, node.lineno, base, tuple(alias.name for alias in node.names)))
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the genkit and genkit_datasets modules it imports (parent packages included).

    ``genkit/__init__.py`` depends on the modules it loads names from on first use, and
    ``from genkit import plan_run`` counts as importing the module that defines ``plan_run``.
    """
    known = {**modules("genkit", PACKAGES["genkit"]), **modules("genkit_datasets", PACKAGES["genkit_datasets"])}
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        for imp in imports_of(name, path):
            targets = [imp.module, *(f"{imp.module}.{n}" for n in imp.names)]
            if imp.module == "genkit":
                targets += [genkit._LAZY[n] for n in imp.names if n in genkit._LAZY]
            for target in targets:
                parts = target.split(".")
                graph[name] |= {m for m in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if m in known}
        graph[name].discard(name)
    graph["genkit"] |= set(genkit._LAZY.values())  # loaded on first use, still a dependency
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module (the import cycles)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_genkit_datasets_never_imports_genkit():
    offending = [f"{imp.where()} imports {imp.module}"
                 for name, path in modules("genkit_datasets", PACKAGES["genkit_datasets"]).items()
                 for imp in imports_of(name, path) if imp.module.split(".")[0] in ("genkit", "genkit_plugins")]
    assert offending == [], "genkit_datasets sits below genkit and must not import it: " + "; ".join(offending)


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The module graph collapsed to top-level packages: ``genkit -> {genkit_datasets}``."""
    packages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        top = module.split(".")[0]
        packages.setdefault(top, set()).update(t.split(".")[0] for t in targets)
        packages[top].discard(top)
    return packages


def test_no_import_cycle_joins_genkit_and_genkit_datasets():
    graph = import_graph()
    assert "genkit_datasets.torch_dataset" in graph["genkit.data.prepare"]  # the graph does see cross-package imports
    assert "genkit.training.trainer" in graph["genkit"]  # and what genkit/__init__.py loads on first use
    mixed = [c for c in strongly_connected(graph) if {m.split(".")[0] for m in c} == {"genkit", "genkit_datasets"}]
    assert mixed == [], f"import cycles across genkit and genkit_datasets: {mixed}"
    packages = package_graph(graph)
    assert packages["genkit"] == {"genkit_datasets"}
    assert strongly_connected(packages) == [], f"genkit and genkit_datasets import each other: {packages}"


def test_no_import_cycle_among_genkits_own_modules():
    """Modules import one way (sweep plans and runs, sweep_report only draws what it is given, ...).
    ``genkit/__init__.py`` loads every public name on first use, so edges to the package itself
    are left out."""
    graph = {name: {t for t in targets if t != "genkit"} for name, targets in import_graph().items()
             if name != "genkit"}
    assert "genkit.sweep.report" in graph["genkit.sweep.run"]
    assert strongly_connected(graph) == [], f"import cycles: {strongly_connected(graph)}"


#: genkit's packages from the bottom up; a module imports only from its own package and the levels below.
#: The root modules ``errors``, ``hookspecs``, ``types``, ``config`` and ``options`` are the floor; ``genkit`` itself
#: (its lazy public names), ``plugin_api`` and ``__main__`` are the public face over everything.
LAYERS = [
    {"runtime", "store", "transport"},
    {"components"},
    {"data"},
    {"sampling"},
    {"evaluation", "training"},
    {"serve", "sweep"},
    {"cli"},
]
FLOOR = {"genkit.errors", "genkit.hookspecs", "genkit.types", "genkit.config", "genkit.options"}
FACE = {"genkit", "genkit.plugin_api", "genkit.__main__"}


def level_of(module: str) -> tuple[int, str]:
    """(level, package) of a genkit module: -1 for the floor, one past the top for the public face."""
    if module in FLOOR:
        return -1, module
    if module in FACE:
        return len(LAYERS), module
    package = module.split(".")[1]
    for level, packages in enumerate(LAYERS):
        if package in packages:
            return level, package
    raise AssertionError(f"{module} is in no layer of tests/architecture/test_layering.py's LAYERS: place its package")


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import from a genkit module to a higher level, or to a sibling package of its own level."""
    packages = {m for m in graph if m.count(".") == 1 and m.split(".")[1] in set().union(*LAYERS)}
    problems = []
    for source, targets in sorted(graph.items()):
        if not source.startswith("genkit") or source.startswith("genkit_"):
            continue
        for target in sorted(targets):
            if not target.startswith("genkit.") or target in packages:  # a package's __init__ holds only its docstring
                continue
            (low, own), (high, other) = level_of(source), level_of(target)
            if high > low or (high == low and own != other and low not in (-1, len(LAYERS))):
                problems.append(f"{source} imports {target}")
    return problems


def test_genkits_packages_import_only_the_levels_below():
    graph = import_graph()
    assert {m.split(".")[1] for m in graph if m.startswith("genkit.") and m.count(".") >= 1
            and m not in FLOOR | FACE} == set().union(*LAYERS)  # every package is placed, and only those exist
    assert "genkit.sampling.run" in graph["genkit.evaluation.metrics"]  # the graph sees imports between packages
    assert upward_imports(graph) == []


def test_the_level_check_catches_an_import_running_back_up():
    graph = {"genkit.sampling.draw": {"genkit.evaluation.classifier", "genkit.store.files", "genkit.errors"},
             "genkit.training.trainer": {"genkit.evaluation.metrics", "genkit.sampling.run"},
             "genkit.store.files": {"genkit.errors", "genkit.plugin_api"}}
    assert upward_imports(graph) == ["genkit.sampling.draw imports genkit.evaluation.classifier",
                                     "genkit.store.files imports genkit.plugin_api",
                                     "genkit.training.trainer imports genkit.evaluation.metrics"]


def test_cycle_detection_finds_a_cycle():
    graph = {"genkit.a": {"genkit_datasets.b"}, "genkit_datasets.b": {"genkit_datasets.c"},
             "genkit_datasets.c": {"genkit.a"}, "genkit.d": {"genkit.a"}}
    assert strongly_connected(graph) == [["genkit.a", "genkit_datasets.b", "genkit_datasets.c"]]
    assert strongly_connected(package_graph(graph)) == [["genkit", "genkit_datasets"]]


def plugin_files() -> list[tuple[str, Path]]:
    bundled = [(name, path) for name, path in modules("genkit_plugins", PACKAGES["genkit_plugins"]).items()]
    example = [(name, path) for name, path in modules("genkit_deep_cvae", EXAMPLE).items()]
    return bundled + example


def private_uses(name: str, path: Path) -> list[str]:
    """Every way ``path`` reaches past genkit's public API, as ``file:line what``."""
    public = set(genkit.__all__)
    plugin_api = set(genkit.plugin_api.__all__)
    own = name.split(".")[0]
    problems = []
    genkit_names = set()  # local names bound to the genkit package
    api_names = set()  # local names bound to genkit.plugin_api
    for imp in imports_of(name, path):
        top = imp.module.split(".")[0]
        if imp.module == "genkit" and not imp.names:
            genkit_names.add("genkit")
        elif imp.module == "genkit" and imp.names:
            problems += [f"{imp.where()} from genkit import {n}" for n in imp.names if n not in public | {"plugin_api"}]
        elif imp.module == "genkit.plugin_api":
            problems += [f"{imp.where()} from genkit.plugin_api import {n}" for n in imp.names if n not in plugin_api]
            if not imp.names:
                genkit_names.add("genkit")
        elif top in ("genkit", "genkit_datasets", "genkit_plugins") and top != own:
            problems.append(f"{imp.where()} imports {imp.module}")
        elif top == own and own == "genkit_plugins":
            problems.append(f"{imp.where()} imports another bundled plugin, {imp.module}")
        elif top != own and top not in sys.stdlib_module_names and top not in THIRD_PARTY:
            problems.append(f"{imp.where()} imports {imp.module}, neither stdlib nor a genkit dependency")
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "genkit.plugin_api" and alias.asname:
                    api_names.add(alias.asname)
                elif alias.name == "genkit" and alias.asname:
                    genkit_names.add(alias.asname)
        elif isinstance(node, ast.ImportFrom) and node.module == "genkit":
            api_names |= {alias.asname or alias.name for alias in node.names if alias.name == "plugin_api"}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not isinstance(node.value, (ast.Name, ast.Attribute)):
            continue
        where = f"{shown(path)}:{node.lineno}"
        if isinstance(node.value, ast.Name) and node.value.id in genkit_names:
            if node.attr not in public | {"plugin_api"}:
                problems.append(f"{where} genkit.{node.attr}")
        elif isinstance(node.value, ast.Name) and node.value.id in api_names and node.attr not in plugin_api:
            problems.append(f"{where} genkit.plugin_api.{node.attr}")
        elif (isinstance(node.value, ast.Attribute) and node.value.attr == "plugin_api"
              and isinstance(node.value.value, ast.Name) and node.value.value.id in genkit_names
              and node.attr not in plugin_api):
            problems.append(f"{where} genkit.plugin_api.{node.attr}")
    return problems


@pytest.mark.parametrize("name, path", plugin_files(), ids=[n for n, _ in plugin_files()])
def test_plugins_use_only_the_public_api(name, path):
    problems = private_uses(name, path)
    assert problems == [], "a plugin may import only genkit's public API (genkit.__all__, genkit.plugin_api), " \
                           "the standard library and genkit's dependencies: " + "; ".join(problems)


def test_the_plugin_check_catches_private_imports(tmp_path):
    path = tmp_path / "probe.py"
    path.write_text("import genkit\nimport scipy\nfrom genkit.errors import UsageError\n"
                    "from genkit_datasets.cub import cub_index\nfrom genkit.plugin_api import nothing_here\n"
                    "from genkit_plugins.cvae import CVAE\nx = genkit.training\ny = genkit.plugin_api.missing\n"
                    "z = genkit.plugin_api.celeba_index\nw = genkit.UsageError\n")
    problems = private_uses("genkit_plugins.probe", path)
    assert [p.split(" ", 1)[1] for p in problems] == [
        "imports scipy, neither stdlib nor a genkit dependency", "imports genkit.errors", "imports genkit_datasets.cub",
        "from genkit.plugin_api import nothing_here", "imports another bundled plugin, genkit_plugins.cvae",
        "genkit.training", "genkit.plugin_api.missing"]


def test_genkit_reexports_the_dataset_layers_errors():
    assert genkit.UsageError is genkit_datasets.errors.UsageError
    assert genkit.GenkitRuntimeError is genkit_datasets.errors.GenkitRuntimeError
    assert genkit.GenkitError is genkit_datasets.errors.GenkitError
    assert issubclass(genkit.PluginError, genkit.GenkitError)
    with pytest.raises(genkit.UsageError, match="cannot read") as caught:
        genkit.plugin_api.read_lines(ROOT / "no-such-annotation-file.txt")
    assert caught.value.exit_code == 2


def test_import_genkit_stays_light():
    """Why the lazy genkit/__init__.py stays: ``import genkit`` must not pull in torch or h5py."""
    probe = "import sys, genkit; genkit.UsageError; print(sorted({'torch', 'h5py', 'matplotlib'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
