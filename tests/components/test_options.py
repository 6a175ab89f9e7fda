"""One option system: one converter from text to an option's value in the whole tree, and bounds that a
plugin declares with ``Annotated[..., genkit.Bounds(...)]`` refused with the same one line wherever the value
arrives (a flag, ``--model-opt``, ``--sample-opt``, ``--vary``, an API keyword, the page)."""

from __future__ import annotations

import ast
import math
from pathlib import Path
from typing import Annotated, Literal, Optional

import pytest
import torch
from torch import nn

import genkit
from conftest import error_line, invoke
from genkit.options import COMPONENT, FLAG, SAMPLING, TEXT, VARY, Bounds, Option, convert, declared

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--data", "shapes", "--data-opt", "count=160", "--image-size", "8", "--epochs", "1", "--batch-size", "16",
        "--device", "cpu", "--no-tensorboard"]
DEPTH = "model 'bounded' option depth 9 must be from 1 to 4, for example 2"
TEMPERATURE = "--temperature 9.0 must be above 0 and at most 5, for example 1"


# --- one converter ---------------------------------------------------------------------------------------

#: the modules user-given option values pass through; none of them reads text into a value itself
OPTION_MODULES = ["genkit/sampling/capabilities.py", "genkit/components/registry.py", "genkit/components/build.py",
                  "genkit/sweep/vary.py", "genkit/sweep/plan.py", "genkit/cli/component_flags.py",
                  "genkit/cli/options.py", "genkit/cli/sampling_flags.py", "genkit/cli/train_cmd.py",
                  "genkit/cli/sweep_cmd.py", "genkit/training/planning.py", "genkit/training/resuming.py",
                  "genkit/serve/page.py", "genkit/config.py"]
#: (module, source of the call): reading something that is not an option's value
ALLOWED = {("genkit/sampling/capabilities.py", "int(s)"),  # the sizes of a model's noise_shape
           ("genkit/serve/page.py", "int(seed)"), ("genkit/serve/page.py", "int(n)"),  # checked by check_request
           ("genkit/serve/page.py", "int(value)"), ("genkit/serve/page.py", "int(steps)"),
           ("genkit/config.py", "json.loads(text)"), ("genkit/config.py", "json.loads(path.read_text())")}


