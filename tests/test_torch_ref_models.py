"""Tests for the PyTorch reference architectures in ``torch_ref.models``.

Fast by construction: real forward passes use batch 2 at (near) minimum input
sizes; the big torchvision models (VGG family) and all parameter counts use
the ``meta`` device, which skips weight allocation and initialisation.
"""

import warnings

import pytest
import torch
import torchvision

from torch_ref import models
from torch_ref.models.cifar_resnet import BasicBlock as CifarBasicBlock
from torch_ref.models.cifar_resnet import Bottleneck as CifarBottleneck
from torch_ref.models.cifar_vgg import CIFAR_VGG_CFGS, CifarVGG
from torch_ref.models.se_resnet import SELayer
from torch_ref.models.torchvision_models import TORCHVISION_NAMES

COURSE_NAMES = [
    "mlp",
    "mnist_cnn",
    "lenet5",
    "cifar_cnn",
    "gap_vgg",
    "cifar_vgg11",
    "cifar_vgg13",
    "cifar_vgg16",
    "cifar_vgg19",
    "cifar_resnet18",
    "cifar_resnet34",
    "cifar_resnet50",
    "se_resnet18",
    "se_resnet50",
]

# (channels, side) of a small valid input for each model (eval mode).
INPUT = {
    "mlp": (1, 28),
    "mnist_cnn": (1, 28),
    "lenet5": (1, 32),
    "alexnet": (3, 63),  # smallest side that survives alexnet's stem and three max-pools
    "googlenet": (3, 15),  # smallest side googlenet accepts
    "densenet121": (3, 29),  # smallest side that survives densenet's three 2x2 transitions
    "resnet18": (3, 16),  # ImageNet resnets accept any side >= 1 in eval mode
    "resnet34": (3, 16),
    "resnet50": (3, 16),
    "resnext50_32x4d": (3, 16),
    "se_resnet18": (3, 16),
    "se_resnet50": (3, 16),
}
# The big torchvision models cost seconds each to initialise on CPU: check them on the meta
# device; one model of each torchvision family (alexnet, vgg11_bn, googlenet, resnet18/34/50,
# resnext50_32x4d, densenet121) still runs for real.
META_ONLY = {
    "vgg11",
    "vgg13",
    "vgg16",
    "vgg19",
    "vgg13_bn",
    "vgg16_bn",
    "vgg19_bn",
    "resnet101",
    "resnet152",
    "resnext101_32x8d",
    "wide_resnet50_2",
    "wide_resnet101_2",
    "densenet161",
    "densenet169",
    "densenet201",
}

DEFAULT_NUM_CLASSES = {name: 10 for name in COURSE_NAMES} | {name: 1000 for name in TORCHVISION_NAMES}
DEFAULT_NUM_CLASSES["se_resnet18"] = DEFAULT_NUM_CLASSES["se_resnet50"] = 1000


def _input(name: str, batch: int = 2, device: str = "cpu") -> torch.Tensor:
    channels, side = INPUT.get(name, (3, 32))
    return torch.randn(batch, channels, side, side, device=device)


def _num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _meta_model(name: str, **options) -> torch.nn.Module:
    with torch.device("meta"):
        return models.create(name, **options)


def _logits(out):
    return out[0] if isinstance(out, tuple) else out


# --------------------------------------------------------------------------- registry


def test_names_are_exactly_the_expected_models():
    assert models.names() == sorted(COURSE_NAMES + TORCHVISION_NAMES)


def test_unknown_name_raises_value_error_listing_valid_names():
    with pytest.raises(ValueError, match="unknown model 'resnet9000'") as info:
        models.create("resnet9000")
    for name in models.names():
        assert name in str(info.value)


def test_unknown_option_raises_type_error():
    with pytest.raises(TypeError):
        models.create("mlp", dropout=0.5)


@pytest.mark.parametrize("name", sorted(COURSE_NAMES + TORCHVISION_NAMES))
def test_default_num_classes(name):
    model = _meta_model(name).eval()
    out = _logits(model(_input(name, device="meta")))
    assert out.shape == (2, DEFAULT_NUM_CLASSES[name])


# --------------------------------------------------------------------------- forward shapes


@pytest.mark.parametrize("name", sorted(COURSE_NAMES + TORCHVISION_NAMES))
def test_forward_output_shape(name):
    device = "meta" if name in META_ONLY else "cpu"
    with torch.device(device):
        model = models.create(name, num_classes=5).eval()
    with torch.no_grad():
        out = _logits(model(_input(name, device=device)))
    assert out.shape == (2, 5)
    if device == "cpu":
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["cifar_resnet18", "cifar_vgg11", "se_resnet18", "mnist_cnn"])
def test_train_mode_forward_and_backward(name):
    model = models.create(name, num_classes=3).train()
    out = model(_input(name))
    assert out.shape == (2, 3)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_gap_vgg_returns_logits_and_last_feature_map():
    model = models.create("gap_vgg").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits, features = model(x)
        assert logits.shape == (2, 10)
        assert features.shape == (2, 512, 2, 2)  # 64 / 32
        torch.testing.assert_close(features, model.conv(x))
        # logits are the classifier applied to the globally averaged features (what CAM relies on)
        torch.testing.assert_close(logits, model.classifier(features.mean(dim=(2, 3))))


