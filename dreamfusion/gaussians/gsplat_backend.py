"""The CUDA rasteriser: ``gsplat.rasterization`` with the PyTorch reference's conventions
(pixel centres at ``+0.5``, the 0.3 px^2 filter, "classic" or "antialiased" alpha), so both
draw the same image (``tests/test_gaussians.py`` compares them on CUDA)."""
from __future__ import annotations

import torch

from .model import Gaussians
from .projection import EPS_2D, NEAR, Camera


def view_matrix(camera: Camera) -> torch.Tensor:
    """(4, 4) world-to-camera in OpenCV's frame (x right, y down, z forward)."""
    flip = torch.tensor([1.0, -1.0, 1.0], device=camera.rotation.device).unsqueeze(-1)
    rot = camera.rotation * flip
    view = torch.eye(4, device=rot.device)
    view[:3, :3] = rot
    view[:3, 3] = -rot @ camera.position
    return view


def intrinsics(camera: Camera, height: int, width: int) -> torch.Tensor:
    return torch.tensor([[camera.fx, 0.0, 0.5 * width], [0.0, camera.fy, 0.5 * height],
                         [0.0, 0.0, 1.0]], device=camera.rotation.device)


def rasterize_gsplat(gaussians: Gaussians, cams: list[Camera], values: list[torch.Tensor],
                     height: int, width: int, mode: str = "classic"):
    """Images (B, H, W, C), opacities (B, H, W), the 2D means (B, N, 2) and radii (B, N) as
    one-item lists (the gradient lands on gsplat's own tensor), and the number of Gaussians
    drawn (gsplat does not report its pair count)."""
    from gsplat import rasterization

    viewmats = torch.stack([view_matrix(c) for c in cams])
    ks = torch.stack([intrinsics(c, height, width) for c in cams])
    colours, alphas, meta = rasterization(
        gaussians.means, gaussians.quats, gaussians.scales, gaussians.opacities,
        torch.stack(values), viewmats, ks, width, height, near_plane=NEAR, eps2d=EPS_2D,
        packed=False, render_mode="RGB", rasterize_mode=mode)
    means2d = meta["means2d"]             # (B, N, 2): its gradient feeds density control
    radii = meta["radii"]
    if radii.dim() == 3:                  # gsplat >= 1.5 gives (x, y) radii
        radii = radii.amax(dim=-1)
    drawn = int((radii > 0).sum())
    return colours, alphas.squeeze(-1), [means2d], [radii], drawn
