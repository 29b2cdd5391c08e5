"""jaxcnn's oneDNN convolutions for XLA:CPU: built, chosen, and equal to XLA's convolution.

Parity with torch for both backends is in ``parity_tests/test_ops_conv.py``; here the
oneDNN kernels are compared with ``lax.conv_general_dilated`` at channel counts where
oneDNN picks its blocked (vectorised) kernels, which the tiny parity cases do not reach.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax

from jaxcnn.nn import functional as F
from jaxcnn.nn import native
from jaxcnn.nn.native.onednn_conv import (
    conv_backend,
    onednn_conv2d,
    set_conv_backend,
    using_conv_backend,
)

LINUX_X86 = sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")

# Every case here runs or selects oneDNN's XLA:CPU kernels; where JAX computes elsewhere they skip.
pytestmark = pytest.mark.skipif(
    jax.default_backend() != "cpu", reason=f"oneDNN convolutions run on XLA:CPU only; JAX computes on {jax.default_backend()}"
)


def _targets(fn, *args) -> set[str]:
    """The FFI targets called in ``fn``'s jaxpr (including inside custom_vjp rules)."""
    text = str(jax.make_jaxpr(fn)(*args))
    return {target for target in native.TARGETS if target in text}


def _conv(backend, x, w, stride, pads, dilation, groups):
    """The convolution itself, with explicit (possibly asymmetric) ``pads``."""
    if backend == "onednn":
        return onednn_conv2d(x, w, stride, pads, dilation, groups)
    return lax.conv_general_dilated(
        x, w, stride, pads, rhs_dilation=dilation, dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups
    )


def _loss_and_grads(backend, x, w, cotangent, stride, pads, dilation, groups):
    def loss(x, w):
        out = _conv(backend, x, w, stride, pads, dilation, groups)
        return jnp.sum(out * cotangent), out

    return jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))(x, w)


@pytest.mark.skipif(not LINUX_X86, reason="the oneDNN wheels are built for Linux x86-64 only")
def test_library_builds_and_registers():
    assert native.onednn_available(), native.onednn_status()
    assert native.onednn_status() == "oneDNN convolutions loaded"
    path = native.library_path()
    assert path.is_file() and path.is_relative_to(native.cache_dir())


def test_float32_on_cpu_uses_onednn_forward_and_backward():
    x, w = jnp.ones((2, 6, 6, 3)), jnp.ones((3, 3, 3, 4))
    assert conv_backend() == "auto"
    assert _targets(lambda x, w: F.conv2d(x, w, padding=1), x, w) == {native.FORWARD}
    grad = jax.grad(lambda x, w: F.conv2d(x, w, padding=1).sum(), argnums=(0, 1))
    assert _targets(grad, x, w) == set(native.TARGETS)


def test_xla_backend_and_float64_use_no_custom_call():
    x, w = jnp.ones((2, 6, 6, 3)), jnp.ones((3, 3, 3, 4))
    with using_conv_backend("xla"):
        assert _targets(lambda x, w: F.conv2d(x, w, padding=1), x, w) == set()
    assert _targets(lambda x, w: F.conv2d(x, w, padding=1), x, w) == {native.FORWARD}  # restored
    with jax.enable_x64(True):
        x64, w64 = x.astype(jnp.float64), w.astype(jnp.float64)
        out = F.conv2d(x64, w64, padding=1)
        assert out.dtype == jnp.float64
        assert _targets(lambda x, w: F.conv2d(x, w, padding=1), x64, w64) == set()


def test_backend_names_are_checked(monkeypatch):
    with pytest.raises(ValueError, match="conv backend must be one of"):
        set_conv_backend("mkldnn")
    monkeypatch.setenv("JAXCNN_CONV_BACKEND", "cudnn")
    with pytest.raises(ValueError, match="JAXCNN_CONV_BACKEND must be one of"):
        conv_backend()
    monkeypatch.setenv("JAXCNN_CONV_BACKEND", "xla")
    assert conv_backend() == "xla"
    with using_conv_backend("onednn"):
        assert conv_backend() == "onednn"
    assert conv_backend() == "xla"


