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
                                      batch_size=64, drop_last=True, eval_batch_size=180, progress=False,
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
# 03 MNIST: the MLP against the CNN
# ---------------------------------------------------------------------------------------

NB03 = [
    md(
        """
        # 3. Handwritten digits: a perceptron against a CNN

        The course's first image classifiers: a multi-layer perceptron that sees the image
        as 784 unrelated numbers, and a small CNN that slides 5x5 kernels over it. Both are
        in jaxcnn's model zoo (`mlp`, `mnist_cnn`), each with a PyTorch twin in `torch_ref`.
        This notebook trains both with `jaxcnn.train`, plots the curves, looks inside the
        CNN, and does the feature-map size arithmetic that sizes its first linear layer.

        The data are scikit-learn's bundled handwritten digits (1,797 real scans, upsampled
        to MNIST's 28x28), so everything runs offline in seconds. With MNIST's files on disk
        the same code runs with `dataset="mnist"`.
        """
    ),
    SETUP,
    code(
        """
        import jax.numpy as jnp
        from flax import nnx

        from jaxcnn import models
        from jaxcnn.data import load_dataset, normalize
        from jaxcnn.intermediates import record_outputs
        from jaxcnn.lessons.convolution import conv_output_size
        from jaxcnn.plots import plot_accuracy, plot_loss
        from jaxcnn.summary import count_params, summarize
        from jaxcnn.train import TrainConfig, Trainer, experiment

        splits = load_dataset("digits")
        for name, split in splits.items():
            print(f"{name:5s} {split.images.shape} {split.images.dtype}, labels {np.bincount(split.labels)}")
        """
    ),
    code(
        """
        train = splits["train"]
        fig, axes = plt.subplots(2, 8, figsize=(14, 4))
        for ax, image, label in zip(axes.flat, train.images, train.labels):
            ax.imshow(image[:, :, 0], cmap="gray")
            ax.set_title(str(label))
            ax.axis("off")
        fig.suptitle("bundled digits, 28x28, as the models see them (NHWC, one channel)")
        fig.tight_layout()
        plt.show()
        """
    ),
    md(
        """
        ## The two models

        The course writes them in PyTorch:

        ```python
        class MLP(nn.Module):                      # torch_ref.models.mlp
            def forward(self, x):
                x = x.view(-1, 784)
                x = torch.sigmoid(self.fc1(x))     # Linear(784, 256)
                x = torch.sigmoid(self.fc2(x))     # Linear(256, 128)
                return self.fc3(x)                 # Linear(128, 10)

        class CNN(nn.Module):                      # torch_ref.models.mnist_cnn
            def forward(self, x):
                x = F.relu(F.max_pool2d(self.conv1(x), 2))   # Conv2d(1, 10, 5)
                x = F.relu(F.max_pool2d(self.conv2(x), 2))   # Conv2d(10, 20, 5)
                x = x.view(-1, 320)
                x = F.relu(self.fc1(x))                      # Linear(320, 50)
                return self.fc2(x)                           # Linear(50, 10)
        ```

        jaxcnn's twins have the same attribute names, in the same order, and the same
        number of weights:
        """
    ),
    code(
        """
        import torch_ref.models

        for name in ("mlp", "mnist_cnn"):
            jax_model = models.create(name, rngs=nnx.Rngs(0))
            torch_model = torch_ref.models.create(name)
            n_torch = sum(p.numel() for p in torch_model.parameters())
            print(f"{name:10s} jaxcnn {count_params(jax_model):7,d} weights, torch {n_torch:7,d}")
        """
    ),
    md(
        """
        ## Feature-map sizes

        Why `Linear(320, 50)`? Follow one image through the CNN with
        $n_{out} = \\lfloor (n + 2p - k)/s \\rfloor + 1$: a 5x5 convolution without padding
        takes 28 to 24, 2x2 pooling halves it to 12, the second convolution gives 8, the
        second pooling 4, and 20 channels of 4x4 flatten to 320.
        """
    ),
    code(
        """
        n = 28
        for layer, k, s in [("conv1 5x5", 5, 1), ("max-pool 2", 2, 2), ("conv2 5x5", 5, 1), ("max-pool 2", 2, 2)]:
            out = conv_output_size(n, k, stride=s)
            print(f"{layer:11s} {n:2d} -> {out:2d}")
            n = out
        print(f"flatten: 20 channels x {n} x {n} = {20 * n * n}")
        print()
        print(summarize(models.create("mnist_cnn", rngs=nnx.Rngs(0)), (1, 28, 28, 1), name="mnist_cnn").table())
        """
    ),
    md(
        """
        ## Training both

        `experiment(config)` is the course's `experiment(partition, args)`: it trains,
        validates after every epoch and returns the curves and the test accuracy. `Trainer`
        is the same run as an object, which keeps the trained model at hand. The defaults
        are SGD with momentum 0.9 and a cosine learning-rate schedule. `drop_last=True`
        drops the last, smaller batch of each epoch, so every step has the same shape and
        the jitted step compiles once.
        """
    ),
    code(
        """
        common = dict(dataset="digits", batch_size=64, drop_last=True, eval_batch_size=180, progress=False,
                      tensorboard=False, plots=False)
        _, mlp_result = experiment(TrainConfig(model="mlp", epochs=12, lr=0.2, **common))
        cnn = Trainer(TrainConfig(model="mnist_cnn", epochs=10, lr=0.05, **common))
        cnn_result = cnn.fit()
        for name, r in (("MLP", mlp_result), ("CNN", cnn_result)):
            print(f"{name}: {r['num_params']:,} weights, test accuracy {r['test_acc']:.1f}% "
                  f"after {r['epochs']} epochs ({sum(r['epoch_seconds']):.1f} s)")
        """
    ),
    code(
        """
        fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
        for name, r, color in (("MLP", mlp_result, "tab:blue"), ("CNN", cnn_result, "tab:red")):
            axes[0].plot(r["train_losses"], "--", color=color, label=f"{name} train")
            axes[0].plot(r["val_losses"], "-", color=color, label=f"{name} val")
            axes[1].plot(r["val_accs"], "-o", color=color, label=f"{name} val (test {r['test_acc']:.1f}%)")
        axes[0].set(xlabel="epoch", ylabel="cross-entropy", title="loss")
        axes[1].set(xlabel="epoch", ylabel="accuracy (%)", title="validation accuracy")
        for ax in axes:
            ax.grid(alpha=0.3); ax.legend()
        fig.tight_layout()
        plt.show()
        """
    ),
    md(
        """
        The sigmoid MLP needs a large learning rate and many epochs to get going. The CNN
        has about a tenth of its weights, because each kernel is shared across all
        positions of the image; on these small, smooth digits the two end up within a few
        points of each other (compare the test accuracies printed above). `jaxcnn.plots` draws the course's two standard figures of one run (and
        `jaxcnn train` writes them as PNGs):
        """
    ),
    code(
        """
        plot_accuracy(cnn_result, title="CNN: train vs val accuracy")
        """
    ),
    md(
        """
        ## Inside the CNN

        `record_outputs` captures what named layers return during a forward pass (PyTorch
        would use forward hooks). The ten 5x5 kernels of `conv1` and the maps they produce
        on one test digit, then the first ten of `conv2`'s twenty maps at 8x8:
        """
    ),
    code(
        """
        model = cnn.trained_model()
        test = splits["test"]
        image = normalize(test.images[:1], test.mean, test.std)
        with record_outputs(model, ["conv1", "conv2"]) as outputs:
            model(image)
        kernels = np.asarray(model.conv1.weight.get_value())        # HWIO: (5, 5, 1, 10)

        fig, axes = plt.subplots(3, 11, figsize=(16, 5.2))
        axes[0, 0].imshow(test.images[0, :, :, 0], cmap="gray")
        axes[0, 0].set_title(f"digit {test.labels[0]}")
        axes[1, 0].set_title("conv1 kernel"); axes[2, 0].set_title("")
        for c in range(10):
            axes[0, c + 1].imshow(kernels[:, :, 0, c], cmap="RdBu_r")
            axes[0, c + 1].set_title(f"kernel {c}", fontsize=11)
            axes[1, c + 1].imshow(outputs["conv1"][0, :, :, c], cmap="viridis")
            axes[2, c + 1].imshow(outputs["conv2"][0, :, :, c], cmap="viridis")
        axes[1, 0].set_title(""); axes[1, 0].text(0.5, 0.5, "conv1\\n24x24", ha="center", va="center", fontsize=14)
        axes[2, 0].text(0.5, 0.5, "conv2\\n8x8", ha="center", va="center", fontsize=14)
        for ax in axes.flat:
            ax.set_xticks([]); ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(ax not in (axes[1, 0], axes[2, 0]))
        fig.tight_layout()
        plt.show()
        """
    ),
    md(
        """
        After a few epochs on 1,257 images the 5x5 kernels still look noisy, but their maps
        show what they do: each is the digit seen through one filter, strokes of one
        orientation or polarity bright, the rest dark. After one more convolution and two poolings the maps are coarse
        (8x8 before the last pooling) and no longer look like the digit: they encode which
        parts are present, which the linear layers turn into a class.

        **Takeaways.** Convolution shares weights across the image, so the CNN needs far
        fewer weights for the same accuracy. The output-size formula sizes the first linear layer.
        `experiment`/`Trainer` run the course's training loop; `record_outputs` shows the
        feature maps.
        """
    ),
]

