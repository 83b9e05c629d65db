import math

import torch
from torch import nn

from dreamfusion.config import load_config
from dreamfusion.guidance.toy.world import Caption, cube
from dreamfusion.nerf.renderer import RenderSettings
from dreamfusion.nerf.shading import Background
from dreamfusion.pipeline.build import Scene
from dreamfusion.pipeline.evaluate import silhouette_iou


class RotatedCube(nn.Module):
    """The toy world's cube turned by ``yaw`` degrees about Z, as a hard density."""

    def __init__(self, yaw: float) -> None:
        super().__init__()
        self.bound, self.yaw = 1.0, math.radians(yaw)
        self.dummy = nn.Parameter(torch.zeros(1))

    def density(self, x):
        c, s = math.cos(-self.yaw), math.sin(-self.yaw)
        local = torch.stack([c * x[:, 0] - s * x[:, 1], s * x[:, 0] + c * x[:, 1], x[:, 2]], -1)
        return 500.0 * (cube(local) < 0).float()

    def forward(self, x, with_normals=False):
        return self.density(x), torch.ones_like(x), None


def _scene(yaw: float) -> Scene:
    return Scene(RotatedCube(yaw), None, Background("solid", (1.0, 1.0, 1.0)),
                 RenderSettings(step_size=0.01))


def test_truth_scores_one_and_a_turned_cube_is_found_by_the_yaw_search():
    cfg = load_config("toy")
    exact = silhouette_iou(_scene(0.0), Caption("red", "cube"), cfg, size=32)
    assert exact.iou > 0.97 and exact.best_yaw_iou >= exact.iou
    turned = silhouette_iou(_scene(27.0), Caption("red", "cube"), cfg, size=32)
    assert turned.iou < 0.9                           # the headline metric sees the turn
    assert turned.best_yaw_iou > 0.97
    assert abs((turned.best_yaw - 27.0 + 45.0) % 90.0 - 45.0) < 1e-6   # cube: modulo 90 deg
    assert len(turned.per_view) == 8 and turned.azimuths[:3] == [0.0, 45.0, 90.0]
