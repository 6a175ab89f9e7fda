"""The bundled ``folder`` dataset: your own images and an attributes.csv."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import genkit
from conftest import cli
from genkit.cli.app import build_app
from genkit_datasets.folder import folder_index

runner = CliRunner()


def write_csv(root: Path, rows: list[str], header: str = "filename,smiling,hat") -> None:
    (root / "attributes.csv").write_text("\n".join([header, *rows]) + "\n")


def make_folder(root: Path, count: int = 24) -> Path:
    """``count`` small images (varied sizes, one grayscale JPEG) and their attributes.csv."""
    (root / "pics").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        smiling, hat = i % 2, (i // 2) % 2
        pixels = np.full((12 + i % 3, 10 + 2 * (i % 4), 3), 40, dtype=np.uint8)
        pixels[..., 0] = 200 * smiling
        pixels[..., 2] = 200 * hat
        if i == 0:
            Image.fromarray(pixels[..., 0]).save(root / "pics" / "000.jpg")  # single channel
            name = "pics/000.jpg"
        else:
            name = f"pics/{i:03d}.png"
            Image.fromarray(pixels).save(root / name)
        rows.append(f"{name},{smiling},{'+1' if hat else '-1'}")
    write_csv(root, rows)
    return root


def test_reads_names_values_and_keys(tmp_path):
    root = make_folder(tmp_path)
    index = folder_index(root)
    assert index.attribute_names == ["smiling", "hat"]
    assert len(index) == 24
    assert index.attributes[:4].tolist() == [[0, 0], [1, 0], [0, 1], [1, 1]]  # -1 -> 0, +1 -> 1
    assert index.key(3) == str(root / "pics/003.png")
    assert index.reader(0, (8, 8)).shape == (8, 8, 3)  # grayscale comes back as RGB
    assert index.reader(5, (6, 10)).dtype == np.uint8


def test_split_follows_the_file_name_not_the_row_order(tmp_path):
    root = make_folder(tmp_path / "a")
    index = folder_index(root)
    sizes = {k: len(v) for k, v in index.splits.items()}
    assert sizes == {"train": 18, "valid": 3, "test": 3}
    assert sorted(np.concatenate(list(index.splits.values())).tolist()) == list(range(24))

    def by_name(ix):
        return {ix.reader.files[i]: split for split, idx in ix.splits.items() for i in idx}

    lines = (root / "attributes.csv").read_text().splitlines()
    body = lines[1:]
    random.Random(0).shuffle(body)
    (root / "attributes.csv").write_text("\n".join([lines[0], *body]) + "\n")
    assert by_name(folder_index(root)) == by_name(index)


def test_split_column_assigns_splits(tmp_path):
    root = make_folder(tmp_path, count=4)
    rows = ["pics/000.jpg,1,0,train", "pics/001.png,0,1,TRAIN", "pics/002.png,1,1,val", "pics/003.png,0,0,test"]
    write_csv(root, rows, header="filename,smiling,hat,split")
    index = folder_index(root)
    assert index.attribute_names == ["smiling", "hat"]
    assert {k: v.tolist() for k, v in index.splits.items()} == {"train": [0, 1], "valid": [2], "test": [3]}


def test_fingerprint_follows_the_csv_and_the_images(tmp_path):
    root = make_folder(tmp_path)
    first = folder_index(root).fingerprint
    assert folder_index(root).fingerprint == first
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(root / "pics/005.png")
    second = folder_index(root).fingerprint
    assert second != first
    csv = root / "attributes.csv"
    csv.write_text(csv.read_text().replace("pics/005.png,1,-1", "pics/005.png,1,+1"))
    assert folder_index(root).fingerprint != second


@pytest.mark.parametrize("case, expected", [
    ("missing-csv", ["attributes.csv does not exist", "filename,<attr1>"]),
    ("missing-image", ["line 3", "'pics/nothere.png' does not exist"]),
    ("bad-value", ["line 4", "value '2' for attribute 'hat'", "0, 1, -1, +1"]),
    ("duplicate-column", ["line 1", "column 'smiling' appears twice"]),
    ("wrong-first-column", ["line 1", "first column is 'file'"]),
    ("short-row", ["line 2", "2 values, but the header has 3 columns"]),
    ("repeated-image", ["line 3", "'pics/001.png' is listed again (first on line 2)"]),
])
def test_bad_folder_is_a_usage_error_naming_file_line_and_value(tmp_path, case, expected):
    root = make_folder(tmp_path / "data", count=4)
    csv = root / "attributes.csv"
    good = ["pics/001.png,1,0", "pics/002.png,0,1", "pics/003.png,1,1"]
    if case == "missing-csv":
        csv.unlink()
    elif case == "missing-image":
        write_csv(root, [good[0], "pics/nothere.png,1,0"])
    elif case == "bad-value":
        write_csv(root, [good[0], good[1], "pics/003.png,1,2"])
    elif case == "duplicate-column":
        write_csv(root, ["pics/001.png,1,0,1"], header="filename,smiling,hat,smiling")
    elif case == "wrong-first-column":
        write_csv(root, good, header="file,smiling,hat")
    elif case == "short-row":
        write_csv(root, ["pics/001.png,1", *good])
    elif case == "repeated-image":
        write_csv(root, [good[0], good[0]])
    out = tmp_path / "run"
    code, message = cli("train", "--data", "folder", "--root", str(root), "--image-size", "8",
                            "--epochs", "1", "--out", str(out))
    assert code == 2, message
    assert str(csv) in message
    for part in expected:
        assert part in message
    assert not out.exists()  # nothing half-written


def test_no_root_and_bad_fractions_are_usage_errors():
    code, message = cli("data", "info", "--data", "folder")
    assert code == 2 and "--root" in message and "attributes.csv" in message
    code, message = cli("data", "info", "--data", "folder", "--root", ".", "--data-opt", "valid_fraction=0.6",
                            "--data-opt", "test_fraction=0.5")
    assert code == 2 and "leaves no training images" in message


def test_corrupt_image_is_named_by_its_path(tmp_path):
    root = make_folder(tmp_path, count=6)
    (root / "pics/004.png").write_bytes(b"not a png")
    code, message = cli("data", "prepare", "--data", "folder", "--root", str(root), "--image-size", "8",
                            "--workers", "1", "--cache-dir", str(tmp_path / "cache"))
    assert code == 2 and str(root / "pics/004.png") in message and "--skip-bad" in message


def test_train_and_sample_on_a_folder(tmp_path):
    root = make_folder(tmp_path / "data", count=24)
    out = tmp_path / "run"
    app = build_app()
    result = runner.invoke(app, ["train", "--model", "cvae", "--data", "folder", "--root", str(root),
                                 "--image-size", "8", "--epochs", "1", "--batch-size", "8", "--latent-dim", "4",
                                 "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["name"] == "folder"
    assert config["data"]["attribute_names"] == ["smiling", "hat"]
    run = genkit.load_run(out, device="cpu")
    assert run.sample("smiling,-hat", n=2).shape == (2, 3, 8, 8)
    result = runner.invoke(app, ["sample", "--run", str(out), "--attrs", "hat", "--n", "2",
                                 "--out", str(tmp_path / "s.png")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s.png").stat().st_size > 0
