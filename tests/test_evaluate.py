import math

import pytest
import torch
from torch import nn

from dreamfusion.config import load_config
from dreamfusion.guidance.toy.world import Caption, cube
from dreamfusion.nerf.renderer import RenderSettings
from dreamfusion.rendering.shading import Background
from dreamfusion.nerf.scene import NeRFScene as Scene
from dreamfusion.guidance.toy.evaluate import silhouette_iou


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
    assert len(turned.per_view) == 16 and turned.azimuths[:3] == [0.0, 45.0, 90.0]


def test_surface_scores_measure_distance_to_the_true_surface_and_undo_yaw():
    import mcubes
    import numpy as np

    from dreamfusion.guidance.toy.world import SHAPES, Caption
    from dreamfusion.guidance.toy.evaluate import surface_scores, true_surface_samples

    caption = Caption("red", "cube")
    points = true_surface_samples(caption, 2000)
    sdf = SHAPES["cube"].parts[0].sdf
    assert float(sdf(torch.as_tensor(points)).abs().max()) < 1e-5     # on the zero set
    axis = torch.linspace(-1, 1, 96)
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1)
    vertices, faces = mcubes.marching_cubes(-sdf(grid.reshape(-1, 3)).reshape(96, 96, 96).numpy(), 0)
    vertices = vertices / 95 * 2 - 1
    exact = surface_scores(vertices, faces.astype(np.int64), caption, count=5000)
    assert exact.chamfer < 0.01 * exact.size
    c, s = np.cos(np.radians(45)), np.sin(np.radians(45))
    turned = vertices @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]).T
    scores = surface_scores(turned, faces.astype(np.int64), caption, count=5000)
    assert scores.chamfer > 3 * exact.chamfer                          # a turned cube is off
    assert scores.chamfer_best_yaw < 0.01 * scores.size                # until turned back
    # a yaw between the coarse search's 9-degree steps is found too: 4 degrees off the
    # nearest alone would cost the cube about 0.9% of its size
    c, s = np.cos(np.radians(49)), np.sin(np.radians(49))
    between = surface_scores(vertices @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]).T,
                             faces.astype(np.int64), caption, count=5000)
    assert between.chamfer_best_yaw < 0.003 * between.size, between
    # normals are compared at the best yaw too, and their orientation counts: one winding
    # is outward (cosine near 1), the other inward (near -1)
    flipped = surface_scores(vertices, faces[:, ::-1].astype(np.int64), caption, count=5000)
    cosines = sorted([exact.normal_cosine, flipped.normal_cosine])
    assert cosines[0] < -0.97 and cosines[1] > 0.97, cosines
    assert scores.normal_cosine == pytest.approx(exact.normal_cosine, abs=0.02)


def test_true_surface_samples_lie_on_every_shape():
    """Newton projection onto the zero set, finite even where an SDF has no gradient (the
    cone's apex and axis)."""
    import numpy as np

    from dreamfusion.guidance.toy.world import SHAPES
    from dreamfusion.guidance.toy.evaluate import true_surface_samples

    for shape in SHAPES:
        points = true_surface_samples(Caption("white", shape), 4000)
        assert np.isfinite(points).all(), shape
        assert SHAPES[shape].sdf(torch.as_tensor(points)).abs().max() < 1e-3, shape
