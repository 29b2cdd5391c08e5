"""Streaming loader (jaxcnn.data.streaming): same images as the in-memory loader, seeded and
resumable batches, exact resume of a training run, and memory independent of the folder's size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxcnn.data import DeviceLoader, load_dataset
from jaxcnn.data.streaming import StreamingLoader, StreamSplit, choose_loader, open_image_folder_splits
from jaxcnn.data.synthetic import write_image_folder
from jaxcnn.train import RunCheckpointer, TrainConfig, Trainer, experiment

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("imgs"), 90, num_classes=3, min_size=36, max_size=60, seed=1)


@pytest.fixture(scope="module")
def grey_folder(tmp_path_factory):
    return write_image_folder(
        tmp_path_factory.mktemp("grey"), 90, num_classes=3, min_size=30, max_size=50, seed=2, grayscale=True
    )


def _arrays(batches):
    return [(np.asarray(x), np.asarray(y)) for x, y in batches]


def test_same_splits_and_images_as_the_memory_loader(folder):
    mem = load_dataset("image_folder", data_dir=folder, image_size=32, seed=2)
    stream = open_image_folder_splits(folder, image_size=32, seed=2)
    for split in ("train", "val", "test"):
        assert len(stream[split]) == len(mem[split]) > 0
        np.testing.assert_array_equal(stream[split].labels, mem[split].labels)
    # normalisation statistics: exact (the sample covers the whole 72-image training split)
    np.testing.assert_allclose(stream["train"].mean, mem["train"].mean, rtol=1e-12)
    d = DeviceLoader(mem["test"], 4, shuffle=False)  # 9 examples: a partial last batch
    s = StreamingLoader(stream["test"], 4, shuffle=False, workers=0)
    assert len(s) == len(d) == 3
    for (xs, ys), (xd, yd) in zip(_arrays(s.iter_epoch(0)), _arrays(d.iter_epoch(0)), strict=True):
        assert xs.dtype == np.float32 and ys.dtype == np.int32 and xs.shape[1:] == (32, 32, 3)
        np.testing.assert_array_equal(xs, xd)
        np.testing.assert_array_equal(ys, yd)


def test_shuffled_epochs_are_seeded_and_resumable_from_the_iterator_state(folder):
    split = open_image_folder_splits(folder, image_size=32, recipe="imagenet", seed=0)["train"]
    a = StreamingLoader(split, 16, seed=5, workers=0, augment="imagenet")
    epoch0 = _arrays(a.iter_epoch(0))
    epoch1 = _arrays(a.iter_epoch(1))
    assert sorted(np.concatenate([y for _, y in epoch0])) == sorted(split.labels)  # each example once
    assert not np.array_equal(epoch0[0][1], epoch1[0][1]) or not np.array_equal(epoch0[0][0], epoch1[0][0])
    b = StreamingLoader(split, 16, seed=5, workers=0, augment="imagenet")
    it = b.iter_epoch(1)
    head = [next(it) for _ in range(2)]
    state = json.loads(json.dumps(b.state_dict()))  # JSON, as in the checkpoint
    assert (state["epoch"], state["step"]) == (1, 2) and state["grain"] is not None
    c = StreamingLoader(split, 16, seed=5, workers=0, augment="imagenet")
    c.load_state_dict(state)
    tail = _arrays(c.iter_epoch(1, 2))
    assert c.resumed_from_iterator_state
    for (x, y), (xr, yr) in zip(_arrays(head) + tail, epoch1, strict=True):
        np.testing.assert_array_equal(x, xr)
        np.testing.assert_array_equal(y, yr)


def test_choose_loader():
    kw = dict(num_images=1000, image_size=(64, 64), memory_limit_bytes=12 * 2**20)  # decodes to 11.7 MiB
    assert choose_loader("auto", **kw) == "memory"
    assert choose_loader("auto", **{**kw, "memory_limit_bytes": 11 * 2**20}) == "streaming"
    assert choose_loader("auto", **{**kw, "num_images": 1100}) == "streaming"
    assert choose_loader("auto", **kw, augment="imagenet") == "streaming"
    assert choose_loader("streaming", **kw) == "streaming"
    with pytest.raises(ValueError, match="streaming"):
        choose_loader("memory", **kw, augment="imagenet")


_RUN = dict(  # mlp on 28x28 grey-level crops: quick to compile
    model="mlp", dataset="image_folder", image_size=28, augment="imagenet", loader="streaming", epochs=2,
    batch_size=16, eval_batch_size=32, lr=0.05, checkpoint_every=0, log_every=2, progress=False, plots=False,
    tensorboard=False, seed=3,
)  # fmt: skip


def _final(out: Path) -> dict:
    with RunCheckpointer(out / "checkpoints", read_only=True) as ckpt:
        return ckpt.restore_arrays()


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_resume_mid_epoch_is_bitwise_identical(grey_folder, tmp_path, workers):
    run = {**_RUN, "data_dir": str(grey_folder), "workers": workers}  # 72 training images: 5 steps per epoch
    out, ref = tmp_path / "run", tmp_path / "ref"
    _, partial = experiment(TrainConfig(**run, out=str(out), max_steps=4))
    assert not partial["complete"] and partial["steps"] == 4
    with RunCheckpointer(out / "checkpoints", read_only=True) as ckpt:
        meta = ckpt.read_meta()
    assert (meta["epoch"], meta["step_in_epoch"]) == (0, 4)
    assert meta["loader"]["step"] == 4 and meta["loader"]["workers"] == workers and meta["loader"]["grain"]
    trainer = Trainer(TrainConfig(**run, out=str(out)))
    assert isinstance(trainer.train_loader, StreamingLoader) and isinstance(trainer.splits["val"], StreamSplit)
    resumed = trainer.fit(resume=True)
    assert trainer.train_loader.resumed_from_iterator_state
    _, reference = experiment(TrainConfig(**run, out=str(ref)))
    assert resumed["complete"] and resumed["steps"] == reference["steps"] == 10
    assert resumed["train_losses"] == reference["train_losses"] and resumed["test_acc"] == reference["test_acc"]
    a, b = _final(out), _final(ref)
    flat_a, flat_b = jax.tree_util.tree_leaves_with_path(a), dict(jax.tree_util.tree_leaves_with_path(b))
    assert len(flat_a) > 4
    for path, value in flat_a:
        assert np.array_equal(value, flat_b[path]), jax.tree_util.keystr(path)


# ------------------------------------------------------------------------ memory bound
_RSS_SCRIPT = """
import json, resource, sys
from jaxcnn.train import TrainConfig, Trainer
cfg = TrainConfig(**json.loads(sys.argv[1]))
trainer = Trainer(cfg)
result = trainer.fit()
print("RESULT", json.dumps({
    "loader": type(trainer.train_loader).__name__, "steps": result["steps"], "examples": len(trainer.splits["train"]),
    "self_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    "children_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
}))
"""


def _peak(folder: Path, cap_mb: float, epochs: int, loader: str = "auto") -> dict:
    cfg = dict(
        model="cifar_cnn", dataset="image_folder", data_dir=str(folder), image_size=32, loader=loader,
        loader_memory_mb=cap_mb, epochs=epochs, batch_size=64, drop_last=True, eval_batch_size=200, eval_limit=200,
        workers=1, log_every=1, progress=False, plots=False, tensorboard=False,
    )  # fmt: skip
    env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    proc = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, json.dumps(cfg)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1800)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


# Folders of n and 4n images (40-64 px JPEGs, decoded at 32x32x3). The cap is half the smaller
# folder's decoded size, so ``auto`` streams both. The small folder is trained for 4 epochs and
# the large one for 1: the same number of steps (XLA:CPU's heap grows slowly with the number
# of steps, whatever the loader) and the same compiled shapes (drop_last, evaluation of 200
# examples in one batch). Every step is synchronous (log_every=1), so the queue of dispatched
# steps, which depends on timing, does not add noise. An in-memory loader holds 3n more decoded
# images (3n * 3 KiB = 26 MiB for n = 3,000, plus copies while loading; measured +41 MB, see
# docs/data.md); the streaming runs' main-process peaks may differ by at most 16 MiB.
# (RUSAGE_CHILDREN is not the worker's own peak on Linux: a spawned child keeps the parent's
# RSS at fork as its high-water mark through exec; it is reported, not compared.)
_N = 3000
_MARGIN_KB = 16 * 1024


@pytest.fixture(scope="module")
def rss_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("rss")
    small = write_image_folder(root / "small", _N, num_classes=10, min_size=40, max_size=64, seed=0)
    large = write_image_folder(root / "large", 4 * _N, num_classes=10, min_size=40, max_size=64, seed=1)
    return small, large, _N * 32 * 32 * 3 / 2 / 2**20  # the small folder decodes to twice the cap


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_folder(rss_folders):
    small, large, cap_mb = rss_folders
    a, b = _peak(small, cap_mb, epochs=4), _peak(large, cap_mb, epochs=1)
    print(f"\nstreaming peak RSS: {a['examples']} images {a['self_kb']} kB, {b['examples']} images {b['self_kb']} kB")
    assert a["loader"] == b["loader"] == "StreamingLoader"
    assert b["examples"] == 4 * a["examples"] and abs(b["steps"] - a["steps"]) <= 4
    assert abs(b["self_kb"] - a["self_kb"]) < _MARGIN_KB, (a, b)


@pytest.mark.slow
def test_peak_memory_of_the_memory_loader_grows_with_the_folder(rss_folders):
    """The measurement above can see a difference: the in-memory loader's peak grows."""
    small, large, cap_mb = rss_folders
    a, b = _peak(small, cap_mb, epochs=4, loader="memory"), _peak(large, cap_mb, epochs=1, loader="memory")
    print(f"\nin-memory peak RSS: {a['examples']} images {a['self_kb']} kB, {b['examples']} images {b['self_kb']} kB")
    assert a["loader"] == b["loader"] == "DeviceLoader"
    assert b["self_kb"] - a["self_kb"] > 2 * _MARGIN_KB, (a, b)


