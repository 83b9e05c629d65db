import torch

from dreamfusion.config import load_config
from dreamfusion.nerf.cameras import Cameras
from dreamfusion.pipeline.build import build_prior, build_scene
from dreamfusion.pipeline.train import Trainer

from conftest import FAST


def _trainer(*extra: str) -> Trainer:
    cfg = load_config("toy", [*FAST, *extra])
    return Trainer(cfg, build_scene(cfg, torch.device("cpu")), build_prior(cfg), "a yellow duck")


def test_view_dependent_prompts_follow_the_camera():
    cams = Cameras(torch.tensor([0.0, 90.0, 180.0, -100.0, 20.0]),
                   torch.tensor([10.0, 10.0, 10.0, 10.0, 70.0]), torch.full((5,), 2.3),
                   torch.full((5,), 40.0))
    got = _trainer().prompts_for(cams)
    assert got == [("front", "a yellow duck, front view"), ("side", "a yellow duck, side view"),
                   ("back", "a yellow duck, back view"), ("side", "a yellow duck, side view"),
                   ("overhead", "a yellow duck, overhead view")]
    plain = _trainer("prompt.view_dependent=false").prompts_for(cams)
    assert plain == [("plain", "a yellow duck")] * 5


def test_a_step_changes_the_field_and_reports_its_view():
    trainer = _trainer("shading.albedo=0", "shading.lambertian=1")
    before = trainer.scene.field.encoding.params.detach().clone()
    stats = trainer.train_step()
    assert stats.step == 1 and stats.mode == "lambertian"
    assert stats.view in ("front", "side", "back", "overhead") and stats.samples > 0
    assert 0.0 < stats.t < 1.0
    assert not torch.equal(before, trainer.scene.field.encoding.params)
