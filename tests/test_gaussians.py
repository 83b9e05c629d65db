"""3D Gaussians: projection, the packed rasteriser against a per-pixel loop, gradients, the
density field, adaptive density control, PLY, and gsplat against the reference on CUDA."""
import math

import numpy as np
import pytest
import torch

from dreamfusion.gaussians import density_control as dc
from dreamfusion.gaussians.model import SH_C0, Gaussians, quat_to_rotation
from dreamfusion.gaussians.ply import FIELDS, PlyError, read_ply, write_ply
from dreamfusion.gaussians.rasterize import (ALPHA_MAX, ALPHA_MIN, EPS_2D, T_MIN, Pairs,
                                             composite, project, rasterize)
from dreamfusion.gaussians.renderer import GaussianRenderer, pinholes, rasterize_with
from dreamfusion.rendering.cameras import Cameras, orbit
from dreamfusion.rendering.shading import Background



def _densify(**changes) -> dc.DensifySettings:
    """The schema's density control with ``changes``."""
    from dataclasses import asdict

    from dreamfusion.config.schema import DensifyConfig, GaussianConfig

    base = {**asdict(DensifyConfig()), "max_count": GaussianConfig().max_count, "extent": 1.0}
    return dc.DensifySettings(**{**base, **changes})

def _cloud(n: int, seed: int = 0, max_opacity: float = 0.34, dtype=torch.float32) -> Gaussians:
    g = Gaussians(n, 1.0, 0.4, 0.1, torch.Generator().manual_seed(seed))
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        g.log_scales.copy_(torch.log(0.03 + 0.08 * torch.rand(n, 3, generator=gen)))
        g.quats.copy_(torch.randn(n, 4, generator=gen))
        o = 0.05 + (max_opacity - 0.05) * torch.rand(n, generator=gen)
        g.opacity_logits.copy_(torch.log(o / (1 - o)))
        g.sh_dc.copy_((torch.rand(n, 3, generator=gen) - 0.5) / SH_C0)
    return g.to(dtype)


def _camera(height=12, width=16, azimuth=30.0, elevation=20.0, dtype=torch.float32):
    cams = Cameras(torch.tensor([azimuth]), torch.tensor([elevation]), torch.tensor([2.0]),
                   torch.tensor([50.0]))
    cam = pinholes(cams, height, width)[0]
    cam.position, cam.rotation = cam.position.to(dtype), cam.rotation.to(dtype)
    return cams, cam


def _per_pixel(means, covs, opac, values, cam, height, width, mode="classic"):
    """Alpha compositing pixel by pixel, Gaussian by Gaussian, nearest first: no packing, no
    boxes (which hold every pixel whose alpha reaches 1/255 at any opacity). In antialiased
    mode each opacity is scaled by sqrt(det Sigma_2D / det(Sigma_2D + 0.3 I)), from the
    conic (the inverse of the filtered covariance)."""
    proj = project(means, covs, cam, height, width)
    if mode == "antialiased":
        a, b, c = proj.conics.unbind(-1)
        filtered = torch.stack([torch.stack([a, b], -1), torch.stack([b, c], -1)], -2)
        filtered = torch.linalg.inv(filtered)
        bare = torch.linalg.det(filtered - EPS_2D * torch.eye(2))
        opac = opac * torch.sqrt(bare / torch.linalg.det(filtered))
    out = torch.zeros(height, width, values.shape[1], dtype=values.dtype)
    alpha_out = torch.zeros(height, width, dtype=values.dtype)
    order = torch.argsort(proj.depths)
    for i in range(height):
        for j in range(width):
            t = 1.0
            for g in order.tolist():
                if proj.radii[g] == 0:
                    continue
                d = torch.tensor([j + 0.5, i + 0.5], dtype=values.dtype) - proj.means2d[g]
                a, b, c = proj.conics[g]
                power = -0.5 * (a * d[0] ** 2 + c * d[1] ** 2) - b * d[0] * d[1]
                alpha = min(ALPHA_MAX, float(opac[g] * torch.exp(power)))
                if power > 0 or alpha < ALPHA_MIN:
                    continue
                if t * (1 - alpha) <= T_MIN:
                    break
                out[i, j] += t * alpha * values[g]
                alpha_out[i, j] += t * alpha
                t *= 1 - alpha
    return out, alpha_out


