import torch

from dreamfusion.guidance.base import guided_noise, sds_loss, sds_weight
from dreamfusion.guidance.schedules import TimestepSchedule
from dreamfusion.guidance.toy.prior import optimal_denoiser_eps
from dreamfusion.guidance.views import ViewRule, view_of
from dreamfusion.pipeline.build import build_prior
from dreamfusion.config import load_config


def _prior(tmp_path, scale=1.0):
    cfg = load_config("toy", ["height=8", "width=8", "guidance.references=10",
                              "guidance.uncond_per_caption=1", f"guidance.cache_dir={tmp_path}"])
    return build_prior(cfg)


def test_sds_gradient_is_weighted_noise_residual(tmp_path):
    prior = _prior(tmp_path)
    cond = prior.condition("a green cylinder")
    images = torch.rand(1, 3, 8, 8, requires_grad=True)
    t = torch.tensor([500])
    torch.manual_seed(3)
    result = sds_loss(prior, images, t, cond, guidance_scale=1.0)
    result.loss.backward()
    # replay the same noise to compute w(t) (eps_hat - eps) by hand
    torch.manual_seed(3)
    x = images.detach() * 2 - 1
    noise = torch.randn_like(x)
    abar = prior.alphas_cumprod[t].view(1, 1, 1, 1)
    x_t = abar.sqrt() * x + (1 - abar).sqrt() * noise
    eps_hat = optimal_denoiser_eps(x_t, abar.view(1), cond)
    expected = (1 - abar) * (eps_hat - noise) * 2     # d x / d images = 2
    assert torch.allclose(images.grad, expected, atol=1e-5)


def test_classifier_free_guidance_arithmetic(tmp_path):
    prior = _prior(tmp_path)
    cond = prior.condition("a red cube")
    x_t = torch.randn(1, 3, 8, 8)
    t = torch.tensor([300])
    eps_c = prior.predict_noise(x_t, t, cond)
    eps_u = prior.predict_noise(x_t, t, prior.unconditional())
    assert prior.unconditional().shape[0] == 42                  # 7 colours x 6 shapes x 1
    got = guided_noise(prior, x_t, t, cond, 7.5)
    assert torch.allclose(got, eps_u + 7.5 * (eps_c - eps_u), atol=1e-6)
    assert torch.equal(guided_noise(prior, x_t, t, cond, 1.0), eps_c)


def test_weightings():
    abar = torch.tensor([0.25])
    assert torch.allclose(sds_weight(abar, "sds"), torch.tensor([0.75]))
    assert torch.allclose(sds_weight(abar, "snr_sqrt"), torch.tensor([0.75 ** 0.5 * 0.5]))
    assert torch.allclose(sds_weight(abar, "uniform"), torch.tensor([1.0]))


def test_schedules_ranges():
    uniform = TimestepSchedule("uniform", 0.02, 0.98, 0.5)
    linear = TimestepSchedule("anneal_linear", 0.02, 0.98, 0.5)
    sqrt = TimestepSchedule("anneal_sqrt", 0.02, 0.98, 0.5)
    for p in (0.0, 0.5, 1.0):
        assert uniform.range_at(p) == (0.02, 0.98)
    assert linear.range_at(0.0) == (0.02, 0.98)
    assert abs(linear.range_at(0.5)[1] - 0.74) < 1e-9
    assert abs(linear.range_at(1.0)[1] - 0.5) < 1e-9
    assert abs(sqrt.range_at(0.25)[1] - 0.74) < 1e-9
    t = linear.sample(1.0, 1000, 500)
    assert t.min() >= 20 and t.max() <= 500


def test_view_rules_are_data():
    rules = [ViewRule("overhead", ", overhead view", (0.0,), 180.0, 60.0, 90.0),
             ViewRule("front", ", front view", (0.0,), 45.0),
             ViewRule("back", ", back view", (180.0,), 45.0),
             ViewRule("side", ", side view", (90.0, -90.0), 45.0)]
    assert view_of(10.0, 20.0, rules).name == "front"
    assert view_of(-170.0, 0.0, rules).name == "back"
    assert view_of(179.0, 0.0, rules).name == "back"
    assert view_of(-80.0, 0.0, rules).name == "side"
    assert view_of(100.0, 75.0, rules).name == "overhead"
