"""Every image genkit draws from a model goes through one batched loop, ``genkit.sampling.draw.sample_batches``.

Read from the source with ``ast``, as the layering test reads imports: a call of a model's sampler
(``capabilities.sample``, ``model.sample``) or of ``draw_noise`` anywhere in ``genkit/`` but the
two modules that own them is a second "draw noise, sample in batches" loop in the making, and so
is a function that takes an untyped ``run`` and reaches into it (the sampling functions take plain
arguments, or are ``Run``'s methods).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GENKIT = ROOT / "genkit"
#: where the model's sampler and its noise may be called: the capability itself and the one loop
OWNERS = {GENKIT / "sampling" / "capabilities.py", GENKIT / "sampling" / "draw.py"}
#: what only the owners call
SAMPLER = {"sample", "draw_noise"}


def _imported_from_capabilities(tree: ast.Module) -> set[str]:
    """Local names bound to ``sample`` or ``draw_noise`` of :mod:`genkit.sampling.capabilities`."""
    return {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
            and node.module == "genkit.sampling.capabilities" for alias in node.names if alias.name in SAMPLER}


def _is_model(node: ast.expr) -> bool:
    """``model``, ``self.model``, ``run.model``, ``self.sampling_model``: an expression naming a model."""
    name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
    return name == "model" or name.endswith("_model")


def sampler_calls(path: Path) -> list[str]:
    """``path:line`` of every call of the model's sampler or of ``draw_noise`` in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported = _imported_from_capabilities(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        direct = isinstance(func, ast.Name) and func.id in imported
        through = isinstance(func, ast.Attribute) and func.attr in SAMPLER and (
            (isinstance(func.value, ast.Name) and func.value.id == "capabilities") or _is_model(func.value))
        if direct or through:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_the_model_is_sampled_only_by_the_one_batched_loop():
    calls = [call for path in sorted(GENKIT.rglob("*.py")) if path not in OWNERS for call in sampler_calls(path)]
    assert calls == [], ("these call the model's sampler or draw its noise themselves; draw through "
                         "genkit.sampling.draw.sample_batches (or Run.batches / Run.images) instead: " + ", ".join(calls))


def test_the_loop_itself_is_found_by_the_check():
    """The check finds what it looks for: the loop's own calls (a check that finds nothing anywhere proves nothing)."""
    assert sampler_calls(GENKIT / "sampling" / "draw.py")


def test_no_function_takes_an_untyped_run():
    untyped = []
    for path in sorted(GENKIT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                untyped += [f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"
                            for arg in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
                            if arg.arg == "run" and arg.annotation is None]
    assert untyped == [], "these take an untyped run; type it (Run) or take plain arguments: " + ", ".join(untyped)
