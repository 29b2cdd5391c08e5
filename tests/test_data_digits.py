"""The default `digits` dataset, ArrayDataset validation and seeded stratified splitting."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxcnn.data import ArrayDataset, DatasetError, channel_stats, dataset_names, load_dataset
from jaxcnn.data import stratified_split_indices
from jaxcnn.data.digits import bilinear_weights, digits_arrays, upsample_bilinear_exact


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _row_keys(images: np.ndarray) -> list[bytes]:
    return sorted(im.tobytes() for im in images)


def test_names_and_default():
    names = dataset_names()
    assert names[0] == "digits"
    assert {"digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "mnist_t10k", "image_folder"} <= set(names)
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("imagenet")


def test_digits_split_sizes_shapes_and_range(digits):
    assert set(digits) == {"train", "val", "test"}
    assert [len(digits[k]) for k in ("train", "val", "test")] == [1257, 180, 360]
    for split, ds in digits.items():
        assert ds.images.shape == (len(ds), 28, 28, 1)
        assert ds.images.dtype == np.uint8 and ds.labels.dtype == np.int32
        assert ds.num_classes == 10 and ds.name == f"digits/{split}"
        assert ds.labels.min() >= 0 and ds.labels.max() <= 9
        # Real digits use the full range: black background, white strokes.
        assert ds.images.min() == 0 and ds.images.max() == 255
    # mean/std of every split are the training split's.
    assert digits["val"].mean == digits["train"].mean == channel_stats(digits["train"].images)[0]
    assert 0.05 < digits["train"].mean[0] < 0.6 and 0.1 < digits["train"].std[0] < 0.5


def test_digits_splits_partition_all_images(digits):
    all_images, all_labels = digits_arrays()
    assert all_images.shape == (1797, 28, 28, 1)
    union = np.concatenate([digits[k].images for k in ("train", "val", "test")])
    assert _row_keys(union) == _row_keys(all_images)
    union_labels = np.concatenate([digits[k].labels for k in ("train", "val", "test")])
    np.testing.assert_array_equal(np.bincount(union_labels), np.bincount(all_labels))


def test_digits_stratified(digits):
    total = np.bincount(digits_arrays()[1], minlength=10)
    for ds in digits.values():
        expected = total * len(ds) / total.sum()
        # within one example of proportional per split (1.5: errors of two nested roundings)
        assert np.all(np.abs(ds.class_counts() - expected) < 1.5), ds.name


def test_digits_deterministic_and_seeded(digits):
    again = load_dataset("digits")
    for k in digits:
        np.testing.assert_array_equal(again[k].images, digits[k].images)
        np.testing.assert_array_equal(again[k].labels, digits[k].labels)
    other = load_dataset("digits", seed=1, val_size=0.25)
    # The test split is fixed; seed/val_size only reshuffle train/val.
    np.testing.assert_array_equal(other["test"].images, digits["test"].images)
    assert len(other["val"]) == 359 and len(other["train"]) == 1437 - len(other["val"])
    same_size = load_dataset("digits", seed=1)
    assert _row_keys(same_size["val"].images) != _row_keys(digits["val"].images)
    assert len(load_dataset("digits", val_size=0)["val"]) == 0


def test_exact_bilinear_matches_float_reference():
    import jax
    import jax.numpy as jnp

    raw = np.random.default_rng(0).integers(0, 17, size=(5, 8, 8))
    ours = upsample_bilinear_exact(raw, (28, 28), max_value=16).astype(np.float64)
    ref = jax.image.resize(jnp.asarray(raw, jnp.float32) * (255 / 16), (5, 28, 28), "bilinear")
    np.testing.assert_allclose(ours, np.asarray(ref), atol=0.51)
    w, denom = bilinear_weights(8, 28)
    assert np.all(w.sum(axis=1) == denom) and np.all(w >= 0)
    # A constant image stays constant; the maximum maps to 255.
    np.testing.assert_array_equal(upsample_bilinear_exact(np.full((1, 8, 8), 16), (28, 28), 16), 255)


def test_array_dataset_validation():
    imgs = np.zeros((3, 4, 4, 1), np.uint8)
    with pytest.raises(DatasetError, match="3 images but 2 labels"):
        ArrayDataset(imgs, np.zeros(2, np.int32), 10, "x")
    with pytest.raises(DatasetError, match="uint8"):
        ArrayDataset(imgs.astype(np.float32), np.zeros(3, np.int32), 10, "x")
    with pytest.raises(DatasetError, match=r"\[0, 2\)"):
        ArrayDataset(imgs, np.array([0, 1, 2]), 2, "x")
    ds = ArrayDataset(imgs, np.array([0, 1, 1]), 2, "x")
    assert ds.labels.dtype == np.int32 and ds.class_names == ("0", "1") and ds.image_shape == (4, 4, 1)
    assert ds.std == (1.0,)  # a constant channel is not divided by zero
    sub = ds.subset([2, 0])
    np.testing.assert_array_equal(sub.labels, [1, 0])


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(0, 30), min_size=1, max_size=6).filter(lambda c: sum(c) >= 2),
    frac=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_stratified_split_is_a_partition(counts, frac, seed):
    labels = np.repeat(np.arange(len(counts)), counts)
    n = len(labels)
    a = int(frac * n)
    parts = stratified_split_indices(labels, [a, n - a], seed)
    assert [len(p) for p in parts] == [a, n - a]
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(n))
    # Stratified: each class's share in part 0 is within one example of proportional.
    got = np.bincount(labels[parts[0]], minlength=len(counts))
    assert np.all(np.abs(got - np.array(counts) * a / n) < 1.0 + 1e-9)
    again = stratified_split_indices(labels, [a, n - a], seed)
    assert all(np.array_equal(p, q) for p, q in zip(parts, again))
