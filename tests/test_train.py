import math

import pytest
import torch

from dreamfusion.config import load_config
from dreamfusion.rendering.cameras import Cameras
from dreamfusion.pipeline.build import build_prior, build_scene
from dreamfusion.pipeline.train import Trainer

from conftest import FAST
from peers import FlatColour


def _trainer(*extra: str) -> Trainer:
    cfg = load_config("toy", [*FAST, *extra])
    return Trainer(cfg, build_scene(cfg, torch.device("cpu")), build_prior(cfg), "a yellow duck")


def test_view_dependent_prompts_follow_the_camera():
    cams = Cameras(torch.tensor([0.0, 90.0, 180.0, -100.0, 20.0]),
                   torch.tensor([10.0, 10.0, 10.0, 10.0, 70.0]), torch.full((5,), 2.3),
                   torch.full((5,), 40.0))
    got = [(t.view, t.positive) for t in _trainer().targets_for(cams)]
    assert got == [("front", (("a yellow duck, front view", 1.0),)),
                   ("side", (("a yellow duck, side view", 1.0),)),
                   ("back", (("a yellow duck, back view", 1.0),)),
                   ("side", (("a yellow duck, side view", 1.0),)),
                   ("overhead", (("a yellow duck, overhead view", 1.0),))]
    plain = _trainer("prompt.view_dependent=false").targets_for(cams)
    assert [(t.view, t.positive) for t in plain] == [("plain", (("a yellow duck", 1.0),))] * 5


def test_negative_prompt_and_perp_neg_reach_the_condition():
    trainer = _trainer("prompt.interpolate=true", "prompt.perp_neg=true",
                       "prompt.negative=a red cube")
    cams = Cameras(torch.tensor([30.0]), torch.tensor([10.0]), torch.full((1,), 2.3),
                   torch.full((1,), 40.0))
    cond = trainer.resolve(trainer.targets_for(cams)[0])
    assert cond.positive.images.shape[0] == 2 * trainer.cfg.guidance.references
    assert [w for _, w in cond.negatives] == pytest.approx(      # front and side, at 30 deg
        [4 * math.exp(-1 / 3) - 2.426, 4 * math.exp(-1 / 6) - 2.426])
    assert cond.unconditional is trainer.condition("a red cube")


def test_a_step_changes_the_field_and_reports_its_view():
    trainer = _trainer("shading.albedo=0", "shading.lambertian=1")
    before = trainer.scene.field.encoding.params.detach().clone()
    stats = trainer.train_step()
    assert stats.step == 1 and stats.mode == "lambertian"
    assert stats.view in ("front", "side", "back", "overhead") and stats.samples > 0
    assert 0.0 < stats.t < 1.0
    assert not torch.equal(before, trainer.scene.field.encoding.params)


def test_the_trainer_needs_only_the_representation_interface():
    cfg = load_config("toy", [*FAST, "faults.inject_nan_at=[3]"])
    flat = FlatColour()
    trainer = Trainer(cfg, flat, build_prior(cfg), "a red cube")
    stats = [trainer.train_step() for _ in range(4)]
    assert flat.steps_seen == [0, 1, 2, 3]
    assert flat.updates_seen == [1, 2, 4]           # after each update applied, not the fault
    assert stats[2].fault == "non-finite gradients in colour"      # injected into the first
    assert not torch.equal(flat.colour.detach(), torch.zeros(3))     # the SDS gradient moved it
    assert trainer.state_dict()["step"] == 4


def test_the_positions_rate_decays_to_its_final_value_and_follows_rollbacks():
    from conftest import FAST_GAUSSIANS
    trainer = _trainer(*FAST_GAUSSIANS, "steps=5", "gaussians.lr.position=0.001",
                       "gaussians.lr.position_final=0.00002", "gaussians.lr.colour=0.01")
    groups = trainer.optimizer.param_groups
    assert groups[0]["lr"] == pytest.approx(0.001)
    rates = []
    for _ in range(4):
        trainer.train_step()
        rates.append(groups[0]["lr"])
        assert groups[4]["lr"] == pytest.approx(0.01)          # the others stay put
    # exponential: lr * (final / lr) ** (step / (steps - 1)), the last step at the final rate
    assert rates == pytest.approx([0.001 * 0.02 ** (k / 4) for k in range(1, 5)])
    trainer.set_lr_scale(0.5)                                   # a rollback halves it
    assert groups[0]["lr"] == pytest.approx(0.5 * 0.00002)
    assert groups[4]["lr"] == pytest.approx(0.005)
