"""The ``celeba`` dataset on folders in the real formats (both layouts, CRLF, padded values)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import genkit
from conftest import cli, invoke
from fixtures_real_formats import CELEBA_LAYOUTS, CELEBA_NAMES, face_image, write_celeba
from genkit_datasets.celeba import URL, celeba_index, parse_attributes

REAL_SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "real-samples"


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    return write_celeba(tmp_path_factory.mktemp("celeba-official"), layout="official")


@pytest.mark.parametrize("layout", CELEBA_LAYOUTS)
@pytest.mark.parametrize("point_at", ["root", "folder"])
def test_every_layout_reads_attributes_and_splits_exactly(tmp_path, layout, point_at):
    fixture = write_celeba(tmp_path, layout=layout, counts=(5, 2, 3))
    index = celeba_index(fixture.root if point_at == "root" else fixture.folder)
    assert index.attribute_names == CELEBA_NAMES
    np.testing.assert_array_equal(index.attributes, fixture.attributes)
    for split in ("train", "valid", "test"):
        assert index.splits[split].tolist() == fixture.split(split)
    assert [Path(index.key(i)).name for i in range(len(index))] == fixture.files


def test_attributes_equal_torchvision_celeba(tmp_path, monkeypatch):
    torchvision = pytest.importorskip("torchvision")
    write_celeba(tmp_path, layout="torchvision", counts=(7, 3, 4))
    monkeypatch.setattr(torchvision.datasets.CelebA, "_check_integrity", lambda self: True)
    ours = celeba_index(tmp_path)
    for split in ("train", "valid", "test"):
        theirs = torchvision.datasets.CelebA(str(tmp_path), split=split, target_type="attr")
        idx = ours.splits[split]
        np.testing.assert_array_equal(ours.attributes[idx], theirs.attr.numpy())
        assert [Path(ours.key(i)).name for i in idx] == list(theirs.filename)
        assert [n for n in theirs.attr_names if n] == ours.attribute_names


@pytest.mark.skipif(not (REAL_SAMPLES / "celeba_list_attr_celeba_head.txt").exists(),
                    reason="../shared/real-samples not present")
def test_real_excerpt_parses_and_its_count_line_is_checked(tmp_path):
    real = REAL_SAMPLES / "celeba_list_attr_celeba_head.txt"
    table = parse_attributes(real)
    assert table.declared_count == 202599 and len(table.files) == 1999
    assert table.names == CELEBA_NAMES
    lines = real.read_bytes().decode().split("\r\n")[2:-1]
    expected = np.array([[v == "1" for v in line.split()[1:]] for line in lines], dtype=np.uint8)
    np.testing.assert_array_equal(table.values, expected)
    assert table.files[0] == "000001.jpg" and table.files[-1] == "001999.jpg"
    # The excerpt's count line says 202599: a folder holding it is refused, naming the file.
    fixture = write_celeba(tmp_path, counts=(2, 1, 1))
    shutil.copyfile(real, fixture.annotation_files["attributes"])
    with pytest.raises(genkit.UsageError, match=r"list_attr_celeba.txt declares 202599 images .* holds 1999 rows"):
        celeba_index(tmp_path)


def test_native_size_is_reachable_and_square_sizes_crop_the_centre(official):
    index = celeba_index(official.root)
    with Image.open(official.image_dir / official.files[0]) as image:
        native = np.asarray(image.convert("RGB"))
        cropped = image.convert("RGB").crop((0, 20, 178, 198)).resize((64, 64), Image.Resampling.BICUBIC)
    np.testing.assert_array_equal(index.reader(0, (218, 178)), native)
    np.testing.assert_array_equal(index.reader(0, (64, 64)), np.asarray(cropped))


def _replace_line(path: Path, lineno: int, text: str | None) -> None:
    lines = path.read_bytes().split(b"\r\n")
    if text is None:
        del lines[lineno - 1]
    else:
        lines[lineno - 1] = text.encode()
    path.write_bytes(b"\r\n".join(lines))


@pytest.mark.parametrize("file, lineno, text, message", [
    ("attributes", 5, "000003.jpg 1 -1  1", r"list_attr_celeba.txt, line 5: expected an image name and 40 values"),
    ("attributes", 4, "000002.jpg 2" + " -1" * 39, r"list_attr_celeba.txt, line 4: expected"),
    ("attributes", 1, "many", r"list_attr_celeba.txt, line 1: expected the image count"),
    ("partition", 3, "000003.jpg 7", r"list_eval_partition.txt, line 3: expected an image name and a split code"),
    ("partition", 14, None, r"list_attr_celeba.txt lists 14 images but .*list_eval_partition.txt lists 13"),
    ("attributes", 16, None, r"list_attr_celeba.txt declares 14 images on line 1 but holds 13 rows"),
])
def test_malformed_annotation_files_name_the_file_and_line(tmp_path, file, lineno, text, message):
    fixture = write_celeba(tmp_path)
    _replace_line(fixture.annotation_files[file], lineno, text)
    with pytest.raises(genkit.UsageError, match=message):
        celeba_index(tmp_path)
    code, output = cli("data", "prepare", "--data", "celeba", "--root", str(tmp_path))
    assert code == 2 and re.search(message, output), output


def test_missing_files_say_where_they_were_looked_for_and_where_to_get_celeba(tmp_path):
    fixture = write_celeba(tmp_path)
    fixture.annotation_files["partition"].unlink()
    with pytest.raises(genkit.UsageError) as caught:
        celeba_index(tmp_path)
    message = str(caught.value)
    assert "list_eval_partition.txt not found" in message
    assert str(tmp_path / "Eval" / "list_eval_partition.txt") in message and URL in message

    shutil.rmtree(tmp_path / "Anno")
    code, output = cli("data", "prepare", "--data", "celeba", "--root", str(tmp_path))
    assert code == 2 and "list_attr_celeba.txt not found" in output and URL in output


def test_zipped_images_ask_to_unzip(tmp_path):
    fixture = write_celeba(tmp_path, counts=(2, 1, 1))
    shutil.rmtree(fixture.image_dir)
    (tmp_path / "Img" / "img_align_celeba.zip").write_bytes(b"PK\x05\x06" + bytes(18))
    with pytest.raises(genkit.UsageError, match=r"still zipped in .*img_align_celeba.zip; unzip it"):
        celeba_index(tmp_path)


def test_wrong_images_folder_is_refused(tmp_path):
    fixture = write_celeba(tmp_path, counts=(2, 1, 1))
    for path in fixture.image_dir.iterdir():
        path.unlink()
    face_image(1, 178, 218).save(fixture.image_dir / "other.jpg")
    with pytest.raises(genkit.UsageError, match=r"holds none of the 4 images listed in"):
        celeba_index(tmp_path)


def test_cli_prepare_and_info_on_celeba(official, tmp_path):
    code, output = cli("data", "prepare", "--data", "celeba", "--root", str(official.root),
                       "--image-size", "218x178", "--workers", "1", "--cache-dir", str(tmp_path))
    assert code == 0, output
    assert "14 images 218x178, 40 attributes" in output and str(tmp_path / "celeba-218x178") in output
    result = invoke(["data", "info", "--data", "celeba", "--root", str(official.root),
                                         "--image-size", "218x178", "--cache-dir", str(tmp_path), "--json"])
    info = json.loads(result.stdout)
    assert info["splits"] == {"train": 8, "valid": 3, "test": 3}
    assert info["attribute_names"] == CELEBA_NAMES and info["cache_ready"] is True


def test_root_from_genkit_data_root_or_a_clear_error(tmp_path, monkeypatch):
    write_celeba(tmp_path, layout="torchvision", counts=(2, 1, 1))
    monkeypatch.setenv("GENKIT_DATA_ROOT", str(tmp_path))
    index = genkit.load_dataset("celeba", split="valid", image_size=16, cache_dir=tmp_path / "cache")
    assert len(index) == 1
    monkeypatch.delenv("GENKIT_DATA_ROOT")
    code, output = cli("data", "prepare", "--data", "celeba")
    assert code == 2 and "GENKIT_DATA_ROOT" in output and URL in output