# ---------------------------------------------------------------------------------------
# 04 The experiment harness
# ---------------------------------------------------------------------------------------

NB04 = [
    md(
        """
        # 4. The experiment harness: one model, three optimizers

        The course compares optimizers with a small harness: an `args` namespace of
        hyperparameters, `experiment(partition, args)` that trains and returns a history,
        and plots of the histories. jaxcnn's version is `TrainConfig` (every setting of a
        run, loadable from JSON/YAML/TOML) and `experiment(config)`, with the optimizers
        implemented with PyTorch's semantics: `weight_decay` on `sgd`, `rmsprop` and `adam`
        adds $\\lambda w$ to the gradient (L2 regularisation), as `torch.optim` does
        (`adamw` decouples it).

        Here one CNN is trained under SGD with momentum, RMSprop and Adam, all with L2, on
        the bundled digits.
        """
    ),
    SETUP,
    code(
        """
        from jaxcnn.plots import plot_accuracy, plot_loss
        from jaxcnn.train import TrainConfig, experiment

        base = TrainConfig(model="mnist_cnn", dataset="digits", epochs=6, batch_size=64, drop_last=True,
                           eval_batch_size=180, weight_decay=1e-4, schedule="constant",
                           progress=False, tensorboard=False, plots=False)
        configs = {
            "SGD (momentum 0.9)": base.replace(optimizer="sgd", lr=0.05, momentum=0.9),
            "RMSprop": base.replace(optimizer="rmsprop", lr=1e-3),
            "Adam": base.replace(optimizer="adam", lr=1e-3),
        }
        {name: {k: getattr(c, k) for k in ("optimizer", "lr", "weight_decay", "epochs")} for name, c in configs.items()}
        """
    ),
    code(
        """
        results = {}
        for name, config in configs.items():
            _, results[name] = experiment(config)

        print(f"{'optimizer':20s} {'train loss':>10s} {'val loss':>9s} {'val acc':>8s} {'test acc':>9s}")
        for name, r in results.items():
            print(f"{name:20s} {r['train_loss']:10.3f} {r['val_loss']:9.3f} {r['val_acc']:7.1f}% {r['test_acc']:8.1f}%")
        """
    ),
    code(
        """
        fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
        for (name, r), color in zip(results.items(), ("tab:blue", "tab:orange", "tab:green")):
            axes[0].plot(r["train_losses"], "--", color=color)
            axes[0].plot(r["val_losses"], "-", color=color, label=name)
            axes[1].plot(r["val_accs"], "-o", color=color, label=name)
        axes[0].set(xlabel="epoch", ylabel="cross-entropy", title="loss (dashed: train, solid: val)")
        axes[1].set(xlabel="epoch", ylabel="accuracy (%)", title="validation accuracy")
        for ax in axes:
            ax.grid(alpha=0.3); ax.legend()
        fig.tight_layout()
        plt.show()
        """
    ),
    md(
        """
        Each result is a plain dict (`train_losses`, `val_losses`, `train_accs`, `val_accs`,
        `test_acc`, timings, ...), so it saves as JSON and plots with `jaxcnn.plots`, the
        course's two figures:
        """
    ),
    code(
        """
        plot_loss(results["Adam"], title="Adam: train loss vs val loss")
        """
    ),
    md(
        """
        A small grid search (learning rate x weight decay, as the course does) is a loop
        over `base.replace(...)`; keep `out=None` to write nothing, or give each run an
        `out` folder to get checkpoints, `results.json`, TensorBoard events and the PNG
        plots.

        ## The same harness on CIFAR-10

        With the CIFAR-10 python batches on disk (`cifar-10-python.tar.gz` in
        `~/jaxcnn_data/cifar10`, or `data_dir=...`), `load_dataset` gives the course's
        40,000 / 10,000 / 10,000 split and the same loop trains the course's CIFAR CNN. It
        takes minutes per epoch on a CPU, so it is shown here, not run:

        ```python
        base = TrainConfig(model="cifar_cnn", dataset="cifar10", epochs=20, batch_size=128,
                           weight_decay=1e-4, augment=True)
        for name, opt, lr in [("sgd", "sgd", 0.01), ("rmsprop", "rmsprop", 1e-3), ("adam", "adam", 1e-3)]:
            _, result = experiment(base.replace(optimizer=opt, lr=lr, out=f"runs/cifar10_{name}"))
        ```

        or from a shell:

        ```
        jaxcnn train --model cifar_cnn --dataset cifar10 --optimizer adam --lr 1e-3 \\
                     --weight-decay 1e-4 --epochs 20 --augment --out runs/cifar10_adam
        ```

        **Takeaways.** A run is a config; `experiment` returns its history; comparing
        optimizers is a loop. On this easy task all three get close within a few epochs.
        RMSprop and Adam adapt a per-weight step size, which makes `lr=1e-3` a sound default
        for them; SGD's learning rate must be tuned per model and batch size.
        """
    ),
]