@pytest.mark.parametrize("mode", ["classic", "antialiased"])
def test_the_packed_rasteriser_matches_a_per_pixel_loop(mode):
    g = _cloud(40)
    _, cam = _camera()
    values = torch.cat([g.colours, torch.rand(40, 1)], dim=-1)
    with torch.no_grad():
        image, alpha, _, pairs = rasterize(g.means, g.covariances(), g.opacities, values, cam,
                                           12, 16, mode=mode)
        ref_image, ref_alpha = _per_pixel(g.means, g.covariances(), g.opacities, values, cam,
                                          12, 16, mode)
    assert pairs > 200 and float(alpha.max()) > 0.5        # overlapping, not a trivial image
    assert torch.allclose(image, ref_image, atol=1e-5)
    assert torch.allclose(alpha, ref_alpha, atol=1e-5)


def test_compositing_stops_where_gsplat_stops():
    # three opaque Gaussians on one pixel: after the second, T would be 1e-6 <= 1e-4
    pairs = Pairs(torch.tensor([0, 1, 2]), torch.tensor([0, 0, 0]),
                  torch.tensor([0.999, 0.999, 0.5]))
    values = torch.tensor([[1.0], [2.0], [3.0]])
    colour, alpha, n = composite(pairs, values, 1)
    assert n == 1
    assert torch.allclose(alpha, torch.tensor([0.999]))
    assert torch.allclose(colour, torch.tensor([[0.999]]))


def test_projection_follows_the_cameras_rays_and_ewa():
    height, width = 12, 16
    cams, cam = _camera(height, width)
    origins, dirs = cams.rays(height, width)
    # the point 1.7 along the ray through pixel (row 3, column 11) lands on that pixel centre
    point = origins[0, 3, 11] + 1.7 * dirs[0, 3, 11]
    proj = project(point.view(1, 3), 1e-6 * torch.eye(3).view(1, 3, 3), cam, height, width)
    assert torch.allclose(proj.means2d[0], torch.tensor([11.5, 3.5]), atol=1e-4)
    # the 2D covariance is that of the projected samples of a small 3D Gaussian (+ the filter)
    rot = quat_to_rotation(torch.tensor([[0.9, 0.2, -0.3, 0.1]]))[0].double()
    cov3 = rot @ torch.diag(torch.tensor([0.02, 0.006, 0.012]).double() ** 2) @ rot.T
    centre = torch.tensor([0.1, -0.2, 0.15]).double()
    samples = centre + torch.randn(200_000, 3, dtype=torch.float64) @ torch.linalg.cholesky(cov3).T
    cam64 = _camera(height, width, dtype=torch.float64)[1]
    p = project(samples, torch.zeros(200_000, 3, 3, dtype=torch.float64), cam64, height,
                width).means2d
    empirical = torch.cov(p.T)
    proj = project(centre.view(1, 3), cov3.view(1, 3, 3), cam64, height, width)
    a, b, c = proj.conics[0]
    model = torch.linalg.inv(torch.tensor([[a, b], [b, c]])) - EPS_2D * torch.eye(2).double()
    assert torch.allclose(empirical, model, rtol=0.03, atol=1e-4)


@pytest.mark.parametrize("mode", ["classic", "antialiased"])
def test_rasteriser_gradients_agree_with_finite_differences(mode):
    g = _cloud(6, seed=3, dtype=torch.float64)
    _, cam = _camera(8, 8, dtype=torch.float64)
    rot = g.rotations().detach()

    def image(means, log_scales, opacity_logits, colours):
        m = rot * torch.exp(log_scales).unsqueeze(-2)
        covs = m @ m.transpose(-1, -2)
        out, alpha, _, _ = rasterize(means, covs, torch.sigmoid(opacity_logits), colours, cam,
                                     8, 8, mode=mode)
        return torch.cat([out.flatten(), alpha.flatten()])

    inputs = tuple(t.detach().clone().requires_grad_(True) for t in
                   (g.means, g.log_scales, g.opacity_logits, g.colours))
    assert torch.autograd.gradcheck(image, inputs, eps=1e-6, atol=1e-5)


