import torch

from dreamfusion.rendering.cameras import orbit
from dreamfusion.nerf.marcher import march_rays, ray_aabb
from dreamfusion.nerf.occupancy import OccupancyGrid
from dreamfusion.nerf.renderer import RenderSettings, render
from dreamfusion.rendering.shading import Background

from fields import SphereField


def test_ray_aabb_entry_exit():
    origins = torch.tensor([[-3.0, 0.0, 0.0], [-3.0, 5.0, 0.0]])
    dirs = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    near, far = ray_aabb(origins, dirs, 1.0)
    assert torch.allclose(near[0], torch.tensor(2.0)) and torch.allclose(far[0], torch.tensor(4.0))
    assert far[1] < near[1]          # a miss


def test_grid_culls_empty_space():
    field = SphereField(radius=0.4)
    grid = OccupancyGrid(1.0, 32, 0.01, 0.01, 0.95)
    grid.update(field.density)
    centres = (torch.stack(torch.meshgrid(*[torch.arange(32)] * 3, indexing="ij"), -1)
               .reshape(-1, 3) + 0.5) / 32 * 2 - 1
    inside = centres.norm(dim=-1) < 0.35
    outside = centres.norm(dim=-1) > 0.5
    assert grid.binary[inside].all()
    assert not grid.binary[outside].any()


def test_occupancy_marcher_matches_dense_sampling_with_far_fewer_samples():
    field = SphereField(radius=0.5, sigma=30.0)
    settings = RenderSettings(step_size=0.005)
    grid = OccupancyGrid(1.0, 64, settings.step_size, 0.01, 0.95)
    for _ in range(20):   # as in training: repeated jittered refreshes find thin edge cells
        grid.update(field.density)
    cams = orbit(3, 20.0, 2.5, 40.0)
    bg = Background("solid", (1.0, 1.0, 1.0))
    lights = cams.positions / cams.positions.norm(dim=-1, keepdim=True)
    fast = render(field, grid, bg, cams, 32, 32, settings, "lambertian", lights)
    dense_settings = RenderSettings(step_size=0.005, early_stop_eps=0.0)
    dense = render(field, None, bg, cams, 32, 32, dense_settings, "lambertian", lights)
    # the grid can miss a cell that the surface only grazes: a small error on a few edge pixels
    assert (fast.rgb - dense.rgb).abs().max() < 0.03
    assert (fast.rgb - dense.rgb).abs().mean() < 5e-4
    assert (fast.opacity - dense.opacity).abs().max() < 0.03
    assert fast.n_samples * 8 < dense.n_samples
    # the sphere is really there: the centre pixel is opaque, a corner is background
    assert fast.opacity[:, 16, 16].min() > 0.99 and fast.opacity[:, 0, 0].max() < 1e-3


def test_dense_marcher_samples_every_step():
    origins = torch.tensor([[-3.0, 0.0, 0.0]])
    dirs = torch.tensor([[1.0, 0.0, 0.0]])
    samples = march_rays(origins, dirs, None, 1.0, 0.25)
    assert samples.t_starts.tolist() == [2.0 + 0.25 * k for k in range(8)]