# ---------------------------------------------------------------------------------------
# 05 Architectures
# ---------------------------------------------------------------------------------------

NB05 = [
    md(
        """
        # 5. From LeNet-5 to SE-Net

        The course's case studies, side by side: how many weights each network has and how
        many multiply-adds one image costs, counted layer by layer by `jaxcnn.summary`
        (the library behind `jaxcnn summary`) and set against the figures the papers give.
        Then two building blocks: the 1x1 convolution, and the residual block, checked
        against its PyTorch twin.
        """
    ),
    SETUP,
    code(
        """
        import jax
        import jax.numpy as jnp
        import torch
        import torchvision
        from flax import nnx

        from jaxcnn import models, nn
        from jaxcnn.convert import load_torch_state_dict
        from jaxcnn.models.resnet import BasicBlock, conv1x1
        from jaxcnn.summary import count_params, summarize
        """
    ),
    md(
        """
        ## Counting without building

        Initialising VGG-16's 138 M random weights takes time and memory that a count does
        not need. `nnx.eval_shape` builds a model from *shapes* only, and `summarize` only
        traces shapes. `summarize` takes a concrete model object, so the abstract one is
        merged back inside `jax.eval_shape`, where its arrays are shape-only tracers:
        """
    ),
    code(
        """
        def summarize_abstract(name, **options):
            \"\"\"summarize(model) for the zoo model `name`, without creating a single weight.\"\"\"
            abstract = nnx.eval_shape(lambda: models.create(name, rngs=nnx.Rngs(0), **options))
            graphdef, state = nnx.split(abstract)
            found = {}

            def trace(state):
                model = nnx.merge(graphdef, state)
                found["summary"] = summarize(model, (1, *models.input_size(name)), name=name)

            jax.eval_shape(trace, state)
            return found["summary"]

        print(summarize_abstract("lenet5").table())
        """
    ),
    code(
        """
        # What the papers state (None: the paper gives no figure). Multiply-adds in billions;
        # the ResNet paper calls multiply-adds "FLOPs".
        PAPER = {  # name: (parameters in millions, multiply-adds in billions, note)
            "lenet5": (0.06, None, "LeCun et al. 1998: 60,000 parameters"),
            "alexnet": (60, None, "Krizhevsky et al. 2012: 60 million parameters"),
            "vgg16": (138, None, "Simonyan & Zisserman 2015, Table 2"),
            "googlenet": (None, 1.5, "Szegedy et al. 2015: 1.5 billion multiply-adds"),
            "resnet18": (None, 1.8, "He et al. 2016, Table 1"),
            "resnet34": (None, 3.6, "He et al. 2016, Table 1"),
            "resnet50": (None, 3.8, "He et al. 2016, Table 1"),
            "densenet121": (None, None, ""),
            "se_resnet50": (None, 3.87, "Hu et al. 2018, Table 2"),
        }
        OPTIONS = {"googlenet": {"aux_logits": False}}   # the paper counts the network without its auxiliary heads

        rows = []
        for name, (paper_params, paper_madds, note) in PAPER.items():
            s = summarize_abstract(name, **OPTIONS.get(name, {}))
            rows.append((name, s.total_params / 1e6, s.total_mult_adds / 1e9, paper_params, paper_madds, s.input_shape))

        fmt = lambda v, spec: "-" if v is None else format(v, spec)
        print(f"{'model':12s} {'input':>10s} {'params (M)':>11s} {'paper':>6s} {'mult-adds (G)':>14s} {'paper':>6s}")
        for name, params, madds, p_params, p_madds, shape in rows:
            print(f"{name:12s} {'x'.join(map(str, shape[1:])):>10s} {params:11.2f} {fmt(p_params, '6.2f'):>6s} "
                  f"{madds:14.4g} {fmt(p_madds, '6.2f'):>6s}")
        """
    ),
    code(
        """
        names = [r[0] for r in rows]
        fig, axes = plt.subplots(1, 2, figsize=(14, 5), sharey=True)
        axes[0].barh(names, [r[1] for r in rows], color="tab:blue")
        axes[0].set(xscale="log", xlabel="parameters (millions, log scale)", title="weights")
        axes[1].barh(names, [r[2] for r in rows], color="tab:red")
        axes[1].set(xscale="log", xlabel="multiply-adds per image (billions, log scale)", title="compute")
        for ax in axes:
            ax.grid(alpha=0.3, axis="x")
        axes[0].invert_yaxis()
        fig.tight_layout()
        plt.show()
        """
    ),
    md(
        """
        The counts match the papers, with one instructive exception: ResNet-50 costs 4.1
        billion multiply-adds here against the paper's 3.8. jaxcnn follows torchvision,
        whose ResNet-50 ("v1.5") moves the stride-2 of each downsampling bottleneck from
        the first 1x1 convolution to the 3x3 one, so the 3x3 runs at the higher resolution:
        a little more compute, a little more accuracy. SE-ResNet-50 inherits the same
        difference. VGG-16 has the most weights (most of them in its first linear layer) and
        the most compute; GoogLeNet and the ResNets reach better accuracy with far fewer
        weights, largely thanks to 1x1 convolutions and global average pooling.

        ## 1x1 convolutions mix channels

        A 1x1 convolution looks at one pixel at a time: at every position it applies the
        same linear map to the channel vector. It is a `Linear` layer over channels, shared
        across the image:
        """
    ),
    code(
        """
        conv = nn.Conv2d(3, 2, kernel_size=1, rngs=nnx.Rngs(0))       # weight HWIO: (1, 1, 3, 2)
        x = jax.random.normal(jax.random.key(1), (1, 4, 5, 3))          # NHWC
        W = conv.weight.get_value()[0, 0]                               # (3, 2): channels in -> out
        by_hand = jnp.einsum("nhwc,co->nhwo", x, W) + conv.bias.get_value()
        print("1x1 conv == per-pixel channel mixing:", np.allclose(conv(x), by_hand, atol=1e-6))
        """
    ),
    md(
        """
        Its use in Inception and ResNet's bottleneck is to shrink the channels before an
        expensive 3x3 convolution and restore them after. For 256 channels:
        """
    ),
    code(
        """
        shapes_only = lambda *args, **kw: nnx.eval_shape(lambda: nn.Conv2d(*args, bias=False, rngs=nnx.Rngs(0), **kw))
        plain = shapes_only(256, 256, 3, padding=1)
        bottleneck = [shapes_only(256, 64, 1), shapes_only(64, 64, 3, padding=1), shapes_only(64, 256, 1)]
        n_plain, n_bottleneck = count_params(plain), sum(count_params(c) for c in bottleneck)
        print(f"3x3, 256 -> 256:                     {n_plain:8,d} weights")
        print(f"1x1 256->64, 3x3 64->64, 1x1 64->256: {n_bottleneck:8,d} weights ({n_plain / n_bottleneck:.1f}x fewer)")
        """
    ),
    md(
        """
        ## A residual block, against its PyTorch twin

        A residual block adds its input to its output: $y = \\text{ReLU}(F(x) + x)$, with a
        1x1 convolution on the shortcut when the shape changes. jaxcnn's `BasicBlock` has
        torchvision's attribute names, so `jaxcnn.convert` copies a torchvision block's
        weights by name (OIHW kernels become HWIO). With random BatchNorm statistics, an
        odd input size and a stride-2 shortcut, the outputs agree to float32 rounding:
        """
    ),
    code(
        """
        torch.manual_seed(0)
        torch_block = torchvision.models.resnet.BasicBlock(
            32, 64, stride=2,
            downsample=torch.nn.Sequential(torch.nn.Conv2d(32, 64, 1, stride=2, bias=False),
                                           torch.nn.BatchNorm2d(64)))
        for module in torch_block.modules():                # random statistics, so BatchNorm matters
            if isinstance(module, torch.nn.BatchNorm2d):
                torch.nn.init.uniform_(module.running_mean, -1, 1)
                torch.nn.init.uniform_(module.running_var, 0.5, 2)
                torch.nn.init.uniform_(module.weight, 0.5, 1.5)
                torch.nn.init.uniform_(module.bias, -0.5, 0.5)
        torch_block.eval()

        block = BasicBlock(32, 64, stride=2,
                           downsample=nn.Sequential(conv1x1(32, 64, stride=2, rngs=nnx.Rngs(0)), nn.BatchNorm2d(64)),
                           rngs=nnx.Rngs(0))
        load_torch_state_dict(block, torch_block.state_dict())
        block.eval()

        x = np.random.default_rng(0).normal(size=(2, 32, 15, 15)).astype(np.float32)    # NCHW
        with torch.no_grad():
            expected = torch_block(torch.from_numpy(x)).numpy()
        actual = np.asarray(block(jnp.asarray(x.transpose(0, 2, 3, 1)))).transpose(0, 3, 1, 2)
        error = np.abs(actual - expected).max() / np.abs(expected).max()
        print(f"output {actual.shape} (NCHW); max|jax - torch| / max|torch| = {error:.1e}")
        assert error <= 1e-5
        """
    ),
    md(
        """
        The same weight copy works for whole networks (`jaxcnn convert`, or
        `jaxcnn.transfer.from_torch_checkpoint("resnet50", "resnet50-0676ba61.pth")` for
        torchvision's published weights), and `parity_tests/` checks every model of the zoo
        this way.

        **Takeaways.** Parameters and compute are counted per layer from shapes alone; the
        papers' figures are reproduced, and where they differ (ResNet-50 v1.5) the
        difference has a reason. 1x1 convolutions mix channels cheaply; residual blocks add
        the input back; jaxcnn's blocks compute what torchvision's compute.
        """
    ),
]

