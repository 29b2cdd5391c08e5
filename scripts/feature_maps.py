"""Show what a conv layer sees: feature maps after conv -> ReLU -> max-pool on a sample image.

As in the course: take one image, apply the first convolution of a model, then ReLU, then
2x2 max pooling, and plot every channel at each stage. Uses the embedded digits data, so
it runs offline. The model's weights are its fresh init unless ``--weights`` gives a torch
checkpoint (.pth/.safetensors) to load.

    python scripts/feature_maps.py --model mnist_cnn --layer conv1 --out feature_maps.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jaxcnn import models  # noqa: E402
from jaxcnn.convert import load_torch_checkpoint  # noqa: E402
from jaxcnn.data import load_dataset, normalize  # noqa: E402
from jaxcnn.intermediates import get_submodule  # noqa: E402
from jaxcnn.nn import functional as F  # noqa: E402


def conv_relu_pool(model, layer: str, image: np.ndarray) -> dict[str, np.ndarray]:
    """The stages for one NHWC image ``(1, H, W, C)``: each ``(H', W', channels)``."""
    conv = get_submodule(model, layer)(image)
    relu = F.relu(conv)
    pool = F.max_pool2d(relu, 2)
    return {"conv": np.asarray(conv[0]), "relu": np.asarray(relu[0]), "max-pool 2x2": np.asarray(pool[0])}


def plot(image: np.ndarray, stages: dict[str, np.ndarray], title: str, out: Path) -> Path:
    """One row per stage, one column per channel, the input image on the left."""
    channels = next(iter(stages.values())).shape[-1]
    figure, axes = plt.subplots(len(stages), channels + 1, figsize=(1.3 * (channels + 1), 1.5 * len(stages) + 0.6), squeeze=False)
    for row, (stage, maps) in enumerate(stages.items()):
        axes[row, 0].imshow(image[..., 0], cmap="gray")
        axes[row, 0].set_ylabel(stage, fontsize=10)
        for channel in range(channels):
            axes[row, channel + 1].imshow(maps[..., channel], cmap="viridis")
            if row == 0:
                axes[row, channel + 1].set_title(f"ch {channel}", fontsize=8)
        for axis in axes[row]:
            axis.set_xticks([])
            axis.set_yticks([])
    figure.suptitle(title)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out


def main(argv=None) -> int:
    import jaxcnn

    jaxcnn.configure_platform()  # quiet CPU JAX where no accelerator exists
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mnist_cnn", help="a model with 28x28x1 input (mnist_cnn, mlp has no conv)")
    parser.add_argument("--layer", default="conv1", help="dotted path of the conv layer")
    parser.add_argument("--weights", type=Path, help="torch checkpoint to load first")
    parser.add_argument("--index", type=int, default=0, help="which test image")
    parser.add_argument("--out", type=Path, default=Path("feature_maps.png"))
    args = parser.parse_args(argv)
    model = models.create(args.model)
    if args.weights:
        load_torch_checkpoint(model, args.weights)
    test = load_dataset("digits")["test"]
    raw = test.images[args.index : args.index + 1]
    image = normalize(raw, test.mean, test.std)
    stages = conv_relu_pool(model, args.layer, np.asarray(image))
    written = plot(np.asarray(image[0]), stages, f"{args.model}.{args.layer} on a digit {int(test.labels[args.index])}", args.out)
    print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
