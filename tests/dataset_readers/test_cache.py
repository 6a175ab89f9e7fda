"""The HDF5 cache on real-format CelebA and CUB fixtures: reuse, invalidation, crashes, pixels."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import genkit
from fixtures_real_formats import face_image, id_color, write_celeba, write_cub
from genkit.cli.app import build_app
from genkit_datasets.cache import cache_path, default_cache_dir, prepare_cache, read_cache_info
from genkit_datasets.celeba import celeba_index
from genkit_datasets.preprocess import center_crop_resize
from genkit_datasets.torch_dataset import CachedImageDataset

SIZE = (24, 20)


@pytest.fixture(scope="module")
def celeba(tmp_path_factory):
    return write_celeba(tmp_path_factory.mktemp("celeba"), counts=(8, 3, 3))


@pytest.fixture(scope="module")
def cub(tmp_path_factory):
    return write_cub(tmp_path_factory.mktemp("cub"), n_classes=3, per_class=10)


def _prepare(name, root, cache_dir, **kw):
    info, _ = genkit.prepare_dataset(name, root=root, image_size=kw.pop("image_size", SIZE), cache_dir=cache_dir,
                                     workers=kw.pop("workers", 1), **kw)
    return info


def _cached_images(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return f["images"][()].transpose(0, 2, 3, 1)


def test_cache_equals_direct_decoding_and_pairs_image_i_with_attribute_row_i(celeba, tmp_path):
    info = _prepare("celeba", celeba.root, tmp_path)
    images = _cached_images(info.path)
    with h5py.File(info.path, "r") as f:
        attributes = f["attributes"][()]
        splits = {k: v[()].tolist() for k, v in f["splits"].items()}
    np.testing.assert_array_equal(attributes, celeba.attributes)
    assert splits == {s: celeba.split(s) for s in ("train", "valid", "test")}
    for k, name in enumerate(celeba.files):
        with Image.open(celeba.image_dir / name) as image:
            np.testing.assert_array_equal(images[k], center_crop_resize(image, SIZE))
        # each image has its own colour: the cached row k really is file k
        assert np.abs(images[k].reshape(-1, 3).mean(0) - id_color(k + 1)).max() < 40


@pytest.mark.parametrize("crop_bbox", [False, True])
def test_cub_cache_equals_direct_decoding(cub, tmp_path, crop_bbox):
    info = _prepare("cub", cub.root, tmp_path, options={"crop_bbox": crop_bbox}, workers=2)
    images = _cached_images(info.path)
    for k, rel in enumerate(cub.paths):
        with Image.open(cub.base / "images" / rel) as image:
            if crop_bbox:
                x, y, w, h = cub.boxes[k]
                image = image.crop((int(x), int(y), int(x + w), int(y + h)))
            np.testing.assert_array_equal(images[k], center_crop_resize(image, SIZE))
    ds = CachedImageDataset(info.path, "test")
    assert ds.attributes.shape == (len(ds), len(cub.attribute_names) + 3)


def test_cache_is_reused_and_rebuilt_when_an_annotation_file_changes(tmp_path):
    fixture = write_celeba(tmp_path / "data", counts=(3, 1, 1))
    first = _prepare("celeba", fixture.root, tmp_path)
    assert first.built
    again = _prepare("celeba", fixture.root, tmp_path)
    assert not again.built and again.path == first.path and again.fingerprint == first.fingerprint

    path = fixture.annotation_files["attributes"]
    lines = path.read_bytes().split(b"\r\n")
    row = lines[2].split(b" ")
    row[1] = b"-1" if row[1] == b"1" else b"1"  # flip 5_o_Clock_Shadow of image 1, keeping the format
    lines[2] = b" ".join(row)
    path.write_bytes(b"\r\n".join(lines))
    rebuilt = _prepare("celeba", fixture.root, tmp_path)
    assert rebuilt.built and rebuilt.path == first.path and rebuilt.fingerprint != first.fingerprint
    with h5py.File(rebuilt.path, "r") as f:
        assert f["attributes"][0, 0] == 1 - fixture.attributes[0, 0]


def test_cache_is_rebuilt_when_the_image_list_changes(tmp_path):
    fixture = write_celeba(tmp_path / "data", counts=(3, 1, 1))
    first = _prepare("celeba", fixture.root, tmp_path)
    (fixture.image_dir / fixture.files[2]).unlink()
    rebuilt = _prepare("celeba", fixture.root, tmp_path, skip_bad=True)
    assert rebuilt.built and rebuilt.skipped == [str(fixture.image_dir / fixture.files[2])]
    assert rebuilt.split_sizes["train"] == first.split_sizes["train"] - 1


def test_an_interrupted_build_leaves_nothing_taken_for_a_cache(celeba, tmp_path, monkeypatch):
    index = celeba_index(celeba.root)
    path = cache_path("celeba", SIZE, {}, tmp_path)
    reader = index.reader

    def interrupted(i, size):
        if i == 9:
            raise KeyboardInterrupt
        return reader(i, size)

    index.reader = interrupted
    with pytest.raises(KeyboardInterrupt):
        prepare_cache("celeba", index, path, SIZE, workers=1)
    assert list(tmp_path.iterdir()) == []
    index.reader = reader
    assert prepare_cache("celeba", index, path, SIZE, workers=1).built


def test_leftover_partial_files_and_a_half_written_cache_are_not_used(celeba, tmp_path):
    index = celeba_index(celeba.root)
    path = cache_path("celeba", SIZE, {}, tmp_path)
    good = prepare_cache("celeba", index, path, SIZE, workers=1)
    data = path.read_bytes()
    dead = path.with_name(f"{path.name}.partial-999999999")
    dead.write_bytes(data)  # a complete-looking file from a build whose process died
    path.write_bytes(data[: len(data) // 2])  # a cache cut short (disk full, copy interrupted)
    assert read_cache_info(path) is None
    info = prepare_cache("celeba", index, path, SIZE, workers=1)
    assert info.built and info.fingerprint == good.fingerprint and not dead.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_corrupt_or_older_caches_are_rebuilt_through_the_cli(cub, tmp_path):
    args = ["data", "prepare", "--data", "cub", "--root", str(cub.root), "--image-size", "16", "--workers", "1",
            "--cache-dir", str(tmp_path)]
    runner = CliRunner()
    result = runner.invoke(build_app(), args)
    assert result.exit_code == 0 and "built" in result.output, result.output
    path = Path(result.stdout.strip())
    assert "reused" in runner.invoke(build_app(), args).output

    with h5py.File(path, "r+") as f:  # a cache written by an older genkit
        manifest = json.loads(f.attrs["manifest"])
        f.attrs["manifest"] = json.dumps({**manifest, "format_version": 0})
    result = runner.invoke(build_app(), args)
    assert result.exit_code == 0 and "built" in result.output, result.output

    path.write_bytes(b"\x89HDF\r\n\x1a\n" + os.urandom(2048))  # garbage behind an HDF5 signature
    result = runner.invoke(build_app(), args)
    assert result.exit_code == 0 and "built" in result.output and "Traceback" not in result.output
    assert read_cache_info(path) is not None


def test_dataloader_with_two_workers_reads_the_same_as_direct_reads(cub, tmp_path):
    info = _prepare("cub", cub.root, tmp_path)
    ds = CachedImageDataset(info.path, "train")
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, shuffle=False)
    images = torch.cat([batch[0] for batch in loader])
    attributes = torch.cat([batch[1] for batch in loader])
    with h5py.File(info.path, "r") as f:
        idx = f["splits"]["train"][()]
        expected = torch.from_numpy(f["images"][()][idx]).float() / 255
        expected_attributes = torch.from_numpy(f["attributes"][()][idx]).float()
    assert images.dtype == torch.float32 and 0 <= images.min() and images.max() <= 1
    torch.testing.assert_close(images, expected, rtol=0, atol=0)
    torch.testing.assert_close(attributes, expected_attributes, rtol=0, atol=0)
    in_ram = CachedImageDataset(info.path, "train", in_memory=True)
    torch.testing.assert_close(in_ram[3][0], ds[3][0], rtol=0, atol=0)
    rows = [5, 1, 5, 2, 3, 0]  # shuffled, repeated, with a run: a batch as a sampler asks for it
    batch = torch.stack([image for image, _ in ds.__getitems__(rows)])
    torch.testing.assert_close(batch, expected[rows], rtol=0, atol=0)
    torch.testing.assert_close(in_ram.images_uint8().float() / 255, expected, rtol=0, atol=0)


def test_cache_location_cache_dir_then_genkit_cache(celeba, tmp_path, monkeypatch):
    monkeypatch.setenv("GENKIT_CACHE", str(tmp_path / "env"))
    assert default_cache_dir() == tmp_path / "env"
    info, _ = genkit.prepare_dataset("celeba", root=celeba.root, image_size=8, workers=1)
    assert info.path.parent == tmp_path / "env" and info.path.name.startswith("celeba-8x8")
    info = _prepare("celeba", celeba.root, tmp_path / "flag", image_size=8)
    assert info.path.parent == tmp_path / "flag" and info.path.name.startswith("celeba-8x8")


def test_dataset_options_get_their_own_cache_file(cub, tmp_path):
    plain = _prepare("cub", cub.root, tmp_path, image_size=8)
    sure = _prepare("cub", cub.root, tmp_path, image_size=8, options={"min_certainty": 3})
    assert plain.path != sure.path and plain.path.exists() and sure.path.exists()
    assert sure.options["min_certainty"] == 3


def test_grayscale_source_images_are_cached_as_rgb(tmp_path):
    fixture = write_celeba(tmp_path / "data", counts=(2, 1, 1))
    face_image(1, 178, 218, gray=True).save(fixture.image_dir / fixture.files[0], quality=90)
    info = _prepare("celeba", fixture.root, tmp_path)
    image = _cached_images(info.path)[0]
    assert (image[..., 0] == image[..., 2]).all()


def test_long_runs_and_scattered_rows_read_the_same(tmp_path):
    info, _ = genkit.prepare_dataset("shapes", image_size=8, cache_dir=tmp_path, workers=1,
                                     options={"count": 400, "seed": 1})
    ds = CachedImageDataset(info.path, "train")
    with h5py.File(info.path, "r") as f:
        expected = f["images"][()][f["splits"]["train"][()]]
    np.testing.assert_array_equal(ds.images_uint8().numpy(), expected)  # one run of 320 images
    rows = [*range(3, 300), 0, 310, 2, 2]
    np.testing.assert_array_equal(ds.read_uint8(rows)[0].numpy(), expected[rows])
