"""Draw the convolution lesson as one figure for a slide.

Three rows:

1. the worked example: a 3x3 input, a 2x2 kernel, the sliding window and the 2x2 output;
2. the edge detector ``[1, -1]`` on a handwritten digit (scikit-learn's ``load_digits``):
   cross-correlation versus true convolution, which report every edge with opposite signs;
3. an asymmetric kernel, its flip, and the two different results side by side.

Usage::

    python scripts/convolution_lesson.py --out lesson_convolution.png
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

try:
    from jaxcnn.lessons.convolution import convolve2d, cross_correlate2d, flip_kernel
except ModuleNotFoundError:  # running from a checkout without ``pip install -e .``
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from jaxcnn.lessons.convolution import convolve2d, cross_correlate2d, flip_kernel

WORKED_INPUT = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8]])
WORKED_KERNEL = np.array([[0, 1], [2, 3]])
EDGE_KERNEL = np.array([[1, -1]])

WINDOW_COLOR = "#1f77b4"
NEXT_WINDOW_COLOR = "#ff7f0e"
KERNEL_FILL = "#fde9c9"
INPUT_FILL = "#e8f0fa"
OUTPUT_FILL = "#e3f4e1"
TITLE_SIZE = 13
NUMBER_SIZE = 15


# --------------------------------------------------------------------------------------
# Drawing helpers
# --------------------------------------------------------------------------------------


def draw_number_grid(
    ax,
    values: np.ndarray,
    title: str,
    fill: str = "white",
    canvas: tuple[int, int] = (3, 3),
    highlight: tuple[int, int, int, int] | None = None,
    highlight_color: str = WINDOW_COLOR,
    outline: tuple[int, int, int, int] | None = None,
    outline_color: str = NEXT_WINDOW_COLOR,
) -> tuple[float, float]:
    """Draw ``values`` as a table of numbered cells, centred on a ``canvas`` of cells.

    Every grid drawn on the same canvas size has the same cell size, so a 2x2 kernel looks
    like a piece of a 3x3 input. ``highlight`` (top, left, height, width) shades a block and
    frames it; ``outline`` frames another block with a dashed line. Returns the (x, y)
    offset of the grid on the canvas.
    """
    rows, cols = values.shape
    offset_y = (canvas[0] - rows) / 2
    offset_x = (canvas[1] - cols) / 2
    for i in range(rows):
        for j in range(cols):
            ax.add_patch(
                Rectangle(
                    (offset_x + j, offset_y + i), 1, 1, facecolor=fill, edgecolor="black", lw=1.2
                )
            )
            ax.text(
                offset_x + j + 0.5,
                offset_y + i + 0.5,
                f"{values[i, j]:g}",
                ha="center",
                va="center",
                fontsize=NUMBER_SIZE,
            )
    if highlight is not None:
        top, left, height, width = highlight
        ax.add_patch(
            Rectangle(
                (offset_x + left, offset_y + top),
                width,
                height,
                facecolor=highlight_color,
                alpha=0.18,
                edgecolor="none",
            )
        )
        ax.add_patch(
            Rectangle(
                (offset_x + left, offset_y + top),
                width,
                height,
                fill=False,
                edgecolor=highlight_color,
                lw=4,
            )
        )
    if outline is not None:
        top, left, height, width = outline
        ax.add_patch(
            Rectangle(
                (offset_x + left + 0.06, offset_y + top + 0.06),
                width - 0.12,
                height - 0.12,
                fill=False,
                edgecolor=outline_color,
                lw=2.5,
                ls="--",
            )
        )
    ax.set_xlim(-0.1, canvas[1] + 0.1)
    ax.set_ylim(canvas[0] + 0.1, -0.1)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title, fontsize=TITLE_SIZE)
    return offset_x, offset_y


def draw_operator(ax, symbol: str, fontsize: float = 30) -> None:
    """Write a large operator symbol (the cross-correlation star, "=") in an empty axis."""
    ax.axis("off")
    ax.text(0.5, 0.45, symbol, ha="center", va="center", fontsize=fontsize, transform=ax.transAxes)


def draw_heatmap(
    ax, image: np.ndarray, title: str, cmap: str, limit: float | None = None, caption: str = ""
) -> None:
    """Show an image with every pixel's value written on it, a title above and a caption below.

    With ``limit`` the colour scale is symmetric, ``[-limit, limit]``: red positive, blue
    negative, white zero.
    """
    vmin, vmax = (-limit, limit) if limit is not None else (image.min(), image.max())
    ax.imshow(image, cmap=cmap, vmin=vmin, vmax=vmax)
    norm = plt.Normalize(vmin, vmax)
    colormap = plt.get_cmap(cmap)
    for (i, j), value in np.ndenumerate(image):
        red, green, blue, _ = colormap(norm(value))
        dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
        color = "white" if dark else "black"
        ax.text(j, i, f"{value:g}", ha="center", va="center", fontsize=8, color=color)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=TITLE_SIZE)
    ax.set_xlabel(caption, fontsize=TITLE_SIZE - 1)


# --------------------------------------------------------------------------------------
# The three rows
# --------------------------------------------------------------------------------------


def draw_worked_example(subfig) -> None:
    """Row 1: the 3x3 input, the 2x2 kernel, the sliding window and every output number."""
    output = cross_correlate2d(WORKED_INPUT, WORKED_KERNEL)
    axes = subfig.subplots(1, 6, gridspec_kw={"width_ratios": [3, 0.8, 3, 0.8, 3, 5.5]})
    input_ax, star_ax, kernel_ax, equals_ax, output_ax, text_ax = axes

    draw_number_grid(
        input_ax,
        WORKED_INPUT,
        "input X (3x3)",
        fill=INPUT_FILL,
        highlight=(0, 0, 2, 2),
        outline=(0, 1, 2, 2),
    )
    # An arrow along the top: the window slides right, then down.
    input_ax.text(
        1.5,
        3.15,
        "solid: first window\ndashed: next window (stride 1)",
        ha="center",
        va="top",
        fontsize=11,
        color=NEXT_WINDOW_COLOR,
    )
    draw_operator(star_ax, "\u22c6", fontsize=60)
    draw_number_grid(kernel_ax, WORKED_KERNEL, "kernel K (2x2)", fill=KERNEL_FILL)
    draw_operator(equals_ax, "=")
    draw_number_grid(output_ax, output, "output Y (2x2)", fill=OUTPUT_FILL, highlight=(0, 0, 1, 1))

    text_ax.axis("off")
    rows = []
    for i in range(2):
        for j in range(2):
            window = WORKED_INPUT[i : i + 2, j : j + 2].ravel()
            terms = " + ".join(f"{x}\u00b7{k}" for x, k in zip(window, WORKED_KERNEL.ravel()))
            rows.append((f"Y[{i},{j}] = {terms} = {output[i, j]}", (i, j)))
    text_ax.text(
        0.0,
        0.97,
        "Slide the window, multiply, sum:",
        fontsize=TITLE_SIZE,
        va="top",
        transform=text_ax.transAxes,
    )
    colors = {(0, 0): WINDOW_COLOR, (0, 1): NEXT_WINDOW_COLOR}
    for line, (text, position) in enumerate(rows):
        text_ax.text(
            0.0,
            0.78 - 0.17 * line,
            text,
            fontsize=13,
            family="monospace",
            va="top",
            color=colors.get(position, "black"),
            transform=text_ax.transAxes,
        )
    text_ax.text(
        0.0,
        0.05,
        "output size: (3 - 2 + 1) x (3 - 2 + 1) = 2 x 2",
        fontsize=12,
        style="italic",
        transform=text_ax.transAxes,
    )
    subfig.suptitle(
        "1. Cross-correlation, the operation deep-learning \u201cconvolution\u201d layers compute",
        fontsize=16,
        fontweight="bold",
        x=0.01,
        ha="left",
    )


def load_sample_digit() -> np.ndarray:
    """A handwritten 0 (8x8, values 0..16) from scikit-learn's bundled digits data set."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images[0].astype(int)


