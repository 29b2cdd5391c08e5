"""image_folder datasets built from a few PNG files written by the test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxcnn.data import DatasetError, load_dataset
from jaxcnn.data.image_folder import load_image_folder


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _rgb(value: int, size=(6, 8)) -> np.ndarray:
    img = np.zeros((*size, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = value, 255 - value, 7
    return img


def make_folder(root: Path, per_class: dict[str, int], size=(6, 8)) -> None:
    for c, (cname, n) in enumerate(per_class.items()):
        for i in range(n):
            _png(root / cname / f"{i:03d}.png", _rgb(10 * c + i, size))


def test_classes_sorted_labels_and_pixels(tmp_path):
    make_folder(tmp_path, {"zebra": 2, "ant": 3})  # written in non-sorted order
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden").mkdir()
    x, y, classes = load_image_folder(tmp_path)
    assert classes == ("ant", "zebra")
    assert x.shape == (5, 6, 8, 3) and x.dtype == np.uint8
    np.testing.assert_array_equal(y, [0, 0, 0, 1, 1])
    # ant was written with c=1 (values 10..12), zebra with c=0 (values 0..1).
    assert x[:, 0, 0, 0].tolist() == [10, 11, 12, 0, 1]
    np.testing.assert_array_equal(x[3], _rgb(0))


def test_resize_and_grayscale(tmp_path):
    make_folder(tmp_path, {"a": 2, "b": 2}, size=(10, 12))
    _png(tmp_path / "b" / "big.png", _rgb(99, size=(40, 30)))
    x, _, _ = load_image_folder(tmp_path, image_size=(5, 7))
    assert x.shape == (5, 5, 7, 3)
    x, _, _ = load_image_folder(tmp_path)  # default: the first image's size
    assert x.shape == (5, 10, 12, 3)
    # Sorted order: a/000, a/001, b/000, b/001, b/big -> the 40x30 image (resized) is last.
    assert np.all(x[4, ..., 0] == 99) and np.all(x[4, ..., 2] == 7)  # constant stays constant
    xg, _, _ = load_image_folder(tmp_path, image_size=4, grayscale=True)
    assert xg.shape == (5, 4, 4, 1)
    grey_root = tmp_path / "grey"
    _png(grey_root / "c0" / "a.png", np.full((3, 3), 50, np.uint8))
    _png(grey_root / "c1" / "b.png", np.full((3, 3), 200, np.uint8))
    xa, ya, _ = load_image_folder(grey_root)
    assert xa.shape == (2, 3, 3, 1) and xa[:, 0, 0, 0].tolist() == [50, 200] and ya.tolist() == [0, 1]


def test_load_dataset_flat_layout(tmp_path):
    make_folder(tmp_path, {"cat": 10, "dog": 10})
    splits = load_dataset("image_folder", data_dir=tmp_path, image_size=8, val_size=0.25, seed=1)
    sizes = [len(splits[k]) for k in ("train", "val", "test")]
    assert sizes == [13, 5, 2]  # test: 10% of 20; val: 25% of the remaining 18 (rounded)
    assert splits["train"].class_names == ("cat", "dog") and splits["train"].num_classes == 2
    assert splits["test"].class_counts().tolist() == [1, 1]
    assert splits["train"].images.shape[1:] == (8, 8, 3)


def test_load_dataset_train_test_subfolders(tmp_path):
    make_folder(tmp_path / "train", {"x": 4, "y": 4})
    make_folder(tmp_path / "test", {"y": 2})  # a test folder may lack a class
    splits = load_dataset("image_folder", data_dir=tmp_path, val_size=2)
    assert [len(splits[k]) for k in ("train", "val", "test")] == [6, 2, 2]
    assert splits["test"].labels.tolist() == [1, 1]  # 'y' keeps the training label
    make_folder(tmp_path / "val", {"x": 1})
    splits = load_dataset("image_folder", data_dir=tmp_path)
    assert [len(splits[k]) for k in ("train", "val", "test")] == [8, 1, 2]


def test_image_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match="needs data_dir"):
        load_dataset("image_folder")
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset("image_folder", data_dir=tmp_path / "missing")
    (tmp_path / "empty_root").mkdir()
    with pytest.raises(DatasetError, match="no class sub-folders"):
        load_image_folder(tmp_path / "empty_root")
    make_folder(tmp_path / "r", {"a": 1})
    (tmp_path / "r" / "b").mkdir()
    with pytest.raises(DatasetError, match="holds no images"):
        load_image_folder(tmp_path / "r")
    (tmp_path / "r" / "b" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="cannot read image .*broken.png"):
        load_image_folder(tmp_path / "r")
