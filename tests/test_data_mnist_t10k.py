"""mnist_t10k on the real MNIST test files in ../shared/data/mnist (skipped when absent)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from jaxcnn.data import load_dataset
from jaxcnn.data.idx import read_idx

MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
PUBLISHED_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]

pytestmark = pytest.mark.skipif(
    not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
    reason=f"real MNIST test files not present in {MNIST_DIR}",
)


@pytest.fixture(scope="module")
def t10k():
    return load_dataset("mnist_t10k", data_dir=MNIST_DIR)


def test_split_sizes_and_published_label_counts(t10k):
    assert [len(t10k[k]) for k in ("train", "val", "test")] == [7000, 1000, 2000]
    union = np.concatenate([t10k[k].labels for k in ("train", "val", "test")])
    assert np.bincount(union, minlength=10).tolist() == PUBLISHED_COUNTS
    for ds in t10k.values():
        assert ds.images.shape[1:] == (28, 28, 1) and ds.images.dtype == np.uint8
        # Stratified: each split within ~1 example of the published class proportions.
        expected = np.array(PUBLISHED_COUNTS) * len(ds) / 10_000
        assert np.all(np.abs(ds.class_counts() - expected) < 1.5)


def test_images_are_the_published_ones(t10k):
    raw = read_idx(MNIST_DIR / "t10k-images-idx3-ubyte.gz", expected_magic=2051)
    assert raw.shape == (10_000, 28, 28)
    union = np.concatenate([t10k[k].images for k in ("train", "val", "test")])[..., 0]
    assert sorted(map(bytes, union)) == sorted(map(bytes, raw))
    # MNIST's well-known statistics (0.1325 / 0.3105 on the test set).
    assert abs(t10k["train"].mean[0] - 0.1325) < 0.003 and abs(t10k["train"].std[0] - 0.3105) < 0.003
    import gzip

    with gzip.open(MNIST_DIR / "t10k-labels-idx1-ubyte.gz", "rb") as f:
        assert struct.unpack(">II", f.read(8)) == (2049, 10_000)


def test_deterministic_with_fixed_test_split(t10k):
    again = load_dataset("mnist_t10k", data_dir=MNIST_DIR)
    for k in t10k:
        np.testing.assert_array_equal(again[k].images, t10k[k].images)
        np.testing.assert_array_equal(again[k].labels, t10k[k].labels)
    reseeded = load_dataset("mnist_t10k", data_dir=MNIST_DIR, seed=1)
    np.testing.assert_array_equal(reseeded["test"].images, t10k["test"].images)
    assert not np.array_equal(reseeded["val"].labels, t10k["val"].labels)
