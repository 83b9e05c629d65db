"""3D Gaussians: the parameters, their activations, and the fields they define.

Stored as 3DGS stores them (and as ``model.ply`` writes them): positions ``means`` (N, 3),
``log_scales`` (N, 3), unit quaternions ``quats`` (N, 4, w first), ``opacity_logits`` (N,)
and ``sh_dc`` (N, 3), the degree-0 spherical-harmonic coefficient of the albedo,
``albedo = clamp(0.5 + C0 * sh_dc, 0, 1)``. SDS needs no view-dependent colour, so degree 0
is all there is.

As a field (for export and evaluation) the Gaussians define a density
``D(x) = sum_i o_i exp(-q_i(x) / 2)``, ``q_i(x) = (x - mu_i)^T Sigma_i^-1 (x - mu_i)``,
each cut off at ``q_i = 9`` (three standard deviations, as the rasteriser cuts them), and an
albedo ``sum_i w_i(x) c_i / sum_i w_i(x)`` with ``w_i`` the same terms.
"""
from __future__ import annotations

import math

import torch
from torch import nn

SH_C0 = 0.28209479177387814      # the degree-0 spherical harmonic, 1 / (2 sqrt(pi))
CUTOFF = 3.0                     # standard deviations beyond which a Gaussian counts as zero
# D(x) at the surface the export extracts (threshold=auto). Fitted clouds are fog-like (many
# faint Gaussians), so the rendered silhouette's edge lies where D is well under 1; on four
# bench runs 0.3 gave the smallest Chamfer distance of 0.1-1.2 or near it (cube 4.5% -> 3.5%
# of its size against 0.5, duck 2.4% -> 1.5%, sphere 1.3% -> 0.5%, cylinder 2.6% -> 2.3%)
SURFACE_LEVEL = 0.3
PARAMETERS = ("means", "log_scales", "quats", "opacity_logits", "sh_dc")
# what adaptive density control gathers between its passes (in checkpoints, for exact resume)
STATISTICS = ("grad_accum", "grad_count", "max_radii")


def quat_to_rotation(quats: torch.Tensor) -> torch.Tensor:
    """(N, 4) quaternions, w first, any length -> (N, 3, 3) rotation matrices."""
    w, x, y, z = (quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)).unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).view(-1, 3, 3)


def inverse_sigmoid(x: torch.Tensor) -> torch.Tensor:
    return torch.log(x / (1.0 - x))


def nearest_spacing(points: torch.Tensor, k: int = 3, chunk: int = 2048) -> torch.Tensor:
    """(N,) mean distance from each point to its ``k`` nearest others (3DGS's initial scale)."""
    out = []
    for part in points.split(chunk):
        d = torch.cdist(part, points)
        out.append(d.topk(k + 1, largest=False).values[:, 1:].mean(dim=1))
    return torch.cat(out)


