"""Side-by-side benchmarks: jaxcnn (jitted JAX) against torch_ref (PyTorch), in one run.

``jaxcnn bench`` (or ``python -m jaxcnn.bench``, ``python scripts/benchmark.py``) measures, on
one device, for each model of :mod:`jaxcnn.bench.models`:

* training-step throughput (img/s, the median over windows of 4 steps; :mod:`.timing`) of
  jaxcnn's real jitted step (:mod:`.jax_side`) and of the torch_ref twin (:mod:`.torch_side`),
  the modes interleaved so machine load affects them alike, and JAX/torch ratios taken only
  between modes of the same precision on the same device (:func:`.modes.plan_modes`): on a
  CPU, float32 against torch eager, ``channels_last`` and ``torch.compile`` (and, with several
  host devices, jaxcnn's data-parallel step); on a GPU, the pairs float32 at full precision,
  each framework's float32 default, and bfloat16, with ``torch.compile`` as torch's best mode;
* compile times of both frameworks (JAX trace+lower and XLA compile; torch's first steps:
  torch.compile, cuDNN autotuning), eval-step throughput, the input pipeline's throughput, and
  the JAX step's achieved FLOP/s against a float32 matmul peak measured in the same run.

Entries beside it: ``--isolated`` (:mod:`.isolated`, one framework per process),
``--time-to-accuracy`` (:mod:`.tta`, the product's trainers on MNIST t10k), ``--startup``
(:mod:`.startup`, import/create/convert times in fresh processes) and ``--pipeline DIR``
(``jaxcnn.data.benchmark``). Tables: :mod:`.report`. Speed is never asserted anywhere: the
JSON records what was measured and under which load (``os.getloadavg()`` before and after).
"""

from jaxcnn.bench.cli import add_bench_parser, main, run

__all__ = ["add_bench_parser", "main", "run"]
