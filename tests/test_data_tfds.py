"""jaxcnn's TFDS builders: prepare from tiny local files, read back with tfds.data_source."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow_datasets")
pytest.importorskip("array_record")

import tensorflow_datasets as tfds  # noqa: E402

from jaxcnn.data import DatasetError, load_dataset  # noqa: E402
from jaxcnn.data import tfds_builders as tb  # noqa: E402
from jaxcnn.data.cifar import write_cifar_batch  # noqa: E402
from jaxcnn.data.idx import write_idx  # noqa: E402


@pytest.fixture
def tmp_tfds_dirs_unchanged():
    """Preparing must not leave new tmp*tfds folders in the temp dir."""
    tmp = Path(tempfile.gettempdir())
    before = set(tmp.glob("tmp*tfds"))
    yield
    assert set(tmp.glob("tmp*tfds")) - before == set()


def _write_tiny_mnist(folder: Path, n_train: int = 24, n_test: int = 12) -> dict:
    rng = np.random.default_rng(7)
    out = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", x)
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", y)
        out[split] = (x, y)
    return out


def test_prepare_and_data_source(tmp_path, no_network, tmp_tfds_dirs_unchanged):
    written = _write_tiny_mnist(tmp_path / "src")
    out = tb.prepare("mnist", tmp_path / "tfds", source_dir=tmp_path / "src")
    assert out == tmp_path / "tfds" / "jaxcnn_mnist" / "1.0.0"
    assert any(p.name.startswith("jaxcnn_mnist-train.array_record") for p in out.iterdir())
    assert tb.is_prepared("mnist", tmp_path / "tfds")

    source = tfds.data_source("jaxcnn_mnist", split="train", data_dir=tmp_path / "tfds", download=False)
    assert len(source) == 24
    ex = source[5]
    assert ex["image"].dtype == np.uint8 and ex["image"].shape == (28, 28, 1)
    np.testing.assert_array_equal(ex["image"][..., 0], written["train"][0][5])  # order kept
    assert int(ex["label"]) == 5
    n_iter = sum(1 for _ in tfds.data_source(
        "jaxcnn_mnist", split="test", data_dir=tmp_path / "tfds", download=False))  # fmt: skip
    assert n_iter == 12

    x, y = tb.read_split_arrays("mnist", tmp_path / "tfds", "test")
    np.testing.assert_array_equal(x[..., 0], written["t10k"][0])
    np.testing.assert_array_equal(y, written["t10k"][1])
    # Preparing again reuses the files (no error, same folder, sources no longer needed).
    assert tb.prepare("mnist", tmp_path / "tfds") == out


def test_load_dataset_tfds_backend_matches_numpy(tmp_path, no_network, tmp_tfds_dirs_unchanged):
    _write_tiny_mnist(tmp_path)
    via_tfds = load_dataset("mnist", data_dir=tmp_path, backend="tfds", val_size=4, seed=2)
    assert (tmp_path / "tfds" / "jaxcnn_mnist" / "1.0.0" / "dataset_info.json").is_file()
    via_numpy = load_dataset("mnist", data_dir=tmp_path, backend="numpy", val_size=4, seed=2)
    for k in ("train", "val", "test"):
        np.testing.assert_array_equal(via_tfds[k].images, via_numpy[k].images)
        np.testing.assert_array_equal(via_tfds[k].labels, via_numpy[k].labels)
        assert via_tfds[k].mean == via_numpy[k].mean
    # With the raw files gone, 'auto' falls back to the prepared TFDS copy.
    for f in tmp_path.glob("*-ubyte.gz"):
        f.unlink()
    auto = load_dataset("mnist", data_dir=tmp_path, val_size=4, seed=2)
    np.testing.assert_array_equal(auto["val"].images, via_numpy["val"].images)


def test_tfds_backend_offline_without_files(tmp_path, no_network, tmp_tfds_dirs_unchanged):
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.gz"):
        load_dataset("mnist", data_dir=tmp_path / "empty", backend="tfds")
    with pytest.raises(DatasetError, match="download=False"):
        tb.prepare("mnist", tmp_path / "tfds")
    assert not (tmp_path / "tfds" / "jaxcnn_mnist").exists()


def test_cifar10_builder(tmp_path, no_network, tmp_tfds_dirs_unchanged):
    rng = np.random.default_rng(0)
    root = tmp_path / "cifar-10-batches-py"
    batches = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
        y = rng.integers(0, 10, size=3)
        write_cifar_batch(root / name, x, y)
        batches.append((x, y))
    tb.prepare("cifar10", tmp_path / "tfds", source_dir=tmp_path)
    x, y = tb.read_split_arrays("cifar10", tmp_path / "tfds", "train")
    assert x.shape == (15, 32, 32, 3)
    np.testing.assert_array_equal(x, np.concatenate([b[0] for b in batches[:5]]))
    np.testing.assert_array_equal(y, np.concatenate([b[1] for b in batches[:5]]))
    info = tfds.builder("jaxcnn_cifar10", data_dir=tmp_path / "tfds").info
    assert info.features["label"].names[0] == "airplane"
    assert info.splits["test"].num_examples == 3


def test_builders_keep_published_urls():
    assert tb.JaxcnnMnist.URLS["train-images-idx3-ubyte.gz"].startswith(
        "https://storage.googleapis.com/cvdf-datasets/mnist/"
    )
    assert "zalandoresearch/fashion-mnist" in tb.JaxcnnFashionMnist.URLS["t10k-labels-idx1-ubyte.gz"]
    from jaxcnn.data.cifar import CIFAR_SPECS

    assert CIFAR_SPECS["cifar10"].url == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert CIFAR_SPECS["cifar100"].url == "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    assert set(tb.BUILDER_NAMES.values()) <= set(tfds.list_builders(with_community_datasets=False))


def test_download_true_uses_tfds_download_manager(tmp_path, monkeypatch, tmp_tfds_dirs_unchanged):
    """download=True goes through tfds.download.DownloadManager with the published URLs.

    The download itself is replaced by copies of tiny local files (no internet here), stored
    under TFDS-style mangled names so nothing relies on the published file names.
    """
    mirror = tmp_path / "mirror"
    written = _write_tiny_mnist(mirror)
    requested: list[str] = []

    def fake_download(self, url_or_urls):
        import shutil

        def one(url: str) -> Path:
            requested.append(url)
            dst = Path(self._download_dir) / ("dl_" + url.replace("/", "_").replace(":", ""))
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(mirror / url.rsplit("/", 1)[-1], dst)
            return dst

        if isinstance(url_or_urls, dict):
            return {k: one(v) for k, v in url_or_urls.items()}
        return one(url_or_urls)

    monkeypatch.setattr(tfds.download.DownloadManager, "download", fake_download)
    data_dir = tmp_path / "data"
    splits = load_dataset("mnist", data_dir=data_dir, download=True, val_size=4)
    assert sorted(requested) == sorted(
        f"https://storage.googleapis.com/cvdf-datasets/mnist/{f}"
        for f in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                  "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")  # fmt: skip
    )
    assert any((data_dir / "downloads").iterdir())
    np.testing.assert_array_equal(splits["test"].images[..., 0], written["t10k"][0])
    assert [len(splits[k]) for k in ("train", "val", "test")] == [20, 4, 12]
    # A second call reuses the prepared copy: no further downloads.
    requested.clear()
    load_dataset("mnist", data_dir=data_dir, download=True, val_size=4)
    assert requested == []
