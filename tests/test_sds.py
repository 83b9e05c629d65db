import torch

import math

import pytest

from dreamfusion.guidance.schedules import TimestepSchedule
from dreamfusion.guidance.sds import Condition, guided_noise, perpendicular, sds_loss, sds_weight
from dreamfusion.guidance.toy.prior import optimal_denoiser_eps
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
    result = sds_loss(prior, images, t, Condition(cond, None), guidance_scale=1.0)
    result.loss.backward()
    # replay the same noise to compute w(t) (eps_hat - eps) by hand
    torch.manual_seed(3)
    x = images.detach() * 2 - 1
    noise = torch.randn_like(x)
    abar = prior.alphas_cumprod[t].view(1, 1, 1, 1)
    x_t = abar.sqrt() * x + (1 - abar).sqrt() * noise
    eps_hat = optimal_denoiser_eps(x_t, abar.view(1), cond.images)
    expected = (1 - abar) * (eps_hat - noise) * 2     # d x / d images = 2
    assert torch.allclose(images.grad, expected, atol=1e-5)


def test_classifier_free_guidance_arithmetic(tmp_path):
    prior = _prior(tmp_path)
    cond = prior.condition("a red cube")
    x_t = torch.randn(1, 3, 8, 8)
    t = torch.tensor([300])
    eps_c = prior.predict_noise(x_t, t, cond)
    eps_u = prior.predict_noise(x_t, t, prior.unconditional())
    assert prior.unconditional().images.shape[0] == 42           # 7 colours x 6 shapes x 1
    both = Condition(cond, prior.unconditional())
    got = guided_noise(prior, x_t, t, both, 7.5).eps
    assert torch.allclose(got, eps_u + 7.5 * (eps_c - eps_u), atol=1e-6)
    assert torch.equal(guided_noise(prior, x_t, t, both, 1.0).eps, eps_c)


def test_perp_neg_removes_only_the_perpendicular_part_of_each_negative(tmp_path):
    prior = _prior(tmp_path)
    pos, neg = prior.condition("a yellow duck, side view"), prior.condition("a yellow duck, front view")
    x_t = torch.randn(2, 3, 8, 8)
    t = torch.tensor([400, 400])
    eps_p, eps_u, eps_n = prior.predict_noise_many(x_t, t, [pos, prior.unconditional(), neg])
    d_pos, d_neg = eps_p - eps_u, eps_n - eps_u
    perp = perpendicular(d_neg, d_pos)
    dots = (perp.flatten(1) * d_pos.flatten(1)).sum(-1)
    assert torch.allclose(dots, torch.zeros(2), atol=1e-4 * float(d_pos.norm() * d_neg.norm()))
    assert torch.allclose(perp + (d_neg - perp), d_neg)            # perp + parallel = whole
    got = guided_noise(prior, x_t, t, Condition(pos, prior.unconditional(), [(neg, 0.5)]), 3.0).eps
    assert torch.allclose(got, eps_u + 3.0 * (d_pos - 0.5 * perp), atol=1e-5)
    # a negative parallel to the positive direction changes nothing
    same = guided_noise(prior, x_t, t, Condition(pos, prior.unconditional(), [(pos, 2.0)]), 3.0).eps
    assert torch.allclose(same, eps_u + 3.0 * d_pos, atol=1e-5)


def test_toy_mixture_is_the_exact_denoiser_of_the_mixed_distribution(tmp_path):
    prior = _prior(tmp_path)
    a, b = prior.condition("a red cube"), prior.condition("a blue torus")
    x_t, t = torch.randn(1, 3, 8, 8), torch.tensor([600])
    abar = prior.alphas_cumprod[t]
    mixed = prior.predict_noise(x_t, t, prior.mix([(a, 0.25), (b, 0.75)]))
    # by hand: posterior over the union with prior weights 0.25/N_a and 0.75/N_b
    refs = torch.cat([a.images, b.images]).double()
    prior_w = torch.cat([torch.full((10,), 0.025), torch.full((10,), 0.075)]).double()
    x = x_t.flatten(1).double()
    logits = -((x - abar.sqrt().double() * refs) ** 2).sum(-1) / (2 * (1 - abar.double()))
    post = torch.softmax(logits + prior_w.log(), dim=0)
    x0 = post @ refs
    eps = (x - abar.sqrt().double() * x0) / (1 - abar.double()).sqrt()
    assert torch.allclose(mixed.double().flatten(1), eps, atol=1e-5)
    assert prior.mix([(a, 1.0)]) is a


def test_weightings():
    abar = torch.tensor([0.25])
    assert torch.allclose(sds_weight(abar, "sds"), torch.tensor([0.75]))
    assert torch.allclose(sds_weight(abar, "snr_sqrt"), torch.tensor([0.75 ** 0.5 * 0.5]))
    assert torch.allclose(sds_weight(abar, "uniform"), torch.tensor([1.0]))


@pytest.mark.parametrize("name, start, middle, end", [
    ("uniform", (0.02, 0.98), (0.02, 0.98), (0.02, 0.98)),
    ("anneal_linear", (0.02, 0.98), (0.11, 0.74), (0.2, 0.5)),
    ("anneal_sqrt", (0.02, 0.98), (0.02 + 0.18 * math.sqrt(0.5), 0.98 - 0.48 * math.sqrt(0.5)),
     (0.2, 0.5)),
    ("time_prioritized", (0.98, 0.98), (0.5, 0.5), (0.02, 0.02)),
])
def test_schedule_ranges_at_start_middle_and_end(name, start, middle, end):
    s = TimestepSchedule(name, 0.02, 0.98, 0.5, t_min_end=0.2, tp_mu=0.5, tp_sigma=0.25)
    for p, want in ((0.0, start), (0.5, middle), (1.0, end)):
        assert s.range_at(p) == pytest.approx(want, abs=1e-3), (name, p)
    t = s.sample(1.0, 1000, 500)
    assert t.min() >= int(end[0] * 1000) - 1 and t.max() <= int(end[1] * 1000)


def test_time_prioritized_is_monotone_and_lingers_near_its_centre():
    s = TimestepSchedule("time_prioritized", 0.02, 0.98, 0.5, tp_mu=0.5, tp_sigma=0.1)
    ts = [s.range_at(p / 100)[0] for p in range(101)]
    assert all(a >= b for a, b in zip(ts, ts[1:]))
    near = sum(0.4 <= t <= 0.6 for t in ts)
    assert near > 50                      # most of the run is spent within one sigma of mu
    # the anneal keeps t_min fixed unless t_min_end is given
    assert TimestepSchedule("anneal_linear", 0.02, 0.98, 0.5).range_at(1.0) == (0.02, 0.5)


def test_annealing_can_end_before_the_run_does():
    """threestudio-mvdream anneals t over the first 8000 of 10000 steps (anneal_end 0.8)."""
    early = TimestepSchedule("anneal_linear", 0.97, 0.98, 0.5, 0.02, anneal_end=0.8)
    whole = TimestepSchedule("anneal_linear", 0.97, 0.98, 0.5, 0.02)
    assert early.range_at(0.4) == pytest.approx(whole.range_at(0.5))
    assert early.range_at(0.8) == pytest.approx((0.02, 0.5))
    assert early.range_at(0.95) == pytest.approx((0.02, 0.5))
    assert early.range_at(0.0) == pytest.approx((0.97, 0.98))
