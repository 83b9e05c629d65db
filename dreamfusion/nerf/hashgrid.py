"""Multi-resolution hash-grid encoding (Instant-NGP) with tiny-cuda-nn's parameter layout.

The layout follows tiny-cuda-nn's ``GridEncoding`` exactly, so that a later tcnn backend can
load these parameters unchanged:

* level ``l`` has ``scale_l = base_resolution * growth**l - 1`` and
  ``resolution_l = ceil(scale_l) + 1``;
* a point ``x`` in ``[0, 1]^3`` maps to ``p = x * scale_l + 0.5``; its cell is ``floor(p)`` and
  the trilinear weights come from ``p - floor(p)``;
* level ``l`` owns ``size_l = min(next_multiple(resolution_l**3, 8), table_size)`` rows of one
  flat ``(sum_l size_l, features)`` table; coarse levels whose grid fits are indexed densely
  (``x + y * res + z * res**2``), finer ones by tcnn's coherent prime hash
  (``x * 1 ^ y * 2654435761 ^ z * 805459861``, in uint32), both taken modulo ``size_l``;
* parameters start uniform in ``[-1e-4, 1e-4]``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..choices import BACKENDS

_PRIMES = (1, 2654435761, 805459861)
_UINT32 = 0xFFFFFFFF


class _GatherRows(torch.autograd.Function):
    """``table[rows]`` whose backward is a plain ``index_add`` (embedding's sorts, and is slower
    on the CPU); each direction is the other's adjoint, so double backward works too."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(rows)
        ctx.n_rows = table.shape[0]
        return table.index_select(0, rows)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (rows,) = ctx.saved_tensors
        return _ScatterRows.apply(grad, rows, ctx.n_rows), None


class _ScatterRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, values: torch.Tensor, rows: torch.Tensor, n_rows: int) -> torch.Tensor:
        ctx.save_for_backward(rows)
        out = values.new_zeros(n_rows, values.shape[1])
        return out.index_add_(0, rows, values)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (rows,) = ctx.saved_tensors
        return _GatherRows.apply(grad, rows), None, None


@dataclass(frozen=True)
class LevelLayout:
    scale: float
    resolution: int
    size: int
    offset: int
    dense: bool


