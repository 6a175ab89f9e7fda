"""Held-out attribute combinations (training never sees them; evaluation does) and the conformity metric."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
import torch

import genkit
from conftest import error_line, invoke
from genkit.evaluation.conformity import conformity_metrics, conforms
from genkit.data.holdout import held_out_rows, hold_out_values
from genkit.sampling.attributes import AttributeTable
from genkit.training.trainer import Trainer
from genkit_datasets.torch_dataset import CachedImageDataset

DATA = {"count": 320, "seed": 5}
HELD = "shape::circle+color::red"


def plan(tmp_path, hold_out, **train):
    return genkit.plan_run("cvae", "shapes", data_options=DATA, image_size=16, model_options={"latent_dim": 4},
                           hold_out=hold_out, batch_size=32, device="cpu", **train)


def test_held_out_images_never_reach_a_training_batch_and_stay_in_test(tmp_path):
    config = plan(tmp_path, [HELD], epochs=1)
    assert config.data.hold_out == [HELD]
    assert json.loads(config.to_json())["data"]["hold_out"] == [HELD]
    trainer = Trainer(config, tmp_path / "run")
    cache = trainer.train_set.path
    full = CachedImageDataset(cache, "train")
    held = held_out_rows(full.attributes.numpy(), config.data.attribute_names, [HELD])
    assert held.sum() == 23  # circle and red in the training split of this data
    seen = torch.cat([attributes for _, attributes in trainer.batches.epoch(1)])
    assert len(seen) == len(full) - 23
    assert not held_out_rows(seen.numpy(), config.data.attribute_names, [HELD]).any()
    test = CachedImageDataset(cache, "test")
    assert held_out_rows(test.attributes.numpy(), config.data.attribute_names, [HELD]).sum() == 3
    run = trainer.run()
    table = AttributeTable.load(run.directory, config.data.attribute_names)
    assert int(table.counts.sum()) == len(full) - 23  # --rest data never fills in to a held-out combination
    assert not held_out_rows(table.vectors.numpy(), config.data.attribute_names, [HELD]).any()
    assert json.loads((run.directory / "config.json").read_text())["data"]["hold_out"] == [HELD]


@pytest.mark.parametrize("hold_out, message", [
    (["wings+large"], "--hold-out 'wings+large': unknown attribute 'wings'; valid attributes: shape::circle"),
    (["shape::circle+"], "names no attribute between '+' signs"),
    ([""], "names no attribute"),
    (["-large+top"], "'-large' is negated"),
    (["large+large"], "lists 'large' twice"),
    (["shape::circle+shape::cross"], "'shape::circle' and 'shape::cross' are both values of 'shape'"),
    ([HELD, HELD], "is given twice"),
    (["color::red"], "--hold-out color::red leaves no training image with 'color::red' (a value of 'color')"),
    (["shape::circle", "shape::square", "shape::triangle", "shape::cross"],
     "leaves out every one of the 256 training images"),
])
def test_bad_hold_out_is_one_line_at_planning_and_writes_nothing(tmp_path, hold_out, message):
    args = ["train", "--data-opt", "count=320", "--data-opt", "seed=5", "--image-size", "16", "--out", tmp_path / "r"]
    for combination in hold_out:
        args += ["--hold-out", combination]
    line = error_line(invoke(args))
    assert message in line, line
    assert not (tmp_path / "r").exists()


def test_a_sweep_varies_the_held_out_combinations(tmp_path):
    from genkit.sweep.vary import parse_vary
    from genkit.sweep.plan import plan_sweep

    components = {"data": "shapes", "conditioner": "tiled-onehot", "model": "cvae", "loss": "gaussian-elbo"}
    varied = parse_vary([f"data.hold_out=none,{HELD},{HELD};shape::square+large"], components)
    assert varied[0].values == ("none", HELD, f"{HELD};shape::square+large")
    sweep = plan_sweep(varied, tmp_path / "sweep", data="shapes", data_options=DATA, image_size=16, epochs=1,
                       device="cpu")
    assert [c.data.hold_out for c in sweep.configs] == [[], [HELD], [HELD, "shape::square+large"]]
    assert [sweep.folder(i).name for i in range(3)] == [
        "hold_out-none", "hold_out-shape--circle+color--red", "hold_out-shape--circle+color--red-shape--square+large"]
    with pytest.raises(genkit.UsageError, match="is listed twice"):
        hold_out_values("none,none", "--vary data.hold_out")
    with pytest.raises(genkit.UsageError, match="unknown attribute 'wings'"):
        plan_sweep(parse_vary(["data.hold_out=wings+large"], components), tmp_path / "s2", data="shapes",
                   data_options=DATA, image_size=16, epochs=1, device="cpu")


# --- conformity, on a model and a classifier written by hand ----------------------------------------

class Painter(torch.nn.Module):
    """Paints channel k bright when attribute k is asked for, except that it never paints both at once."""

    noise_shape = (4,)

    def sample(self, condition, noise, generator=None):
        on = condition > 0.5
        both = on.all(dim=1, keepdim=True)
        painted = on & ~(both & torch.tensor([False, True]))  # the held-out pair loses its second attribute
        image = torch.zeros(len(condition), 3, 4, 4)
        image[:, :2] = painted.float()[:, :, None, None]
        return image


class Reader(torch.nn.Module):
    """Reads attribute k as on when channel k is bright."""

    def __init__(self):
        super().__init__()
        self.unit = torch.nn.Parameter(torch.ones(()))

    def forward(self, images):
        return (images[:, :2].mean(dim=(2, 3)) - 0.5) * self.unit


def hand_made_run(hold_out):
    config = types.SimpleNamespace(data=types.SimpleNamespace(hold_out=hold_out), model=types.SimpleNamespace(name="painter"))
    return types.SimpleNamespace(attribute_names=["a", "b"], model=Painter(), config=config, device=torch.device("cpu"))


def hand_made_split():
    vectors = torch.tensor([[0, 0], [1, 0], [0, 1], [1, 1], [1, 1], [0, 1]], dtype=torch.float32)
    images = torch.zeros(len(vectors), 3, 4, 4, dtype=torch.uint8)
    images[:, :2] = (vectors * 255).to(torch.uint8)[:, :, None, None]
    return types.SimpleNamespace(attributes=vectors, images_uint8=lambda: images)


def test_conformity_counts_samples_with_every_attribute_as_asked():
    assert conforms(torch.tensor([[True, False], [True, True]]), torch.tensor([[1.0, 0.0], [1.0, 0.0]])).tolist() == \
        [True, False]
    metrics = conformity_metrics(hand_made_run(["a+b"]), hand_made_split(), Reader(), seed=0)
    assert metrics["seen_conformity"] == 1.0 and metrics["heldout_conformity"] == 0.0
    details = metrics["conformity"]
    assert details["per_combination"] == {"a+b": 0.0} and details["heldout_images"] == 2
    assert details["heldout_samples"] == 16 and details["seen_samples"] == 32  # at most 8 per image
    assert details["classifier_heldout_conformity"] == 1.0  # the judge reads the real images right
    nothing = conformity_metrics(hand_made_run([]), hand_made_split(), Reader(), seed=0)
    assert nothing["heldout_conformity"] is None and nothing["seen_conformity"] == pytest.approx(4 / 6)


def test_evaluate_reports_seen_and_held_out_conformity(tiny_run, tmp_path):
    from genkit.evaluation.classifier import train_classifier
    from genkit.evaluation.metrics import evaluate_run
    from genkit.sampling.run import open_run_data

    config = plan(tmp_path, [HELD], epochs=1, limit=96)
    run = genkit.train(config, out_dir=tmp_path / "held")
    train_classifier(open_run_data(run), epochs=1, device="cpu")
    result = evaluate_run(run, samples=2, edits=False)
    assert result["heldout_conformity"] is not None and 0 <= result["seen_conformity"] <= 1
    assert result["conformity"]["hold_out"] == [HELD] and result["conformity"]["heldout_images"] == 3
    assert result["edit_success"] is None and result["edit_setup"] == {"skipped": "--no-edits"}
    edited = evaluate_run(run, samples=2)
    setup = edited["edit_setup"]
    assert setup["images"] == 32 and setup["method"] == "posterior" and setup["edits"] == 32 * 10
    assert 0 <= edited["edit_success"] <= 1 and edited["edit_psnr"] > 0 and edited["edit_cycle_psnr"] > 0
    assert set(edited["per_attribute_edit_success"]) == set(run.attribute_names)
    assert np.isclose(edited["heldout_conformity"], result["heldout_conformity"])  # seeded, edits or not
