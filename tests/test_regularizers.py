"""The loss terms beside SDS: their formulas, their weight schedules, and their logs."""
import json
import math

import pytest
import torch

from dreamfusion.cli import main
from dreamfusion.rendering.rendered import Rendered
from dreamfusion.rendering.volrend import orientation_loss
from dreamfusion.pipeline.regularizers import active_weights, entropy, sparsity, weight_at


def test_weights_are_constant_or_piecewise_linear():
    assert weight_at(2.5, 0) == weight_at(2.5, 10**6) == weight_at("2.5", 7) == 2.5
    ramp = [100, 10.0, 1000.0, 5100]                 # threestudio's [start, from, to, end]
    assert [weight_at(ramp, s) for s in (0, 100, 2600, 5100, 9000)] == pytest.approx(
        [10.0, 10.0, 505.0, 1000.0, 1000.0])
    on = active_weights({"orientation": ramp, "sparsity": 0.0, "entropy": [0, 0.0, 1.0, 10]}, 0)
    assert on == {"orientation": 10.0}               # terms at weight 0 are not computed


def _rendered(opacity):
    o = torch.tensor(opacity).view(1, 1, -1)
    return Rendered(o.unsqueeze(-1).expand(1, 1, -1, 3), o, o, 0)


def test_sparsity_and_entropy_formulas():
    out = _rendered([0.0, 0.5, 1.0])
    assert float(sparsity(out)) == pytest.approx((0.1 + math.sqrt(0.26) + math.sqrt(1.01)) / 3)
    h = lambda a: -a * math.log2(a) - (1 - a) * math.log2(1 - a)    # noqa: E731
    assert float(entropy(out)) == pytest.approx((h(1e-5) + 1.0 + h(1 - 1e-5)) / 3, rel=1e-5)


def test_orientation_penalises_normals_facing_away_from_the_camera():
    weights = torch.tensor([0.5, 0.25, 0.0, 0.0], requires_grad=True)
    normals = torch.tensor([[0.0, 0, 1], [0, 0, -1], [0, 0, 1], [0, 0, 1]], requires_grad=True)
    dirs = torch.tensor([[0.0, 0, 1]] * 4)            # looking along +z: the first faces away
    rays = torch.tensor([0, 0, 1, 2])                 # ray 1 and 2 see nothing
    loss = orientation_loss(weights, normals, dirs, rays, 4)
    assert float(loss.detach()) == pytest.approx(0.5 * 1.0 / 1)   # one ray with opacity > 0
    loss.backward()
    assert weights.grad is None or weights.grad.abs().sum() == 0   # the weights are held
    assert normals.grad[0, 2] > 0 and normals.grad[1].abs().sum() == 0


def test_a_run_with_regularizers_logs_each_term(fast_overrides, tmp_path):
    code = main(["run", "a red cube", "--quiet", *fast_overrides, "output.log_every=1",
                 "shading.albedo=1", "shading.lambertian=0",     # orientation in albedo steps too
                 "regularizers.orientation=[0,1.0,2.0,4]", "regularizers.sparsity=5e-1",
                 "regularizers.entropy=[3,0.0,1e-3,5]"])
    assert code == 0
    run_dir, = (tmp_path / "outputs").iterdir()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "terms" in r]
    assert len(steps) == 6
    assert all({"sds", "orientation", "sparsity"} <= set(r["terms"]) for r in steps)
    assert "entropy" not in steps[2]["terms"] and "entropy" in steps[4]["terms"]   # from step 4
    for r in steps:
        assert all(math.isfinite(v) and v >= 0 for v in r["terms"].values())
