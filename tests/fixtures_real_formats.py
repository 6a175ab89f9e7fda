"""Tiny CelebA and CUB-200-2011 folders written in the exact on-disk formats of the real releases.

The quirks are the real ones (see docs/datasets.md): CelebA's CRLF line endings, count line,
header with a trailing space and 2-wide padded values; CUB's ``attributes.txt`` beside, inside or
under ``attributes/`` of ``CUB_200_2011/``, rows with a sixth field, grayscale JPEGs, and folder
and file names that differ in case. Every image has its own colour (:func:`id_color`), so a test
can tell which file a cached image came from. Nothing here imports genkit: the fixtures are the
independent truth the readers are checked against.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

CELEBA_NAMES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()
LANDMARK_NAMES = ("lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y "
                  "rightmouth_x rightmouth_y").split()
CELEBA_LAYOUTS = ("official", "official-unzipped", "torchvision")
CUB_ATTRIBUTE_PLACES = ("beside", "inside", "attributes_dir")
CUB_SPECIES = ["Black_footed_Albatross", "Laysan_Albatross", "Sooty_Albatross", "Groove_billed_Ani",
               "Crested_Auklet", "Least_Auklet", "Parakeet_Auklet", "Rhinoceros_Auklet"]
CUB_ATTRIBUTES = ["has_bill_shape::curved_(up_or_down)", "has_bill_shape::dagger", "has_bill_shape::hooked",
                  "has_wing_color::blue", "has_wing_color::brown", "has_wing_color::iridescent",
                  "has_upperparts_color::buff", "has_breast_pattern::solid", "has_back_color::rufous",
                  "has_size::small_(5_-_9_in)", "has_size::very_large_(32_-_72_in)",
                  "has_bill_length::about_the_same_as_head", "has_wing_pattern::multi-colored"]


def id_color(i: int) -> tuple[int, int, int]:
    """The flat colour of image id ``i`` (distinct for the ids the fixtures use)."""
    return (40 + (i * 53) % 180, 40 + (i * 97) % 180, 40 + (i * 29) % 180)


def face_image(i: int, width: int, height: int, gray: bool = False) -> Image.Image:
    """An image of id ``i``: its colour, with a gradient and a bar so resizing has work to do."""
    color = np.array(id_color(i), dtype=np.float32)
    ramp = np.linspace(-25, 25, width, dtype=np.float32)[None, :, None]
    pixels = np.clip(color[None, None, :] + ramp, 0, 255).repeat(height, axis=0)
    pixels[height // 3: height // 3 + max(2, height // 10), width // 4: 3 * width // 4] = 250
    image = Image.fromarray(pixels.astype(np.uint8))
    return image.convert("L") if gray else image


def _crlf(lines: list[str]) -> bytes:
    return "".join(line + "\r\n" for line in lines).encode()


@dataclass
class CelebAFixture:
    root: Path            # what to pass as --root
    folder: Path          # the folder that holds the files (root, or root/celeba)
    image_dir: Path
    files: list[str]
    attributes: np.ndarray  # (N, 40) 0/1
    partition: np.ndarray   # (N,) 0 train, 1 valid, 2 test
    annotation_files: dict[str, Path] = field(default_factory=dict)

    def split(self, name: str) -> list[int]:
        code = {"train": 0, "valid": 1, "test": 2}[name]
        return [k for k, c in enumerate(self.partition.tolist()) if c == code]


def write_celeba(root: Path, layout: str = "official", counts: tuple[int, int, int] = (8, 3, 3),
                 size: tuple[int, int] = (218, 178), seed: int = 0) -> CelebAFixture:
    """A CelebA copy with ``counts`` train/valid/test images of ``size`` (H, W) in ``layout``.

    ``official``: ``Img/img_align_celeba/``, ``Anno/``, ``Eval/``; ``official-unzipped``: the
    images folder directly beside ``Anno/``; ``torchvision``: everything flat in ``root/celeba/``
    (``root`` is then the parent, as torchvision's ``root`` argument).
    """
    assert layout in CELEBA_LAYOUTS
    rng = np.random.default_rng(seed)
    n = sum(counts)
    files = [f"{i:06d}.jpg" for i in range(1, n + 1)]
    values = rng.choice([-1, 1], size=(n, len(CELEBA_NAMES)))
    partition = np.repeat([0, 1, 2], counts)
    if layout == "torchvision":
        folder = root / "celeba"
        anno = evald = folder
        image_dir = folder / "img_align_celeba"
    else:
        folder = anno_parent = root
        anno, evald = anno_parent / "Anno", anno_parent / "Eval"
        image_dir = root / "Img" / "img_align_celeba" if layout == "official" else root / "img_align_celeba"
    for d in (anno, evald, image_dir):
        d.mkdir(parents=True, exist_ok=True)

    attr_lines = [str(n), " ".join(CELEBA_NAMES) + " "]
    for name, row in zip(files, values.tolist()):
        attr_lines.append(f"{name} {row[0]}" + "".join(f" {v:2d}" for v in row[1:]))
    paths = {
        "attributes": anno / "list_attr_celeba.txt",
        "partition": evald / "list_eval_partition.txt",
        "identity": anno / "identity_CelebA.txt",
        "bbox": anno / "list_bbox_celeba.txt",
        "landmarks": anno / "list_landmarks_align_celeba.txt",
    }
    paths["attributes"].write_bytes(_crlf(attr_lines))
    paths["partition"].write_bytes(_crlf([f"{f} {c}" for f, c in zip(files, partition.tolist())]))
    paths["identity"].write_bytes(_crlf([f"{f} {int(rng.integers(1, 10178))}" for f in files]))
    bbox = [str(n), "image_id x_1 y_1 width height "]
    bbox += [f"{f} {int(rng.integers(0, 400)):5d} {int(rng.integers(0, 300)):4d} {int(rng.integers(50, 500)):4d}"
             f" {int(rng.integers(50, 600)):4d}" for f in files]
    paths["bbox"].write_bytes(_crlf(bbox))
    marks = [str(n), " ".join(LANDMARK_NAMES) + " "]
    marks += [f + "".join(f" {int(v):4d}" for v in rng.integers(60, 160, 10)) for f in files]
    paths["landmarks"].write_bytes(_crlf(marks))

    height, width = size
    for i, name in enumerate(files, start=1):
        face_image(i, width, height).save(image_dir / name, quality=90)
    return CelebAFixture(root=root, folder=folder, image_dir=image_dir, files=files,
                         attributes=(values == 1).astype(np.uint8), partition=partition, annotation_files=paths)


@dataclass
class CubFixture:
    root: Path            # the folder holding CUB_200_2011/ (what to pass as --root)
    base: Path            # root / CUB_200_2011
    paths: list[str]      # images.txt paths, by id (id k+1 at position k)
    class_index: np.ndarray   # (N,) 0-based position in classes.txt
    species: list[str]
    attribute_names: list[str]
    present: np.ndarray   # (N, A) 0/1 as in image_attribute_labels.txt
    certainty: np.ndarray  # (N, A) 1-4
    is_train: np.ndarray  # (N,) 1 train, 0 test
    boxes: np.ndarray     # (N, 4) x, y, w, h
    gray: list[int]       # ids of single-channel JPEGs

    @property
    def attributes_txt(self) -> Path:
        for p in (self.root / "attributes.txt", self.base / "attributes.txt",
                  self.base / "attributes" / "attributes.txt"):
            if p.exists():
                return p
        raise FileNotFoundError("attributes.txt")

    def file(self, name: str) -> Path:
        return self.base / name


def write_cub(root: Path, n_classes: int = 3, per_class: int = 8, attributes_at: str = "beside",
              attribute_names: list[str] | None = None, seed: int = 0) -> CubFixture:
    """A CUB-200-2011 copy as the archive unpacks, ``n_classes`` x ``per_class`` small images."""
    assert attributes_at in CUB_ATTRIBUTE_PLACES
    rng = np.random.default_rng(seed)
    shuffle = random.Random(seed)
    names = list(attribute_names or CUB_ATTRIBUTES)
    species = [CUB_SPECIES[k] if k < len(CUB_SPECIES) else f"Species_number_{k + 1}_bird" for k in range(n_classes)]
    base = root / "CUB_200_2011"
    (base / "attributes").mkdir(parents=True, exist_ok=True)
    (base / "parts").mkdir(exist_ok=True)
    n = n_classes * per_class
    paths, class_index = [], []
    for c, sp in enumerate(species):
        folder = f"{c + 1:03d}.{sp}"
        stem = "_".join(w.capitalize() for w in sp.split("_"))  # Black_footed -> Black_Footed
        for j in range(per_class):
            paths.append(f"{folder}/{stem}_{rng.integers(1, 9999):04d}_{100 + len(paths)}.jpg")
            class_index.append(c)
    class_index = np.array(class_index)
    is_train = np.array([shuffle.random() < 0.5 for _ in range(n)], dtype=np.int64)
    is_train[:2] = (1, 0)
    present = rng.integers(0, 2, (n, len(names)))
    certainty = rng.integers(1, 5, (n, len(names)))
    gray = [i for i in range(1, n + 1) if i % 5 == 2]
    boxes = np.zeros((n, 4))
    for k, rel in enumerate(paths):
        i = k + 1
        width, height = int(rng.integers(60, 110)), int(rng.integers(50, 90))
        (base / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        face_image(i, width, height, gray=i in gray).save(base / "images" / rel, quality=90)
        x, y = float(rng.integers(0, width // 3)), float(rng.integers(0, height // 3))
        boxes[k] = (x, y, float(rng.integers(width // 3, width - x)), float(rng.integers(height // 3, height - y)))

    def write(path: Path, lines: list[str]) -> None:
        path.write_text("".join(line + "\n" for line in lines))

    write(base / "images.txt", [f"{k + 1} {p}" for k, p in enumerate(paths)])
    write(base / "classes.txt", [f"{c + 1} {c + 1:03d}.{sp}" for c, sp in enumerate(species)])
    write(base / "image_class_labels.txt", [f"{k + 1} {c + 1}" for k, c in enumerate(class_index.tolist())])
    write(base / "train_test_split.txt", [f"{k + 1} {t}" for k, t in enumerate(is_train.tolist())])
    write(base / "bounding_boxes.txt",
          [f"{k + 1} {x:.1f} {y:.1f} {w:.1f} {h:.1f}" for k, (x, y, w, h) in enumerate(boxes)])
    attribute_lines = [f"{a + 1} {name}" for a, name in enumerate(names)]
    where = {"beside": root / "attributes.txt", "inside": base / "attributes.txt",
             "attributes_dir": base / "attributes" / "attributes.txt"}[attributes_at]
    write(where, attribute_lines)
    write(base / "attributes" / "certainties.txt", ["1 not visible", "2 guessing", "3 probably", "4 definitely"])
    rows = []
    for k in range(n):
        for a in range(len(names)):
            row = f"{k + 1} {a + 1} {present[k, a]} {certainty[k, a]} {rng.uniform(0, 40):.4f}"
            if (k * len(names) + a) % 23 == 5:  # a few real rows carry a sixth field
                row += " 0"
            rows.append(row)
    write(base / "attributes" / "image_attribute_labels.txt", rows)
    write(base / "attributes" / "class_attribute_labels_continuous.txt",
          [" ".join(f"{v:.6f}" for v in rng.uniform(0, 100, len(names))) for _ in species])
    write(base / "parts" / "parts.txt", ["1 back", "2 beak", "3 belly"])
    write(base / "README", ["CUB-200-2011: 200 categories, 11,788 images, 322 binary attributes",
                            "attributes/attributes.txt: the attribute names"])
    return CubFixture(root=root, base=base, paths=paths, class_index=class_index, species=species,
                      attribute_names=names, present=present.astype(np.uint8), certainty=certainty,
                      is_train=is_train, boxes=boxes, gray=gray)
