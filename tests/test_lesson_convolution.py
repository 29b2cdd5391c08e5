"""Tests for the convolution lesson: worked examples, scipy/torch/jaxcnn agreement, formulas."""

from __future__ import annotations

import doctest
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as torch_F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from jaxcnn.lessons import convolution
from jaxcnn.lessons.convolution import (
    Layer,
    ReceptiveField,
    conv2d_naive,
    conv2d_naive_backward,
    conv_input_grad2d,
    conv_kernel_grad2d,
    conv_output_size,
    convolve2d,
    cross_correlate2d,
    dilate2d,
    effective_kernel_size,
    flip_kernel,
    receptive_field,
    receptive_field_table,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------
# Worked examples, expected values written out from the definition
# --------------------------------------------------------------------------------------

D2L_INPUT = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8]])
D2L_KERNEL = np.array([[0, 1], [2, 3]])


def test_d2l_worked_example_cross_correlation():
    expected = np.array(
        [
            [0 * 0 + 1 * 1 + 3 * 2 + 4 * 3, 1 * 0 + 2 * 1 + 4 * 2 + 5 * 3],
            [3 * 0 + 4 * 1 + 6 * 2 + 7 * 3, 4 * 0 + 5 * 1 + 7 * 2 + 8 * 3],
        ]
    )
    assert expected.tolist() == [[19, 25], [37, 43]]
    np.testing.assert_array_equal(cross_correlate2d(D2L_INPUT, D2L_KERNEL), expected)


def test_asymmetric_kernel_convolution_differs_from_cross_correlation():
    # True convolution pairs the window's top-left pixel with the kernel's bottom-right tap.
    expected = np.array(
        [
            [0 * 3 + 1 * 2 + 3 * 1 + 4 * 0, 1 * 3 + 2 * 2 + 4 * 1 + 5 * 0],
            [3 * 3 + 4 * 2 + 6 * 1 + 7 * 0, 4 * 3 + 5 * 2 + 7 * 1 + 8 * 0],
        ]
    )
    assert expected.tolist() == [[5, 11], [23, 29]]
    convolved = convolve2d(D2L_INPUT, D2L_KERNEL)
    np.testing.assert_array_equal(convolved, expected)
    assert not np.array_equal(convolved, cross_correlate2d(D2L_INPUT, D2L_KERNEL))
    np.testing.assert_array_equal(flip_kernel(D2L_KERNEL), [[3, 2], [1, 0]])


def test_edge_detector_on_vertical_edges():
    # d2l's example: white (1) image with a black (0) vertical stripe in columns 2..5.
    image = np.ones((6, 8))
    image[:, 2:6] = 0
    kernel = np.array([[1.0, -1.0]])
    # Y[i, j] = X[i, j] - X[i, j + 1]: +1 where white turns black, -1 where black turns white.
    expected = np.zeros((6, 7))
    expected[:, 1] = 1.0
    expected[:, 5] = -1.0
    np.testing.assert_array_equal(cross_correlate2d(image, kernel), expected)
    # The flipped kernel [-1, 1] reports every edge with the opposite sign.
    np.testing.assert_array_equal(convolve2d(image, kernel), -expected)
    # A vertical-edge detector sees nothing in the transposed (horizontal-stripe) image.
    np.testing.assert_array_equal(cross_correlate2d(image.T, kernel), np.zeros((8, 5)))


@pytest.mark.parametrize(
    "kernel",
    [
        np.array([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16,  # Gaussian blur
        np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]),  # Laplacian
        np.ones((2, 2)) / 4,  # box blur, even size
    ],
)
def test_symmetric_kernel_convolution_equals_cross_correlation(kernel):
    image = np.random.default_rng(0).normal(size=(7, 6))
    np.testing.assert_array_equal(flip_kernel(kernel), kernel)
    np.testing.assert_allclose(convolve2d(image, kernel), cross_correlate2d(image, kernel))
    np.testing.assert_allclose(
        convolve2d(image, kernel, padding=1), cross_correlate2d(image, kernel, padding=1)
    )