def test_tfds_data_source_streams_the_prepared_records(tmp_path, no_network):
    pytest.importorskip("tensorflow_datasets")
    pytest.importorskip("array_record")
    from jaxcnn.data import ArrayDataset
    from jaxcnn.data import tfds_builders as tb
    from jaxcnn.data.idx import write_idx
    from jaxcnn.data.streaming import open_tfds_split

    rng = np.random.default_rng(3)
    for split, n in (("train", 21), ("t10k", 4)):
        write_idx(tmp_path / "src" / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(tmp_path / "src" / f"{split}-labels-idx1-ubyte.gz", (np.arange(n) % 10).astype(np.uint8))
    tb.prepare("mnist", tmp_path / "tfds", source_dir=tmp_path / "src")
    x, y = tb.read_split_arrays("mnist", tmp_path / "tfds", "train")
    split = open_tfds_split("jaxcnn_mnist", "train", tmp_path / "tfds", image_size=28, num_classes=10, channels=1,
                            mean=(0.5,), std=(0.25,))  # fmt: skip
    memory = ArrayDataset(x, y, 10, "mnist/train", mean=(0.5,), std=(0.25,))
    s = StreamingLoader(split, 8, shuffle=False, workers=0)
    d = DeviceLoader(memory, 8, shuffle=False)
    for (xs, ys), (xd, yd) in zip(_arrays(s.iter_epoch(0)), _arrays(d.iter_epoch(0)), strict=True):
        np.testing.assert_array_equal(xs, xd)
        np.testing.assert_array_equal(ys, yd)
