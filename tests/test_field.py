import pytest
import torch

from dreamfusion.config import load_config
from dreamfusion.rendering.cameras import Cameras, orbit
from dreamfusion.nerf.field import NeRFField
from dreamfusion.nerf.hashgrid import HashGridEncoding
from dreamfusion.nerf.renderer import RenderSettings, render
from dreamfusion.rendering.shading import Background, shade
from dreamfusion.pipeline.build import build_scene


def _field() -> NeRFField:
    enc = HashGridEncoding(n_levels=4, features=2, table_size_log2=12, base_resolution=4,
                           growth=1.5, backend="torch")
    with torch.no_grad():
        enc.params.uniform_(-0.5, 0.5)
    return NeRFField(1.0, enc, 16, 1, blob_density=5.0, blob_radius=0.5, normals="analytic",
                     fd_eps=0.01).double()


def test_normals_are_the_negative_density_gradient():
    field = _field()
    x = torch.rand(16, 3, dtype=torch.float64) * 1.2 - 0.6
    _, _, normals = field(x, with_normals=True)
    eps = 1e-6
    grad = torch.stack([(field.density(x + eps * e) - field.density(x - eps * e)) / (2 * eps)
                        for e in torch.eye(3, dtype=torch.float64)], dim=-1)
    expected = -grad / grad.norm(dim=-1, keepdim=True)
    assert torch.allclose(normals, expected, atol=1e-4)
    assert torch.allclose(normals.norm(dim=-1), torch.ones(16, dtype=torch.float64))


def test_blob_starts_dense_at_the_centre_and_empty_outside():
    enc = HashGridEncoding(n_levels=2, features=2, table_size_log2=10, base_resolution=4,
                           backend="torch")
    field = NeRFField(1.0, enc, 8, 1, blob_density=5.0, blob_radius=0.5, normals="analytic",
                      fd_eps=0.01)
    sigma = field.density(torch.tensor([[0.0, 0.0, 0.0], [0.95, 0.95, 0.95]]))
    assert sigma[0] > 50 and sigma[1] < 0.05


def test_shading_modes():
    albedo = torch.tensor([[0.5, 0.2, 0.1]])
    n = torch.tensor([[0.0, 0.0, 1.0]])
    light = torch.tensor([[0.0, 0.6, 0.8]])
    assert torch.equal(shade(albedo, None, None, "albedo", 0.3, 0.7), albedo)
    lit = 0.3 + 0.7 * 0.8
    assert torch.allclose(shade(albedo, n, light, "lambertian", 0.3, 0.7), albedo * lit)
    assert torch.allclose(shade(albedo, n, light, "textureless", 0.3, 0.7),
                          torch.full((1, 3), lit))
    assert torch.allclose(shade(albedo, n, -light, "lambertian", 0.3, 0.7), albedo * 0.3)


def test_learned_background_trains_and_shaded_render_reaches_geometry():
    field = _field().float()
    bg = Background("learned", (1.0, 1.0, 1.0))
    cams = orbit(1, 20.0, 2.5, 40.0)
    lights = cams.positions / cams.positions.norm(dim=-1, keepdim=True)
    out = render(field, None, bg, cams, 8, 8, RenderSettings(step_size=0.05), "textureless",
                 lights)
    out.rgb.mean().backward()
    assert out.rgb.shape == (1, 8, 8, 3)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in bg.parameters())
    # textureless renders ignore albedo: only geometry (the density head, via normals) learns
    assert field.encoding.params.grad.abs().sum() > 0
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in field.albedo_head.parameters())


def test_finite_difference_normals_approach_the_analytic_ones():
    field = _field()
    x = torch.rand(64, 3, dtype=torch.float64) * 1.2 - 0.6
    _, _, analytic = field(x, with_normals=True)
    field.normals, field.fd_eps = "finite_difference", 1e-6
    sigma, albedo, fd = field(x, with_normals=True)
    assert torch.allclose(fd, analytic, atol=1e-4)
    assert torch.allclose(sigma, field.density(x)) and torch.allclose(albedo, field.albedo(x))