def test_module_docstring_examples_run():
    result = doctest.testmod(convolution, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 10
    assert result.failed == 0


# --------------------------------------------------------------------------------------
# Agreement with scipy.signal
# --------------------------------------------------------------------------------------


def dilate_kernel(kernel: np.ndarray, dilation: tuple[int, int]) -> np.ndarray:
    """Insert ``dilation - 1`` zeros between kernel taps: a dense kernel equal to the dilated."""
    dil_h, dil_w = dilation
    kernel_h, kernel_w = kernel.shape
    dense = np.zeros((dil_h * (kernel_h - 1) + 1, dil_w * (kernel_w - 1) + 1), kernel.dtype)
    dense[::dil_h, ::dil_w] = kernel
    return dense


def scipy_reference(image, kernel, stride, padding, dilation, *, flip: bool) -> np.ndarray:
    """Pad, dilate the kernel with zeros, run scipy in 'valid' mode, keep every stride-th output."""
    padded = np.pad(image, ((padding[0],) * 2, (padding[1],) * 2))
    dense = dilate_kernel(kernel, dilation)  # zero gaps are symmetric, so flipping commutes
    scipy_function = scipy.signal.convolve2d if flip else scipy.signal.correlate2d
    return scipy_function(padded, dense, mode="valid")[:: stride[0], :: stride[1]]


@pytest.mark.parametrize(
    "image_shape, kernel_shape",
    [((5, 5), (3, 3)), ((6, 6), (2, 2)), ((7, 4), (2, 3)), ((4, 9), (4, 1)), ((3, 3), (3, 3))],
)
def test_valid_mode_matches_scipy(image_shape, kernel_shape):
    rng = np.random.default_rng(sum(image_shape) * 10 + sum(kernel_shape))
    image = rng.normal(size=image_shape)
    kernel = rng.normal(size=kernel_shape)
    np.testing.assert_allclose(
        cross_correlate2d(image, kernel), scipy.signal.correlate2d(image, kernel, mode="valid")
    )
    np.testing.assert_allclose(
        convolve2d(image, kernel), scipy.signal.convolve2d(image, kernel, mode="valid")
    )


@pytest.mark.parametrize("kernel_shape", [(3, 3), (2, 2), (2, 3)])
def test_full_padding_matches_scipy_full_mode(kernel_shape):
    rng = np.random.default_rng(1)
    image = rng.normal(size=(5, 6))
    kernel = rng.normal(size=kernel_shape)
    full_padding = (kernel_shape[0] - 1, kernel_shape[1] - 1)
    np.testing.assert_allclose(
        cross_correlate2d(image, kernel, padding=full_padding),
        scipy.signal.correlate2d(image, kernel, mode="full"),
    )
    np.testing.assert_allclose(
        convolve2d(image, kernel, padding=full_padding),
        scipy.signal.convolve2d(image, kernel, mode="full"),
    )


def test_odd_kernel_same_padding_matches_scipy_same_mode():
    rng = np.random.default_rng(2)
    image = rng.normal(size=(6, 7))
    kernel = rng.normal(size=(3, 5))
    np.testing.assert_allclose(
        cross_correlate2d(image, kernel, padding=(1, 2)),
        scipy.signal.correlate2d(image, kernel, mode="same"),
    )
    np.testing.assert_allclose(
        convolve2d(image, kernel, padding=(1, 2)),
        scipy.signal.convolve2d(image, kernel, mode="same"),
    )


@settings(max_examples=60, deadline=None)
@given(
    image_h=st.integers(1, 9),
    image_w=st.integers(1, 9),
    kernel_h=st.integers(1, 4),
    kernel_w=st.integers(1, 4),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    padding=st.tuples(st.integers(0, 2), st.integers(0, 2)),
    dilation=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    seed=st.integers(0, 2**16),
)
def test_fuzzed_sizes_match_scipy(
    image_h, image_w, kernel_h, kernel_w, stride, padding, dilation, seed
):
    assume(dilation[0] * (kernel_h - 1) + 1 <= image_h + 2 * padding[0])
    assume(dilation[1] * (kernel_w - 1) + 1 <= image_w + 2 * padding[1])
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(image_h, image_w))
    kernel = rng.normal(size=(kernel_h, kernel_w))
    for function, flip in ((cross_correlate2d, False), (convolve2d, True)):
        actual = function(image, kernel, stride=stride, padding=padding, dilation=dilation)
        expected = scipy_reference(image, kernel, stride, padding, dilation, flip=flip)
        assert actual.shape == (
            conv_output_size(image_h, kernel_h, stride[0], padding[0], dilation[0]),
            conv_output_size(image_w, kernel_w, stride[1], padding[1], dilation[1]),
        )
        np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=1e-10)