def _conversions(path: Path) -> list[str]:
    """The calls in ``path`` that turn a value into a number or parse JSON: ``int(x)``, ``float(x)``, ``json.loads(x)``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call) or len(node.args) != 1:
            continue
        name = ast.unparse(node.func)
        argument = node.args[0]
        if name == "json.loads" and not (isinstance(argument, ast.Call) and ast.unparse(argument.func) == "json.dumps"):
            found.append(ast.unparse(node))
        elif name in ("int", "float") and not isinstance(argument, (ast.Constant, ast.Call, ast.BinOp)):
            found.append(ast.unparse(node))
    return found


def test_text_becomes_an_option_value_only_in_genkit_options():
    stray = [(module, call) for module in OPTION_MODULES for call in _conversions(ROOT / module)
             if (module, call) not in ALLOWED]
    assert stray == [], f"text read into an option value outside genkit/options.py's convert: {stray}"
    assert _conversions(ROOT / "genkit" / "options.py"), "the checker finds the conversions of the converter itself"
    words = [str(p.relative_to(ROOT)) for p in (ROOT / "genkit").rglob("*.py")
             if '"true", "false"' in p.read_text() and p.name != "options.py"]
    assert words == [], f"true/false read outside genkit/options.py (use BOOL_WORDS and convert): {words}"
    converters = [f"{p.relative_to(ROOT)}:{node.name}" for p in (ROOT / "genkit").rglob("*.py")
                  for node in ast.walk(ast.parse(p.read_text())) if isinstance(node, ast.FunctionDef)
                  and node.name in ("convert", "parse_value", "_typed", "_check_type", "_declared_types", "_option_type")]
    assert [c for c in converters if not c.startswith("genkit/options.py:")] == [] and \
        "genkit/options.py:convert" in converters


def test_each_route_reads_text_as_before():
    number, whole = Option("beta", (float,), 0.5, help="the KL weight."), Option("n", (int,), 3, help="how many.")
    assert convert(number, "0.25", FLAG, "--beta") == 0.25 and convert(whole, " 7 ", SAMPLING, "--n") == 7
    assert convert(Option("x", (bool,), False), "TRUE", SAMPLING, "--x") is True
    assert convert(whole, "3.0", VARY, "--vary model.n") == 3 and convert(number, "1", VARY, "--vary x") == 1.0
    assert convert(Option("x", None), "[16,32]", TEXT) == [16, 32] and convert(Option("x", None), "abc", TEXT) == "abc"
    assert convert(Option("w", (list,), [1], label="model 'm' option w"), (2, 3), COMPONENT) == (2, 3)
    with pytest.raises(genkit.UsageError, match=r"^--beta 'x' is not a number; the KL weight\.$"):
        convert(number, "x", FLAG, "--beta")
    with pytest.raises(genkit.UsageError, match=r"^--n '2.5' must be a whole number; how many\.$"):
        convert(whole, "2.5", SAMPLING, "--n")
    with pytest.raises(genkit.UsageError, match=r"^--vary loss.beta value 'NaN' is not a finite number; give numbers "
                                                r"such as 0.5$"):
        convert(number, "NaN", VARY, "--vary loss.beta")
    with pytest.raises(genkit.UsageError, match=r"^model 'm' option n is 'x', but it must be a whole number, like n=3$"):
        convert(Option("n", (int,), 3, label="model 'm' option n"), "x", COMPONENT)
    with pytest.raises(genkit.UsageError, match=r"holds 18446744073709551616, outside the whole numbers"):
        convert(Option("n", (int,), 3, label="model 'm' option n"), [1, 2**64], COMPONENT)


def test_types_choices_and_bounds_are_read_from_annotations():
    assert declared(Annotated[float, Bounds(gt=0)], 1.0) == ((float,), None, Bounds(gt=0))
    assert declared(Literal["a", "b"], "a") == ((str,), ("a", "b"), None)
    assert declared(Optional[int], None) == ((int,), None, None) and declared(str | float, 0.1) == ((str, float), None, None)
    assert declared(list[int], [1]) == ((list,), None, None) and declared("list[int] | None", None) == ((list,), None, None)
    assert declared(nn.Module, None) == (None, None, None)
    assert declared(__import__("inspect").Parameter.empty, 3) == ((int,), None, None)


@pytest.mark.parametrize("bounds, inside, outside, words", [
    (Bounds(ge=1), [1, 10**30], [0, -1, math.nan, True, "1"], "1 or more"),
    (Bounds(gt=0, le=5), [1e-9, 5], [0, 5.5, math.inf], "above 0 and at most 5"),
    (Bounds(ge=0, lt=1), [0, 0.999], [1, -0.1], "at least 0 and below 1"),
    (Bounds(ge=0, le=1), [0, 1], [1.01], "from 0 to 1"),
    (Bounds(lt=0), [-1], [0], "below 0"),
])
def test_bounds_admit_finite_numbers_inside_and_say_their_range(bounds, inside, outside, words):
    assert all(bounds.admits(v) for v in inside) and not any(bounds.admits(v) for v in outside)
    assert bounds.describe() == words


def test_bounds_must_be_numbers_given_once_per_end():
    for bad in ({"ge": "0"}, {"ge": 0, "gt": 0}, {"le": math.inf}):
        with pytest.raises(TypeError):
            Bounds(**bad)
    assert "Bounds" in genkit.__all__ and genkit.Bounds is Bounds


# --- bounds, by every route -------------------------------------------------------------------------------

class BoundedModel(nn.Module):
    noise_shape = (4,)

    def __init__(self, image_shape, conditioner, depth: int):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.net = nn.Linear(4 + conditioner.dim, math.prod(image_shape))

    def forward(self, images, condition):
        noise = torch.randn(images.shape[0], 4)
        return genkit.ModelOutput(reconstruction=self.decode(noise, condition), mu=noise, logvar=torch.zeros_like(noise))

    def decode(self, z, condition):
        return torch.sigmoid(self.net(torch.cat([z, condition], 1))).reshape(-1, *self.image_shape)

    @torch.no_grad()
    def sample(self, condition, noise, generator=None, *,
               temperature: Annotated[float, genkit.Bounds(gt=0, le=5)] = 1.0):
        """Decode the noise.

        :param temperature: scale of the noise.
        """
        return self.decode(noise * temperature, condition)


class BoundedPlugin:
    @genkit.hookimpl
    def register_models(self, register):
        def build(image_shape, conditioner, depth: Annotated[int, genkit.Bounds(ge=1, le=4)] = 2):
            """A model whose options have bounds.

            :param depth: how deep, 1 to 4.
            """
            return BoundedModel(image_shape, conditioner, depth)

        register("bounded", build, flags=("depth",), default_loss="beta-elbo")


@pytest.fixture(scope="module")
def plugin():
    name = genkit.register_plugin(BoundedPlugin(), name="bounded-test")
    yield
    genkit.unregister_plugin(name)


@pytest.fixture(scope="module")
def bounded_run(plugin, tmp_path_factory):
    out = tmp_path_factory.mktemp("bounded") / "run"
    result = invoke(["train", "--model", "bounded", *TINY, "--out", out])
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("args", [["--depth", "9"], ["--model-opt", "depth=9"]])
def test_a_component_option_out_of_bounds_is_one_line_by_its_flag_and_by_model_opt(plugin, tmp_path, args):
    result = invoke(["train", "--model", "bounded", *TINY, *args, "--out", tmp_path / "run"])
    assert error_line(result) == f"error: {DEPTH}" and not (tmp_path / "run").exists()


@pytest.mark.parametrize("args", [["--vary", "model.depth=2,9"], ["--depth", "2,9"]])
def test_a_component_option_out_of_bounds_is_the_same_line_in_a_sweep(plugin, tmp_path, args):
    result = invoke(["sweep", "--out", tmp_path / "s", "--model", "bounded", *TINY, *args])
    assert error_line(result) == f"error: {DEPTH}" and not (tmp_path / "s").exists()


def test_a_component_option_out_of_bounds_is_the_same_line_by_the_api(plugin):
    with pytest.raises(genkit.UsageError) as caught:
        genkit.plan_run("bounded", "shapes", data_options={"count": 160}, image_size=8, model_options={"depth": 9})
    assert str(caught.value) == DEPTH
    assert genkit.plan_run("bounded", "shapes", data_options={"count": 160}, image_size=8,
                           model_options={"depth": 4}).model.options["depth"] == 4


@pytest.mark.parametrize("args", [["--temperature", "9"], ["--temperature=9"], ["--sample-opt", "temperature=9"]])
def test_a_sampling_option_out_of_bounds_is_one_line_by_its_flag_and_by_sample_opt(bounded_run, tmp_path, args):
    result = invoke(["sample", "--run", bounded_run, *args, "--out", tmp_path / "s.png"])
    assert error_line(result) == f"error: {TEMPERATURE}" and not (tmp_path / "s.png").exists()


def test_a_sampling_option_out_of_bounds_is_the_same_line_in_a_sweep_the_api_and_the_page(bounded_run, tmp_path):
    result = invoke(["sweep", "--out", tmp_path / "s", "--run", bounded_run, "--vary", "sample.temperature=1,9"])
    assert error_line(result) == f"error: {TEMPERATURE}"
    run = genkit.load_run(bounded_run, device="cpu")
    with pytest.raises(genkit.UsageError) as caught:
        run.sample("shape::circle", n=2, temperature=9)
    assert str(caught.value) == TEMPERATURE
    assert run.sample("shape::circle", n=2, temperature=5).shape == (2, 3, 8, 8)
    from genkit.serve.page import RunPage

    with pytest.raises(genkit.UsageError) as caught:
        RunPage(run, "bounded").grid("shape::circle", 2, 0, "off", {"temperature": 9})
    assert str(caught.value) == TEMPERATURE


def test_the_page_control_of_a_bounded_option_stops_at_its_ends(bounded_run):
    gr = pytest.importorskip("gradio")
    from genkit.serve.layout import _option_control

    option = genkit.load_run(bounded_run, device="cpu").sampling_options["temperature"]
    control = _option_control(gr, option, 1.0, 0)
    assert (control.minimum, control.maximum) == (0, 5)


@pytest.mark.parametrize("args", [["--epochs", "0"], ["--vary", "train.epochs=0,1"]])
def test_a_training_setting_out_of_bounds_is_the_same_line_by_flag_and_vary(tmp_path, args):
    command = ["train", *TINY, *args] if args[0] == "--epochs" else ["sweep", "--out", tmp_path / "s", *TINY, *args]
    assert error_line(invoke(command)) == "error: --epochs 0 must be a positive integer"
    with pytest.raises(genkit.UsageError, match=r"^--epochs 0 must be a positive integer$"):
        genkit.plan_run(data="shapes", data_options={"count": 160}, image_size=8, epochs=0)