def test_googlenet_options():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # init_weights defaults to True: no FutureWarning
        model = models.create("googlenet", num_classes=4)
    assert model.aux_logits and model.aux1 is not None
    out = model.train()(torch.randn(2, 3, 15, 15))
    assert out.logits.shape == out.aux_logits1.shape == out.aux_logits2.shape == (2, 4)

    model = _meta_model("googlenet", aux_logits=False, transform_input=True, init_weights=False)
    assert model.aux1 is None and model.aux2 is None and model.transform_input


@pytest.mark.parametrize("name, last_bn", [("resnet18", "bn2"), ("se_resnet18", "bn2"), ("se_resnet50", "bn3")])
def test_zero_init_residual_is_passed_through(name, last_bn):
    model = models.create(name, zero_init_residual=True)
    for block in (model.layer1[0], model.layer4[-1]):
        assert torch.count_nonzero(getattr(block, last_bn).weight) == 0


# --------------------------------------------------------------------------- parameter counts


@pytest.mark.parametrize("name", TORCHVISION_NAMES)
def test_torchvision_parameter_counts(name):
    # googlenet's published count is without the auxiliary heads
    options = {"aux_logits": False} if name == "googlenet" else {}
    expected = torchvision.models.get_model_weights(name).DEFAULT.meta["num_params"]
    assert _num_params(_meta_model(name, **options)) == expected
    with torch.device("meta"):
        tv_options = {"init_weights": True} if name == "googlenet" else {}
        tv_model = torchvision.models.get_model(name, weights=None, num_classes=7, **tv_options)
    assert _num_params(_meta_model(name, num_classes=7)) == _num_params(tv_model)


def _conv(cin, cout, k, bias=True):
    return cin * cout * k * k + (cout if bias else 0)


def _linear(cin, cout):
    return cin * cout + cout


def _bn(c):
    return 2 * c


def _vgg_features(cfg, batch_norm):
    total, cin = 0, 3
    for v in cfg:
        if v != "M":
            total += _conv(cin, v, 3) + (_bn(v) if batch_norm else 0)
            cin = v
    return total


def _cifar_resnet(block, num_blocks):
    expansion = 1 if block == "basic" else 4
    total, cin = _conv(3, 64, 3, bias=False) + _bn(64), 64
    for planes, n, stride in zip([64, 128, 256, 512], num_blocks, [1, 2, 2, 2]):
        for i in range(n):
            cout = planes * expansion
            if block == "basic":
                total += _conv(cin, planes, 3, False) + _bn(planes) + _conv(planes, planes, 3, False) + _bn(planes)
            else:
                total += _conv(cin, planes, 1, False) + _bn(planes) + _conv(planes, planes, 3, False) + _bn(planes)
                total += _conv(planes, cout, 1, False) + _bn(cout)
            if (stride if i == 0 else 1) != 1 or cin != cout:
                total += _conv(cin, cout, 1, False) + _bn(cout)
            cin = cout
    return total + _linear(512 * expansion, 10)


