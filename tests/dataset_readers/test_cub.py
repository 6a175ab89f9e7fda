"""The ``cub`` dataset on folders in the real CUB-200-2011 formats."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import genkit
from conftest import cli
from fixtures_real_formats import CUB_ATTRIBUTE_PLACES, write_cub
from genkit_datasets.cub import URL, cub_index, parse_named
from genkit_datasets.preprocess import center_crop_resize

REAL_SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "real-samples"


@pytest.fixture(scope="module")
def cub(tmp_path_factory):
    return write_cub(tmp_path_factory.mktemp("cub"), n_classes=3, per_class=10)


def _expected_splits(is_train: np.ndarray, every: int = 10) -> dict[str, list[int]]:
    train = [k for k, t in enumerate(is_train.tolist()) if t == 1]
    valid = train[every - 1::every]
    return {"train": [k for k in train if k not in valid], "valid": valid,
            "test": [k for k, t in enumerate(is_train.tolist()) if t == 0]}


@pytest.mark.parametrize("place", CUB_ATTRIBUTE_PLACES)
@pytest.mark.parametrize("point_at", ["root", "CUB_200_2011"])
def test_attributes_then_species_one_hot_in_file_order(tmp_path, place, point_at):
    fixture = write_cub(tmp_path, n_classes=3, per_class=4, attributes_at=place)
    index = cub_index(fixture.root if point_at == "root" else fixture.base)
    assert index.attribute_names == fixture.attribute_names + [f"species::{s}" for s in fixture.species]
    assert "species::Black_footed_Albatross" in index.attribute_names
    a = len(fixture.attribute_names)
    np.testing.assert_array_equal(index.attributes[:, :a], fixture.present)
    np.testing.assert_array_equal(index.attributes[:, a:].argmax(1), fixture.class_index)
    assert (index.attributes[:, a:].sum(1) == 1).all()
    assert [index.key(i) for i in range(len(index))] == [str(fixture.base / "images" / p) for p in fixture.paths]


def test_splits_follow_train_test_split_with_every_tenth_training_image_as_valid(cub):
    index = cub_index(cub.root)
    assert {k: v.tolist() for k, v in index.splits.items()} == _expected_splits(cub.is_train)
    assert len(index.splits["valid"]) >= 1
    no_valid = cub_index(cub.root, valid_every=0)
    assert set(no_valid.splits) == {"train", "test"}
    assert no_valid.splits["train"].tolist() == np.flatnonzero(cub.is_train).tolist()


def test_rows_with_a_sixth_field_are_kept(cub):
    labels = (cub.base / "attributes" / "image_attribute_labels.txt").read_text().splitlines()
    six = [line.split() for line in labels if len(line.split()) == 6]
    assert six, "the fixture must hold six-field rows"
    index = cub_index(cub.root)
    for image_id, attribute_id, present, _certainty, *_ in six:
        assert index.attributes[int(image_id) - 1, int(attribute_id) - 1] == int(present)


def test_min_certainty_counts_only_sure_attributes(cub):
    index = cub_index(cub.root, min_certainty=3)
    a = len(cub.attribute_names)
    expected = (cub.present == 1) & (cub.certainty >= 3)
    np.testing.assert_array_equal(index.attributes[:, :a], expected.astype(np.uint8))
    assert index.fingerprint != cub_index(cub.root).fingerprint


def test_grayscale_jpegs_come_out_rgb_and_paths_keep_their_case(cub):
    index = cub_index(cub.root)
    k = cub.gray[0] - 1
    with Image.open(cub.base / "images" / cub.paths[k]) as image:
        assert image.mode == "L"
    pixels = index.reader(k, (24, 24))
    assert pixels.shape == (24, 24, 3)
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    assert "001.Black_footed_Albatross/Black_Footed_Albatross_" in index.key(0)


def test_crop_bbox_crops_to_the_box_before_the_centre_crop(cub):
    index = cub_index(cub.root, crop_bbox=True)
    plain = cub_index(cub.root)
    k = 3
    x, y, w, h = cub.boxes[k]
    with Image.open(cub.base / "images" / cub.paths[k]) as image:
        expected = center_crop_resize(image.crop((int(x), int(y), int(x + w), int(y + h))), (20, 20))
    np.testing.assert_array_equal(index.reader(k, (20, 20)), expected)
    assert not np.array_equal(plain.reader(k, (20, 20)), expected)
    assert "bounding box" in index.crop


def test_the_paper_size_244_is_reachable(cub):
    assert cub_index(cub.root).reader(0, (244, 244)).shape == (244, 244, 3)


def _names_312() -> list[str]:
    real = REAL_SAMPLES / "cub_attributes.txt"
    if real.exists():
        return parse_named(real)[1]
    return [f"has_group_{k // 12}::value_{k % 12}" for k in range(312)]


def test_full_size_condition_has_512_values(tmp_path):
    names = _names_312()
    fixture = write_cub(tmp_path, n_classes=200, per_class=1, attribute_names=names)
    index = cub_index(tmp_path)
    assert len(index.attribute_names) == 512
    assert index.attribute_names[:312] == names and index.attribute_names[312] == "species::Black_footed_Albatross"
    np.testing.assert_array_equal(index.attributes[:, :312], fixture.present)


@pytest.mark.skipif(not (REAL_SAMPLES / "cub_attributes.txt").exists(), reason="../shared/real-samples not present")
def test_real_attribute_names_parse():
    ids, names = parse_named(REAL_SAMPLES / "cub_attributes.txt")
    assert ids == list(range(1, 313)) and len(set(names)) == 312
    assert names[0] == "has_bill_shape::curved_(up_or_down)"
    assert len({n.split("::")[0] for n in names}) == 28


def _edit(path: Path, lineno: int, text: str | None) -> None:
    lines = path.read_text().split("\n")
    if text is None:
        del lines[lineno - 1]
    else:
        lines[lineno - 1] = text
    path.write_text("\n".join(lines))


@pytest.mark.parametrize("file, lineno, text, message", [
    ("attributes/image_attribute_labels.txt", 40, "4 1 0", r"image_attribute_labels.txt, line 40: expected"),
    ("attributes/image_attribute_labels.txt", 41, "4 2 1 9 3.0", r"image_attribute_labels.txt, line 41: expected"),
    ("attributes/image_attribute_labels.txt", 12 * 13, None,
     r"image_attribute_labels.txt has 0 rows for image 12 and attribute 13, expected 1"),
    ("images.txt", 3, "3", r"images.txt, line 3: expected '<image_id> <relative path>'"),
    ("train_test_split.txt", 5, "5 2", r"train_test_split.txt, line 5: expected"),
    ("train_test_split.txt", 12, None, r"images.txt lists 12 images but .*train_test_split.txt lists 11"),
    ("image_class_labels.txt", 2, "2 9", r"image_class_labels.txt, line 2: expected"),
])
def test_malformed_annotation_files_name_the_file_and_line(tmp_path, file, lineno, text, message):
    fixture = write_cub(tmp_path, n_classes=3, per_class=4)
    _edit(fixture.base / file, lineno, text)
    with pytest.raises(genkit.UsageError, match=message):
        cub_index(tmp_path)
    code, output = cli("data", "prepare", "--data", "cub", "--root", str(tmp_path))
    assert code == 2 and re.search(message, output), output


def test_missing_attributes_txt_lists_all_three_places_and_the_source(tmp_path):
    fixture = write_cub(tmp_path, n_classes=2, per_class=2)
    fixture.attributes_txt.unlink()
    code, output = cli("data", "prepare", "--data", "cub", "--root", str(tmp_path))
    assert code == 2, output
    for place in (tmp_path / "attributes.txt", fixture.base / "attributes.txt",
                  fixture.base / "attributes" / "attributes.txt"):
        assert str(place) in output
    assert URL in output
    code, output = cli("data", "prepare", "--data", "cub", "--root", str(tmp_path / "nowhere"))
    assert code == 2 and "does not exist" in output and URL in output


def test_bad_options_are_refused(cub):
    code, output = cli("data", "info", "--data", "cub", "--root", str(cub.root), "--data-opt", "min_certainty=7")
    assert code == 2 and "min_certainty=7 is not valid" in output
    with pytest.raises(genkit.UsageError, match="no option 'certainty'"):
        genkit.prepare_dataset("cub", root=cub.root, options={"certainty": 3})


def test_corrupt_image_is_named_and_skip_bad_skips_it(tmp_path):
    fixture = write_cub(tmp_path / "data", n_classes=2, per_class=5)
    bad = fixture.base / "images" / fixture.paths[4]
    bad.write_bytes(bad.read_bytes()[:200])  # a truncated JPEG
    cache = tmp_path / "cache"
    code, output = cli("data", "prepare", "--data", "cub", "--root", str(fixture.root), "--image-size", "16",
                       "--workers", "1", "--cache-dir", str(cache))
    assert code == 2 and fixture.paths[4] in output and "--skip-bad" in output, output
    assert not any(cache.iterdir())
    code, output = cli("data", "prepare", "--data", "cub", "--root", str(fixture.root), "--image-size", "16",
                       "--workers", "1", "--cache-dir", str(cache), "--skip-bad")
    assert code == 0 and "skipped 1 unreadable images" in output, output


def test_cli_prepare_then_train_cvae_on_cub(cub, tmp_path):
    code, output = cli("data", "prepare", "--data", "cub", "--root", str(cub.root), "--image-size", "32",
                       "--workers", "2", "--cache-dir", str(tmp_path / "cache"))
    assert code == 0, output
    assert "30 images 32x32, 16 attributes" in output
    code, output = cli("train", "--model", "cvae", "--data", "cub", "--root", str(cub.root), "--image-size", "32",
                       "--epochs", "1", "--batch-size", "8", "--cache-dir", str(tmp_path / "cache"),
                       "--out", str(tmp_path / "run"))
    assert code == 0, output
    assert (tmp_path / "run" / "samples" / "epoch_001.png").exists()
    run = genkit.load_run(tmp_path / "run")
    assert run.config.data.attribute_names[-1] == "species::Sooty_Albatross"
