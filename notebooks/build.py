"""Build the course notebooks from the cells written below, and execute them.

    python notebooks/build.py                 # write and execute every notebook
    python notebooks/build.py 02 --no-execute # write notebook 02 without outputs

Each notebook is a list of cells: ``md(...)`` for prose, ``code(...)`` for code. Edit the
cells here, not in Jupyter, then rebuild: the committed ``.ipynb`` files carry the outputs
of the last build so they read well on GitHub. ``tests/test_notebooks.py`` executes the
committed notebooks and checks that their cells still match this file.

Execution starts a Jupyter kernel with *this* Python interpreter (``sys.executable``), so it
needs ``ipykernel``, ``nbclient`` and ``nbformat`` (the ``dev`` extra) but no installed
kernelspec.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import textwrap
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

NOTEBOOK_DIR = Path(__file__).resolve().parent
KERNEL_NAME = "python3"
#: Name of the throw-away kernelspec that runs ``sys.executable`` (see :func:`execute`).
_EXEC_KERNEL = "jaxcnn-notebook-build"


def md(text: str):
    return new_markdown_cell(textwrap.dedent(text).strip())


def code(text: str):
    return new_code_cell(textwrap.dedent(text).strip())


# The first code cell of every notebook: quiet, CPU-friendly, legible figures.
SETUP = code(
    """
    import matplotlib.pyplot as plt
    import numpy as np

    plt.rcParams.update({"figure.dpi": 100, "font.size": 13, "axes.titlesize": 14,
                         "image.interpolation": "nearest"})
    np.set_printoptions(precision=3, suppress=True)
    """
)

# ---------------------------------------------------------------------------------------
# 01 Convolution is cross-correlation
# ---------------------------------------------------------------------------------------

NB01 = [
    md(
        """
        # 1. Convolution is cross-correlation

        A "convolution" layer in PyTorch, JAX or TensorFlow does not compute the convolution of
        mathematics. It computes a **cross-correlation**: slide the kernel over the image,
        multiply elementwise, sum. This notebook computes it by hand, then with `scipy.signal`,
        PyTorch and jaxcnn, shows where the missing kernel flip matters (an edge detector on a
        real digit), derives output sizes and receptive fields, and ends with the backward pass,
        where the flip comes back: the gradient of a convolution layer with respect to its input
        is a *true* convolution.

        The code uses `jaxcnn.lessons.convolution` (plain NumPy, written to be read) and
        `jaxcnn.nn.functional` (the layers the models use, NHWC images and HWIO kernels), with
        PyTorch (NCHW images, OIHW kernels) beside them.
        """
    ),
    SETUP,
    code(
        """
        import jax
        import jax.numpy as jnp
        import scipy.signal
        import torch
        import torch.nn.functional as torch_F

        from jaxcnn.data import load_dataset
        from jaxcnn.lessons import convolution as lesson
        from jaxcnn.nn import functional as F
        """
    ),
    md(
        """
        ## Cross-correlation by hand

        Output element $(i, j)$ is the sum of the input window at $(i, j)$ times the kernel:

        $$Y[i, j] = \\sum_a \\sum_b X[i + a,\\, j + b]\\; K[a, b]$$

        Two loops over the output positions, one window each:
        """
    ),
    code(
        """
        X = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8]])
        K = np.array([[0, 1], [2, 3]])

        kh, kw = K.shape
        Y = np.zeros((X.shape[0] - kh + 1, X.shape[1] - kw + 1), dtype=int)
        for i in range(Y.shape[0]):
            for j in range(Y.shape[1]):
                Y[i, j] = np.sum(X[i:i + kh, j:j + kw] * K)
        Y
        """
    ),
    md(
        """
        `lesson.cross_correlate2d` is the same loop with stride, padding and dilation.
        `scipy.signal.correlate2d` computes it too, and so do the deep-learning layers:
        PyTorch wants `(N, C, H, W)` images and `(C_out, C_in, kh, kw)` kernels, jaxcnn
        `(N, H, W, C)` images and `(kh, kw, C_in, C_out)` kernels.
        """
    ),
    code(
        """
        x = X.astype(np.float32)
        k = K.astype(np.float32)
        results = {
            "lesson.cross_correlate2d": lesson.cross_correlate2d(X, K),
            "scipy.signal.correlate2d": scipy.signal.correlate2d(X, K, mode="valid"),
            "torch conv2d (NCHW, OIHW)": torch_F.conv2d(torch.tensor(x)[None, None],
                                                        torch.tensor(k)[None, None])[0, 0].numpy(),
            "jaxcnn conv2d (NHWC, HWIO)": np.asarray(F.conv2d(x[None, :, :, None],
                                                              k[:, :, None, None]))[0, :, :, 0],
        }
        for name, result in results.items():
            print(f"{name:28s}", result.tolist())
        """
    ),
    md(
        """
        ## The flip

        The convolution of signal processing runs the kernel *backwards*:
        $(X \\ast K)[i, j] = \\sum_a \\sum_b X[i - a, j - b]\\, K[a, b]$. On the positions where
        the kernel fits, that is a cross-correlation with the kernel rotated by 180 degrees.
        `scipy.signal.convolve2d` computes it; so does `lesson.convolve2d`.
        """
    ),
    code(
        """
        print("convolve2d           ", lesson.convolve2d(X, K).tolist())
        print("scipy convolve2d     ", scipy.signal.convolve2d(X, K, mode="valid").tolist())
        print("correlate, K flipped ", lesson.cross_correlate2d(X, lesson.flip_kernel(K)).tolist())
        """
    ),
    code(
        """
        def show_grid(ax, values, title, highlight=None, cmap="Blues"):
            values = np.asarray(values)
            ax.imshow(values, cmap=cmap, vmin=values.min() - 1, vmax=values.max() + 4)
            for (r, c), v in np.ndenumerate(values):
                ax.text(c, r, str(v), ha="center", va="center", fontsize=18)
            if highlight is not None:
                (r0, c0), (h, w) = highlight
                ax.add_patch(plt.Rectangle((c0 - 0.5, r0 - 0.5), w, h, fill=False, ec="crimson", lw=4))
            ax.set_title(title)
            ax.set_xticks([]); ax.set_yticks([])

        fig, axes = plt.subplots(1, 5, figsize=(15, 3.4),
                                 gridspec_kw={"width_ratios": [3, 2, 2, 2, 2]})
        show_grid(axes[0], X, "input X", highlight=((0, 0), (2, 2)))
        show_grid(axes[1], K, "kernel K", cmap="Oranges")
        show_grid(axes[2], lesson.cross_correlate2d(X, K), "cross-correlation", highlight=((0, 0), (1, 1)))
        show_grid(axes[3], lesson.flip_kernel(K), "K flipped", cmap="Oranges")
        show_grid(axes[4], lesson.convolve2d(X, K), "convolution", highlight=((0, 0), (1, 1)))
        fig.suptitle("The red window: 0·0 + 1·1 + 3·2 + 4·3 = 19 (layers), 0·3 + 1·2 + 3·1 + 4·0 = 5 (convolution)",
                     fontsize=13)
        fig.tight_layout()
        plt.show()
        """
    ),
    md(
        """
        In a network the kernel is learned, so a layer that flipped would simply learn the
        flipped kernel: the flip costs work and changes nothing, and frameworks skip it. It
        matters when a kernel is *designed*, as in image processing.

        ## An edge detector on a real digit

        The kernel `[[1, -1]]` cross-correlated with an image gives $X[i, j] - X[i, j+1]$:
        positive where brightness *drops* going right (the right edge of a bright stroke),
        negative where it rises. The true convolution with the same kernel reports every
        edge with the opposite sign. The digit comes from scikit-learn's bundled digits,
        upsampled to 28x28 (`load_dataset("digits")`, no download).
        """
    ),
    code(
        """
        test = load_dataset("digits")["test"]
        digit = test.images[3, :, :, 0] / 255.0          # uint8 NHWC -> one float (28, 28) image
        print("label:", test.labels[3], "| image", digit.shape)

        edge = np.array([[1.0, -1.0]])
        maps = {
            "cross-correlation, [[1, -1]]": lesson.cross_correlate2d(digit, edge),
            "convolution, [[1, -1]]": lesson.convolve2d(digit, edge),
            "cross-correlation, [[1], [-1]]": lesson.cross_correlate2d(digit, edge.T),
        }
        limit = max(np.abs(m).max() for m in maps.values())
        fig, axes = plt.subplots(1, 4, figsize=(16, 4.4))
        axes[0].imshow(digit, cmap="gray")
        axes[0].set_title(f"digit {test.labels[3]}")
        for ax, (title, m) in zip(axes[1:], maps.items()):
            im = ax.imshow(m, cmap="RdBu_r", vmin=-limit, vmax=limit)
            ax.set_title(title, fontsize=13)
        for ax in axes:
            ax.set_xticks([]); ax.set_yticks([])
        fig.colorbar(im, ax=axes, shrink=0.8, label="response (red +, blue -)")
        plt.show()
        """
    ),
    md(
        """
        Red marks where the stroke ends going right (cross-correlation) and turns blue under
        convolution; the vertical kernel `[[1], [-1]]` finds horizontal edges instead. A
        kernel copied from an image-processing text (where "convolution" flips) into a conv
        layer (which does not) detects the opposite polarity. Symmetric kernels (blur,
        Laplacian) equal their flip, so there it does not matter.

        ## Output sizes

        With padding $p$ on each side, stride $s$ and dilation $d$ (taps $d$ apart, so the
        kernel spans $d(k-1)+1$ pixels), an input of size $n$ gives

        $$n_{out} = \\left\\lfloor \\frac{n + 2p - d(k-1) - 1}{s} \\right\\rfloor + 1 .$$

        `lesson.conv_output_size` evaluates it; PyTorch and jaxcnn agree:
        """
    ),
    code(
        """
        configs = [  # (n, k, s, p, d, where it comes from)
            (28, 5, 1, 0, 1, "MNIST CNN conv1"),
            (32, 5, 1, 0, 1, "LeNet-5 C1"),
            (224, 11, 4, 2, 1, "AlexNet conv1"),
            (224, 7, 2, 3, 1, "ResNet conv1"),
            (56, 3, 1, 1, 1, "a 'same' 3x3"),
            (32, 3, 1, 2, 2, "a 'same' dilated 3x3"),
            (8, 3, 3, 0, 1, "stride leaves 2 pixels unused"),
        ]
        print(f"{'layer':32s} {'n':>4} {'k':>3} {'s':>2} {'p':>2} {'d':>2} {'formula':>8} {'torch':>6} {'jaxcnn':>7}")
        for n, k, s, p, d, name in configs:
            ours = lesson.conv_output_size(n, k, s, p, d)
            t = torch_F.conv2d(torch.zeros(1, 1, n, n), torch.zeros(1, 1, k, k), stride=s, padding=p, dilation=d).shape[-1]
            j = jax.eval_shape(lambda x: F.conv2d(x, jnp.zeros((k, k, 1, 1)), stride=s, padding=p, dilation=d),
                               jax.ShapeDtypeStruct((1, n, n, 1), jnp.float32)).shape[1]
            print(f"{name:32s} {n:4d} {k:3d} {s:2d} {p:2d} {d:2d} {ours:8d} {t:6d} {j:7d}")
        """
    ),
    md(
        """
        ## Receptive fields

        A unit's receptive field is the set of input pixels that can change it. Per layer,
        the field grows by $(k_{eff} - 1)\\times$ the *jump* (the distance in input pixels
        between neighbouring units, the product of the strides so far). Two 3x3 layers see
        5x5 pixels, three see 7x7: VGG's argument for stacking 3x3 kernels.
        """
    ),
    code(
        """
        vgg_block = [lesson.Layer(3, padding=1)] * 3 + [lesson.Layer(2, stride=2, kind="pool")]
        print(lesson.receptive_field_table(vgg_block * 2, input_size=32))
        """
    ),
    md(
        """
        The receptive field can also be *measured*: back-propagate one output unit to the
        input. The gradient is non-zero exactly on the receptive field, and largest in its
        centre (more paths lead there). Here with `jax.grad` through three all-ones 3x3
        layers, without and with a stride-2 middle layer:
        """
    ),
    code(
        """
        ones = jnp.ones((3, 3, 1, 1))

        def centre_unit(image, strides):
            y = image[None, :, :, None]
            for s in strides:
                y = F.conv2d(y, ones, stride=s, padding=1)
            return y[0, y.shape[1] // 2, y.shape[2] // 2, 0]

        fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
        for ax, strides in zip(axes, [(1, 1, 1), (1, 2, 1)]):
            grad = jax.grad(centre_unit)(jnp.zeros((15, 15)), strides)
            size = lesson.receptive_field([(3, s, 1) for s in strides])[-1].size
            rows = np.nonzero(np.asarray(grad).any(axis=1))[0]
            ax.imshow(grad, cmap="magma")
            ax.set_title(f"strides {strides}: {len(rows)}x{len(rows)} measured, {size}x{size} by formula",
                         fontsize=12)
            ax.set_xticks([]); ax.set_yticks([])
        fig.suptitle("d(centre output unit) / d(input) through three 3x3 layers")
        fig.tight_layout()
        plt.show()
        """
    ),
    md(
        """
        ## The backward pass is convolution too

        Training needs $\\partial L/\\partial X$ and $\\partial L/\\partial K$ given
        $G = \\partial L/\\partial Y$. Input pixel $X[u, v]$ met tap $K[a, b]$ in output
        $Y[u-a, v-b]$, so

        $$\\frac{\\partial L}{\\partial X}[u, v] = \\sum_{a,b} G[u-a,\\, v-b]\\, K[a, b]
          \\quad\\text{(a full, true convolution of } G \\text{ with } K\\text{)},$$

        $$\\frac{\\partial L}{\\partial K}[a, b] = \\sum_{i,j} X[i+a,\\, j+b]\\, G[i, j]
          \\quad\\text{(a cross-correlation of } X \\text{ with } G\\text{)}.$$

        The index runs backwards through $K$: the flip that the forward layer skipped. The
        new lesson functions `conv_input_grad2d` and `conv_kernel_grad2d` compute both; here
        they are checked against `jax.grad` of jaxcnn's `conv2d`, torch autograd and the two
        `scipy.signal` calls.
        """
    ),
    code(
        """
        rng = np.random.default_rng(0)
        X = rng.normal(size=(6, 7)).astype(np.float32)
        K = rng.normal(size=(3, 3)).astype(np.float32)
        G = rng.normal(size=(4, 5)).astype(np.float32)     # dL/dY for a (4, 5) output

        def loss(x, k, stride=1, padding=0):               # L = sum(G * Y), so dL/dY = G
            y = F.conv2d(x[None, :, :, None], k[:, :, None, None], stride=stride, padding=padding)
            return jnp.sum(y[0, :, :, 0] * G)

        jax_dX, jax_dK = jax.grad(loss, argnums=(0, 1))(X, K)
        checks = {
            "dL/dX lesson vs jax.grad": (lesson.conv_input_grad2d(G, K, X.shape), jax_dX),
            "dL/dX scipy convolve2d(G, K, 'full') vs jax.grad":
                (scipy.signal.convolve2d(G, K, mode="full"), jax_dX),
            "dL/dK lesson vs jax.grad": (lesson.conv_kernel_grad2d(X, G, K.shape), jax_dK),
            "dL/dK scipy correlate2d(X, G, 'valid') vs jax.grad":
                (scipy.signal.correlate2d(X, G, mode="valid"), jax_dK),
        }
        for name, (ours, ref) in checks.items():
            print(f"{name:52s} max |difference| = {np.max(np.abs(ours - np.asarray(ref))):.1e}")
        """
    ),
    md(
        """
        **Stride and padding.** A stride-2 layer computes every second output of the stride-1
        layer, so its gradient is the stride-1 gradient with zeros for the outputs it skipped:
        insert $s-1$ zeros between the entries of $G$ (`dilate2d`). Padding only adds input
        pixels, so crop $p$ from each side afterwards. (A dilated kernel is handled the same
        way: dilate $K$.) PyTorch's autograd agrees too:
        """
    ),
    code(
        """
        G2 = rng.normal(size=(3, 4)).astype(np.float32)      # output of a 3x3, stride-2, padding-1 layer on 6x7
        spread = lesson.dilate2d(G2, 2)
        print("G dilated by the stride:\\n", spread)

        ours_dX = lesson.conv_input_grad2d(G2, K, X.shape, stride=2, padding=1)
        ours_dK = lesson.conv_kernel_grad2d(X, G2, K.shape, stride=2, padding=1)

        def loss2(x, k):
            y = F.conv2d(x[None, :, :, None], k[:, :, None, None], stride=2, padding=1)
            return jnp.sum(y[0, :, :, 0] * G2)

        jax_dX, jax_dK = jax.grad(loss2, argnums=(0, 1))(X, K)
        tx = torch.tensor(X)[None, None].requires_grad_()
        tk = torch.tensor(K)[None, None].requires_grad_()
        (torch_F.conv2d(tx, tk, stride=2, padding=1) * torch.tensor(G2)).sum().backward()
        for name, ours, j, t in [("dL/dX", ours_dX, jax_dX, tx.grad[0, 0]), ("dL/dK", ours_dK, jax_dK, tk.grad[0, 0])]:
            print(f"{name}: vs jax.grad {np.max(np.abs(ours - np.asarray(j))):.1e}, "
                  f"vs torch autograd {np.max(np.abs(ours - t.numpy())):.1e}")
        """
    ),
    code(
        """
        fig, axes = plt.subplots(1, 4, figsize=(16, 4.2))
        size = lambda a: "x".join(map(str, a.shape))
        panels = [(G2, f"G = dL/dY ({size(G2)})"), (spread, f"G, zeros inserted ({size(spread)})"),
                  (K, f"kernel K ({size(K)})"), (ours_dX, f"dL/dX: full convolution,\\ncropped by the padding ({size(ours_dX)})")]
        for ax, (values, title) in zip(axes, panels):
            limit = np.abs(values).max()
            ax.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit)
            ax.set_title(title, fontsize=13)
            ax.set_xticks([]); ax.set_yticks([])
        fig.suptitle("Backward pass of a stride-2, padding-1 convolution")
        fig.tight_layout()
        plt.show()
        """
    ),
    md(
        """
        `lesson.conv2d_naive_backward` does the same for a whole multi-channel layer (the
        gradients summed over channels and the batch, plus the bias gradient), and
        `tests/test_lesson_convolution.py` checks all of this against `jax.grad` and torch
        autograd for random shapes, strides, paddings, dilations and groups.

        **Takeaways.** Layers compute cross-correlation; the flip only matters for designed
        kernels. Output size and receptive field follow from $k$, $s$, $p$, $d$. Backward,
        the input gradient is a true convolution of the (zero-inserted) output gradient with
        the kernel, and the kernel gradient a cross-correlation of the input with it.
        """
    ),
]

# ---------------------------------------------------------------------------------------
# 02 Pooling
# ---------------------------------------------------------------------------------------

NB02 = [
    md(
        """
        # 2. Pooling

        Pooling summarises each window of a feature map with one number: its maximum or its
        mean. It has no weights; it shrinks the map (and the work of the next layers), and it
        makes the output a little insensitive to small shifts. This notebook covers max and
        average pooling with PyTorch's exact rules (padding, `ceil_mode`), global pooling,
        adaptive pooling with its overlapping windows, and ends with a class activation map:
        global average pooling lets a classifier show *where* it saw the class.

        jaxcnn's pooling functions take NHWC arrays; PyTorch's take NCHW.
        """
    ),
    SETUP,
    code(
        """
        import jax
        import jax.numpy as jnp
        import torch
        import torch.nn.functional as torch_F
        from flax import nnx

        from jaxcnn import models, nn
        from jaxcnn.data import load_dataset, normalize
        from jaxcnn.models.cam import class_activation_map, upsample_to
        from jaxcnn.models.gap_vgg import make_layers
        from jaxcnn.nn import functional as F
        from jaxcnn.train import TrainConfig, Trainer

        def to_torch(x_nhwc):                  # NHWC array -> NCHW tensor
            return torch.tensor(np.asarray(x_nhwc)).permute(0, 3, 1, 2)

        def to_nhwc(t_nchw):                   # NCHW tensor -> NHWC numpy
            return t_nchw.permute(0, 2, 3, 1).numpy()
        """
    ),
    md(
        """
        ## Max and average pooling

        A 2x2 window with stride 2 on a 4x4 map: each output is the max (or mean) of one
        block.
        """
    ),
    code(
        """
        A = np.array([[4, 3, 1, 5],
                      [1, 3, 4, 8],
                      [4, 5, 4, 3],
                      [6, 5, 9, 4]], dtype=np.float32)
        x = A[None, :, :, None]                                  # NHWC, one image, one channel
        max_j = F.max_pool2d(x, 2)[0, :, :, 0]
        avg_j = F.avg_pool2d(x, 2)[0, :, :, 0]
        max_t = torch_F.max_pool2d(to_torch(x), 2)[0, 0]
        avg_t = torch_F.avg_pool2d(to_torch(x), 2)[0, 0]
        print("max pool  jaxcnn", np.asarray(max_j).tolist(), " torch", max_t.tolist())
        print("avg pool  jaxcnn", np.asarray(avg_j).tolist(), " torch", avg_t.tolist())
        """
    ),
    code(
        """
        def draw(ax, values, title, blocks=None, fmt="{:g}"):
            values = np.asarray(values)
            ax.imshow(values, cmap="YlGnBu", vmin=0, vmax=12)
            for (r, c), v in np.ndenumerate(values):
                ax.text(c, r, fmt.format(v), ha="center", va="center", fontsize=17)
            if blocks:
                for pos in range(blocks, values.shape[0], blocks):
                    ax.axhline(pos - 0.5, color="crimson", lw=3)
                    ax.axvline(pos - 0.5, color="crimson", lw=3)
            ax.set_title(title)
            ax.set_xticks([]); ax.set_yticks([])

        fig, axes = plt.subplots(1, 3, figsize=(12, 4), gridspec_kw={"width_ratios": [2, 1.2, 1.2]})
        draw(axes[0], A, "input, 2x2 windows", blocks=2)
        draw(axes[1], max_j, "max pool")
        draw(axes[2], avg_j, "average pool", fmt="{:.2f}")
        fig.tight_layout()
        plt.show()
        """
    ),
    md(
        """
        ## Padding and `ceil_mode`

        Max pooling pads with $-\\infty$, never with zeros: on an all-negative map, zero padding
        would invent a maximum of 0. Average pooling pads with zeros and by default divides by
        the full window (`count_include_pad=True`).

        The output size is the convolution formula, rounded *down*; `ceil_mode=True` rounds
        up, so a last, partial window covers the leftover rows. PyTorch adds one rule: a
        window that would *start* in the right padding is dropped.
        """
    ),
    code(
        """
        neg = -np.arange(1, 26, dtype=np.float32).reshape(1, 5, 5, 1)          # all negative
        print("max pool, padding 1:", np.asarray(F.max_pool2d(neg, 3, stride=2, padding=1))[0, :, :, 0].tolist())
        print("torch              :", torch_F.max_pool2d(to_torch(neg), 3, stride=2, padding=1)[0, 0].tolist())

        print("\\n input  k  s  p  ceil_mode -> jaxcnn  torch")
        for n, k, s, p in [(5, 2, 2, 0), (6, 3, 2, 1), (7, 3, 3, 1), (4, 2, 3, 1)]:
            for ceil in (False, True):
                z = np.zeros((1, n, n, 1), np.float32)
                j = F.max_pool2d(z, k, stride=s, padding=p, ceil_mode=ceil).shape[1]
                t = torch_F.max_pool2d(to_torch(z), k, stride=s, padding=p, ceil_mode=ceil).shape[-1]
                print(f"{n:6d} {k:2d} {s:2d} {p:2d}  {str(ceil):9s} -> {j:6d} {t:6d}")
        """
    ),
    md(
        """
        ## Global and adaptive pooling

        **Global** pooling takes one window as large as the map: a `(N, H, W, C)` map becomes
        `(N, 1, 1, C)`, one number per channel. **Adaptive** pooling asks for an output size
        instead of a window. PyTorch places output cell $i$ of $m$ over input positions
        $[\\lfloor i\\,n/m \\rfloor, \\lceil (i+1)\\,n/m \\rceil)$: when $m$ does not divide $n$,
        neighbouring windows **overlap** and can differ in size, so adaptive pooling is not
        a fixed-stride pooling in disguise.
        """
    ),
    code(
        """
        rng = np.random.default_rng(0)
        fmap = rng.normal(size=(2, 7, 5, 3)).astype(np.float32)                   # NHWC
        gap = F.adaptive_avg_pool2d(fmap, 1)
        print("global average pool:", gap.shape, "equals the mean over H, W:",
              np.allclose(gap[:, 0, 0], fmap.mean(axis=(1, 2)), atol=1e-6))
        for out in [(3, 2), (4, 4), (2, 5)]:
            j = np.asarray(F.adaptive_avg_pool2d(fmap, out))
            t = to_nhwc(torch_F.adaptive_avg_pool2d(to_torch(fmap), out))
            jm = np.asarray(F.adaptive_max_pool2d(fmap, out))
            tm = to_nhwc(torch_F.adaptive_max_pool2d(to_torch(fmap), out))
            print(f"7x5 -> {out}: avg max|jaxcnn - torch| = {np.abs(j - t).max():.1e}, max {np.abs(jm - tm).max():.1e}")

        def windows(n, m):
            return [(i * n // m, -(-(i + 1) * n // m)) for i in range(m)]
        print("windows for 7 -> 3:", windows(7, 3), " 5 -> 3:", windows(5, 3))
        """
    ),
    code(
        """
        fig, axes = plt.subplots(1, 3, figsize=(15, 3.2))
        for ax, (n, m) in zip(axes, [(8, 4), (7, 3), (10, 4)]):
            for i, (start, end) in enumerate(windows(n, m)):
                ax.barh(i, end - start, left=start - 0.5, height=0.6, color=f"C{i}", alpha=0.8)
                ax.text((start + end - 1) / 2, i, f"[{start}, {end})", ha="center", va="center", fontsize=12)
            ax.set_xlim(-0.6, n - 0.4)
            ax.set_xticks(range(n))
            ax.set_yticks(range(m), [f"out {i}" for i in range(m)])
            ax.invert_yaxis()
            ax.set_xlabel("input position")
            ax.set_title(f"adaptive pool {n} -> {m}" + (" (overlapping)" if n % m else ""))
        fig.tight_layout()
        plt.show()
        """
    ),
    md(
        """
        ## Global average pooling and class activation maps

        The course's VGG with global average pooling (`gap_vgg`, after Zhou et al., 2016)
        ends in `features -> GAP -> Linear`: each logit is
        $\\text{logit}_k = \\sum_c w_{k,c}\\, \\text{mean}_{h,w} F[h, w, c] + b_k$. Move the
        mean outside the sum and the map $\\text{CAM}_k[h, w] = \\sum_c w_{k,c} F[h, w, c]$
        appears: its average (plus $b_k$) *is* the logit, so it shows where the evidence for
        class $k$ lies.

        `gap_vgg` is the full VGG-16 stack (14.7 M weights) and needs at least 32x32 RGB
        input; on a CPU it trains in minutes, not seconds. The same architecture with
        thin layers, built from `gap_vgg`'s own `make_layers`, trains in seconds.
        Registering it lets `jaxcnn.train` build it by name.

        To give the map something to find, each bundled digit is shrunk to 16x16 and pasted
        at a random place on a black 32x32 canvas. The labels say *which* digit, never
        *where*.
        """
    ),
    code(
        """
        from jaxcnn.data import ArrayDataset

        def scatter(split, rng, canvas=32):
            \"\"\"Paste each (16, 16) digit at a random position of a black (canvas, canvas) image.\"\"\"
            n, size = len(split), split.images.shape[1]
            images = np.zeros((n, canvas, canvas, 1), np.uint8)
            for i, (r, c) in enumerate(rng.integers(0, canvas - size + 1, size=(n, 2))):
                images[i, r:r + size, c:c + size] = split.images[i]
            return ArrayDataset(images=images, labels=split.labels, num_classes=10, name=split.name)

        rng = np.random.default_rng(0)
        small = load_dataset("digits", image_size=16)                       # the digits at 16x16
        splits = {name: scatter(split, rng) for name, split in small.items()}

        class SmallGapVGG(nnx.Module):
            \"\"\"gap_vgg's structure with thin layers: conv stack -> GAP -> Linear; returns (logits, features).\"\"\"

            def __init__(self, num_classes=10, *, rngs):
                self.conv = make_layers([16, "M", 32, "M", 32], in_channels=1, rngs=rngs)
                self.classifier = nn.Linear(32, num_classes, rngs=rngs)

            def __call__(self, x):                                  # (N, 32, 32, 1)
                features = self.conv(x)                             # (N, 8, 8, 32)
                pooled = F.flatten(F.adaptive_avg_pool2d(features, 1), 1)
                return self.classifier(pooled), features

        if "small_gap_vgg" not in models.names():
            models.register("small_gap_vgg", input_size=(32, 32, 1))(
                lambda *, rngs, num_classes=10: SmallGapVGG(num_classes, rngs=rngs))

        trainer = Trainer(TrainConfig(model="small_gap_vgg", epochs=8, optimizer="adam", lr=0.01,
                                      batch_size=64, eval_batch_size=180, progress=False,
                                      tensorboard=False, plots=False), datasets=splits)
        result = trainer.fit()
        print(f"test accuracy after {result['epochs']} epochs: {result['test_acc']:.1f}%")
        model = trainer.trained_model()
        """
    ),
    code(
        """
        test = trainer.splits["test"]
        images = normalize(test.images[:6], test.mean, test.std)              # float32 NHWC
        cam_of = nnx.jit(class_activation_map)                                  # one compiled function
        logits, _ = nnx.jit(lambda m, x: m(x))(model, images)

        fig, axes = plt.subplots(2, 6, figsize=(15, 5.6))
        for col in range(6):
            predicted = int(jnp.argmax(logits[col]))
            cam = upsample_to(cam_of(model, images[col:col + 1], predicted), (32, 32))
            axes[0, col].imshow(test.images[col, :, :, 0], cmap="gray")
            axes[0, col].set_title(f"label {test.labels[col]}")
            axes[1, col].imshow(test.images[col, :, :, 0], cmap="gray")
            axes[1, col].imshow(np.asarray(cam), cmap="jet", alpha=0.5)
            axes[1, col].set_title(f"CAM of class {predicted}")
        for ax in axes.flat:
            ax.set_xticks([]); ax.set_yticks([])
        fig.tight_layout()
        plt.show()
        """
    ),
    md(
        """
        Nothing in the network is tied to the image size, so it accepts a wider canvas too.
        Put two different digits on one 32x64 canvas and ask for each class in turn: each
        class map lights up its own digit.
        """
    ),
    code(
        """
        first = 0
        second = int(np.nonzero(test.labels != test.labels[first])[0][0])
        canvas = np.zeros((1, 32, 64, 1), np.uint8)
        canvas[0, 4:20, 6:22] = small["test"].images[first]
        canvas[0, 12:28, 40:56] = small["test"].images[second]
        canvas_in = normalize(canvas, test.mean, test.std)

        fig, axes = plt.subplots(1, 3, figsize=(15, 3.2))
        axes[0].imshow(canvas[0, :, :, 0], cmap="gray")
        axes[0].set_title("two digits, 32x64")
        for ax, label in zip(axes[1:], (test.labels[first], test.labels[second])):
            cam = upsample_to(class_activation_map(model, canvas_in, int(label)), canvas.shape[1:3])
            ax.imshow(canvas[0, :, :, 0], cmap="gray")
            ax.imshow(np.asarray(cam), cmap="jet", alpha=0.5)
            ax.set_title(f"CAM of class {label}")
        for ax in axes:
            ax.set_xticks([]); ax.set_yticks([])
        fig.tight_layout()
        plt.show()
        """
    ),
    md(
        """
        With the full `gap_vgg` and real photographs the recipe is the same:
        `scripts/cam_overlay.py --weights gap_vgg.pth --image cat.jpg` loads PyTorch weights
        (for instance trained with the course's code) into `models.create("gap_vgg")` and
        draws the overlay.

        **Takeaways.** Max pooling pads with $-\\infty$; `ceil_mode` keeps a last partial
        window; adaptive windows overlap when sizes do not divide; global average pooling
        turns the last feature map into one number per channel, and with a linear head it
        explains itself through class activation maps.
        """
    ),
]


# ---------------------------------------------------------------------------------------
# Building and executing
# ---------------------------------------------------------------------------------------

NOTEBOOKS: dict[str, list] = {
    "01_convolution.ipynb": NB01,
    "02_pooling.ipynb": NB02,
}


def make_notebook(cells: list) -> nbformat.NotebookNode:
    """A notebook of ``cells`` (fresh copies, no outputs) for the ``python3`` kernel."""
    notebook = new_notebook(cells=[nbformat.from_dict(json.loads(json.dumps(cell))) for cell in cells])
    notebook.metadata["kernelspec"] = {"name": KERNEL_NAME, "display_name": "Python 3", "language": "python"}
    notebook.metadata["language_info"] = {"name": "python"}
    return notebook


def execute(notebook: nbformat.NotebookNode, *, timeout: int = 600) -> nbformat.NotebookNode:
    """Run every cell in a fresh kernel of this interpreter; raises ``CellExecutionError`` on
    the first failing cell.

    The kernel is this process's ``sys.executable`` (with its environment, so the same
    ``jaxcnn``), declared in a temporary kernelspec, so no user-level ``python3`` kernelspec
    can substitute another interpreter. The working directory is ``notebooks/``. The
    notebook keeps ``kernelspec.name == "python3"`` for the people who open it.
    """
    from nbclient import NotebookClient

    with tempfile.TemporaryDirectory() as jupyter_path:
        spec_dir = Path(jupyter_path) / "kernels" / _EXEC_KERNEL
        spec_dir.mkdir(parents=True)
        spec = {
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "jaxcnn notebook build",
            "language": "python",
        }
        (spec_dir / "kernel.json").write_text(json.dumps(spec))
        saved = os.environ.get("JUPYTER_PATH")
        os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [jupyter_path, saved]))
        try:
            client = NotebookClient(
                notebook, timeout=timeout, kernel_name=_EXEC_KERNEL,
                resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
            )  # fmt: skip
            client.execute()
        finally:
            if saved is None:
                os.environ.pop("JUPYTER_PATH", None)
            else:
                os.environ["JUPYTER_PATH"] = saved
    notebook.metadata["kernelspec"] = {"name": KERNEL_NAME, "display_name": "Python 3", "language": "python"}
    return notebook


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("only", nargs="*", help="notebook name prefixes (default: all)")
    parser.add_argument("--no-execute", action="store_true", help="write the cells without running them")
    args = parser.parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import time

    for name, cells in NOTEBOOKS.items():
        if args.only and not any(name.startswith(prefix) for prefix in args.only):
            continue
        notebook = make_notebook(cells)
        start = time.perf_counter()
        if not args.no_execute:
            execute(notebook)
        path = NOTEBOOK_DIR / name
        nbformat.write(notebook, path)
        print(f"wrote {path.relative_to(NOTEBOOK_DIR.parent)} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
