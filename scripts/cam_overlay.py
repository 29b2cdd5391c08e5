"""Overlay a class activation map (CAM) on an image, for GAP-headed models such as ``gap_vgg``.

    python scripts/cam_overlay.py --weights gap_vgg.pth --image cat.jpg --out cam.png

``--weights`` takes a torch checkpoint (``.pth``/``.safetensors``, e.g. one trained with the
course's PyTorch code) or nothing (fresh weights: the map then only shows the mechanics).
Without ``--image`` a digit from the embedded data is used.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from jaxcnn import models  # noqa: E402
from jaxcnn.convert import load_torch_checkpoint  # noqa: E402
from jaxcnn.data import load_dataset, normalize  # noqa: E402
from jaxcnn.models.cam import class_activation_map, upsample_to  # noqa: E402

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_image(path: Path | None, size: int) -> np.ndarray:
    """An RGB uint8 ``(size, size, 3)`` image: the file at ``path`` or an embedded digit."""
    if path is None:
        digit = load_dataset("digits")["test"].images[0, :, :, 0]
        return np.asarray(Image.fromarray(digit).convert("RGB").resize((size, size), Image.BILINEAR))
    return np.asarray(Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR))


def main(argv=None) -> int:
    import jaxcnn

    jaxcnn.configure_platform()  # quiet CPU JAX where no accelerator exists
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gap_vgg")
    parser.add_argument("--num-classes", type=int)
    parser.add_argument("--weights", type=Path)
    parser.add_argument("--image", type=Path)
    parser.add_argument("--size", type=int, default=128, help="input side in pixels")
    parser.add_argument("--class-index", type=int, help="default: the predicted class")
    parser.add_argument("--out", type=Path, default=Path("cam.png"))
    args = parser.parse_args(argv)

    options = {} if args.num_classes is None else {"num_classes": args.num_classes}
    model = models.create(args.model, **options)
    if args.weights:
        load_torch_checkpoint(model, args.weights)
    model.eval()
    image = load_image(args.image, args.size)
    inputs = normalize(image[None], IMAGENET_MEAN, IMAGENET_STD)
    logits, _ = model(inputs)
    class_index = int(np.argmax(logits[0])) if args.class_index is None else args.class_index
    cam = upsample_to(class_activation_map(model, inputs, class_index), image.shape[:2])

    figure, axes = plt.subplots(1, 2, figsize=(8, 4))
    axes[0].imshow(image)
    axes[0].set_title("input")
    axes[1].imshow(image)
    axes[1].imshow(np.asarray(cam), cmap="jet", alpha=0.45)
    axes[1].set_title(f"CAM for class {class_index}" + ("" if args.weights else " (untrained weights)"))
    for axis in axes:
        axis.axis("off")
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
