"""normalize / augment / DeviceLoader: determinism, coverage, resumption, sharding."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn.data import ArrayDataset, DeviceLoader, augment, measure_throughput, normalize


def index_dataset(n: int = 53, h: int = 6, w: int = 5, c: int = 2) -> ArrayDataset:
    """Image i is filled with i % 256 (plus a position ramp in channel 1); label i % 7."""
    img = np.zeros((n, h, w, c), np.uint8)
    img[..., 0] = (np.arange(n) % 256)[:, None, None]
    if c > 1:
        img[..., 1] = (np.arange(h)[:, None] * w + np.arange(w)[None, :]) + 1
    return ArrayDataset(img, np.arange(n) % 7, 7, "index")


jit_augment = jax.jit(augment, static_argnames=("crop_padding", "flip"))


def ramp_images(n: int = 8, h: int = 8, w: int = 8) -> jnp.ndarray:
    """Distinct, asymmetric, non-zero pixels so any shift or flip is visible."""
    base = (np.arange(h * w).reshape(h, w) + 1).astype(np.uint8)
    return jnp.asarray(np.stack([base + 100 * (i % 2) for i in range(n)])[..., None])


# ----------------------------------------------------------------------------- normalize
def test_normalize_matches_formula():
    x = np.random.default_rng(0).integers(0, 256, size=(4, 3, 3, 3), dtype=np.uint8)
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 0.4)
    got = jax.jit(normalize)(x, mean, std)
    assert got.dtype == jnp.float32 and got.shape == x.shape
    want = (x / 255.0 - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------- augment
def test_augment_deterministic_shape_dtype():
    x = ramp_images()
    key = jax.random.key(3)
    a = jit_augment(x, key)
    b = jit_augment(x, key)
    assert a.shape == x.shape and a.dtype == x.dtype
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    c = jit_augment(x, jax.random.key(4))
    assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_augment_crop_is_a_shifted_window_of_the_zero_padded_image():
    x = ramp_images(n=32)
    out = np.asarray(jit_augment(x, jax.random.key(0), crop_padding=2, flip=False))
    padded = np.pad(np.asarray(x), ((0, 0), (2, 2), (2, 2), (0, 0)))
    offsets = []
    for i in range(len(x)):
        matches = [(dy, dx) for dy in range(5) for dx in range(5)
                   if np.array_equal(out[i], padded[i, dy:dy + 8, dx:dx + 8])]  # fmt: skip
        assert len(matches) == 1, i
        offsets.append(matches[0])
    assert len(set(offsets)) > 3  # per-image randomness
    assert any(o != (2, 2) for o in offsets)  # the crop actually moves images
    assert (out == 0).any()  # zero padding shows up


def test_augment_flip_only():
    x = ramp_images(n=64)
    out = np.asarray(jit_augment(x, jax.random.key(1), crop_padding=0, flip=True))
    xs = np.asarray(x)
    flipped = [np.array_equal(o, xi[:, ::-1]) for o, xi in zip(out, xs)]
    kept = [np.array_equal(o, xi) for o, xi in zip(out, xs)]
    assert all(f != k for f, k in zip(flipped, kept))  # each image is either flipped or not
    assert 10 < sum(flipped) < 54  # about half
    same = np.asarray(jit_augment(x, jax.random.key(1), crop_padding=0, flip=False))
    np.testing.assert_array_equal(same, xs)


# -------------------------------------------------------------------------------- loader
def _epoch_indices(loader: DeviceLoader, epoch: int) -> np.ndarray:
    return np.concatenate([np.asarray(loader.indices(epoch, s)) for s in range(len(loader))])


def test_loader_covers_every_example_once_and_gathers_right_rows():
    ds = index_dataset(53)
    loader = DeviceLoader(ds, 8, shuffle=True, seed=0, normalize=False)
    assert len(loader) == 7  # 6 full batches + 5 left over
    seen_labels, seen_ids, sizes = [], [], []
    for x, y in loader:
        assert x.dtype == jnp.uint8 and y.dtype == jnp.int32
        ids = np.asarray(x)[:, 0, 0, 0]
        seen_ids.append(ids)
        seen_labels.append(np.asarray(y))
        sizes.append(len(ids))
    assert sizes == [8] * 6 + [5]
    ids = np.concatenate(seen_ids)
    np.testing.assert_array_equal(np.sort(ids), np.arange(53))
    np.testing.assert_array_equal(np.concatenate(seen_labels), ids % 7)  # labels follow images
    np.testing.assert_array_equal(ids, _epoch_indices(loader, 0))
    assert loader.state_dict() == {"epoch": 1, "step": 0, "seed": 0}


def test_permutations_per_epoch_and_seed():
    ds = index_dataset(53)
    a = DeviceLoader(ds, 8, seed=0)
    b = DeviceLoader(ds, 8, seed=0)
    c = DeviceLoader(ds, 8, seed=1)
    e0, e1 = _epoch_indices(a, 0), _epoch_indices(a, 1)
    assert not np.array_equal(e0, e1) and np.array_equal(np.sort(e1), np.arange(53))
    np.testing.assert_array_equal(e0, _epoch_indices(b, 0))
    np.testing.assert_array_equal(e1, _epoch_indices(b, 1))
    assert not np.array_equal(e0, _epoch_indices(c, 0))
    unshuffled = DeviceLoader(ds, 8, shuffle=False)
    np.testing.assert_array_equal(_epoch_indices(unshuffled, 3), np.arange(53))


def test_drop_last_and_normalized_output():
    ds = index_dataset(53)
    loader = DeviceLoader(ds, 8, drop_last=True, seed=2)
    batches = list(loader)
    assert len(loader) == len(batches) == 6
    x, y = batches[0]
    assert x.shape == (8, 6, 5, 2) and x.dtype == jnp.float32 and y.shape == (8,)
    ids = np.asarray(loader.indices(0, 0))
    want = (ds.images[ids] / 255.0 - np.array(ds.mean)) / np.array(ds.std)
    np.testing.assert_allclose(np.asarray(x), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="empty epochs"):
        DeviceLoader(index_dataset(5), 8, drop_last=True)


def test_resume_from_epoch_step_gives_identical_batches():
    ds = index_dataset(53)
    kwargs = dict(shuffle=True, seed=11, augment=True, crop_padding=1)

    def host(batches):
        return [tuple(np.asarray(t) for t in b) for b in batches]

    ref = DeviceLoader(ds, 8, **kwargs)
    reference = [host(ref) for _ in range(3)]  # epochs 0, 1, 2
    assert ref.state_dict() == {"epoch": 3, "step": 0, "seed": 11}

    run = DeviceLoader(ds, 8, **kwargs)
    host(run)  # epoch 0
    it = iter(run)
    next(it), next(it)  # two batches of epoch 1, then "crash"
    state = run.state_dict()
    assert state == {"epoch": 1, "step": 2, "seed": 11}
    del run, it

    resumed = DeviceLoader(ds, 8, **kwargs)
    resumed.load_state_dict(state)
    rest = host(resumed)
    assert len(rest) == len(resumed) - 2
    for got, want in zip(rest + host(resumed), reference[1][2:] + reference[2]):
        np.testing.assert_array_equal(got[0], want[0])  # same (augmented) images
        np.testing.assert_array_equal(got[1], want[1])
    assert resumed.state_dict()["epoch"] == 3
    # Epochs differ (permutation and augmentation).
    assert not np.array_equal(reference[1][0][0], reference[2][0][0])
    # The stateless accessor agrees with iteration.
    np.testing.assert_array_equal(np.asarray(ref.batch(2, 3)[0]), reference[2][3][0])
    with pytest.raises(ValueError, match="seed"):
        resumed.load_state_dict({"epoch": 0, "step": 0, "seed": 12})


def test_loader_augmentation_varies_per_epoch_and_keeps_labels():
    ds = index_dataset(16, h=8, w=8, c=2)
    loader = DeviceLoader(ds, 16, shuffle=False, augment=True, normalize=False)
    x0, y0 = (np.asarray(t) for t in loader.batch(0, 0))
    x1, _ = (np.asarray(t) for t in loader.batch(1, 0))
    assert not np.array_equal(x0, x1)
    assert not np.array_equal(x0, ds.images)
    np.testing.assert_array_equal(y0, ds.labels)
    custom = DeviceLoader(ds, 16, shuffle=False, normalize=False,
                          augment=lambda im, key: 255 - im)  # fmt: skip
    np.testing.assert_array_equal(np.asarray(custom.batch(0, 0)[0]), 255 - ds.images)


def test_sharded_loader_single_device_mesh_and_throughput():
    mesh = jax.make_mesh((1,), ("data",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    loader = DeviceLoader(index_dataset(53), 8, sharding=sharding)
    x, y = next(iter(loader))
    assert x.sharding.is_equivalent_to(sharding, x.ndim)
    assert y.sharding.spec == jax.sharding.PartitionSpec("data")
    assert measure_throughput(loader, 5) > 0
    assert loader.state_dict()["step"] == 1  # measuring did not move the position


def test_sharded_loader_two_cpu_devices():
    """Data-parallel placement across 2 (virtual CPU) devices, in a fresh process."""
    code = textwrap.dedent(
        """
        import jax, numpy as np
        from jax.sharding import NamedSharding, PartitionSpec as P
        from jaxcnn.data import ArrayDataset, DeviceLoader
        assert jax.device_count() == 2, jax.devices()
        ds = ArrayDataset(np.arange(20, dtype=np.uint8).reshape(20, 1, 1, 1).repeat(4, 1),
                          np.arange(20) % 3, 3, "t")
        sh = NamedSharding(jax.make_mesh((2,), ("data",)), P("data"))
        loader = DeviceLoader(ds, 6, sharding=sh, drop_last=True, normalize=False)
        seen = []
        for x, y in loader:
            assert len(x.sharding.device_set) == 2 and x.sharding.spec == P("data")
            assert [s.data.shape[0] for s in x.addressable_shards] == [3, 3]
            seen.append(np.asarray(x)[:, 0, 0, 0])
        assert len(seen) == 3 and len(set(np.concatenate(seen))) == 18
        try:
            DeviceLoader(ds, 6, sharding=sh)  # keeps a last batch of 2: fine; 5 would fail
            DeviceLoader(ds, 5, sharding=sh)
        except ValueError as e:
            assert "does not split" in str(e)
        else:
            raise AssertionError("odd batch accepted")
        print("OK")
        """
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]