def test_single_channel_rejects_bad_shapes():
    with pytest.raises(ValueError, match="2-D"):
        cross_correlate2d(np.zeros((1, 3, 3)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="kernel spans"):
        cross_correlate2d(np.zeros((3, 3)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="kernel spans"):
        cross_correlate2d(np.zeros((3, 3)), np.ones((2, 2)), dilation=3)
    with pytest.raises(ValueError, match="pair"):
        cross_correlate2d(np.zeros((3, 3)), np.ones((2, 2)), stride=(1, 2, 3))


# --------------------------------------------------------------------------------------
# Multi-channel conv2d_naive against torch
# --------------------------------------------------------------------------------------

TORCH_CONFIGS = [
    # (batch, in_channels, out_channels, height, width, kernel, stride, padding, dilation, groups)
    (1, 1, 1, 5, 5, (3, 3), 1, 0, 1, 1),
    (2, 3, 4, 7, 6, (3, 3), 1, 1, 1, 1),
    (2, 3, 2, 8, 9, (2, 3), 2, 0, 1, 1),
    (1, 2, 3, 9, 9, (3, 3), (2, 1), (1, 2), (2, 1), 1),
    (2, 4, 6, 6, 7, (3, 2), 1, 1, 1, 2),
    (1, 4, 4, 7, 7, (3, 3), 2, 1, 1, 4),  # depthwise
    (1, 6, 3, 10, 8, (3, 3), 1, 2, 2, 3),
    (1, 2, 2, 4, 4, (5, 5), 1, 2, 1, 1),  # kernel larger than the unpadded input
]


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("config", TORCH_CONFIGS)
def test_conv2d_naive_matches_torch(config, use_bias):
    batch, c_in, c_out, height, width, kernel, stride, padding, dilation, groups = config
    rng = np.random.default_rng(abs(hash(config)) % 2**32)
    x = rng.normal(size=(batch, c_in, height, width)).astype(np.float32)
    weight = rng.normal(size=(c_out, c_in // groups, *kernel)).astype(np.float32)
    bias = rng.normal(size=(c_out,)).astype(np.float32) if use_bias else None
    expected = torch_F.conv2d(
        torch.from_numpy(x),
        torch.from_numpy(weight),
        None if bias is None else torch.from_numpy(bias),
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
    ).numpy()
    actual = conv2d_naive(x, weight, bias, stride, padding, dilation, groups)
    assert actual.shape == expected.shape
    assert actual.dtype == np.float32
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def test_conv2d_naive_accepts_a_single_chw_image():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 5, 5))
    weight = rng.normal(size=(3, 2, 3, 3))
    single = conv2d_naive(x, weight, padding=1)
    assert single.shape == (3, 5, 5)
    np.testing.assert_allclose(single, conv2d_naive(x[None], weight, padding=1)[0])


def test_conv2d_naive_is_a_sum_of_single_channel_cross_correlations():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(1, 3, 6, 6))
    weight = rng.normal(size=(1, 3, 2, 2))
    expected = sum(cross_correlate2d(x[0, c], weight[0, c]) for c in range(3)) + 0.5
    np.testing.assert_allclose(conv2d_naive(x, weight, np.array([0.5]))[0, 0], expected)


def test_conv2d_naive_rejects_bad_shapes():
    x = np.zeros((1, 4, 5, 5))
    with pytest.raises(ValueError, match="divisible"):
        conv2d_naive(x, np.zeros((3, 2, 3, 3)), groups=2)
    with pytest.raises(ValueError, match="input channels"):
        conv2d_naive(x, np.zeros((4, 3, 3, 3)), groups=1)
    with pytest.raises(ValueError, match="bias"):
        conv2d_naive(x, np.zeros((2, 4, 3, 3)), bias=np.zeros(3))
    with pytest.raises(ValueError, match="NCHW"):
        conv2d_naive(np.zeros((5, 5)), np.zeros((2, 1, 3, 3)))


# --------------------------------------------------------------------------------------
# Agreement with jaxcnn's own conv2d (NHWC / HWIO)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "image_shape, kernel_shape, stride, padding, dilation",
    [
        ((3, 3), (2, 2), 1, 0, 1),
        ((8, 7), (3, 3), 1, 1, 1),
        ((9, 10), (3, 2), 2, (1, 0), 1),
        ((11, 9), (3, 3), (1, 2), 2, 2),
    ],
)
def test_cross_correlate2d_matches_jaxcnn_conv2d(
    image_shape, kernel_shape, stride, padding, dilation
):
    from jaxcnn.nn.functional import conv2d

    rng = np.random.default_rng(5)
    image = rng.normal(size=image_shape).astype(np.float32)
    kernel = rng.normal(size=kernel_shape).astype(np.float32)
    nhwc = image[np.newaxis, :, :, np.newaxis]
    hwio = kernel[:, :, np.newaxis, np.newaxis]
    actual = np.asarray(conv2d(nhwc, hwio, stride=stride, padding=padding, dilation=dilation))
    expected = cross_correlate2d(image, kernel, stride=stride, padding=padding, dilation=dilation)
    assert actual.shape == (1, *expected.shape, 1)
    np.testing.assert_allclose(actual[0, :, :, 0], expected, rtol=1e-5, atol=1e-5)


