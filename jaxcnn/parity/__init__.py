"""Cross-framework verification: a torch module against its jaxcnn twin, module by module.

    from jaxcnn import parity
    report = parity.compare(torch_net, jax_net, x_nchw)          # weights copied torch -> jaxcnn
    report.passed, report.first_divergence, report.min_rtol
    print(report.markdown()); report.to_json("parity.json"); report.print()

``compare`` records every named submodule on both sides (torch forward hooks,
:mod:`jaxcnn.intermediates`), measures its *accumulated* error (both models end to end) and its
*isolated* error (the jaxcnn submodule fed torch's input to it), and names the first module
that diverges. ``mode="train"`` adds the loss (:func:`jaxcnn.train.step.model_loss`), every
parameter's gradient and the BatchNorm statistics after the step; ``steps=N`` runs N optimizer
steps through jaxcnn's train step; ``reference="float64"`` tells float32 rounding from a
semantic difference. The one comparison rule is :mod:`jaxcnn.parity.rule`. torch is imported
only when a comparison runs. See ``docs/parity.md``.
"""

from jaxcnn.parity.compare import RTOL64, ZERO_GRADIENT, assert_parity, compare
from jaxcnn.parity.runs import FAST_COMPILE, as_list, fill_abstract_rng_streams, map_keys, nchw, nhwc, set_mode
from jaxcnn.parity.report import ROOT, SCHEMA, SCHEMA_ID, ModuleRow, ParityReport, TensorRow
from jaxcnn.parity.rule import RTOL, GradientErrors, ShapeMismatch, assert_close, difference, gradient_errors, relative_error, to_numpy

__all__ = [
    "FAST_COMPILE",
    "ROOT",
    "RTOL",
    "RTOL64",
    "SCHEMA",
    "SCHEMA_ID",
    "ZERO_GRADIENT",
    "GradientErrors",
    "ModuleRow",
    "ParityReport",
    "ShapeMismatch",
    "TensorRow",
    "as_list",
    "assert_close",
    "assert_parity",
    "compare",
    "difference",
    "fill_abstract_rng_streams",
    "gradient_errors",
    "map_keys",
    "nchw",
    "nhwc",
    "relative_error",
    "set_mode",
    "to_numpy",
]
