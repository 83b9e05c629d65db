"""Cameras on a sphere around the origin, looking at it, in a Z-up world.

Azimuth 0 looks from +X (the object's front), azimuth 90 from +Y; elevation is measured from
the XY plane. Field of view is the full vertical angle of a square image.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class Cameras:
    azimuth: torch.Tensor     # degrees, (B,)
    elevation: torch.Tensor   # degrees, (B,)
    distance: torch.Tensor    # (B,)
    fov: torch.Tensor         # degrees, (B,)

    def __len__(self) -> int:
        return self.azimuth.shape[0]

    def __getitem__(self, index: slice) -> "Cameras":
        return Cameras(self.azimuth[index], self.elevation[index], self.distance[index],
                       self.fov[index])

    @property
    def positions(self) -> torch.Tensor:
        a, e = torch.deg2rad(self.azimuth), torch.deg2rad(self.elevation)
        return self.distance.unsqueeze(-1) * torch.stack(
            [torch.cos(e) * torch.cos(a), torch.cos(e) * torch.sin(a), torch.sin(e)], dim=-1)

    def basis(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Forward, right and up unit vectors (B, 3) each."""
        pos = self.positions
        forward = -pos / pos.norm(dim=-1, keepdim=True)
        a = torch.deg2rad(self.azimuth)
        # right from the azimuth alone stays defined when looking straight down
        right = torch.stack([-torch.sin(a), torch.cos(a), torch.zeros_like(a)], dim=-1)
        up = torch.cross(right, forward, dim=-1)
        return forward, right, up

    def camera_to_world(self) -> torch.Tensor:
        """(B, 4, 4) camera-to-world matrices in the OpenGL camera convention (columns: right,
        up, backward, position), as threestudio builds them for MVDream."""
        forward, right, up = self.basis()
        b = len(self)
        c2w = torch.zeros(b, 4, 4, dtype=forward.dtype, device=forward.device)
        c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2] = right, up, -forward
        c2w[:, :3, 3] = self.positions
        c2w[:, 3, 3] = 1.0
        return c2w

    def world_to_clip(self, near: float = 0.05, far: float = 50.0) -> torch.Tensor:
        """(B, 4, 4) matrices from world points to OpenGL clip space for ``rays``' pixels:
        ``x_c = right . d / h``, ``y_c = up . d / h``, ``w_c = forward . d`` with
        ``d = p - position`` and ``h = tan(fov / 2)`` (square pixels, as ``rays`` takes them),
        and ``z_c / w_c`` rising from -1 at ``near`` to 1 at ``far``. NDC x is -1 at the left
        edge and y 1 at the top edge of the image (row 0)."""
        forward, right, up = self.basis()
        half = torch.tan(torch.deg2rad(self.fov) / 2).unsqueeze(-1)
        rows = torch.stack([right / half, up / half,
                            forward * ((far + near) / (far - near)), forward], dim=1)
        pos = self.positions
        shift = -(rows * pos.unsqueeze(1)).sum(-1)          # (B, 4): the translation column
        shift[:, 2] -= 2.0 * far * near / (far - near)
        m = torch.zeros(len(self), 4, 4, dtype=pos.dtype, device=pos.device)
        m[:, :, :3], m[:, :, 3] = rows, shift
        return m

    def rays(self, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Ray origins and unit directions, (B, H, W, 3) each, through pixel centres."""
        forward, right, up = self.basis()
        half = torch.tan(torch.deg2rad(self.fov) / 2).view(-1, 1, 1, 1)
        dev, dtype = self.azimuth.device, self.azimuth.dtype
        ys = (1.0 - (torch.arange(height, device=dev, dtype=dtype) + 0.5) * 2.0 / height)
        xs = ((torch.arange(width, device=dev, dtype=dtype) + 0.5) * 2.0 / width - 1.0)
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        dirs = (forward.view(-1, 1, 1, 3) + half * xx.unsqueeze(-1) * right.view(-1, 1, 1, 3)
                + half * yy.unsqueeze(-1) * up.view(-1, 1, 1, 3))
        dirs = dirs / dirs.norm(dim=-1, keepdim=True)
        origins = self.positions.view(-1, 1, 1, 3).expand_as(dirs)
        return origins, dirs


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def sample_cameras(n: int, elevation: tuple[float, float], azimuth: tuple[float, float],
                   distance: tuple[float, float], fov: tuple[float, float],
                   generator: torch.Generator | None = None, views: int = 1,
                   relative_distance: bool = False) -> Cameras:
    """``n`` objects' cameras, drawn uniformly in each range; elevation uniform on the
    sphere's band. With ``views = K > 1`` each object is seen by K cameras (``n K`` in all,
    object-major) at azimuths ``a, a + 360/K, ...`` from one random base azimuth ``a``, with
    one elevation, distance and field of view (MVDream's multi-view batches).
    ``relative_distance`` scales each distance by ``1 / tan(fov / 2)`` so that an object
    fills the same share of the frame at every field of view (threestudio-mvdream)."""
    lo, hi = (math.sin(math.radians(v)) for v in elevation)
    elev = torch.rad2deg(torch.asin(_uniform(n, lo, hi, generator)))
    az = _uniform(n, *azimuth, generator)
    dist, fovs = _uniform(n, *distance, generator), _uniform(n, *fov, generator)
    if relative_distance:
        dist = dist / torch.tan(torch.deg2rad(fovs) / 2.0)
    if views > 1:
        offsets = torch.arange(views, dtype=az.dtype) * 360.0 / views
        az = ((az.unsqueeze(1) + offsets + 180.0) % 360.0 - 180.0).reshape(-1)
        elev, dist, fovs = (v.repeat_interleave(views) for v in (elev, dist, fovs))
    return Cameras(az, elev, dist, fovs)


def orbit(n: int, elevation: float, distance: float, fov: float,
          start_azimuth: float = 0.0) -> Cameras:
    """``n`` cameras evenly spaced in azimuth at one elevation (turntables, evaluation)."""
    az = start_azimuth + torch.arange(n, dtype=torch.float32) * 360.0 / n
    az = (az + 180.0) % 360.0 - 180.0
    full = lambda v: torch.full((n,), float(v))  # noqa: E731
    return Cameras(az, full(elevation), full(distance), full(fov))
