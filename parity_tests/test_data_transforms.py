"""jaxcnn.data.transforms vs torchvision's ImageNet transforms on the same decoded PIL images.

torch's random draws are recorded while torchvision runs (``Tensor.uniform_``,
``torch.randint``, ``torch.rand`` wrapped, values kept) and replayed into jaxcnn's transforms,
so both compute the crop box (and the flip) from identical numbers: the boxes must be equal
and the pixels within one grey level (both resize with PIL's BILINEAR, so they are equal in
practice). Image sizes are odd and even, tall, wide and smaller than the crop; extreme aspect
ratios force torchvision's central fallback.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
T = pytest.importorskip("torchvision.transforms")
Image = pytest.importorskip("PIL.Image")

from conftest import assert_close  # noqa: E402

from jaxcnn.data import normalize  # noqa: E402
from jaxcnn.data.transforms import IMAGENET_MEAN, IMAGENET_STD, ImageNetEval, ImageNetTrain  # noqa: E402
from jaxcnn.data.transforms import random_resized_crop_params  # noqa: E402

SIZES = [(37, 53), (64, 64), (120, 81), (300, 200), (199, 301), (10, 300), (300, 12), (301, 12), (11, 300), (224, 224), (41, 17)]


class Recorder:
    """Wraps torch's draw functions and keeps every value drawn, in order."""

    def __init__(self, monkeypatch):
        self.values: list[tuple[str, float]] = []
        uniform, randint, rand = torch.Tensor.uniform_, torch.randint, torch.rand

        def uniform_(t, *a, **k):
            out = uniform(t, *a, **k)
            self.values.append(("uniform", float(out.item())))
            return out

        def randint_(*a, **k):
            out = randint(*a, **k)
            self.values.append(("integers", int(out.item())))
            return out

        def rand_(*a, **k):
            out = rand(*a, **k)
            self.values.append(("random", float(out.item())))
            return out

        monkeypatch.setattr(torch.Tensor, "uniform_", uniform_)
        monkeypatch.setattr(torch, "randint", randint_)
        monkeypatch.setattr(torch, "rand", rand_)

    def replay(self) -> Replay:
        values, self.values = self.values, []
        return Replay(values)


class Replay:
    """A ``numpy.random.Generator`` stand-in that returns recorded torch draws."""

    def __init__(self, values):
        self.values = list(values)

    def _next(self, kind):
        got, value = self.values.pop(0)
        assert got == kind, f"draw order differs: torch drew {got}, jaxcnn asks for {kind}"
        return value

    def uniform(self, low, high):
        value = self._next("uniform")
        assert low - 1e-6 <= value <= high + 1e-6
        return value

    def integers(self, low, high):
        value = self._next("integers")
        assert low <= value < high
        return value

    def random(self):
        return self._next("random")


def _image(h, w, seed, mode="RGB"):
    rng = np.random.default_rng(seed)
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    # smooth-ish content so resampling differences would show
    base = rng.integers(0, 256, size=shape).astype(np.float64)
    yy, xx = np.mgrid[0:h, 0:w]
    ramp = (np.sin(yy / 5.0) + np.cos(xx / 7.0)) * 60.0
    if mode == "RGB":
        ramp = ramp[..., None]
    return Image.fromarray(np.clip(base * 0.5 + 64 + ramp, 0, 255).astype(np.uint8), mode)


def test_random_resized_crop_box_matches_get_params(monkeypatch):
    rec = Recorder(monkeypatch)
    torch.manual_seed(0)
    fallbacks = 0
    for trial in range(300):
        h, w = SIZES[trial % len(SIZES)]
        img = _image(h, w, trial) if trial < len(SIZES) else Image.new("RGB", (w, h))
        scale, ratio = ((0.08, 1.0), (3 / 4, 4 / 3)) if trial % 3 else ((0.5, 1.0), (0.2, 5.0))
        box = T.RandomResizedCrop.get_params(img, list(scale), list(ratio))
        replay = rec.replay()
        fallbacks += not any(kind == "integers" for kind, _ in replay.values)
        assert random_resized_crop_params(h, w, replay, scale, ratio) == tuple(int(v) for v in box), (h, w, trial)
        assert replay.values == []  # same number of draws
    assert fallbacks >= 10  # the central fallback was exercised


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_train_transform_pixels_match_torchvision(monkeypatch, mode):
    rec = Recorder(monkeypatch)
    torch.manual_seed(1)
    for size in (32, 33):
        tv = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip()])
        ours = ImageNetTrain(size)
        flips = 0
        for k, (h, w) in enumerate(SIZES * 2):
            img = _image(h, w, 100 + k, mode)
            expected = np.asarray(tv(img), dtype=np.int32).reshape(size, size, -1)
            replay = rec.replay()
            flips += replay.values[-1][1] < 0.5
            got = ours(img, replay)
            assert got.dtype == np.uint8 and got.shape == expected.shape
            assert np.abs(got.astype(np.int32) - expected).max() <= 1, (h, w)
        assert 0 < flips < 2 * len(SIZES)


@pytest.mark.parametrize("size,resize", [(32, None), (33, 40), (224, 256)])
def test_eval_transform_pixels_match_torchvision(size, resize):
    tv = T.Compose([T.Resize(resize or int(round(size / 0.875))), T.CenterCrop(size)])
    ours = ImageNetEval(size, resize)
    for k, (h, w) in enumerate(SIZES):
        for mode in ("RGB", "L"):
            img = _image(h, w, k, mode)
            expected = np.asarray(tv(img), dtype=np.int32).reshape(size, size, -1)
            got = ours(img)
            assert got.shape == expected.shape, (h, w)
            assert np.abs(got.astype(np.int32) - expected).max() <= 1, (h, w, mode)


def test_normalisation_matches_to_tensor_normalize():
    img = _image(45, 38, 7)
    expected = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)(T.ToTensor()(img)).numpy().transpose(1, 2, 0)
    got = np.asarray(normalize(np.asarray(img)[None], IMAGENET_MEAN, IMAGENET_STD))[0]
    assert_close(got, expected, rtol=1e-5)