def draw_edge_detector(subfig, image: np.ndarray) -> None:
    """Row 2: the edge detector [1, -1] as cross-correlation and as true convolution."""
    correlated = cross_correlate2d(image, EDGE_KERNEL)
    convolved = convolve2d(image, EDGE_KERNEL)
    limit = float(np.abs(correlated).max())
    axes = subfig.subplots(1, 4, gridspec_kw={"width_ratios": [8, 3.2, 7, 7]})
    image_ax, kernel_ax, correlated_ax, convolved_ax = axes

    draw_heatmap(
        image_ax,
        image,
        "input X: handwritten digit",
        cmap="Greys",
        caption="8x8 pixels, values 0..16",
    )
    kernel_ax.axis("off")
    kernel_inner = kernel_ax.inset_axes([0.0, 0.55, 1.0, 0.3])
    draw_number_grid(kernel_inner, EDGE_KERNEL, "kernel K", fill=KERNEL_FILL, canvas=(1, 2))
    flipped_inner = kernel_ax.inset_axes([0.0, 0.08, 1.0, 0.3])
    draw_number_grid(
        flipped_inner, flip_kernel(EDGE_KERNEL), "flipped K", fill=KERNEL_FILL, canvas=(1, 2)
    )
    draw_heatmap(
        correlated_ax,
        correlated,
        "cross-correlation X \u22c6 K  (torch, JAX)",
        cmap="RdBu_r",
        limit=limit,
        caption="Y[i,j] = X[i,j] \u2212 X[i,j+1]",
    )
    draw_heatmap(
        convolved_ax,
        convolved,
        "true convolution X \u2217 K  (scipy.signal)",
        cmap="RdBu_r",
        limit=limit,
        caption="Y[i,j] = X[i,j+1] \u2212 X[i,j]",
    )
    subfig.suptitle(
        "2. An edge detector: the flip swaps the sign of every edge (red > 0, blue < 0)",
        fontsize=16,
        fontweight="bold",
        x=0.01,
        ha="left",
    )


