"""Benchmark jaxcnn against torch_ref side by side (thin wrapper of ``jaxcnn bench``).

Usage::

    python scripts/benchmark.py --models mnist_cnn cifar_cnn --steps 30 --out docs/benchmark.json
    python scripts/benchmark.py --time-to-accuracy --data-dir ~/jaxcnn_data/mnist
    python scripts/benchmark.py --startup

See :mod:`jaxcnn.bench` for what is measured (on a GPU: by precision pair, torch on the same GPU).
"""

import sys

import jaxcnn

jaxcnn.configure_platform()  # this script owns its process: quiet CPU JAX, and
jaxcnn.keep_freed_host_memory()  # glibc keeps freed memory, as `jaxcnn bench` does

from jaxcnn.bench import main  # noqa: E402  (it sets the host allocator, as every jaxcnn program does)

if __name__ == "__main__":
    sys.exit(main())