def test_conv2d_naive_matches_jaxcnn_conv2d_with_groups():
    from jaxcnn.nn.functional import conv2d

    rng = np.random.default_rng(6)
    x_nchw = rng.normal(size=(2, 4, 7, 6)).astype(np.float32)
    weight_oihw = rng.normal(size=(6, 2, 3, 3)).astype(np.float32)
    bias = rng.normal(size=(6,)).astype(np.float32)
    expected = conv2d_naive(x_nchw, weight_oihw, bias, stride=2, padding=1, groups=2)
    actual = conv2d(
        x_nchw.transpose(0, 2, 3, 1),  # NCHW -> NHWC
        weight_oihw.transpose(2, 3, 1, 0),  # OIHW -> HWIO
        bias,
        stride=2,
        padding=1,
        groups=2,
    )
    np.testing.assert_allclose(
        np.asarray(actual).transpose(0, 3, 1, 2), expected, rtol=1e-5, atol=1e-5
    )


# --------------------------------------------------------------------------------------
# Output size formula
# --------------------------------------------------------------------------------------


def test_output_size_matches_torch_shapes_on_a_grid():
    checked = rejected = 0
    weight_cache: dict[int, torch.Tensor] = {}
    for in_size in (1, 2, 5, 8, 17):
        x = torch.zeros(1, 1, in_size, 1)
        for kernel in (1, 2, 3, 5):
            weight = weight_cache.setdefault(kernel, torch.zeros(1, 1, kernel, 1))
            for stride in (1, 2, 3):
                for padding in (0, 1, 2):
                    for dilation in (1, 2, 3):
                        try:
                            expected = torch_F.conv2d(
                                x, weight, stride=stride, padding=padding, dilation=dilation
                            ).shape[2]
                        except RuntimeError:
                            with pytest.raises(ValueError):
                                conv_output_size(in_size, kernel, stride, padding, dilation)
                            rejected += 1
                            continue
                        actual = conv_output_size(in_size, kernel, stride, padding, dilation)
                        assert actual == expected
                        checked += 1
    assert checked > 300 and rejected > 20