def test_antialiased_mode_covers_the_same_area_at_any_resolution():
    """A fog of faint Gaussians about a pixel wide at 32 px: the 0.3 px^2 filter widens each
    by half there and hardly at 128 px, so in classic mode the cloud looks more opaque at the
    lower resolution; with the compensation both sizes agree (each image averaged down to
    16 x 16, pixel blocks against pixel blocks)."""
    g = _cloud(3000, seed=5, max_opacity=0.06)
    with torch.no_grad():
        g.log_scales.fill_(math.log(0.02))
    cams = orbit(2, 20.0, 2.3, 40.0)
    renderer = GaussianRenderer("torch", torch.device("cpu"), 0.3, 0.7)
    gap = {}
    for mode in ("classic", "antialiased"):
        renderer.mode = mode
        covered = []
        for size in (32, 128):
            with torch.no_grad():
                alpha = renderer.render(g, Background("solid", (1.0, 1.0, 1.0)), cams, size,
                                        size).rendered.opacity
            covered.append(torch.nn.functional.avg_pool2d(alpha.unsqueeze(1), size // 16))
        gap[mode] = float((covered[0] - covered[1]).abs().mean() / covered[1].mean())
    assert gap["classic"] > 0.15 and gap["antialiased"] < 0.3 * gap["classic"], gap


def test_the_density_field_matches_a_dense_sum():
    g = _cloud(300, seed=5, max_opacity=0.9)
    points = torch.rand(4000, 3) * 1.2 - 0.6
    d = points.unsqueeze(1) - g.means.detach().unsqueeze(0)                  # (P, N, 3)
    precision = torch.linalg.inv(g.covariances().detach())
    q = torch.einsum("pni,nij,pnj->pn", d, precision, d)
    terms = torch.where(q < 9.0, g.opacities.detach() * torch.exp(-0.5 * q), 0.0)
    dense = terms.sum(1)
    albedo = (terms.unsqueeze(-1) * g.colours.detach()).sum(1) / dense.clamp_min(1e-8)[:, None]
    assert torch.allclose(g.density(points), dense, atol=1e-5)
    reached = dense > 1e-3
    assert reached.sum() > 1000
    assert torch.allclose(g.albedo(points)[reached], albedo[reached], atol=1e-4)


def test_the_density_fields_kept_lookup_follows_every_change_of_the_gaussians():
    g = _cloud(300, seed=5, max_opacity=0.9)
    points = torch.rand(3000, 3) * 1.2 - 0.6
    before = g.density(points)
    assert torch.equal(g.density(points), before)          # the kept lookup: the same field
    moved = _cloud(300, seed=5, max_opacity=0.9)
    for model in (g, moved):
        with torch.no_grad():                               # as an optimiser's step does
            model.means.add_(0.05)
            model.log_scales.mul_(0.9)
    assert not torch.equal(g.density(points), before)
    assert torch.equal(g.density(points), moved.density(points))
    g.load_state_dict(_cloud(300, seed=9).state_dict())
    assert torch.equal(g.albedo(points), _cloud(300, seed=9).albedo(points))


def test_a_state_of_another_size_loads_into_the_same_parameters():
    small, big = _cloud(10), _cloud(25, seed=2)
    ids = [id(p) for p in small.parameters()]
    small.load_state_dict(big.state_dict())
    assert len(small) == 25 and [id(p) for p in small.parameters()] == ids
    assert torch.equal(small.means, big.means) and small.grad_accum.shape == (25,)


def _trained_step(g: Gaussians) -> torch.optim.Adam:
    opt = torch.optim.Adam([{"params": [getattr(g, n)], "lr": 0.01} for n in
                            ("means", "log_scales", "quats", "opacity_logits", "sh_dc")])
    loss = sum((p ** 2).sum() for p in g.parameters())
    loss.backward()
    opt.step()
    return opt


def test_density_control_clones_splits_and_prunes_with_adams_moments():
    g = _cloud(8)
    opt = _trained_step(g)
    with torch.no_grad():
        g.log_scales[:4] = math.log(0.001)          # small: cloned
        g.log_scales[4:] = math.log(0.05)           # large: split
        g.opacity_logits[7] = -10.0                 # transparent: pruned (its split too)
    g.grad_accum.copy_(torch.tensor([1.0, 0, 0, 0, 1.0, 1.0, 0, 1.0]))
    g.grad_count.fill_(1.0)
    settings = _densify(grad_threshold=0.5, percent_dense=0.01, extent=1.0)
    torch.manual_seed(0)
    counts = dc.densify_and_prune(g, opt, settings, 32, after_reset=False)
    # 8 - 3 split + 1 clone + 6 halves = 12; then the two halves of the transparent one go
    assert counts == {"cloned": 1, "split": 3, "pruned": 2}
    assert len(g) == 10
    for p in g.parameters():
        assert p.shape[0] == 10
        assert opt.state[p]["exp_avg"].shape == p.shape == opt.state[p]["exp_avg_sq"].shape
    assert bool((g.grad_accum == 0).all())
    halves = g.scales[-4:].detach()                  # the two split ones' samples
    assert torch.allclose(halves, torch.full_like(halves, 0.05 / 1.6), rtol=1e-5)
    _trained_step_again = opt.step                   # Adam steps on the edited tensors
    loss = sum((p ** 2).sum() for p in g.parameters())
    loss.backward()
    _trained_step_again()


def test_density_control_respects_the_cap_and_never_empties_the_scene():
    g = _cloud(8)
    g.grad_accum.fill_(1.0)
    g.grad_count.fill_(1.0)
    settings = _densify(grad_threshold=0.5, max_count=10, extent=1.0)
    dc.densify_and_prune(g, None, settings, 32, after_reset=False)
    assert len(g) == 10
    with torch.no_grad():
        g.opacity_logits.fill_(-20.0)
    dc.densify_and_prune(g, None, settings, 32, after_reset=False)
    assert len(g) == 1


def test_opacity_reset_caps_opacity_and_clears_its_moments():
    g = _cloud(8, max_opacity=0.9)
    opt = _trained_step(g)
    dc.reset_opacity(g, opt)
    assert float(g.opacities.detach().max()) <= 0.01 + 1e-6
    assert float(opt.state[g.opacity_logits]["exp_avg"].abs().max()) == 0.0


def _render(g: Gaussians, mode: str = "lambertian") -> torch.Tensor:
    renderer = GaussianRenderer("torch", torch.device("cpu"), 0.3, 0.7)
    cams = orbit(3, 20.0, 2.2, 45.0)
    lights = cams.positions / cams.positions.norm(dim=-1, keepdim=True)
    with torch.no_grad():
        return renderer.render(g, Background("solid", (1.0, 1.0, 1.0)), cams, 24, 24, mode,
                               lights).rendered.rgb


def test_ply_has_the_3dgs_layout_and_renders_the_same_image(tmp_path):
    from plyfile import PlyData

    g = _cloud(200, max_opacity=0.95)
    g.min_scale = 0.02                  # stored with the floor applied, as 3DGS stores scales
    path = write_ply(g, tmp_path / "model.ply")
    ply = PlyData.read(str(path))
    assert [p.name for p in ply["vertex"].properties] == FIELDS
    assert ply["vertex"].count == 200 and not ply.text
    assert np.allclose(ply["vertex"]["opacity"], g.opacity_logits.detach().numpy())
    loaded = read_ply(path)
    for mode in ("albedo", "lambertian"):
        assert float((_render(loaded, mode) - _render(g, mode)).abs().max()) <= 1e-4


def test_a_ply_without_the_3dgs_properties_is_refused(tmp_path):
    from plyfile import PlyData, PlyElement

    rows = np.zeros(3, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    PlyData([PlyElement.describe(rows, "vertex")]).write(str(tmp_path / "points.ply"))
    with pytest.raises(PlyError, match="lacks f_dc_0"):
        read_ply(tmp_path / "points.ply")


def test_shaded_normals_face_the_camera():
    # one flat Gaussian facing +X, seen from +X and from -X: lit the same from either side
    g = _cloud(1, max_opacity=0.9)
    with torch.no_grad():
        g.means.zero_()
        g.quats.copy_(torch.tensor([[1.0, 0, 0, 0]]))
        g.log_scales.copy_(torch.log(torch.tensor([[0.001, 0.3, 0.3]])))
    renderer = GaussianRenderer("torch", torch.device("cpu"), 0.0, 1.0)
    for azimuth in (0.0, 180.0):
        cams = Cameras(torch.tensor([azimuth]), torch.tensor([0.0]), torch.tensor([2.0]),
                       torch.tensor([40.0]))
        lights = cams.positions / cams.positions.norm(dim=-1, keepdim=True)
        with torch.no_grad():
            out = renderer.render(g, Background("solid", (0.0, 0.0, 0.0)), cams, 9, 9,
                                  "textureless", lights).rendered
        assert float(out.rgb[0, 4, 4].min()) > 0.8 * float(out.opacity[0, 4, 4])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="gsplat is CUDA-only")
@pytest.mark.parametrize("raster_mode", ["classic", "antialiased"])
def test_gsplat_draws_what_the_reference_draws(raster_mode):
    pytest.importorskip("gsplat")
    g = _cloud(500, max_opacity=0.95).cuda()
    cams = orbit(4, 20.0, 2.2, 45.0)
    lights = cams.positions / cams.positions.norm(dim=-1, keepdim=True)
    bg = Background("solid", (1.0, 1.0, 1.0)).cuda()
    ref = GaussianRenderer("torch", torch.device("cuda"), 0.3, 0.7, raster_mode)
    fast = GaussianRenderer("gsplat", torch.device("cuda"), 0.3, 0.7, raster_mode)
    assert fast.active == "gsplat"
    for mode in ("albedo", "lambertian"):
        a = ref.render(g, bg, cams, 64, 64, mode, lights).rendered
        b = fast.render(g, bg, cams, 64, 64, mode, lights).rendered
        # the same rules (gsplat >= 1.5's opacity-aware boxes hold every pixel its alpha cut
        # keeps, as ours do); what is left is float32 summation order
        assert float((a.rgb - b.rgb).abs().mean()) < 1e-5
        assert float((a.opacity - b.opacity).abs().max()) < 1e-3
    # the view-space gradients that drive densification agree too
    grads = []
    for renderer in (ref, fast):
        g.zero_grad()
        out = renderer.render(g, bg, cams, 64, 64, "albedo", lights)
        out.rendered.rgb.sum().backward()
        grads.append(torch.cat([m.grad.reshape(-1, len(g), 2) for m in out.means2d]))
    assert torch.allclose(grads[0], grads[1], atol=1e-2, rtol=0.05)


def _kernel_or_skip():
    from dreamfusion.gaussians.splat_cpp import load_kernel, unavailable_reason

    if load_kernel() is None:
        pytest.skip(f"the splat kernel does not build here: {unavailable_reason()}")


@pytest.mark.parametrize("max_opacity,mode", [(0.3, "classic"), (0.9999, "classic"),
                                              (0.9999, "antialiased")])
def test_the_compiled_compositor_matches_the_reference(max_opacity, mode):
    """Forward and every gradient, faint clouds and opaque ones (clamped alphas, early stop)."""
    _kernel_or_skip()
    g = _cloud(400, seed=7, max_opacity=max_opacity)
    _, cam = _camera(20, 24)
    values = torch.cat([g.colours, torch.rand(400, 1)], dim=-1).detach()
    target = torch.rand(20, 24, 4)
    results = {}
    for kernel in ("torch", "cpp"):
        leaves = [t.detach().clone().requires_grad_(True) for t in
                  (g.means, g.log_scales, g.quats, g.opacity_logits, values)]
        m = quat_to_rotation(leaves[2]) * torch.exp(leaves[1]).unsqueeze(-2)
        image, alpha, proj, n = rasterize_with(kernel, leaves[0], m @ m.transpose(-1, -2),
                                               torch.sigmoid(leaves[3]), leaves[4], cam, 20, 24,
                                               mode)
        proj.means2d.retain_grad()
        ((image - target) ** 2).sum().add((alpha * target[..., 0]).sum()).backward()
        results[kernel] = (image, alpha, n, proj.means2d.grad, *[t.grad for t in leaves])
    ref, fast = results["torch"], results["cpp"]
    assert ref[2] == fast[2] > 1000                 # the same pairs composited
    if max_opacity > 0.99:
        assert float(ref[1].detach().max()) > 0.999    # opaque pixels: the early stop reached
    for a, b in zip(ref[:2] + ref[3:], fast[:2] + fast[3:]):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), float((a - b).abs().max())


def test_the_rasteriser_is_decided_once_and_says_why():
    from dreamfusion.gaussians.renderer import decide_backend
    from dreamfusion.gaussians.splat_cpp import load_kernel

    cpu = torch.device("cpu")
    assert decide_backend("torch", cpu) == ("torch", "asked for")
    active, why = decide_backend("auto", cpu)
    assert active == ("cpp" if load_kernel() else "torch") and why
    renderer = GaussianRenderer("auto", cpu, 0.3, 0.7)
    assert renderer.describe().startswith(active)