# (n, h, w, cin, cout, kernel, stride, pads, dilation, groups): shapes of the model zoo,
# where oneDNN runs its blocked AVX kernels, plus its edge cases.
ZOO_CASES = [
    (4, 32, 32, 3, 32, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),  # first layer, 3 channels
    (4, 16, 16, 32, 64, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
    (4, 9, 9, 64, 64, (3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1), 1),  # odd size, stride 2
    (4, 8, 8, 64, 128, (1, 1), (2, 2), ((0, 0), (0, 0)), (1, 1), 1),  # ResNet shortcut
    (2, 15, 15, 16, 32, (7, 7), (2, 2), ((3, 3), (3, 3)), (1, 1), 1),  # ResNet stem
    (2, 12, 12, 32, 64, (5, 5), (1, 1), ((0, 0), (0, 0)), (1, 1), 1),  # mnist_cnn conv2
    (2, 10, 11, 64, 64, (3, 3), (1, 1), ((2, 2), (2, 2)), (2, 2), 32),  # ResNeXt groups, dilation
    (2, 10, 10, 32, 32, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 32),  # depthwise
    (2, 2, 2, 64, 64, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),  # map smaller than kernel
    (2, 7, 8, 16, 16, (4, 3), (1, 2), ((1, 2), (0, 1)), (1, 1), 1),  # asymmetric padding
]


@pytest.mark.parametrize("n,h,w,cin,cout,kernel,stride,pads,dilation,groups", ZOO_CASES)
def test_onednn_matches_xla(n, h, w, cin, cout, kernel, stride, pads, dilation, groups):
    rng = np.random.default_rng(h * 100 + cin)
    x = jnp.asarray(rng.standard_normal((n, h, w, cin)), jnp.float32)
    weight = jnp.asarray(rng.standard_normal((*kernel, cin // groups, cout)) * 0.1, jnp.float32)
    out_shape = _conv("xla", x, weight, stride, pads, dilation, groups).shape
    cotangent = jnp.asarray(rng.standard_normal(out_shape), jnp.float32)
    config = (stride, pads, dilation, groups)
    (dx, dw), out = _loss_and_grads("onednn", x, weight, cotangent, *config)
    (dx_ref, dw_ref), out_ref = _loss_and_grads("xla", x, weight, cotangent, *config)
    for name, got, want in (("output", out, out_ref), ("input grad", dx, dx_ref), ("weight grad", dw, dw_ref)):
        scale = float(jnp.max(jnp.abs(want)))
        error = float(jnp.max(jnp.abs(got - want)))
        assert got.shape == want.shape, name
        assert error <= 1e-5 * scale, f"{name}: max abs error {error:.3g}, scale {scale:.3g}"


def test_onednn_conv_is_not_xla_conv_by_accident():
    """The comparison above can fail: a wrong padding in the oneDNN call is caught."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 8, 8, 16)), jnp.float32)
    weight = jnp.asarray(rng.standard_normal((3, 3, 16, 16)), jnp.float32)
    ours = _conv("onednn", x, weight, (1, 1), ((1, 0), (1, 1)), (1, 1), 1)  # one row fewer at the bottom
    shifted = _conv("xla", x, weight, (1, 1), ((0, 1), (1, 1)), (1, 1), 1)
    right = _conv("xla", x, weight, (1, 1), ((1, 0), (1, 1)), (1, 1), 1)
    assert float(jnp.max(jnp.abs(ours - right))) < 1e-4
    assert float(jnp.max(jnp.abs(ours - shifted))) > 1.0


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(
    n=st.integers(1, 3),
    hw=st.tuples(st.integers(1, 12), st.integers(1, 12)),
    channels=st.tuples(st.sampled_from([1, 3, 8, 16, 24]), st.sampled_from([1, 4, 16, 32])),
    kernel=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    pads=st.tuples(st.tuples(st.integers(0, 3), st.integers(0, 3)), st.tuples(st.integers(0, 3), st.integers(0, 3))),
    dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    groups=st.sampled_from([1, 1, 2, 4]),
    seed=st.integers(0, 2**16),
)
def test_onednn_matches_xla_fuzz(n, hw, channels, kernel, stride, pads, dilation, groups, seed):
    cin, cout = channels[0] * groups, channels[1] * groups
    padded = [size + lo + hi for size, (lo, hi) in zip(hw, pads)]
    if any(d * (k - 1) + 1 > p for d, k, p in zip(dilation, kernel, padded)):
        return  # kernel does not fit: conv2d refuses it (tested elsewhere)
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((n, *hw, cin)), jnp.float32)
    weight = jnp.asarray(rng.standard_normal((*kernel, cin // groups, cout)), jnp.float32)
    results = {}
    for backend in ("onednn", "xla"):
        def loss(x, w, backend=backend):
            return jnp.sum(_conv(backend, x, w, stride, pads, dilation, groups) ** 2)

        results[backend] = (_conv(backend, x, weight, stride, pads, dilation, groups), *jax.grad(loss, (0, 1))(x, weight))
    for got, want in zip(results["onednn"], results["xla"]):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * max(1.0, float(jnp.max(jnp.abs(want)))))


def test_vmap_over_a_batch_of_batches():
    rng = np.random.default_rng(1)
    xs = jnp.asarray(rng.standard_normal((3, 2, 7, 7, 8)), jnp.float32)
    weight = jnp.asarray(rng.standard_normal((3, 3, 8, 16)), jnp.float32)
    mapped = jax.vmap(lambda x: F.conv2d(x, weight, padding=1))(xs)
    looped = jnp.stack([F.conv2d(x, weight, padding=1) for x in xs])
    np.testing.assert_allclose(mapped, looped, rtol=0, atol=1e-6)


def _run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=environment, timeout=300, check=False
    )


FALLBACK_PROBE = """
    import warnings
    import jax.numpy as jnp
    from jaxcnn.nn import functional as F, native
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = F.conv2d(jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 2, 3)), padding=1)
    print("value", float(out[0, 1, 1, 0]))
    print("status", native.onednn_status())
    print("warned", any("oneDNN CPU convolutions unavailable" in str(w.message) for w in caught))
"""


def test_without_a_compiler_conv_falls_back_to_xla_with_a_warning(tmp_path):
    result = _run_python(FALLBACK_PROBE, CXX=str(tmp_path / "no-such-compiler"), JAXCNN_CACHE_DIR=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "value 18.0" in result.stdout  # 3x3 window of ones over 2 channels
    assert "status XLA convolutions: no C++ compiler found" in result.stdout
    assert "warned True" in result.stdout


def test_backend_onednn_refuses_to_fall_back(tmp_path):
    result = _run_python(
        FALLBACK_PROBE,
        CXX=str(tmp_path / "no-such-compiler"),
        JAXCNN_CACHE_DIR=str(tmp_path),
        JAXCNN_CONV_BACKEND="onednn",
    )
    assert result.returncode != 0
    assert "RuntimeError: JAXCNN_CONV_BACKEND=onednn, but XLA convolutions: no C++ compiler" in result.stderr


@pytest.mark.skipif(not LINUX_X86, reason="the oneDNN wheels are built for Linux x86-64 only")
def test_fresh_cache_builds_the_library_once(tmp_path):
    probe = """
        from jaxcnn.nn import native
        print("available", native.onednn_available())
        print("path", native.library_path())
    """
    first = _run_python(probe, JAXCNN_CACHE_DIR=str(tmp_path))
    assert "available True" in first.stdout, first.stderr
    built = sorted(tmp_path.rglob(native.LIBRARY_NAME))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns
    second = _run_python(probe, JAXCNN_CACHE_DIR=str(tmp_path))
    assert "available True" in second.stdout, second.stderr
    assert built[0].stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert sorted(tmp_path.rglob(native.LIBRARY_NAME)) == built


LAYOUT_PROBE = """
    import jax, jax.numpy as jnp, numpy as np
    from jax import lax
    from jaxcnn.nn.native.onednn_conv import onednn_conv2d

    def conv(backend, x, w, stride, pads):
        if backend == "onednn":
            return onednn_conv2d(x, w, stride, pads, (1, 1), 1)
        return lax.conv_general_dilated(x, w, stride, pads, dimension_numbers=("NHWC", "HWIO", "NHWC"))

    rng = np.random.default_rng(0)
    # A batch of one runs on oneDNN's OpenMP threads; 3 splits unevenly over XLA's threads;
    # 64 and 3 input channels make oneDNN's preferred layouts differ from NHWC; on a 4x5 map
    # the weights outweigh the input, and the weight gradient splits its output channels.
    for n, cin, cout, stride, pads, hw in ((4, 64, 64, (1, 1), ((1, 1), (1, 1)), (13, 12)),
                                            (3, 3, 32, (2, 2), ((1, 0), (2, 1)), (13, 12)),
                                            (1, 32, 48, (1, 1), ((0, 0), (0, 0)), (13, 12)),
                                            (2, 16, 64, (1, 1), ((1, 1), (1, 1)), (4, 5))):
        x = jnp.asarray(rng.standard_normal((n, *hw, cin)), jnp.float32)
        w = jnp.asarray(rng.standard_normal((3, 3, cin, cout)) * 0.1, jnp.float32)
        worst = 0.0
        for backend in ("onednn", "xla"):
            loss = lambda x, w, backend=backend: jnp.sum(jnp.sin(conv(backend, x, w, stride, pads)))
            out = (conv(backend, x, w, stride, pads), *jax.jit(jax.grad(loss, (0, 1)))(x, w))
            if backend == "xla":
                for got, want in zip(ours, out):
                    worst = max(worst, float(jnp.max(jnp.abs(got - want)) / jnp.max(jnp.abs(want))))
            ours = out
        print("relative error", n, worst)
"""


@pytest.mark.skipif(not LINUX_X86, reason="the oneDNN wheels are built for Linux x86-64 only")
@pytest.mark.parametrize("layout", ["nhwc", "blocked", "auto"])
def test_every_activation_layout_matches_xla(layout):
    """``JAXCNN_ONEDNN_ACTIVATIONS`` pins the layout; each one, and the timed choice, is exact."""
    result = _run_python(LAYOUT_PROBE, JAXCNN_ONEDNN_ACTIVATIONS=layout)
    assert result.returncode == 0, result.stderr
    errors = [float(line.split()[-1]) for line in result.stdout.splitlines() if line.startswith("relative error")]
    assert len(errors) == 4, result.stdout
    assert max(errors) <= 1e-5, result.stdout


DATA_PARALLEL_PROBE = """
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from jaxcnn.nn import functional as F
    from jaxcnn.nn.native.onednn_conv import using_conv_backend

    mesh = Mesh(np.array(jax.devices()), ("batch",))
    split, replicated = NamedSharding(mesh, P("batch")), NamedSharding(mesh, P())
    rng = np.random.default_rng(0)
    x = jax.device_put(jnp.asarray(rng.standard_normal((8, 9, 9, 16)), jnp.float32), split)
    w = jnp.asarray(rng.standard_normal((3, 3, 16, 32)) * 0.1, jnp.float32)

    def loss(x, w):
        return jnp.sum(jnp.tanh(F.conv2d(x, w, None, 2, 1)) ** 2)

    results = {}
    for backend in ("onednn", "xla"):
        with using_conv_backend(backend):
            step = jax.jit(jax.value_and_grad(loss, (0, 1)), in_shardings=(split, replicated))
            results[backend] = step(x, w)
    with using_conv_backend("onednn"):
        hlo = jax.jit(jax.value_and_grad(loss, (0, 1)), in_shardings=(split, replicated)).lower(x, w).compile().as_text()
    calls = [line.split("=")[1].split("custom-call")[0].strip() for line in hlo.splitlines()
             if "custom_call_target=\\"JaxcnnConv" in line]
    print("calls", sorted(calls))
    print("all-gather", "all-gather" in hlo)
    (loss_a, (dx_a, dw_a)), (loss_b, (dx_b, dw_b)) = results["onednn"], results["xla"]
    print("dx_sharding", dx_a.sharding.spec)
    for name, a, b in (("loss", loss_a, loss_b), ("dx", dx_a, dx_b), ("dw", dw_a, dw_b)):
        print(name, float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b))))