@pytest.mark.parametrize(
    "in_size, kernel, stride, padding, dilation, expected",
    [
        (3, 2, 1, 0, 1, 2),
        (224, 7, 2, 3, 1, 112),
        (112, 3, 2, 1, 1, 56),
        (224, 11, 4, 2, 1, 55),  # AlexNet conv1
        (32, 5, 1, 0, 1, 28),  # LeNet conv1
        (8, 3, 3, 0, 1, 2),  # stride leaves the last column unused
        (32, 3, 1, 2, 2, 32),
    ],
)
def test_output_size_known_values(in_size, kernel, stride, padding, dilation, expected):
    assert conv_output_size(in_size, kernel, stride, padding, dilation) == expected


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(in_size=0, kernel_size=1),
        dict(in_size=-3, kernel_size=1),
        dict(in_size=5, kernel_size=0),
        dict(in_size=5, kernel_size=3, stride=0),
        dict(in_size=5, kernel_size=3, padding=-1),
        dict(in_size=5, kernel_size=3, dilation=0),
        dict(in_size=3, kernel_size=4),
        dict(in_size=3, kernel_size=2, dilation=3),
    ],
)
def test_output_size_rejects_invalid_configurations(kwargs):
    with pytest.raises(ValueError):
        conv_output_size(**kwargs)


def test_output_size_accepts_kernel_that_fits_only_with_padding():
    assert conv_output_size(3, 5, padding=1) == 1
    assert effective_kernel_size(3, 4) == 9


# --------------------------------------------------------------------------------------
# Receptive field
# --------------------------------------------------------------------------------------


def test_stacked_3x3_receptive_fields():
    assert [rf.size for rf in receptive_field([Layer(3, padding=1)] * 2)] == [3, 5]
    assert receptive_field([Layer(3, padding=1)] * 3)[-1].size == 7
    # Without padding the first unit's window starts at pixel 0, so its centre moves right.
    assert [rf.start for rf in receptive_field([(3,), (3,)])] == [1.0, 2.0]


def test_resnet_stem_receptive_field():
    stem = [Layer(7, stride=2, padding=3), Layer(3, stride=2, padding=1, kind="pool")]
    conv, pool = receptive_field(stem, input_size=224)
    assert (conv.size, conv.jump, conv.start, conv.output_size) == (7, 2, 0.0, 112)
    assert (pool.size, pool.jump, pool.start, pool.output_size) == (11, 4, 0.0, 56)


def test_dilated_receptive_fields():
    assert receptive_field([Layer(3, dilation=2, padding=2)])[0].size == 5
    sizes = [rf.size for rf in receptive_field([(3, 1, 1, 1), (3, 1, 2, 2), (3, 1, 4, 4)])]
    assert sizes == [3, 7, 15]


def test_receptive_field_without_input_size_has_no_output_size():
    (field,) = receptive_field([(2, 2)])
    assert field == ReceptiveField(Layer(2, 2), size=2, jump=2, start=0.5, output_size=None)


def test_receptive_field_rejects_bad_layers():
    with pytest.raises(ValueError):
        receptive_field([(3, 1, 0, 1, 7)])
    with pytest.raises(ValueError):
        Layer(0)
    with pytest.raises(ValueError):
        Layer(3, padding=-1)
    with pytest.raises(ValueError):
        receptive_field([Layer(5)], input_size=3)


def test_receptive_field_table_lists_every_layer():
    table = receptive_field_table([Layer(3, padding=1)] * 2 + [Layer(2, 2, kind="pool")], 32)
    lines = table.splitlines()
    assert len(lines) == 4
    assert lines[0].split() == ["layer", "kind", "k", "s", "p", "d", "out", "size", "jump", "start"]
    assert lines[-1].split() == ["3", "pool", "2", "2", "0", "1", "16", "6", "2", "0.5"]


