import torch

from dreamfusion.nerf.cameras import orbit
from dreamfusion.nerf.field import NeRFField
from dreamfusion.nerf.hashgrid import HashGridEncoding
from dreamfusion.nerf.renderer import RenderSettings, render
from dreamfusion.nerf.shading import Background, shade


def _field() -> NeRFField:
    enc = HashGridEncoding(n_levels=4, features=2, table_size_log2=12, base_resolution=4,
                           growth=1.5)
    with torch.no_grad():
        enc.params.uniform_(-0.5, 0.5)
    return NeRFField(1.0, enc, 16, 1, blob_density=5.0, blob_radius=0.5).double()


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
    enc = HashGridEncoding(n_levels=2, features=2, table_size_log2=10, base_resolution=4)
    field = NeRFField(1.0, enc, 8, 1, blob_density=5.0, blob_radius=0.5)
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