def test_finite_difference_normals_train_the_geometry_with_first_derivatives_only():
    field = _field()
    field.normals = "finite_difference"
    x = torch.rand(32, 3, dtype=torch.float64) * 1.2 - 0.6
    _, _, normals = field(x, with_normals=True)
    normals[:, 2].sum().backward()
    assert not x.requires_grad                      # no graph through the points: no 2nd order
    assert field.encoding.params.grad.abs().sum() > 0
    assert all(p.grad is not None for p in field.density_head.parameters())


@pytest.mark.parametrize("config", ["toy", "dreamfusion-sd", "dreamfusion-if"])
def test_no_camera_of_a_shipped_config_starts_more_than_30_percent_opaque(config):
    """The initial density blob must leave room to see: the closest, narrowest camera of the
    config's range (the blob is a ball about the origin, so the worst view is that one)."""
    cfg = load_config(config, ["guidance.model=unused"])
    torch.manual_seed(0)
    scene = build_scene(cfg, torch.device("cpu"))
    scene.grid.update(scene.field.density)
    d, fov = min(cfg.camera.distance), min(cfg.camera.fov)
    covered = []
    for elevation in (0.0, 45.0):
        cams = Cameras(torch.tensor([30.0]), torch.tensor([elevation]), torch.tensor([d]),
                       torch.tensor([fov]))
        with torch.no_grad():
            out = render(scene.field, scene.grid, scene.background, cams, 64, 64,
                         scene.settings, "albedo")
        covered.append(float((out.opacity > 0.5).float().mean()))
    assert 0.0 < max(covered) <= 0.30, covered


def test_coarse_to_fine_masks_the_finer_levels_until_their_step():
    enc = HashGridEncoding(n_levels=6, features=2, table_size_log2=12, base_resolution=4,
                           growth=1.5, backend="torch", start_levels=2, start_step=10,
                           level_every=5)
    with torch.no_grad():
        enc.params.uniform_(-1.0, 1.0)
    assert [enc.levels_at(s) for s in (0, 10, 14, 15, 24, 25, 1000)] == [2, 2, 2, 3, 4, 5, 6]
    x = torch.rand(50, 3)
    full = enc(x).detach()                  # built at step 0: 2 levels
    assert torch.count_nonzero(full[:, 4:]) == 0 and torch.count_nonzero(full[:, :4]) > 0
    enc.set_step(1000)
    assert enc.active_levels == 6 and torch.count_nonzero(enc(x)[:, 4:]) > 0
    enc.set_step(17)                        # 3 levels: the first three as if unmasked
    out = enc(x)
    assert torch.equal(out[:, :6], enc._encode(x)[:, :6]) and torch.count_nonzero(out[:, 6:]) == 0
    out.sum().backward()
    rows = enc.layouts[3].offset                # levels 3.. have no gradient while masked
    assert enc.params.grad[rows:].abs().sum() == 0 and enc.params.grad[:rows].abs().sum() > 0
    # the table is the same size at every step: checkpoints do not depend on the schedule
    assert enc.params.shape[0] == enc.layouts[-1].offset + enc.layouts[-1].size


def test_renders_without_gradients_go_in_passes_that_change_nothing(monkeypatch):
    """Each ray's colour, opacity and depth are its own: rendering the rays in passes of a
    few (as every render without gradients does, to bound memory) gives what one pass
    gives, in the shaded modes too."""
    from dreamfusion.nerf import renderer

    field, bg = _field().float(), Background("solid", (1.0, 1.0, 1.0))
    cams = orbit(3, 20.0, 2.5, 40.0)
    lights = cams.positions / cams.positions.norm(dim=-1, keepdim=True)
    settings = RenderSettings(step_size=0.05)
    for mode in ("albedo", "lambertian"):
        whole = render(field, None, bg, cams, 8, 8, settings, mode, lights)     # with grad
        monkeypatch.setattr(renderer, "NO_GRAD_RAYS", 37)                     # uneven passes
        with torch.no_grad():
            passes = render(field, None, bg, cams, 8, 8, settings, mode, lights)
        monkeypatch.undo()
        for a, b in ((whole.rgb, passes.rgb), (whole.opacity, passes.opacity),
                     (whole.depth, passes.depth)):
            assert torch.allclose(a.detach(), b, atol=1e-5)
        assert whole.n_samples == passes.n_samples and passes.orientation is None