def draw_flip_comparison(subfig) -> None:
    """Row 3: the asymmetric kernel, its flip, and the two different outputs side by side."""
    correlated = cross_correlate2d(WORKED_INPUT, WORKED_KERNEL)
    convolved = convolve2d(WORKED_INPUT, WORKED_KERNEL)
    axes = subfig.subplots(1, 5, gridspec_kw={"width_ratios": [3, 3, 3, 3, 3]})
    input_ax, kernel_ax, flipped_ax, correlated_ax, convolved_ax = axes
    draw_number_grid(input_ax, WORKED_INPUT, "input X", fill=INPUT_FILL)
    draw_number_grid(kernel_ax, WORKED_KERNEL, "kernel K", fill=KERNEL_FILL)
    draw_number_grid(
        flipped_ax, flip_kernel(WORKED_KERNEL), "flip(K): rotated 180\u00b0", fill=KERNEL_FILL
    )
    draw_number_grid(
        correlated_ax, correlated, "cross-correlation\nX \u22c6 K", fill=OUTPUT_FILL
    )
    draw_number_grid(
        convolved_ax, convolved, "convolution\nX \u2217 K = X \u22c6 flip(K)", fill="#f9dede"
    )
    subfig.suptitle(
        "3. An asymmetric kernel: convolution flips it first, so the answers differ",
        fontsize=16,
        fontweight="bold",
        x=0.01,
        ha="left",
    )
    subfig.text(
        0.01,
        0.02,
        "Learned kernels make the flip irrelevant (training learns flip(K) instead), "
        "but a hand-designed kernel must be flipped before loading it into a conv layer.",
        fontsize=12,
        style="italic",
    )


def make_figure(image: np.ndarray | None = None):
    """Build the three-row lesson figure; ``image`` feeds the edge detector (default: a digit)."""
    if image is None:
        image = load_sample_digit()
    figure = plt.figure(figsize=(16, 15), layout="constrained")
    figure.get_layout_engine().set(h_pad=0.1)  # room between each row's heading and its panels
    worked_row, edge_row, flip_row = figure.subfigures(
        3, 1, height_ratios=[1, 1.25, 1], hspace=0.04
    )
    draw_worked_example(worked_row)
    draw_edge_detector(edge_row, image)
    draw_flip_comparison(flip_row)
    return figure


def main(argv: Sequence[str] | None = None) -> int:
    """Write the lesson figure as a PNG; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path("lesson_convolution.png"), help="PNG file to write"
    )
    parser.add_argument("--dpi", type=int, default=120, help="resolution of the PNG")
    args = parser.parse_args(argv)
    figure = make_figure()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=args.dpi, facecolor="white")
    plt.close(figure)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
