"""Our Gaussian rasteriser against gsplat's own pure-PyTorch reference (``gsplat.cuda.
_torch_impl``, which imports without CUDA) and nerfacc's compositing, not against our twin.

Conventions mapped explicitly:

* camera: ours is (right, up, forward) with ``v = H/2 - f_y y/z``; gsplat's is OpenCV's
  (right, down, forward) with ``v = c_y + f_y y/z``: its view matrix's rows are ``right,
  -up, forward`` and ``t = -R p``, its intrinsics ``[[f_x, 0, W/2], [0, f_y, H/2], [0, 0, 1]]``;
* projection: gsplat's ``_fully_fused_projection`` (0.3 px^2 filter, the 1.3 x half-fov
  clamp in the Jacobian, 3.33-sigma radii per image axis); our ``radii`` is their larger
  axis;
* pixels: gsplat's kernels evaluate every pixel of the tiles a box touches and keep
  ``alpha = min(0.999, o exp(-sigma)) >= 1/255``, compositing nearest first until ``T``
  would fall to 1e-4 (``RasterizeToPixels3DGSFwd.cu``); here every pixel of the image is
  evaluated, so a box of ours that dropped a pixel gsplat keeps would show;
* compositing: ``w_i = alpha_i prod_{j<i} (1 - alpha_j)`` by nerfacc's
  ``render_weight_from_alpha``, as gsplat's ``accumulate`` does.
"""
import math

import pytest
import torch

from dreamfusion.gaussians.model import Gaussians
from dreamfusion.gaussians.rasterize import rasterize
from dreamfusion.gaussians.renderer import pinholes
from dreamfusion.rendering.cameras import Cameras

# both are in the test extra: absent, the test skips; present without the reference, it fails
pytest.importorskip("gsplat")
nerfacc = pytest.importorskip("nerfacc")
from gsplat.cuda import _torch_impl as gsplat_ref  # noqa: E402

H = W = 64


def _scene(n: int = 1000, seed: int = 0) -> dict[str, torch.Tensor]:
    """A cloud in front of the camera, a tenth of it near or past the frame's edges (where the
    Jacobian's clamp acts), opacities up to 0.99 (where a 3-sigma box would cut too soon)."""
    gen = torch.Generator().manual_seed(seed)
    g = Gaussians(n, 1.0, 0.4, 0.1, gen)
    means = 0.5 * (torch.rand(n, 3, generator=gen) - 0.5)
    edge = torch.arange(n) % 10 == 0
    means[edge, 0] = (torch.rand(int(edge.sum()), generator=gen) - 0.5) * 3.6   # to 1.8 off
    log_scales = torch.log(0.01 + 0.05 * torch.rand(n, 3, generator=gen))
    quats = torch.randn(n, 4, generator=gen)
    opac = 0.05 + 0.94 * torch.rand(n, generator=gen)
    with torch.no_grad():
        g.means.copy_(means)
        g.log_scales.copy_(log_scales)
        g.quats.copy_(quats)
        g.opacity_logits.copy_(torch.log(opac / (1 - opac)))
    g = g.double()
    return {"means": g.means.detach().clone(), "covs": g.covariances().detach().clone(),
            "opac": g.opacities.detach().clone(),
            "colours": torch.rand(n, 3, generator=gen, dtype=torch.float64)}


def _cameras():
    cams = Cameras(torch.tensor([0.0, 70.0]), torch.tensor([10.0, -25.0]),
                   torch.tensor([1.6, 1.8]), torch.tensor([50.0, 40.0]))
    out = []
    for cam in pinholes(cams, H, W):
        cam.position, cam.rotation = cam.position.double(), cam.rotation.double()
        out.append(cam)
    return out


def _gsplat_view(cam) -> tuple[torch.Tensor, torch.Tensor]:
    rot = cam.rotation * torch.tensor([[1.0], [-1.0], [1.0]], dtype=torch.float64)
    view = torch.eye(4, dtype=torch.float64)
    view[:3, :3], view[:3, 3] = rot, -rot @ cam.position
    k = torch.tensor([[cam.fx, 0.0, W / 2], [0.0, cam.fy, H / 2], [0.0, 0.0, 1.0]],
                     dtype=torch.float64)
    return view, k


