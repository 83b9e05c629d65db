import math

import torch

from dreamfusion.rendering.volrend import accumulate_along_rays, render_transmittance, render_weights


def test_weights_hand_computed():
    sigmas = torch.tensor([[1.0, 2.0, 3.0]])
    deltas = torch.tensor([[0.5, 0.5, 0.5]])
    w = render_weights(sigmas, deltas)
    a = [1 - math.exp(-0.5), 1 - math.exp(-1.0), 1 - math.exp(-1.5)]
    t = [1.0, math.exp(-0.5), math.exp(-1.5)]
    assert torch.allclose(w[0], torch.tensor([t[i] * a[i] for i in range(3)]))
    # weights sum to the opacity 1 - exp(-sum sigma delta)
    assert math.isclose(float(w.sum()), 1 - math.exp(-3.0), rel_tol=1e-6)


def test_packed_equals_batched():
    torch.manual_seed(1)
    sigmas = torch.rand(4, 7) * 5
    deltas = torch.rand(4, 7) * 0.2
    values = torch.rand(4, 7, 3)
    batched_w = render_weights(sigmas, deltas)
    # pack ragged rays: ray r keeps its first n_r samples; ray 2 has none
    counts = [7, 3, 0, 5]
    keep = torch.tensor([[s < n for s in range(7)] for n in counts])
    ray_idx = torch.arange(4).unsqueeze(1).expand(4, 7)[keep]
    packed_w = render_weights(sigmas[keep], deltas[keep], ray_idx, 4)
    trans_b, _ = render_transmittance(sigmas, deltas)
    trans_p, _ = render_transmittance(sigmas[keep], deltas[keep], ray_idx, 4)
    assert torch.allclose(packed_w, batched_w[keep], atol=1e-6)
    assert torch.allclose(trans_p, trans_b[keep], atol=1e-6)
    rgb_p = accumulate_along_rays(packed_w, values[keep], ray_idx, 4)
    rgb_b = accumulate_along_rays(batched_w * keep, values)
    assert torch.allclose(rgb_p, rgb_b, atol=1e-6)
    assert torch.allclose(accumulate_along_rays(packed_w, None, ray_idx, 4),
                          (batched_w * keep).sum(1), atol=1e-6)
    assert rgb_p[2].abs().sum() == 0
