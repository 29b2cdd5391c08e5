"""IDX reader/writer, MNIST-style loading from local files, and clear errors for bad files."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from jaxcnn.data import DatasetError, load_dataset
from jaxcnn.data.idx import load_mnist_split, read_idx, write_idx


def write_mnist(folder: Path, n_train: int, n_test: int, *, seed: int = 0, gz: bool = True) -> dict:
    """Write tiny MNIST-format files; returns the arrays written."""
    rng = np.random.default_rng(seed)
    out = {}
    suffix = ".gz" if gz else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(labels)
        write_idx(folder / f"{split}-images-idx3-ubyte{suffix}", images)
        write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", labels)
        out[split] = (images, labels)
    return out


@pytest.mark.parametrize("suffix", [".gz", ""])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, suffix, dtype):
    arr = (np.random.default_rng(1).normal(size=(3, 5, 7)) * 50).astype(dtype)
    path = write_idx(tmp_path / f"a-idx3{suffix}", arr)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.shape == (3, 5, 7)
    np.testing.assert_array_equal(back, arr)


def test_idx_header_is_big_endian_mnist_magic(tmp_path):
    path = write_idx(tmp_path / "x", np.zeros((2, 28, 28), np.uint8))
    raw = path.read_bytes()
    assert struct.unpack(">IIII", raw[:16]) == (2051, 2, 28, 28)
    assert len(raw) == 16 + 2 * 28 * 28
    lab = write_idx(tmp_path / "y", np.zeros(2, np.uint8)).read_bytes()
    assert struct.unpack(">II", lab[:8]) == (2049, 2)


def test_load_mnist_split_gz_and_raw(tmp_path):
    written = write_mnist(tmp_path / "gz", 30, 20)
    x, y = load_mnist_split(tmp_path / "gz", "train")
    assert x.shape == (30, 28, 28, 1) and x.dtype == np.uint8 and y.dtype == np.int32
    np.testing.assert_array_equal(x[..., 0], written["train"][0])
    np.testing.assert_array_equal(y, written["train"][1])
    written = write_mnist(tmp_path / "raw", 30, 20, gz=False)
    x, y = load_mnist_split(tmp_path / "raw", "t10k")
    np.testing.assert_array_equal(x[..., 0], written["t10k"][0])


def test_bad_magic_message(tmp_path):
    write_mnist(tmp_path, 10, 10)
    # Put a labels file where the images file should be.
    lab = tmp_path / "train-labels-idx1-ubyte.gz"
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(lab.read_bytes())
    with pytest.raises(DatasetError) as exc:
        load_mnist_split(tmp_path, "train")
    msg = str(exc.value)
    assert "bad IDX magic number 2049" in msg and "expected 2051" in msg
    assert "train-images-idx3-ubyte.gz" in msg


def test_truncated_files(tmp_path):
    write_mnist(tmp_path, 10, 10, gz=False)
    img = tmp_path / "train-images-idx3-ubyte"
    img.write_bytes(img.read_bytes()[:-100])
    with pytest.raises(DatasetError, match="truncated") as exc:
        load_mnist_split(tmp_path, "train")
    assert "7840 data bytes" in str(exc.value) and "7740" in str(exc.value)
    # A truncated gzip stream.
    gz = tmp_path / "t.gz"
    gz.write_bytes(gzip.compress(b"\x00" * 5000)[:-30])
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        read_idx(gz)
    # Header shorter than 4 bytes.
    short = tmp_path / "short"
    short.write_bytes(b"\x00\x00")
    with pytest.raises(DatasetError, match="too short"):
        read_idx(short)


def test_wrong_size_and_count_mismatch(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((4, 32, 32), np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(4, np.uint8))
    with pytest.raises(DatasetError, match="expected 28x28 images"):
        load_mnist_split(tmp_path, "train")
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((4, 28, 28), np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(5, np.uint8))
    with pytest.raises(DatasetError, match="count mismatch") as exc:
        load_mnist_split(tmp_path, "train")
    assert "4 images" in str(exc.value) and "5 labels" in str(exc.value)


def test_missing_folder_message_no_download(tmp_path, no_network):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError) as exc:
        load_dataset("mnist", data_dir=missing)
    msg = str(exc.value)
    assert str(missing) in msg and "does not exist" in msg
    for fname in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                  "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):  # fmt: skip
        assert fname in msg
    assert "download=True" in msg and "https://storage.googleapis.com/cvdf-datasets/mnist/" in msg
    assert not missing.exists()  # nothing was created either
    with pytest.raises(DatasetError, match="zalandoresearch"):
        load_dataset("fashion_mnist", data_dir=missing)
    with pytest.raises(DatasetError):
        load_dataset("mnist_t10k", data_dir=missing)


def test_default_data_dir_from_env(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("JAXCNN_DATA_DIR", str(tmp_path / "root"))
    with pytest.raises(DatasetError, match=str(tmp_path / "root" / "fashion_mnist")):
        load_dataset("fashion_mnist")
    write_mnist(tmp_path / "root" / "mnist", 0, 2100)  # mnist_t10k carves a 2,000 test split
    splits = load_dataset("mnist_t10k", val_size=5)
    assert [len(splits[k]) for k in ("train", "val", "test")] == [95, 5, 2000]


def test_load_dataset_mnist_from_local_files(tmp_path, no_network):
    written = write_mnist(tmp_path, 120, 40)
    splits = load_dataset("mnist", data_dir=tmp_path, val_size=20, seed=3)
    assert [len(splits[k]) for k in ("train", "val", "test")] == [100, 20, 40]
    np.testing.assert_array_equal(splits["test"].images[..., 0], written["t10k"][0])
    # train + val is a permutation of the published training set.
    union = np.concatenate([splits["train"].images, splits["val"].images])[..., 0]
    assert sorted(map(bytes, union)) == sorted(map(bytes, written["train"][0]))
    np.testing.assert_array_equal(np.bincount(splits["val"].labels, minlength=10), [2] * 10)
    again = load_dataset("mnist", data_dir=tmp_path, val_size=20, seed=3)
    np.testing.assert_array_equal(again["val"].labels, splits["val"].labels)
    np.testing.assert_array_equal(again["val"].images, splits["val"].images)
    fm = load_dataset("fashion_mnist", data_dir=tmp_path, val_size=0.1)
    assert fm["train"].class_names[9] == "Ankle boot" and len(fm["val"]) == 12
    with pytest.raises(ValueError, match="val_size=10000"):
        load_dataset("mnist", data_dir=tmp_path)  # the default 10,000 does not fit 120