# ---------------------------------------------------------------------------------------
# 06 Transfer learning
# ---------------------------------------------------------------------------------------

NB06 = [
    md(
        """
        # 6. Transfer learning: a frozen backbone and a new head

        The course fine-tunes a pretrained ResNet-50 in PyTorch:

        ```python
        model = torchvision.models.resnet50(weights="IMAGENET1K_V2")
        for p in model.parameters():
            p.requires_grad = False                      # freeze the backbone
        model.fc = nn.Sequential(nn.Linear(2048, 500), nn.BatchNorm1d(500), nn.ReLU(),
                                 nn.Linear(500, num_classes))   # a new head, trainable
        optimizer = torch.optim.SGD(model.fc.parameters(), lr=0.01, momentum=0.9)
        ```

        jaxcnn's `jaxcnn.transfer` does the same with an optax mask: frozen parameters get
        zero updates. To run in seconds without downloading ImageNet weights, the
        "pretraining" here is done on half of the bundled digits (classes 0-4), and the new
        task is the other half (classes 5-9) **with only 10 labelled images per class**.
        """
    ),
    SETUP,
    code(
        """
        import jax
        import optax
        from flax import nnx

        from jaxcnn import models, nn
        from jaxcnn.data import ArrayDataset, DeviceLoader, load_dataset, normalize
        from jaxcnn.train import TrainConfig, Trainer, create_train_state, make_steps, state_to_model
        from jaxcnn.train.state import variable_values
        from jaxcnn.transfer import freeze_backbone_mask, make_transfer_optimizer, replace_head

        digits = load_dataset("digits")

        def task(split, classes, per_class=None):
            \"\"\"The examples of `classes`, relabelled 0..len(classes)-1; optionally the first `per_class` of each.\"\"\"
            keep = np.concatenate([np.nonzero(split.labels == c)[0][:per_class] for c in classes])
            keep.sort()
            sub = split.subset(keep)
            return ArrayDataset(images=sub.images, labels=np.searchsorted(classes, sub.labels).astype(np.int32),
                                num_classes=len(classes), name=f"{split.name}{classes}", mean=sub.mean, std=sub.std)

        source = {name: task(split, [0, 1, 2, 3, 4]) for name, split in digits.items()}
        target_train = task(digits["train"], [5, 6, 7, 8, 9], per_class=10)
        target_test = task(digits["test"], [5, 6, 7, 8, 9])
        print(f"source task: {len(source['train'])} training images of 0-4")
        print(f"target task: {len(target_train)} training images of 5-9, {len(target_test)} test images")
        """
    ),
    md(
        """
        ## Pretraining on the source task

        The course's MNIST CNN (`mnist_cnn`: two conv layers, `fc1`, and the classifier
        `fc2`), trained on digits 0-4 with `Trainer`:
        """
    ),
    code(
        """
        pretrain = Trainer(TrainConfig(model="mnist_cnn", num_classes=5, epochs=6, lr=0.05, batch_size=64, drop_last=True,
                                       eval_batch_size=200, progress=False, tensorboard=False, plots=False),
                           datasets=source)
        print(f"source test accuracy: {pretrain.fit()['test_acc']:.1f}%")
        pretrained = pretrain.trained_model()
        """
    ),
    md(
        """
        ## A new head on a frozen backbone

        The backbone is the convolutional part (`conv1`, `conv2`); the head is the two
        linear layers, like the course's two-layer head. `replace_head` swaps the
        classifier (`model.fc = ...` in PyTorch), `freeze_backbone_mask` marks which
        parameters train, and `make_transfer_optimizer` gives every frozen parameter a zero
        update, so neither the gradient, nor momentum, nor weight decay moves it. The
        training loop is `jaxcnn.train`'s jitted step on a `DeviceLoader`. (Models with
        BatchNorm in the backbone also need `jaxcnn.transfer.set_transfer_mode` to keep its
        running statistics fixed; this one has none.)
        """
    ),
    code(
        """
        def train_on_target(model, trainable, epochs=25, lr=0.01):
            \"\"\"Train the parameters under `trainable` on the target task; returns (model, test accuracies).\"\"\"
            # the mask holds nnx.Variables, the train state plain arrays: take the values
            mask = variable_values(freeze_backbone_mask(model, trainable))
            tx = make_transfer_optimizer(optax.sgd(lr, momentum=0.9), mask)
            graphdef, eval_graphdef, state = create_train_state(model, tx)   # the state takes over model's arrays
            steps = make_steps(graphdef, eval_graphdef, tx)
            loader = DeviceLoader(target_train, 10, shuffle=True, seed=0)
            test_x = normalize(target_test.images, target_train.mean, target_train.std)
            accuracies = []
            for epoch in range(epochs):
                for x, y in loader.iter_epoch(epoch):
                    state, _ = steps.train_step(state, x, y)
                metrics = steps.eval_step(state, test_x, target_test.labels)
                accuracies.append(100 * int(metrics["correct"]) / int(metrics["count"]))
            return state_to_model(eval_graphdef, state), accuracies

        def new_head(model):
            \"\"\"Fresh fc1 and fc2 for 5 classes: the backbone keeps conv1 and conv2.\"\"\"
            model.fc1 = nn.Linear(320, 50, rngs=nnx.Rngs(1))
            return replace_head(model, lambda n, rngs: nn.Linear(n, 5, rngs=rngs), attribute="fc2", rngs=nnx.Rngs(1))

        HEAD = ("fc1", "fc2")
        backbone_before = np.asarray(pretrained.conv1.weight.get_value()).copy()
        transferred, transfer_acc = train_on_target(new_head(pretrained), trainable=HEAD)
        print("conv1 unchanged by training:", np.array_equal(backbone_before, transferred.conv1.weight.get_value()))
        print("test accuracy per epoch:", [round(a) for a in transfer_acc])
        """
    ),
    md(
        """
        Two baselines on the same 50 images: the same new head on a *random* frozen
        backbone, and the whole network trained from scratch.
        """
    ),
    code(
        """
        fresh = lambda: models.create("mnist_cnn", num_classes=5, rngs=nnx.Rngs(0))
        _, random_acc = train_on_target(new_head(fresh()), trainable=HEAD)
        _, scratch_acc = train_on_target(fresh(), trainable=("conv1", "conv2", "fc1", "fc2"))

        fig, ax = plt.subplots(figsize=(10, 5))
        for label, acc in (("pretrained backbone (frozen), new head", transfer_acc),
                           ("random backbone (frozen), new head", random_acc),
                           ("whole network from scratch", scratch_acc)):
            ax.plot(range(1, len(acc) + 1), acc, "-o", markersize=4,
                    label=f"{label}: epoch 3 {acc[2]:.0f}%, last {acc[-1]:.0f}%")
        ax.set(xlabel="epoch (5 steps of 10 images)", ylabel="test accuracy on 5-9 (%)",
               title="10 labelled images per class")
        ax.grid(alpha=0.3); ax.legend(loc="lower right")
        fig.tight_layout()
        plt.show()
        """
    ),
    md(
        """
        Features learned on digits 0-4 (strokes, curves, their arrangements) also describe
        5-9, so the head on the pretrained backbone starts from useful features and is
        ahead in the first epochs. On a task this easy the baselines catch up given enough
        epochs over the same 50 images (compare the last epochs above). Transfer pays most
        where labels are few and the task is hard, as with photographs and an ImageNet
        backbone.

        ## With real pretrained weights

        The course's version, with torchvision's ImageNet ResNet-50 (the `.pth` file from
        torchvision's model hub) and the course's head, not executed here:

        ```python
        from jaxcnn.transfer import (freeze_backbone_mask, from_torch_checkpoint,
                                     make_transfer_optimizer, replace_head, set_transfer_mode)

        model = from_torch_checkpoint("resnet50", "resnet50-11ad3fa6.pth")   # strict weight copy
        replace_head(model, num_classes, rngs=nnx.Rngs(0))   # fc = Linear(2048, 500), BN, ReLU, Linear
        mask = freeze_backbone_mask(model)                   # only fc.* trains
        tx = make_transfer_optimizer(optax.sgd(0.01, momentum=0.9), mask)
        set_transfer_mode(model, train=True)                 # backbone BatchNorm keeps its statistics
        ```

        **Takeaways.** Transfer learning reuses a backbone's features: freeze it, replace
        the head, train only the head. It gives a head start, and pays most when the new
        task has few labels.
        """
    ),
]


# ---------------------------------------------------------------------------------------
# Building and executing
# ---------------------------------------------------------------------------------------

NOTEBOOKS: dict[str, list] = {
    "01_convolution.ipynb": NB01,
    "02_pooling.ipynb": NB02,
    "03_mnist_mlp_vs_cnn.ipynb": NB03,
    "04_experiment_harness.ipynb": NB04,
    "05_architectures.ipynb": NB05,
    "06_transfer_learning.ipynb": NB06,
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