class Gaussians(nn.Module):
    """``count`` Gaussians, initialised as DreamGaussian does: uniform in a ball of
    ``init_radius``, random grey-ish colours, opacity ``init_opacity``, isotropic scales of
    the mean spacing to the three nearest neighbours. The count changes during training
    (``density_control``); ``load_state_dict`` takes a state of any count."""

    def __init__(self, count: int, bound: float, init_radius: float = 0.5,
                 init_opacity: float = 0.1, generator: torch.Generator | None = None,
                 min_scale: float = 0.0) -> None:
        super().__init__()
        self.bound = bound
        self.min_scale = min_scale
        direction = torch.randn(count, 3, generator=generator)
        direction = direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        radius = init_radius * torch.rand(count, 1, generator=generator) ** (1.0 / 3.0)
        means = direction * radius
        spacing = nearest_spacing(means) if count > 3 else torch.full((count,), init_radius)
        quats = torch.zeros(count, 4)
        quats[:, 0] = 1.0
        albedo = 0.5 + 0.3 * (torch.rand(count, 3, generator=generator) - 0.5)
        self.means = nn.Parameter(means)
        self.log_scales = nn.Parameter(torch.log(spacing.clamp_min(1e-4)).unsqueeze(-1)
                                       .repeat(1, 3))
        self.quats = nn.Parameter(quats)
        self.opacity_logits = nn.Parameter(
            inverse_sigmoid(torch.full((count,), float(init_opacity))))
        self.sh_dc = nn.Parameter((albedo - 0.5) / SH_C0)
        for name in STATISTICS:     # view-space gradient norms, their count, largest radius
            self.register_buffer(name, torch.zeros(count))

    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def scales(self) -> torch.Tensor:
        """(N, 3) ``sqrt(exp(log_scales)^2 + min_scale^2)``: a Gaussian is never thinner than
        ``min_scale``, so one fitted to low-resolution renders still covers the pixels of a
        sharper one (Mip-Splatting's 3D filter, without its opacity compensation, so the
        same Gaussian is stored exactly as 3DGS stores one, with these scales)."""
        if self.min_scale == 0.0:
            return torch.exp(self.log_scales)
        return torch.sqrt(torch.exp(2.0 * self.log_scales) + self.min_scale ** 2)

    @property
    def opacities(self) -> torch.Tensor:
        return torch.sigmoid(self.opacity_logits)

    @property
    def colours(self) -> torch.Tensor:
        """(N, 3) each Gaussian's albedo, in [0, 1]."""
        return (0.5 + SH_C0 * self.sh_dc).clamp(0.0, 1.0)

    def rotations(self) -> torch.Tensor:
        return quat_to_rotation(self.quats)

    def covariances(self) -> torch.Tensor:
        """(N, 3, 3) ``Sigma = R S S^T R^T``."""
        m = self.rotations() * self.scales.unsqueeze(-2)
        return m @ m.transpose(-1, -2)

    def normals(self) -> torch.Tensor:
        """(N, 3) unit axes of each Gaussian's smallest scale: a flat Gaussian's normal, up to
        sign (the renderer turns each towards the camera)."""
        axis = self.log_scales.argmin(dim=-1)
        rot = self.rotations()
        return rot.gather(2, axis.view(-1, 1, 1).expand(-1, 3, 1)).squeeze(-1)

    def load_state_dict(self, state_dict: dict, strict: bool = True, assign: bool = False):
        """Take a state of any number of Gaussians: each parameter keeps its identity (an
        optimiser holding it stays valid) and takes the saved count."""
        for name in PARAMETERS + STATISTICS:
            saved = state_dict.get(name)
            own = getattr(self, name)
            if isinstance(saved, torch.Tensor) and saved.shape[1:] == own.shape[1:]:
                if name in PARAMETERS:
                    own.data = torch.empty_like(saved, device=own.device)
                else:
                    setattr(self, name, torch.empty_like(saved, device=own.device))
        return super().load_state_dict(state_dict, strict, assign)

    # -- the fields --------------------------------------------------------------------------

    @torch.no_grad()
    def density(self, points: torch.Tensor) -> torch.Tensor:
        """(M,) ``D(x)`` at ``points`` (M, 3)."""
        return self._field(points, with_albedo=False)

    @torch.no_grad()
    def albedo(self, points: torch.Tensor) -> torch.Tensor:
        """(M, 3) the Gaussians' colours at ``points``, weighted by their terms of ``D``;
        points no Gaussian reaches take the nearest Gaussian's colour."""
        return self._field(points, with_albedo=True)

    def _lookup(self) -> tuple["_Buckets", torch.Tensor]:
        """The buckets and whitening maps of the Gaussians as they are now, kept while no
        parameter changes: an export or a mesh stage's start queries the field in 65k-point
        chunks, and rebuilding them per chunk cost as much as the queries."""
        key = tuple((id(p), p.data_ptr(), p._version, tuple(p.shape)) for p in self.parameters())
        cached = getattr(self, "_lookup_cache", None)
        if cached is not None and cached[0] == key:
            return cached[1], cached[2]
        with torch.no_grad():
            buckets = _Buckets(self.means, CUTOFF * self.scales.amax(dim=-1))
            # the whitening map W = S^-1 R^T (Sigma^-1 = W^T W), straight from the rotation
            # and scales: no 3x3 inverse per Gaussian, and the quadratic form a sum of
            # squares (an inverse's entries summed in float32 put D up to 1e-3 off on a
            # fitted cube's thin Gaussians)
            whiten = (self.rotations() / self.scales.unsqueeze(-2)).transpose(-1, -2)
        self._lookup_cache = (key, buckets, whiten.reshape(-1, 9))
        return buckets, self._lookup_cache[2]

    def _field(self, points: torch.Tensor, with_albedo: bool) -> torch.Tensor:
        buckets, whiten = self._lookup()
        means = self.means.detach()
        # a weight column, then the weighted colour where asked: one scatter for both
        values = self.opacities.detach().unsqueeze(-1)
        if with_albedo:
            values = torch.cat([values, values * self.colours.detach()], dim=-1)
        sums = points.new_zeros(points.shape[0], values.shape[1])
        for _, p_idx, g_idx in buckets.pairs(points):
            d = points[p_idx] - means[g_idx]
            q = _whitened_square(d, whiten[g_idx])
            near = q < CUTOFF ** 2          # most of a cell's pairs lie beyond the cut-off
            p_idx, g_idx = p_idx[near], g_idx[near]
            sums.index_add_(0, p_idx, values[g_idx] * torch.exp(-0.5 * q[near]).unsqueeze(-1))
        total = sums[:, 0]
        if not with_albedo:
            return total
        reached = total > 1e-8
        out = sums[:, 1:] / total.clamp_min(1e-8).unsqueeze(-1)
        if not bool(reached.all()) and len(self):
            far = (~reached).nonzero().squeeze(-1)
            nearest = torch.cdist(points[far], means).argmin(dim=1)
            out[far] = self.colours.detach()[nearest]
        return out


