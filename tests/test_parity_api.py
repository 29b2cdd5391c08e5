"""``jaxcnn.parity``: planted differences are named where they were planted, and vanish when removed.

A small torch network (conv, BatchNorm, LeakyReLU, ceil-mode max pool, a residual block with a
projection shortcut, an average pool without padding in the count, flatten, Linear) and its
``jaxcnn.nn`` twin with the same attribute names; each test plants one difference in the twin.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from flax import nnx  # noqa: E402

from jaxcnn import nn  # noqa: E402
from jaxcnn import parity  # noqa: E402

T = torch.nn


class TorchBlock(T.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = T.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = T.BatchNorm2d(cout)
        self.relu = T.ReLU(inplace=True)
        self.conv2 = T.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = T.BatchNorm2d(cout)
        self.downsample = T.Sequential(T.Conv2d(cin, cout, 1, stride=stride, bias=False), T.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.downsample(x))


class TorchNet(T.Module):
    """(N, 3, 11, 11) -> (N, 10)."""

    def __init__(self):
        super().__init__()
        self.features = T.Sequential(T.Conv2d(3, 8, 3, padding=1), T.BatchNorm2d(8), T.LeakyReLU(0.2), T.MaxPool2d(2, ceil_mode=True))
        self.block = TorchBlock(8, 16, stride=2)
        self.pool = T.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        self.flatten = T.Flatten()
        self.fc = T.Linear(16 * 2 * 2, 10)

    def forward(self, x):
        return self.fc(self.flatten(self.pool(self.block(self.features(x)))))


class Block(nnx.Module):
    def __init__(self, cin, cout, stride, *, rngs, plant):
        self.plant = plant
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=1 if plant == "stride" else stride, padding=1, bias=False, rngs=rngs)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False, rngs=rngs)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False, rngs=rngs), nn.BatchNorm2d(cout))

    def __call__(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = self.downsample[0](x) if self.plant == "shortcut_bn" else self.downsample(x)
        return self.relu(out + shortcut)


class Net(nnx.Module):
    """The twin of :class:`TorchNet`, NHWC, with one difference planted by name (None: none)."""

    def __init__(self, plant=None, *, rngs=None):
        rngs = rngs or nnx.Rngs(0)
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=0 if plant == "padding" else 1, rngs=rngs),
            nn.BatchNorm2d(8, eps=1e-3 if plant == "eps" else 1e-5, momentum=0.2 if plant == "momentum" else 0.1),
            nn.ReLU() if plant == "relu" else nn.LeakyReLU(0.2),
            nn.MaxPool2d(2, ceil_mode=plant != "ceil_mode"),
        )
        self.block = Block(8, 16, 2, rngs=rngs, plant=plant)
        self.pool = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=plant == "count_include_pad")
        self.flatten = nn.Flatten(torch_order=plant != "flatten")
        self.fc = nn.Linear(16 * 2 * 2, 10, rngs=rngs)

    def __call__(self, x):
        return self.fc(self.flatten(self.pool(self.block(self.features(x)))))


def torch_net(seed=0):
    torch.manual_seed(seed)
    model = TorchNet()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # random BatchNorm state, so that no statistic is trivially 0 or 1
        for module in model.modules():
            if isinstance(module, T.BatchNorm2d):
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
                module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
    return model


def twin(plant=None):
    return nnx.eval_shape(lambda: Net(plant))  # weights come from torch


X = torch.randn(2, 3, 11, 11, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def model():
    return torch_net()


PLANTS = [
    ("padding", "eval", "features.0"),
    ("stride", "eval", "block.conv1"),
    ("eps", "train", "features.1"),
    ("momentum", "train", "features.1"),
    ("ceil_mode", "eval", "features.3"),
    ("count_include_pad", "eval", "pool"),
    ("flatten", "eval", "flatten"),
    ("relu", "eval", "features.2"),
    ("shortcut_bn", "eval", "block"),
]


@pytest.mark.parametrize("plant, mode, where", PLANTS, ids=[p for p, _, _ in PLANTS])
def test_planted_difference_is_named_where_planted(model, plant, mode, where):
    report = parity.compare(model, twin(plant), X, mode=mode)
    assert not report.passed
    assert report.first_divergence == where, report.markdown()


def test_assert_parity_names_the_first_divergent_module_and_its_error(model):
    with pytest.raises(AssertionError, match=r"first divergence: block.conv1 \(Conv2d\): isolated error inf > rtol 1e-05"):
        parity.assert_parity(model, twin("stride"), X)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_the_twin_without_plants_passes(model, mode):
    report = parity.assert_parity(model, twin(), X, mode=mode)
    assert report.first_divergence is None and report.min_rtol <= 1e-5
    names = [row.name for row in report.modules]
    # every named torch submodule is in the report, children before their containers, the model last
    assert set(names) == {name for name, _ in model.named_modules() if name} | {parity.ROOT}
    assert names.index("block.conv1") < names.index("block") < names.index("fc") and names[-1] == parity.ROOT
    if mode == "train":
        kinds = {row.kind for row in report.tensors}
        assert {"output", "loss", "gradient", "statistic"} <= kinds
        assert len([row for row in report.tensors if row.kind == "gradient"]) == len(list(model.parameters()))


def test_inputs_in_either_layout_and_the_caller_models_untouched(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    jax_twin = twin()
    nchw = parity.compare(model, jax_twin, X.numpy(), mode="train")
    nhwc = parity.compare(model, jax_twin, np.transpose(X.numpy(), (0, 2, 3, 1)), layout="NHWC")
    assert nchw.passed and nhwc.passed and nchw.input_shape == nhwc.input_shape == [2, 3, 11, 11]
    for key, value in model.state_dict().items():  # the training-mode step ran on copies
        assert torch.equal(value, before[key]), key


def test_weights_check_and_key_map(model):
    jax_twin = twin()
    parity.compare(model, jax_twin, X)  # copies the weights into jax_twin
    assert parity.compare(model, jax_twin, X, weights="check").passed
    with torch.no_grad():
        changed = torch_net()
        changed.fc.bias.add_(1.0)
    report = parity.compare(changed, jax_twin, X, weights="check")
    assert not report.passed and report.tensor("fc.bias", "weight").error > 0.1

    class Renamed(T.Module):  # the same network under other attribute names
        def __init__(self, inner):
            super().__init__()
            self.body = inner

        def forward(self, x):
            return self.body(x)

    key_map = [(r"^body\.", ""), (r"^body$", "")]
    report = parity.compare(Renamed(model), twin(), X, key_map=key_map)
    assert report.passed and report.row("body.block.conv1").isolated <= 1e-5


def test_steps_through_the_product_train_step(model):
    # isolate=False: no per-module runs, so a difference is named by the first tensor that differs
    report = parity.compare(model, twin(), X, steps=2, optimizers=("sgd", {"lr": 0.1, "momentum": 0.9}), isolate=False)
    after = [row for row in report.tensors if row.kind == "after 2 steps"]
    assert report.passed and len(after) == len(model.state_dict())
    planted = parity.compare(model, twin("momentum"), X, steps=1, optimizers=("sgd", {"lr": 0.1}), isolate=False)
    assert not planted.passed and planted.first_divergence == "features.1"
    assert planted.tensor("features.1.running_mean", "after 1 steps").error > 1e-3


def _deep_pair():
    """Four conv-BatchNorm-ReLU layers in training mode on batch 2 with 1x1 maps: each BatchNorm
    normalises 2 values per channel, which makes the first layers' gradients ill-conditioned:
    torch float32 and jaxcnn float32 are each up to ~1e-4 off a float64 run (and off each other)."""
    torch.manual_seed(1)
    torch_model = T.Sequential(
        *[T.Sequential(T.Conv2d(4 if i == 0 else 16, 16, 3, padding=1), T.BatchNorm2d(16), T.ReLU()) for i in range(4)],
        T.Flatten(),
        T.Linear(16, 10),
    )

    def build():
        rngs = nnx.Rngs(0)
        return nn.Sequential(
            *[nn.Sequential(nn.Conv2d(4 if i == 0 else 16, 16, 3, padding=1, rngs=rngs), nn.BatchNorm2d(16), nn.ReLU()) for i in range(4)],
            nn.Flatten(),
            nn.Linear(16, 10, rngs=rngs),
        )

    return torch_model, nnx.eval_shape(build), torch.randn(2, 4, 1, 1, generator=torch.Generator().manual_seed(5))


def test_float32_only_disagreement_is_reported_as_rounding():
    torch_model, jax_model, x = _deep_pair()
    report = parity.compare(torch_model, jax_model, x, mode="train", reference="float64")
    over = [row for row in report.tensors + report.modules if (row.error if hasattr(row, "error") else row.isolated) > 1e-5]
    assert over, "the pair should disagree in float32 beyond 1e-5 somewhere (else this test tests nothing)"
    assert all(row.verdict == "float32 rounding" for row in over), report.markdown()
    assert report.passed and report.first_divergence is None


def test_report_json_follows_the_documented_schema(model, tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    report = parity.compare(model, twin("eps"), X, mode="train", reference="float64")
    row = report.row("features.1")  # a semantic difference shows in float64 too
    assert row.verdict == "semantic difference" and row.float64["isolated"] > 1e-9
    document = json.loads(report.to_json(tmp_path / "r.json"))
    jsonschema.validate(document, parity.SCHEMA)
    assert document == json.loads((tmp_path / "r.json").read_text())
    assert document["first_divergence"] == "features.1" and document["passed"] is False
    kinds = {row["kind"] for row in document["tensors"]}
    assert {"gradient", "statistic", "output", "loss"} <= kinds
    markdown = report.markdown()
    assert "| features.1 |" in markdown and "FAIL" in markdown.splitlines()[0]
    assert "semantic difference" in str(report)  # the rich table, rendered as text


def test_import_does_not_import_torch():
    code = "import sys, jaxcnn.parity; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_comparison_rule():
    expected = np.array([[1.0, -2.0], [4.0, 0.0]], np.float32)
    assert parity.relative_error(expected + np.float32(4e-5), expected) == pytest.approx(1e-5, rel=1e-2)
    assert parity.relative_error(np.array([np.nan, 1.0]), np.array([np.nan, 1.0])) == 0.0
    assert parity.relative_error(np.array([np.nan, 1.0]), np.array([0.0, 1.0])) == float("inf")
    with pytest.raises(parity.ShapeMismatch):
        parity.relative_error(np.zeros(3), np.zeros(4))
    with pytest.raises(AssertionError, match="worst at index"):
        parity.assert_close(expected * 1.01, expected, 1e-5, name="x")
    errors = parity.gradient_errors({"a": np.array([1.0, 1e-9]), "b": np.array([1e-3])}, {"a": np.array([1.0, 0.0]), "b": np.array([0.0])}, zero_grad_threshold=1e-6)
    assert errors.zero_in_theory == {"b"} and errors.judged["b"] == pytest.approx(1e-3)
