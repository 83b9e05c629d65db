import torch

from dreamfusion.rendering.cameras import Cameras, orbit, sample_cameras


def test_front_camera_looks_from_plus_x_and_centre_ray_hits_origin():
    cams = orbit(4, 0.0, 3.0, 40.0)
    assert torch.allclose(cams.positions[0], torch.tensor([3.0, 0.0, 0.0]), atol=1e-6)
    assert torch.allclose(cams.positions[1], torch.tensor([0.0, 3.0, 0.0]), atol=1e-6)
    origins, dirs = cams.rays(2, 2)
    centre = dirs[0].mean(dim=(0, 1))
    assert torch.allclose(centre / centre.norm(), torch.tensor([-1.0, 0.0, 0.0]), atol=1e-6)
    # image up is world +Z and the top rows look upwards
    assert dirs[0, 0, 0, 2] > 0 and dirs[0, 1, 0, 2] < 0


def test_overhead_camera_is_well_defined():
    cams = Cameras(torch.tensor([30.0]), torch.tensor([90.0]), torch.tensor([2.0]),
                   torch.tensor([40.0]))
    _, dirs = cams.rays(3, 3)
    assert torch.isfinite(dirs).all()


def test_sampling_respects_ranges():
    cams = sample_cameras(500, (-10.0, 45.0), (-180.0, 180.0), (2.0, 2.5), (35.0, 45.0))
    assert cams.elevation.min() >= -10 - 1e-4 and cams.elevation.max() <= 45 + 1e-4
    assert cams.distance.min() >= 2.0 and cams.distance.max() <= 2.5
    assert cams.fov.min() >= 35.0 and cams.fov.max() <= 45.0
