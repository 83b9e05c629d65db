"""The radiance field: a hash-grid encoding with small density and albedo heads."""
from __future__ import annotations

import torch
from torch import nn

from ..choices import NORMALS
from .hashgrid import HashGridEncoding


def _mlp(n_in: int, hidden: int, n_out: int, layers: int) -> nn.Sequential:
    dims = [n_in] + [hidden] * layers
    blocks: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        blocks += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*blocks, nn.Linear(dims[-1], n_out))


class NeRFField(nn.Module):
    """Density and albedo at world points inside the cube ``[-bound, bound]^3``.

    ``sigma(x) = exp(min(mlp_sigma(enc(x)) + blob(x), 15))`` with DreamFusion's density bias
    ``blob(x) = blob_density * (1 - |x| / blob_radius)``: a ball in the middle of the scene to
    start from, and space far from the centre empty from the first step.
    """

    def __init__(self, bound: float, encoding: HashGridEncoding, hidden: int, layers: int,
                 blob_density: float, blob_radius: float, normals: str, fd_eps: float) -> None:
        super().__init__()
        if normals not in NORMALS:
            raise ValueError(f"normals must be one of {NORMALS}, got {normals!r}")
        self.normals, self.fd_eps = normals, fd_eps
        self.bound = bound
        self.encoding = encoding
        self.density_head = _mlp(encoding.output_dim, hidden, 1, layers)
        self.albedo_head = _mlp(encoding.output_dim, hidden, 3, layers)
        self.blob_density, self.blob_radius = blob_density, blob_radius

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        unit = ((x / self.bound + 1.0) * 0.5).clamp(0.0, 1.0)
        return self.encoding(unit)

    def _raw_density(self, x: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        blob = self.blob_density * (1.0 - x.norm(dim=-1) / self.blob_radius)
        return self.density_head(features).squeeze(-1) + blob

    def density(self, x: torch.Tensor) -> torch.Tensor:
        """sigma at points x (N, 3) -> (N,)."""
        return _activation(self._raw_density(x, self._features(x)))

    def albedo(self, x: torch.Tensor) -> torch.Tensor:
        """Albedo in [0, 1] at points x (N, 3) -> (N, 3)."""
        return torch.sigmoid(self.albedo_head(self._features(x)))

    def forward(self, x: torch.Tensor, with_normals: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Density (N,), albedo (N, 3) and, if asked, unit normals ``-grad s / |grad s|`` of the
        pre-activation density ``s`` (same direction as sigma's, better conditioned).

        ``normals="analytic"`` differentiates ``s`` by autograd and keeps that gradient in the
        graph (a second derivative in the loss's backward, which only the PyTorch encoding
        has). ``"finite_difference"`` takes forward differences,
        ``grad_d s ~ (s(x + eps e_d) - s(x)) / eps``: three more density evaluations (central
        differences would take six, for an error of O(eps^2) instead of O(eps), where eps is
        already below the finest cell), first derivatives only, so every encoding backend
        serves them.
        """
        if not with_normals:
            features = self._features(x)
            raw = self._raw_density(x, features)
            normals = None
        elif self.normals == "finite_difference":
            features, raw, grad = self._finite_difference(x)
            normals = -grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        else:
            training = torch.is_grad_enabled()
            with torch.enable_grad():
                x = x.detach().requires_grad_(True)
                features = self._features(x)
                raw = self._raw_density(x, features)
                grad, = torch.autograd.grad(raw.sum(), x, create_graph=training)
            if not training:
                features, raw = features.detach(), raw.detach()
            normals = -grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        albedo = torch.sigmoid(self.albedo_head(features))
        return _activation(raw), albedo, normals

    def _finite_difference(self, x: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Features (N, F) and raw density (N,) at ``x`` (N, 3), and the forward-difference
        gradient of the raw density (N, 3), from one encoding call on the 4N points."""
        n = x.shape[0]
        offsets = torch.eye(3, device=x.device, dtype=x.dtype) * self.fd_eps
        points = torch.cat([x, (x.unsqueeze(1) + offsets).reshape(-1, 3)])
        features = self._features(points)
        raw = self._raw_density(points, features)
        grad = (raw[n:].view(n, 3) - raw[:n].unsqueeze(-1)) / self.fd_eps
        return features[:n], raw[:n], grad


def _activation(raw: torch.Tensor) -> torch.Tensor:
    # exp lets densities span the orders of magnitude between fog and a hard surface;
    # the clamp keeps a bad step from producing inf
    return torch.exp(raw.clamp(max=15.0))
