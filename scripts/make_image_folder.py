"""Write a synthetic ImageNet-shaped image folder (random JPEGs of varied sizes, N classes, seeded).

    python scripts/make_image_folder.py /tmp/fake_imagenet --images 5000 --classes 100 \
        --min-size 200 --max-size 500

The folder works with ``jaxcnn train --dataset image_folder --data-dir DIR`` and with
``jaxcnn bench --pipeline DIR``. See :func:`jaxcnn.data.synthetic.write_image_folder`.
"""

from __future__ import annotations

import argparse
import time

from jaxcnn.data.synthetic import write_image_folder


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", help="output folder (class sub-folders are created in it)")
    p.add_argument("--images", type=int, default=1000, help="number of images [1000]")
    p.add_argument("--classes", type=int, default=10, help="number of classes [10]")
    p.add_argument("--min-size", type=int, default=200, help="smallest side drawn [200]")
    p.add_argument("--max-size", type=int, default=500, help="largest side drawn [500]")
    p.add_argument("--seed", type=int, default=0, help="[0]")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality [90]")
    p.add_argument("--format", default="JPEG", help="PIL format: JPEG or PNG [JPEG]")
    p.add_argument("--grayscale", action="store_true", help="grey-level images (PIL mode L)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    root = write_image_folder(
        args.root, args.images, num_classes=args.classes, min_size=args.min_size, max_size=args.max_size,
        seed=args.seed, quality=args.quality, fmt=args.format, grayscale=args.grayscale,
    )  # fmt: skip
    print(f"wrote {args.images} images in {args.classes} classes to {root} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
