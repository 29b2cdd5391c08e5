"""CIFAR python-batch reader on tiny batches written by the test."""

from __future__ import annotations

import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from jaxcnn.data import DatasetError, load_dataset
from jaxcnn.data.cifar import load_cifar_split, write_cifar_batch


def write_cifar10(folder: Path, per_batch: int = 6, n_test: int = 10, seed: int = 0) -> dict:
    """Write cifar-10-batches-py/ with 5 train batches, a test batch and batches.meta."""
    rng = np.random.default_rng(seed)
    root = folder / "cifar-10-batches-py"
    train_x, train_y = [], []
    for i in range(1, 6):
        x = rng.integers(0, 256, size=(per_batch, 32, 32, 3), dtype=np.uint8)
        y = rng.integers(0, 10, size=per_batch)
        write_cifar_batch(root / f"data_batch_{i}", x, y)
        train_x.append(x)
        train_y.append(y)
    test_x = rng.integers(0, 256, size=(n_test, 32, 32, 3), dtype=np.uint8)
    test_y = np.arange(n_test) % 10
    write_cifar_batch(root / "test_batch", test_x, test_y)
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)], "num_vis": 3072}, f)
    return {"train": (np.concatenate(train_x), np.concatenate(train_y)), "test": (test_x, test_y)}


def test_channel_major_rows_become_nhwc(tmp_path):
    img = np.zeros((1, 32, 32, 3), np.uint8)
    img[0, 1, 2, 0], img[0, 1, 2, 1], img[0, 1, 2, 2] = 10, 20, 30
    path = write_cifar_batch(tmp_path / "cifar-10-batches-py" / "test_batch", img, [7])
    with open(path, "rb") as f:
        raw = pickle.load(f)["data"]
    # Published layout: 1024 red values, then 1024 green, then 1024 blue, each row-major.
    assert raw.shape == (1, 3072)
    assert raw[0, 1 * 32 + 2] == 10 and raw[0, 1024 + 1 * 32 + 2] == 20 and raw[0, 2048 + 34] == 30
    x, y, names = load_cifar_split(tmp_path, "test")
    assert x.shape == (1, 32, 32, 3) and x.dtype == np.uint8
    assert tuple(x[0, 1, 2]) == (10, 20, 30) and y.tolist() == [7]
    assert names[0] == "airplane"  # published names when batches.meta is absent


@pytest.mark.parametrize("layout", ["parent", "folder", "tar"])
def test_cifar10_layouts(tmp_path, layout):
    written = write_cifar10(tmp_path / "src")
    if layout == "parent":
        source = tmp_path / "src"
    elif layout == "folder":
        source = tmp_path / "src" / "cifar-10-batches-py"
    else:
        source = tmp_path / "tar"
        source.mkdir()
        with tarfile.open(source / "cifar-10-python.tar.gz", "w:gz") as tar:
            tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    x, y, names = load_cifar_split(source, "train")
    np.testing.assert_array_equal(x, written["train"][0])
    np.testing.assert_array_equal(y, written["train"][1])
    assert names == tuple(f"class{i}" for i in range(10))
    xt, yt, _ = load_cifar_split(source, "test")
    np.testing.assert_array_equal(xt, written["test"][0])


def test_load_dataset_cifar10_split(tmp_path):
    write_cifar10(tmp_path, per_batch=10, n_test=10)
    splits = load_dataset("cifar10", data_dir=tmp_path, val_size=0.2, seed=5)
    assert [len(splits[k]) for k in ("train", "val", "test")] == [40, 10, 10]
    assert splits["train"].images.shape[1:] == (32, 32, 3)
    assert splits["train"].class_names[3] == "class3" and splits["test"].num_classes == 10
    assert len(splits["train"].mean) == 3 and all(0.4 < m < 0.6 for m in splits["train"].mean)


def test_cifar100(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "cifar-100-python"
    x = rng.integers(0, 256, size=(30, 32, 32, 3), dtype=np.uint8)
    fine = np.arange(30) * 3 % 100
    write_cifar_batch(root / "train", x, fine, label_key="fine_labels",
                      extra={"coarse_labels": [int(f) % 20 for f in fine]})  # fmt: skip
    write_cifar_batch(root / "test", x[:10], fine[:10], label_key="fine_labels",
                      extra={"coarse_labels": [int(f) % 20 for f in fine[:10]]})  # fmt: skip
    xs, ys, names = load_cifar_split(tmp_path, "train", dataset="cifar100")
    np.testing.assert_array_equal(ys, fine)
    assert len(names) == 100 and names[0] == "apple" and names[-1] == "worm"
    _, yc, cnames = load_cifar_split(tmp_path, "train", dataset="cifar100", label_mode="coarse")
    assert yc.max() < 20 and len(cnames) == 20
    splits = load_dataset("cifar100", data_dir=tmp_path, val_size=6)
    assert splits["train"].num_classes == 100 and len(splits["val"]) == 6 and len(splits["train"]) == 24


def test_cifar_errors(tmp_path):
    with pytest.raises(DatasetError) as exc:
        load_dataset("cifar10", data_dir=tmp_path / "none")
    msg = str(exc.value)
    assert "cifar-10-python.tar.gz" in msg and "data_batch_1" in msg and "download=True" in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in msg
    written = write_cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:200])  # truncated
    with pytest.raises(DatasetError, match="data_batch_3.*truncated or corrupt"):
        load_cifar_split(tmp_path, "train")
    # Wrong image size.
    with open(batch, "wb") as f:
        pickle.dump({"data": np.zeros((2, 3 * 28 * 28), np.uint8), "labels": [0, 1]}, f)
    with pytest.raises(DatasetError, match=r"\(N, 3072\)"):
        load_cifar_split(tmp_path, "train")
    # Label/image count mismatch.
    with open(batch, "wb") as f:
        pickle.dump({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1, 2]}, f)
    with pytest.raises(DatasetError, match="count mismatch"):
        load_cifar_split(tmp_path, "train")
    del written


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickle_with_code_is_refused(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    with open(root / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((1, 3072), np.uint8), "labels": [0], "x": _Evil()}, f)
    with pytest.raises(DatasetError, match="not allowed"):
        load_cifar_split(tmp_path, "test")