def level_layouts(n_levels: int, table_size_log2: int, base_resolution: int,
                  growth: float) -> list[LevelLayout]:
    """The per-level scale, resolution, table rows and offset, as tiny-cuda-nn computes them."""
    table_size = 1 << table_size_log2
    layouts, offset = [], 0
    log2_growth = math.log2(growth)
    for level in range(n_levels):
        # float32 arithmetic, as tcnn does on the device, so resolutions agree at the edges
        scale = float(torch.tensor(2.0, dtype=torch.float32) ** (level * log2_growth)
                      * base_resolution - 1.0)
        resolution = int(math.ceil(scale)) + 1
        dense_rows = resolution ** 3
        size = min(-(-dense_rows // 8) * 8, table_size)
        layouts.append(LevelLayout(scale, resolution, size, offset, dense_rows <= size))
        offset += size
    return layouts


class HashGridEncoding(nn.Module):
    """Encode points in ``[0, 1]^3`` as ``n_levels * features`` trilinearly interpolated features.

    ``backend``: ``torch`` (the reference, any device), ``cpp`` (the compiled CPU kernel in
    ``extensions/hashgrid``), ``tcnn`` (tiny-cuda-nn on CUDA), or ``auto``: ``tcnn`` for CUDA
    inputs where tinycudann imports, ``cpp`` for CPU inputs where the kernel builds, else the
    reference. All share one parameter table and give the same numbers. The kernel is
    decided once for the device the table is on (``active_backend``, again after a move;
    ``describe_backend`` says why); it serves float32 calls that need no second derivative,
    and the others, such as normals taken inside the loss, run the reference.
    """

    def __init__(self, n_levels: int = 16, features: int = 2, table_size_log2: int = 19,
                 base_resolution: int = 16, growth: float = 1.447269237440378, *,
                 backend: str, start_levels: int = 0, start_step: int = 0,
                 level_every: int = 500) -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.backend = backend
        self.config = (n_levels, features, table_size_log2, base_resolution, growth)
        self.layouts = level_layouts(n_levels, table_size_log2, base_resolution, growth)
        self.n_levels, self.features = n_levels, features
        total = self.layouts[-1].offset + self.layouts[-1].size
        self.params = nn.Parameter(torch.empty(total, features).uniform_(-1e-4, 1e-4))
        as_tensor = lambda attr, dtype: torch.tensor(  # noqa: E731
            [getattr(lay, attr) for lay in self.layouts], dtype=dtype)
        self.register_buffer("_scale", as_tensor("scale", torch.float32), persistent=False)
        self.register_buffer("_resolution", as_tensor("resolution", torch.int64), persistent=False)
        self.register_buffer("_size", as_tensor("size", torch.int64), persistent=False)
        self.register_buffer("_offset", as_tensor("offset", torch.int64), persistent=False)
        dense = [lay.dense for lay in self.layouts]
        self.n_dense = dense.index(False) if False in dense else n_levels
        if any(dense[self.n_dense:]):
            raise ValueError("dense levels must come before hashed ones")
        self.table_size = 1 << table_size_log2
        self.register_buffer("_primes", torch.tensor(_PRIMES).view(1, 1, 3, 1), persistent=False)
        # coarse to fine: the finer levels' features are masked to zero until their step;
        # the table keeps every level, so checkpoints and backends do not depend on the step
        self.start_levels = start_levels if 0 < start_levels < n_levels else n_levels
        self.start_step, self.level_every = start_step, max(level_every, 1)
        self.active_levels = self.start_levels
        # decided at the first call on the table's device, not here: a grid built on the CPU
        # and moved to CUDA must not compile the CPU kernel
        self._decided: str | None = None

    def _apply(self, *args, **kwargs):      # every .to(), .cuda(), .cpu() of the module
        module = super()._apply(*args, **kwargs)
        self._decided = None                # the table may be on another device now
        return module

    def levels_at(self, step: int) -> int:
        """Levels in use at ``step``: ``start_levels``, one more every ``level_every`` steps
        from ``start_step`` (threestudio's ProgressiveBandHashGrid schedule), at most all."""
        grown = max(step - self.start_step, 0) // self.level_every
        return min(self.start_levels + grown, self.n_levels)

    def set_step(self, step: int) -> None:
        self.active_levels = self.levels_at(step)

    def _mask(self, out: torch.Tensor) -> torch.Tensor:
        if self.active_levels >= self.n_levels:
            return out
        keep = torch.arange(self.output_dim, device=out.device) < self.active_levels * self.features
        return out * keep.to(out.dtype)

    def kernel_for(self, device_type: str) -> str:
        """The kernel that serves float32 calls without second derivatives on ``device_type``
        (``cpp``, ``tcnn``), or ``torch`` where none is chosen or none is available."""
        if device_type == "cpu" and self.backend in ("auto", "cpp"):
            from .hashgrid_cpp import load_kernel

            return "cpp" if load_kernel() is not None else "torch"
        if device_type == "cuda" and self.backend in ("auto", "tcnn"):
            from .hashgrid_tcnn import load_tcnn

            return "tcnn" if load_tcnn() is not None else "torch"
        return "torch"

    @property
    def active_backend(self) -> str:
        """What serves this encoding's calls on the device its parameters are on (``cpp``,
        ``tcnn`` or ``torch``), decided once per device placement."""
        if self._decided is None:
            self._decided = self.kernel_for(self.params.device.type)
        return self._decided

    def describe_backend(self) -> str:
        """Which implementation serves calls on the parameters' device, and why, for the log."""
        device = self.params.device.type
        active = self.active_backend
        if active == "cpp":
            return f"cpp (compiled CPU kernel; backend={self.backend})"
        if active == "tcnn":
            return f"tcnn (tiny-cuda-nn; backend={self.backend})"
        if self.backend == "torch":
            return "torch (PyTorch reference)"
        wanted = {"cpu": "cpp", "cuda": "tcnn"}.get(device)
        if self.backend not in ("auto", wanted):
            return (f"torch (PyTorch reference): backend={self.backend} has no kernel for "
                    f"{device}")
        if wanted == "cpp":
            from .hashgrid_cpp import unavailable_reason

            return (f"torch (PyTorch reference): backend={self.backend} but the CPU kernel could "
                    f"not be built ({unavailable_reason()}); install a C++ compiler with OpenMP "
                    "and ninja")
        if wanted == "tcnn":
            from .hashgrid_tcnn import unavailable_reason

            return f"torch (PyTorch reference): backend={self.backend}; {unavailable_reason()}"
        return "torch (PyTorch reference)"

    def _kernel(self, x: torch.Tensor) -> str:
        """The decided kernel where this call allows one, else the reference."""
        if self.active_backend == "torch" or x.dtype != torch.float32:
            return "torch"
        if torch.is_grad_enabled() and x.requires_grad:
            return "torch"          # a graph through x may be differentiated twice
        return self.active_backend

    def _use_kernel(self, x: torch.Tensor) -> bool:
        return self._kernel(x) != "torch"

    @property
    def output_dim(self) -> int:
        return self.n_levels * self.features

    def _rows(self, ends: torch.Tensor) -> torch.Tensor:
        """Table rows of the 8 corners, (N, L, 2, 2, 2), from per-dimension ends (N, L, 3, 2).

        Dense levels are always a prefix (resolutions only grow), so each index formula runs
        on the levels that use it; both are sums or xors of per-dimension terms, which are
        broadcast to the corners instead of being computed for each of the 8.
        """
        n, k = ends.shape[0], self.n_dense
        parts = []
        if k:
            e, res = ends[:, :k], self._resolution[:k].view(1, -1, 1)
            e1, e2 = e[:, :, 1] * res, e[:, :, 2] * res * res
            dense = (e[:, :, 0].view(n, k, 2, 1, 1) + e1.view(n, k, 1, 2, 1)
                     + e2.view(n, k, 1, 1, 2))
            level = (-1, 1, 1, 1)
            parts.append(dense % self._size[:k].view(level) + self._offset[:k].view(level))
        if k < self.n_levels:
            h = (ends[:, k:] * self._primes) & _UINT32
            m = self.n_levels - k
            hashed = (h[:, :, 0].view(n, m, 2, 1, 1) ^ h[:, :, 1].view(n, m, 1, 2, 1)
                      ^ h[:, :, 2].view(n, m, 1, 1, 2))
            # hashed levels hold exactly 2^table_size_log2 rows: the modulo is a mask
            parts.append((hashed & (self.table_size - 1)) + self._offset[k:].view(-1, 1, 1, 1))
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features of points ``x`` (N, 3) in ``[0, 1]^3``; returns (N, n_levels * features).

        ``f_l(x) = sum_c w_c(x) * table[index_l(cell(x) + c)]`` over the 8 corners ``c``,
        with ``w_c = prod_d (frac_d if c_d else 1 - frac_d)``; levels past ``active_levels``
        (coarse to fine) give zeros.
        """
        return self._mask(self._encode(x))

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        kernel = self._kernel(x)
        if kernel == "cpp":
            from .hashgrid_cpp import CppHashGrid

            return CppHashGrid.apply(x, self.params, self)
        if kernel == "tcnn":
            from .hashgrid_tcnn import encoding_config, tcnn_encode

            return tcnn_encode(x, self.params, encoding_config(*self.config), self.output_dim)
        n = x.shape[0]
        pos = x.unsqueeze(1) * self._scale.view(1, -1, 1) + 0.5            # (N, L, 3)
        cell = torch.floor(pos)
        frac = pos - cell                                                   # carries d/dx
        ends = cell.long().unsqueeze(-1) + torch.arange(2, device=x.device)  # (N, L, 3, 2)
        rows = self._rows(ends)
        w = torch.stack([1.0 - frac, frac], dim=-1)                         # (N, L, 3, 2)
        weights = (w[:, :, 0].view(n, -1, 2, 1, 1) * w[:, :, 1].view(n, -1, 1, 2, 1)
                   * w[:, :, 2].view(n, -1, 1, 1, 2))
        values = _GatherRows.apply(self.params, rows.reshape(-1))
        values = values.view(n, self.n_levels, 8, self.features)
        out = (weights.reshape(n, self.n_levels, 8, 1) * values).sum(dim=2)
        return out.reshape(n, self.output_dim)
