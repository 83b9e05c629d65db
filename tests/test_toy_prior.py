import math

import pytest
import torch

from dreamfusion.config import load_config
from dreamfusion.errors import UserError
from dreamfusion.guidance.toy.prior import optimal_denoiser_eps, reference_cameras
from dreamfusion.guidance.toy.captions import SHAPE_NAMES, parse_caption
from dreamfusion.guidance.toy.world import COLORS, SHAPES, Caption
from dreamfusion.pipeline.build import build_prior

VIEWS = ("overhead", "front", "back", "side")


def test_denoiser_matches_hand_computation():
    refs = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    abar = torch.tensor([0.64])                 # sqrt 0.8, 1 - abar = 0.36
    x_t = torch.tensor([[0.8, 0.2]])
    # |x_t - 0.8 x_1|^2 = 0.04, |x_t - 0.8 x_2|^2 = 0.64 + 0.36 = 1.0
    l1, l2 = -0.04 / 0.72, -1.0 / 0.72
    w1 = math.exp(l1) / (math.exp(l1) + math.exp(l2))
    x0 = torch.tensor([w1, 1 - w1])
    eps = (x_t[0] - 0.8 * x0) / 0.6
    got = optimal_denoiser_eps(x_t, abar, refs)
    assert torch.allclose(got[0], eps, atol=1e-6)


def test_denoiser_recovers_a_reference_at_low_noise():
    refs = torch.randn(5, 12)
    abar = torch.tensor([0.9999])
    noise = torch.randn(1, 12)
    x_t = abar.sqrt() * refs[3:4] + (1 - abar).sqrt() * noise
    assert torch.allclose(optimal_denoiser_eps(x_t, abar, refs), noise, atol=1e-3)


def test_vocabulary_size():
    assert len(SHAPES) >= 6 and len(COLORS) >= 6
    assert {"sphere", "cube", "cylinder", "cone", "torus", "duck"} <= set(SHAPES)
    assert SHAPES["duck"].has_front
    assert tuple(SHAPES) == SHAPE_NAMES     # the torch-free vocabulary names every shape


@pytest.mark.parametrize("prompt, expected", [
    ("a red cube", Caption("red", "cube")),
    ("A Yellow Duck.", Caption("yellow", "duck")),
    ("a yellow duck, side view", Caption("yellow", "duck", "side")),
    ("an orange torus, back view", Caption("orange", "torus", "back")),
    ("a blue cone , overhead view", Caption("blue", "cone", "overhead")),
])
def test_parse_caption(prompt, expected):
    assert parse_caption(prompt, VIEWS) == expected


@pytest.mark.parametrize("prompt, fragment", [
    ("a hamburger", "hamburger"), ("a red", "a <colour> <shape>"),
    ("a red blue cube", "a <colour> <shape>"), ("a red cube, top view", "unknown view"),
])
def test_parse_caption_errors_list_the_vocabulary(prompt, fragment):
    with pytest.raises(UserError) as info:
        parse_caption(prompt, VIEWS)
    assert fragment in str(info.value)
    if "view" not in fragment:
        assert "cube" in str(info.value) and "yellow" in str(info.value)


def _prior(tmp_path, *extra):
    cfg = load_config("toy", ["height=16", "width=16", "guidance.references=24",
                              f"guidance.cache_dir={tmp_path}", *extra])
    return build_prior(cfg)


def test_references_are_deterministic_and_cached(tmp_path):
    prior = _prior(tmp_path)
    first = prior.condition("a red cube").images
    assert first.shape == (24, 3 * 16 * 16)
    files = list((tmp_path / "toy").glob("*.safetensors"))
    assert len(files) == 1
    again = _prior(tmp_path)
    assert torch.equal(again.condition("a red cube").images, first)   # read back from disk
    files[0].write_bytes(b"corrupt")                             # a bad cache file is redone
    assert torch.equal(_prior(tmp_path).condition("a red cube").images, first)


def test_front_bias_and_view_regions(tmp_path):
    prior = _prior(tmp_path)
    s = prior.settings
    g = torch.Generator().manual_seed(0)
    plain = reference_cameras(Caption("yellow", "duck"), s, 400, g)
    front_share = (plain.azimuth.abs() <= 45).float().mean()
    assert front_share > 0.75                        # front-biased, like photo collections
    cube = reference_cameras(Caption("red", "cube"), s, 400, g)
    assert (cube.azimuth.abs() <= 45).float().mean() < 0.4     # no front: uniform
    side = reference_cameras(Caption("yellow", "duck", "side"), s, 200, g)
    assert ((side.azimuth.abs() - 90).abs() <= 45 + 1e-4).all()
    back = reference_cameras(Caption("yellow", "duck", "back"), s, 200, g)
    assert (back.azimuth.abs() >= 135 - 1e-4).all()


def test_reference_set_keeps_float64_references_and_their_norms():
    from dreamfusion.guidance.toy.prior import ReferenceSet

    images = torch.rand(7, 48) * 2 - 1
    refs = ReferenceSet.uniform(images)
    assert refs.images.dtype == torch.float64 and torch.equal(refs.images, images.double())
    assert torch.equal(refs.square_norms, (images.double() ** 2).sum(-1))
    x_t, abar = torch.randn(2, 48), torch.tensor([0.3, 0.97])
    # the kept norms change nothing: bit for bit what the references alone give
    assert torch.equal(optimal_denoiser_eps(x_t, abar, refs.images, refs.log_weights,
                                            refs.square_norms),
                       optimal_denoiser_eps(x_t, abar, images, refs.log_weights))