STACKS = [
    [(3, 1, 1)] * 3,
    [(7, 2, 3), (3, 2, 1)],
    [(3, 1, 0), (2, 2, 0), (3, 1, 0)],
    [(3, 1, 1, 1), (3, 1, 2, 2), (3, 1, 4, 4)],
    [(5, 2, 2), (3, 1, 1, 2), (2, 2, 0), (3, 3, 1)],
]


@pytest.mark.parametrize("stack", STACKS)
def test_receptive_field_matches_autograd(stack):
    """Back-propagate one output unit through all-ones windows: its receptive field is where
    the input gradient is non-zero."""
    length = 200
    x = torch.zeros(1, 1, length, dtype=torch.float64, requires_grad=True)
    y = x
    for spec in stack:
        layer = Layer(*spec)
        ones = torch.ones(1, 1, layer.kernel_size, dtype=torch.float64)
        y = torch_F.conv1d(
            y, ones, stride=layer.stride, padding=layer.padding, dilation=layer.dilation
        )
    fields = receptive_field(stack, input_size=length)
    last = fields[-1]
    assert y.shape[-1] == last.output_size
    unit = last.output_size // 2  # far from the borders, so no tap falls into the padding
    y[0, 0, unit].backward()
    seen = torch.nonzero(x.grad[0, 0]).flatten()
    first, final = seen.min().item(), seen.max().item()
    assert final - first + 1 == last.size
    assert (first + final) / 2 == last.start + unit * last.jump


# --------------------------------------------------------------------------------------
# Backward pass: against scipy.signal, torch autograd and jax.grad
# --------------------------------------------------------------------------------------