def _gsplat_render(s, cam, mode):
    """gsplat's projection, its alpha rules and early stop, nerfacc's weights."""
    view, k = _gsplat_view(cam)
    radii, means2d, depths, conics, comp = gsplat_ref._fully_fused_projection(
        s["means"], s["covs"], view[None], k[None], W, H, eps2d=0.3, near_plane=0.01,
        calc_compensations=True)
    radii, means2d, depths, conics, comp = radii[0], means2d[0], depths[0], conics[0], comp[0]
    opac = s["opac"] * comp if mode == "antialiased" else s["opac"]
    drawn = (radii > 0).all(-1).nonzero().squeeze(-1)
    drawn = drawn[torch.argsort(depths[drawn], stable=True)]              # nearest first
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    pix = torch.stack([xs, ys], -1).reshape(-1, 1, 2).double() + 0.5      # (P, 1, 2)
    d = pix - means2d[drawn]                                               # (P, n, 2)
    c = conics[drawn]
    sigma = 0.5 * (c[:, 0] * d[..., 0] ** 2 + c[:, 2] * d[..., 1] ** 2) + c[:, 1] * d[..., 0] * d[..., 1]
    alpha = (opac[drawn] * torch.exp(-sigma)).clamp_max(0.999)
    alpha = torch.where((sigma >= 0) & (alpha >= 1 / 255), alpha, torch.zeros_like(alpha))
    _, trans = nerfacc.render_weight_from_alpha(alpha)                     # T before each
    live = (trans * (1 - alpha)).detach() > 1e-4                           # gsplat's stop
    weights = trans * alpha * live
    rgb = (weights[..., None] * s["colours"][drawn]).sum(1).view(H, W, 3)
    return rgb, weights.sum(1).view(H, W), radii, means2d, depths, conics, comp


@pytest.mark.parametrize("mode", ["classic", "antialiased"])
def test_the_image_and_its_gradients_are_gsplats(mode):
    for cam in _cameras():
        ours = {k: v.clone().requires_grad_(True) for k, v in _scene().items()}
        theirs = {k: v.clone().requires_grad_(True) for k, v in _scene().items()}
        rgb, alpha, proj, _ = rasterize(ours["means"], ours["covs"], ours["opac"],
                                        ours["colours"], cam, H, W, mode)
        ref_rgb, ref_alpha, radii, means2d, depths, conics, comp = _gsplat_render(theirs, cam,
                                                                                   mode)
        assert float(ref_alpha.detach().max()) > 0.9                # the scene is not empty
        drawn = radii.amax(-1) > 0
        assert torch.equal(proj.radii[drawn], radii.amax(-1)[drawn].long())
        for a, b in ((proj.means2d, means2d), (proj.depths, depths), (proj.conics, conics),
                     (proj.compensations, comp)):
            assert torch.allclose(a[drawn], b[drawn], rtol=1e-9, atol=1e-12)
        assert torch.allclose(rgb, ref_rgb, atol=1e-9)
        assert torch.allclose(alpha, ref_alpha, atol=1e-9)
        probe = torch.rand(H, W, 3, generator=torch.Generator().manual_seed(1),
                           dtype=torch.float64)
        (rgb * probe).sum().add(alpha.sum()).backward()
        (ref_rgb * probe).sum().add(ref_alpha.sum()).backward()
        for name in ours:
            a, b = ours[name].grad, theirs[name].grad
            if name == "covs":
                # a covariance is symmetric: only (g + g^T) / 2 is defined (we read Sigma_01,
                # gsplat the mean of Sigma_01 and Sigma_10)
                a, b = 0.5 * (a + a.transpose(-1, -2)), 0.5 * (b + b.transpose(-1, -2))
            scale = float(b.abs().max())
            assert scale > 0, name
            assert torch.allclose(a, b, atol=1e-9 * scale, rtol=1e-7), name


def test_gaussians_past_the_frame_edge_are_clamped_as_gsplat_clamps_them():
    # a Gaussian at 1.8x the half field of view: its footprint's conic is gsplat's, which
    # evaluates the Jacobian at 1.3x
    cam = _cameras()[0]
    half = math.tan(math.radians(25.0))
    s = _scene(4)
    s["means"] = cam.position + cam.rotation[2] * 1.6 + cam.rotation[0] * 1.6 * 1.8 * half
    s["means"] = s["means"].expand(4, 3).clone()
    proj = rasterize(s["means"], s["covs"], s["opac"], s["colours"], cam, H, W)[2]
    ref = _gsplat_render(s, cam, "classic")
    assert torch.allclose(proj.conics, ref[5], rtol=1e-9)
