"""``python -m jaxcnn.bench``: the same options as ``jaxcnn bench``."""

import sys

from jaxcnn.bench.cli import main

sys.exit(main())