def assert_close_to_scale(actual, expected, rtol):
    """The project's parity rule: max|actual - expected| <= rtol * max|expected|."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape
    scale = max(float(np.max(np.abs(expected))), 1e-30)
    assert float(np.max(np.abs(actual - expected))) <= rtol * scale


def test_dilate2d_inserts_zeros():
    np.testing.assert_array_equal(dilate2d(np.array([[1, 2, 3]]), (1, 3)), [[1, 0, 0, 2, 0, 0, 3]])
    np.testing.assert_array_equal(dilate2d(np.array([[5]]), 4), [[5]])
    # A dilated kernel is the dense kernel the forward pass uses.
    rng = np.random.default_rng(7)
    image, kernel = rng.normal(size=(9, 8)), rng.normal(size=(2, 3))
    np.testing.assert_allclose(
        cross_correlate2d(image, kernel, dilation=(3, 2)),
        cross_correlate2d(image, dilate2d(kernel, (3, 2))),
    )
    with pytest.raises(ValueError):
        dilate2d(np.ones((2, 2)), 0)


def test_stride1_gradients_are_full_convolution_and_valid_cross_correlation():
    rng = np.random.default_rng(8)
    image, kernel = rng.normal(size=(6, 7)), rng.normal(size=(3, 2))
    grad = rng.normal(size=(4, 6))
    np.testing.assert_allclose(
        conv_input_grad2d(grad, kernel, image.shape),
        scipy.signal.convolve2d(grad, kernel, mode="full"),
    )
    np.testing.assert_allclose(
        conv_kernel_grad2d(image, grad, kernel.shape),
        scipy.signal.correlate2d(image, grad, mode="valid"),
    )


def test_gradient_of_one_output_is_the_kernel_placed_at_its_window():
    # dY[i, j]/dX is K placed at the window of (i, j): stride 2, padding 1 crops the corner.
    kernel = np.arange(1.0, 10.0).reshape(3, 3)
    grad = np.zeros((4, 4))  # (7 + 2 - 3) // 2 + 1 = 4
    grad[1, 2] = 1.0
    expected_padded = np.zeros((9, 9))
    expected_padded[2:5, 4:7] = kernel
    expected = expected_padded[1:-1, 1:-1]
    actual = conv_input_grad2d(grad, kernel, (7, 7), stride=2, padding=1)
    np.testing.assert_array_equal(actual, expected)


def test_unused_input_rows_get_zero_gradient():
    # 8 pixels, kernel 3, stride 3: pixels 6 and 7 are never read.
    rng = np.random.default_rng(9)
    grad = rng.normal(size=(2, 1))
    actual = conv_input_grad2d(grad, rng.normal(size=(3, 1)), (8, 1), stride=3)
    assert actual.shape == (8, 1)
    np.testing.assert_array_equal(actual[6:], 0.0)
    assert np.all(actual[:6] != 0.0)


def test_backward_rejects_mismatched_grad_output():
    with pytest.raises(ValueError, match="grad_output"):
        conv_input_grad2d(np.ones((3, 3)), np.ones((2, 2)), (5, 5))
    with pytest.raises(ValueError, match="grad_output"):
        conv_kernel_grad2d(np.ones((5, 5)), np.ones((3, 3)), (2, 2), stride=2)
    with pytest.raises(ValueError, match="shapes"):
        conv2d_naive_backward(np.ones((1, 2, 5, 5)), np.ones((3, 2, 3, 3)), np.ones((1, 2, 3, 3)))


def torch_single_channel_grads(image, kernel, grad, stride, padding, dilation):
    x = torch.from_numpy(image)[None, None].requires_grad_(True)
    k = torch.from_numpy(kernel)[None, None].requires_grad_(True)
    y = torch_F.conv2d(x, k, stride=stride, padding=padding, dilation=dilation)
    grad_x, grad_k = torch.autograd.grad(y, (x, k), torch.from_numpy(grad)[None, None])
    return grad_x[0, 0].numpy(), grad_k[0, 0].numpy()


def jax_single_channel_grads(image, kernel, grad, stride, padding, dilation):
    import jax

    from jaxcnn.nn.functional import conv2d

    def forward(x, k):  # one NHWC image, one HWIO kernel
        y = conv2d(x[None, :, :, None], k[:, :, None, None], stride=stride, padding=padding,
                   dilation=dilation)  # fmt: skip
        return y[0, :, :, 0]

    _, vjp = jax.vjp(forward, image.astype(np.float32), kernel.astype(np.float32))
    grad_x, grad_k = vjp(grad.astype(np.float32))
    return np.asarray(grad_x), np.asarray(grad_k)


def scipy_single_channel_grads(image, kernel, grad, stride, padding, dilation):
    """The two identities written with scipy.signal and explicit zero insertion."""
    spread = dilate_kernel(grad, stride)  # zero-insertion, the helper of the forward tests
    dense = dilate_kernel(kernel, dilation)
    full = scipy.signal.convolve2d(spread, dense, mode="full")
    padded_shape = (image.shape[0] + 2 * padding[0], image.shape[1] + 2 * padding[1])
    grad_padded = np.zeros(padded_shape)
    grad_padded[: full.shape[0], : full.shape[1]] = full
    grad_x = grad_padded[padding[0] : padded_shape[0] - padding[0],
                         padding[1] : padded_shape[1] - padding[1]]  # fmt: skip
    padded = np.pad(image, ((padding[0],) * 2, (padding[1],) * 2))
    correlation = scipy.signal.correlate2d(padded, spread, mode="valid")
    grad_k = correlation[:: dilation[0], :: dilation[1]][: kernel.shape[0], : kernel.shape[1]]
    return grad_x, grad_k


@settings(max_examples=40, deadline=None)
@given(
    image_h=st.integers(1, 9),
    image_w=st.integers(1, 9),
    kernel_h=st.integers(1, 4),
    kernel_w=st.integers(1, 4),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    padding=st.tuples(st.integers(0, 2), st.integers(0, 2)),
    dilation=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    seed=st.integers(0, 2**16),
)
def test_fuzzed_single_channel_gradients_match_torch_jax_and_scipy(
    image_h, image_w, kernel_h, kernel_w, stride, padding, dilation, seed
):
    assume(dilation[0] * (kernel_h - 1) + 1 <= image_h + 2 * padding[0])
    assume(dilation[1] * (kernel_w - 1) + 1 <= image_w + 2 * padding[1])
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(image_h, image_w))
    kernel = rng.normal(size=(kernel_h, kernel_w))
    out_shape = cross_correlate2d(image, kernel, stride, padding, dilation).shape
    grad = rng.normal(size=out_shape)
    grad_x = conv_input_grad2d(grad, kernel, image.shape, stride, padding, dilation)
    grad_k = conv_kernel_grad2d(image, grad, kernel.shape, stride, padding, dilation)
    assert grad_x.shape == image.shape and grad_k.shape == kernel.shape

    for reference, rtol in (
        (torch_single_channel_grads, 1e-10),  # float64
        (scipy_single_channel_grads, 1e-10),
        (jax_single_channel_grads, 1e-5),  # float32
    ):
        expected_x, expected_k = reference(image, kernel, grad, stride, padding, dilation)
        assert_close_to_scale(grad_x, expected_x, rtol)
        assert_close_to_scale(grad_k, expected_k, rtol)


@settings(max_examples=20, deadline=None)
@given(
    batch=st.integers(1, 2),
    groups=st.integers(1, 2),
    in_per_group=st.integers(1, 2),
    out_per_group=st.integers(1, 2),
    size=st.tuples(st.integers(3, 8), st.integers(3, 8)),
    kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    padding=st.tuples(st.integers(0, 2), st.integers(0, 2)),
    dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    seed=st.integers(0, 2**16),
)
def test_fuzzed_layer_backward_matches_torch_autograd_and_jax_grad(
    batch, groups, in_per_group, out_per_group, size, kernel, stride, padding, dilation, seed
):
    import jax

    from jaxcnn.nn.functional import conv2d

    assume(all(d * (k - 1) + 1 <= n + 2 * p for n, k, p, d in zip(size, kernel, padding, dilation)))
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, in_per_group * groups, *size))
    weight = rng.normal(size=(out_per_group * groups, in_per_group, *kernel))
    bias = rng.normal(size=(out_per_group * groups,))
    options = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    grad = rng.normal(size=conv2d_naive(x, weight, bias, **options).shape)
    actual = conv2d_naive_backward(x, weight, grad, **options)

    tensors = [torch.from_numpy(a).requires_grad_(True) for a in (x, weight, bias)]
    y = torch_F.conv2d(*tensors, **options)
    expected = torch.autograd.grad(y, tensors, torch.from_numpy(grad))
    for a, e in zip(actual, expected):
        assert_close_to_scale(a, e.numpy(), 1e-10)

    def forward(x_nhwc, w_hwio, b):
        return conv2d(x_nhwc, w_hwio, b, **options)

    f32 = lambda a: a.astype(np.float32)  # noqa: E731
    _, vjp = jax.vjp(forward, f32(x.transpose(0, 2, 3, 1)), f32(weight.transpose(2, 3, 1, 0)), f32(bias))
    grad_x, grad_w, grad_b = vjp(f32(grad.transpose(0, 2, 3, 1)))
    assert_close_to_scale(actual[0], np.asarray(grad_x).transpose(0, 3, 1, 2), 1e-5)
    assert_close_to_scale(actual[1], np.asarray(grad_w).transpose(3, 2, 0, 1), 1e-5)
    assert_close_to_scale(actual[2], np.asarray(grad_b), 1e-5)


# --------------------------------------------------------------------------------------
# The figure script
# --------------------------------------------------------------------------------------


def load_lesson_script():
    """Import ``scripts/convolution_lesson.py`` (the scripts folder is not a package)."""
    path = REPO_ROOT / "scripts" / "convolution_lesson.py"
    spec = importlib.util.spec_from_file_location("convolution_lesson_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lesson_script_writes_a_png(tmp_path):
    script = load_lesson_script()
    out = tmp_path / "figures" / "lesson.png"
    assert script.main(["--out", str(out)]) == 0
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 10_000