def _whitened_square(d: torch.Tensor, whiten: torch.Tensor) -> torch.Tensor:
    """(P,) ``|W d|^2`` for offsets ``d`` (P, 3) and maps ``W`` (P, 9), row-major 3x3."""
    x, y, z = d.unsqueeze(-1).unbind(-2)
    w = whiten.view(-1, 3, 3)
    wd = w[:, :, 0] * x + w[:, :, 1] * y + w[:, :, 2] * z
    return (wd * wd).sum(-1)


class _Buckets:
    """Gaussians filed by the cells of a uniform grid their cut-off spheres touch, so a query
    point meets only the Gaussians of its own cell."""

    def __init__(self, means: torch.Tensor, radii: torch.Tensor, max_pairs: int = 1 << 22):
        self.max_pairs = max_pairs
        self.empty = means.shape[0] == 0
        if self.empty:
            return
        # half the median cut-off radius: a point meets 23M candidate pairs on a 96^3 grid of
        # a 5.7k-Gaussian cube, against 38M at the whole radius, of which 5.6M lie within it
        self.cell = float(radii.median().clamp_min(1e-3)) / 2
        lo_pt = (means - radii.unsqueeze(-1)).amin(dim=0)
        hi_pt = (means + radii.unsqueeze(-1)).amax(dim=0)
        # a coarser grid where the fine one would hold too many cells
        while math.prod(((hi_pt - lo_pt) / self.cell).ceil().tolist()) > (1 << 21):
            self.cell *= 1.5
        self.origin = lo_pt
        self.dims = ((hi_pt - lo_pt) / self.cell).floor().long() + 1
        lo = ((means - radii.unsqueeze(-1) - self.origin) / self.cell).floor().long()
        hi = ((means + radii.unsqueeze(-1) - self.origin) / self.cell).floor().long()
        lo, hi = lo.clamp_min(0), torch.minimum(hi, self.dims - 1)
        ext = hi - lo + 1
        counts = ext.prod(dim=-1)
        g = torch.arange(means.shape[0]).repeat_interleave(counts)
        local = torch.arange(int(counts.sum())) - (torch.cumsum(counts, 0) - counts)[g]
        ex, ey = ext[g, 0], ext[g, 1]
        cx = lo[g, 0] + local % ex
        cy = lo[g, 1] + (local // ex) % ey
        cz = lo[g, 2] + local // (ex * ey)
        cells = self._flat(cx, cy, cz)
        order = torch.argsort(cells, stable=True)
        self.gaussians = g[order]
        n_cells = int(self.dims.prod())
        self.counts = torch.bincount(cells, minlength=n_cells)
        self.starts = torch.cumsum(self.counts, 0) - self.counts

    def _flat(self, cx: torch.Tensor, cy: torch.Tensor, cz: torch.Tensor) -> torch.Tensor:
        return (cz * self.dims[1] + cy) * self.dims[0] + cx

    def pairs(self, points: torch.Tensor):
        """Yield ``(start, point_indices, gaussian_indices)``: every point with every Gaussian
        of its cell, in chunks of at most ``max_pairs`` pairs."""
        if self.empty:
            return
        device = points.device
        idx = ((points.cpu() - self.origin) / self.cell).floor().long()
        inside = ((idx >= 0) & (idx < self.dims)).all(dim=-1)
        cell = self._flat(*idx.clamp_min(0).minimum(self.dims - 1).unbind(-1))
        per_point = torch.where(inside, self.counts[cell], 0)
        start = 0
        n = points.shape[0]
        while start < n:
            csum = torch.cumsum(per_point[start:], 0)
            stop = start + max(1, int(torch.searchsorted(csum, self.max_pairs, right=True)))
            stop = min(stop, n)
            c = per_point[start:stop]
            p = torch.arange(start, stop).repeat_interleave(c)
            local = torch.arange(int(c.sum())) - (torch.cumsum(c, 0) - c)[p - start]
            g = self.gaussians[self.starts[cell[p]] + local]
            yield start, p.to(device), g.to(device)
            start = stop