"""


@pytest.mark.skipif(not LINUX_X86, reason="the oneDNN wheels are built for Linux x86-64 only")
def test_data_parallel_calls_run_per_device_on_their_rows():
    """A batch split over two CPU devices: each device convolves its 4 of 8 rows, no gather."""
    result = _run_python(DATA_PARALLEL_PROBE)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.strip().splitlines())
    # forward and input gradient on 4-row shards, the weight gradient once per device
    assert lines["calls"] == str(sorted(["f32[4,5,5,32]{3,2,1,0}", "f32[4,9,9,16]{3,2,1,0}", "f32[3,3,16,32]{3,2,1,0}"]))
    assert lines["all-gather"] == "False"
    assert lines["dx_sharding"] == "P('batch',)"
    for name in ("loss", "dx", "dw"):
        assert float(lines[name]) < 1e-5, (name, lines[name])


def test_platforms_without_onednn_wheels_are_expected_not_failures(monkeypatch):
    monkeypatch.delenv("JAXCNN_ONEDNN_ROOT", raising=False)
    for system, machine, supported in (
        ("linux", "x86_64", True),
        ("linux", "aarch64", False),
        ("darwin", "arm64", False),
        ("win32", "AMD64", False),
    ):
        monkeypatch.setattr(native.sys, "platform", system)
        monkeypatch.setattr(native.platform, "machine", lambda machine=machine: machine)
        assert native.platform_supported() is supported, (system, machine)
    monkeypatch.setenv("JAXCNN_ONEDNN_ROOT", "/opt/onednn")  # a oneDNN built for this machine
    monkeypatch.setattr(native.sys, "platform", "linux")
    assert native.platform_supported()
    assert issubclass(native.UnsupportedPlatform, native.NativeBuildError)


# (n, hw, cin, cout, stride, pads): strided or padded 1x1 convolutions with fewer input channels
# than oneDNN's channel block, whose weight gradient oneDNN 3.2 computed wrong in some runs.
STRIDED_1X1_CASES = [
    (1, 6, 4, 6, (2, 2), ((0, 0), (0, 0))),  # parity_tests' "1x1 strided (ResNet shortcut)"
    (1, 8, 4, 6, (2, 2), ((0, 0), (0, 0))),
    (2, 8, 3, 7, (2, 2), ((0, 0), (0, 0))),
    (1, 8, 5, 6, (2, 2), ((1, 1), (1, 1))),
    (2, 9, 4, 6, (3, 2), ((0, 1), (2, 0))),
]


@pytest.mark.skipif(not LINUX_X86, reason="the oneDNN wheels are built for Linux x86-64 only")
def test_strided_1x1_weight_gradient_is_the_same_in_every_run():
    """Each strided 1x1 case, 8 times with fresh data, equals XLA's gradients (rtol 1e-5).

    oneDNN's own strided 1x1 weight gradient (jit_1x1 on AVX2, NHWC input of fewer than 8
    channels) writes past its per-thread workspace: with two OpenMP threads most runs of the
    8x8 cases and some of the 6x6 one were wrong (uxlfoundation/oneDNN#6035). The kernels
    gather the strided pixels themselves instead.
    """
    rng = np.random.default_rng(0)
    for n, hw, cin, cout, stride, pads in STRIDED_1X1_CASES:
        config = (stride, pads, (1, 1), 1)
        grads = {
            backend: jax.jit(jax.grad(lambda x, w, ct, b=backend: jnp.sum(_conv(b, x, w, *config) * ct), argnums=(0, 1)))
            for backend in ("onednn", "xla")
        }
        for run in range(8):
            x = jnp.asarray(rng.standard_normal((n, hw, hw, cin)), jnp.float32)
            weight = jnp.asarray(rng.standard_normal((1, 1, cin, cout)), jnp.float32)
            out_shape = _conv("xla", x, weight, *config).shape
            cotangent = jnp.asarray(rng.standard_normal(out_shape), jnp.float32)
            got, want = grads["onednn"](x, weight, cotangent), grads["xla"](x, weight, cotangent)
            for name, g, r in zip(("input grad", "weight grad"), got, want):
                error = float(jnp.max(jnp.abs(g - r)))
                scale = float(jnp.max(jnp.abs(r)))
                assert error <= 1e-5 * scale, f"{(n, hw, cin, cout, stride, pads)} run {run}: {name} error {error:.3g}, scale {scale:.3g}"
