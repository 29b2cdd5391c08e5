"""Write the model-level parity table of every zoo model: ``docs/parity/parity.md`` and ``parity.json``.

The same as ``jaxcnn parity --zoo --out docs/parity``: for each model, ``jaxcnn.parity.compare``
in eval mode, and a training step with a float64 reference (outputs, every parameter's
gradient, BatchNorm statistics, each judged agreeing, float32 rounding or a semantic
difference). Columns are described under the table (``jaxcnn.parity.zoo.markdown_table``).

    python scripts/parity_report.py --out docs/parity [--models resnet18 mnist_cnn]
"""

from __future__ import annotations

import sys

from jaxcnn.cli import main

if __name__ == "__main__":
    sys.exit(main(["parity", "--zoo", *sys.argv[1:]]))