def _se_extra(block, num_blocks):
    expansion = 1 if block == "basic" else 4
    return sum(
        n * (_linear(c, c // 16) + _linear(c // 16, c))
        for c, n in zip([64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion], num_blocks)
    )


VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]

COURSE_PARAMS = {
    "mlp": (_linear(784, 256) + _linear(256, 128) + _linear(128, 10), 235_146),
    "mnist_cnn": (_conv(1, 10, 5) + _conv(10, 20, 5) + _linear(320, 50) + _linear(50, 10), 21_840),
    "lenet5": (
        _conv(1, 6, 5) + _conv(6, 16, 5) + _linear(400, 120) + _linear(120, 84) + _linear(84, 10),
        61_706,
    ),
    "cifar_cnn": (
        _conv(3, 16, 3)
        + _conv(16, 16, 3)
        + _conv(16, 32, 3)
        + _conv(32, 32, 3)
        + _conv(32, 64, 3)
        + _conv(64, 64, 3)
        + _linear(4 * 4 * 64, 10),
        82_330,
    ),
    "gap_vgg": (_vgg_features(VGG16, False) + _linear(512, 10), 14_719_818),
    "cifar_vgg11": (_vgg_features(CIFAR_VGG_CFGS["vgg11"], True) + _linear(512, 10), 9_231_114),
    "cifar_vgg13": (_vgg_features(CIFAR_VGG_CFGS["vgg13"], True) + _linear(512, 10), 9_416_010),
    "cifar_vgg16": (_vgg_features(CIFAR_VGG_CFGS["vgg16"], True) + _linear(512, 10), 14_728_266),
    "cifar_vgg19": (_vgg_features(CIFAR_VGG_CFGS["vgg19"], True) + _linear(512, 10), 20_040_522),
    "cifar_resnet18": (_cifar_resnet("basic", [2, 2, 2, 2]), 11_173_962),
    "cifar_resnet34": (_cifar_resnet("basic", [3, 4, 6, 3]), 21_282_122),
    "cifar_resnet50": (_cifar_resnet("bottleneck", [3, 4, 6, 3]), 23_520_842),
    # torchvision resnet + SE units; the totals match the published SE-ResNet-18/50 sizes (11.78M / 28.09M)
    "se_resnet18": (11_689_512 + _se_extra("basic", [2, 2, 2, 2]), 11_778_592),
    "se_resnet50": (25_557_032 + _se_extra("bottleneck", [3, 4, 6, 3]), 28_088_024),
}


@pytest.mark.parametrize("name", COURSE_NAMES)
def test_course_parameter_counts(name):
    formula, published = COURSE_PARAMS[name]
    assert formula == published
    assert _num_params(_meta_model(name)) == published


# --------------------------------------------------------------------------- structure (for the JAX twins)


def _children(module):
    return [name for name, _ in module.named_children()]


@pytest.mark.parametrize(
    "name, children",
    [
        ("mlp", ["fc1", "fc2", "fc3"]),
        ("mnist_cnn", ["conv1", "conv2", "fc1", "fc2"]),
        ("lenet5", ["conv1", "conv2", "fc1", "fc2", "fc3"]),
        ("cifar_cnn", ["conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "fc"]),
        ("gap_vgg", ["conv", "classifier"]),
        ("cifar_vgg11", ["features", "classifier"]),
        ("cifar_resnet18", ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "linear"]),
        (
            "se_resnet18",
            ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"],
        ),
    ],
)
def test_top_level_attribute_order(name, children):
    assert _children(_meta_model(name)) == children


def test_cifar_resnet_block_structure():
    model = _meta_model("cifar_resnet18")
    assert [len(layer) for layer in (model.layer1, model.layer2, model.layer3, model.layer4)] == [2, 2, 2, 2]
    assert isinstance(model.layer1[0], CifarBasicBlock)
    assert _children(model.layer1[0]) == ["conv1", "bn1", "conv2", "bn2", "shortcut"]
    assert len(model.layer1[0].shortcut) == 0  # identity: empty nn.Sequential
    assert len(model.layer2[0].shortcut) == 2 and model.layer2[0].shortcut[0].stride == (2, 2)
    assert len(model.layer2[1].shortcut) == 0

    model = _meta_model("cifar_resnet50")
    assert isinstance(model.layer1[0], CifarBottleneck)
    assert _children(model.layer1[0]) == ["conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "shortcut"]
    assert len(model.layer1[0].shortcut) == 2  # 64 -> 256 channels
    assert model.layer2[0].conv2.stride == (2, 2) and model.layer2[0].conv1.stride == (1, 1)


def test_cifar_vgg_cfgs_and_keys_match_torchvision_bn_features():
    tv_cfgs = torchvision.models.vgg.cfgs
    assert [CIFAR_VGG_CFGS[k] for k in ("vgg11", "vgg13", "vgg16", "vgg19")] == [tv_cfgs[k] for k in "ABDE"]
    for depth in (11, 19):
        ours = _meta_model(f"cifar_vgg{depth}").features.state_dict()
        theirs = _meta_model(f"vgg{depth}_bn").features.state_dict()
        assert list(ours) == list(theirs)
        assert all(ours[k].shape == theirs[k].shape for k in ours)
    with pytest.raises(ValueError):
        CifarVGG("vgg12")


@pytest.mark.parametrize("depth", [18, 50])
def test_se_resnet_keys_are_torchvision_resnet_keys_plus_se(depth):
    ours = _meta_model(f"se_resnet{depth}").state_dict()
    theirs = _meta_model(f"resnet{depth}").state_dict()
    assert list(theirs) == [k for k in ours if ".se." not in k]
    assert all(ours[k].shape == theirs[k].shape for k in theirs)
    block = _meta_model(f"se_resnet{depth}").layer2[0]
    expected = ["conv1", "bn1", "relu", "conv2", "bn2", "downsample", "se"]
    if depth == 50:
        expected = ["conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "relu", "downsample", "se"]
    assert _children(block) == expected
    assert _children(block.se) == ["fc1", "fc2"]


def test_se_layer_gates_channels():
    torch.manual_seed(0)
    se = SELayer(32)
    assert (se.fc1.in_features, se.fc1.out_features, se.fc2.out_features) == (32, 2, 32)
    x = torch.randn(2, 32, 5, 5)
    with torch.no_grad():
        s = torch.sigmoid(se.fc2(torch.relu(se.fc1(x.mean(dim=(2, 3))))))
        torch.testing.assert_close(se(x), x * s[:, :, None, None])
        se.fc2.weight.zero_()
        se.fc2.bias.zero_()
        torch.testing.assert_close(se(x), 0.5 * x)
