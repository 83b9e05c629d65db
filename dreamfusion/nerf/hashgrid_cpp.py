"""The compiled CPU hash-grid kernel (``extensions/hashgrid``), built with torch's extension
tooling on first use and cached (``kernels``); ``None``, with the reason, where it cannot be
built."""
from __future__ import annotations

from typing import Any

import torch
from torch.autograd.function import once_differentiable

from .. import kernels

SOURCE = "hashgrid/hashgrid_cpu.cpp"
_KERNEL = kernels.LazyKernel("hashgrid_cpu", SOURCE)
load_kernel = _KERNEL.load                  # the module, or None where it does not build
unavailable_reason = _KERNEL.reason         # why it does not


def build_key(native: bool) -> str:
    """The hash-grid kernel's build key (``kernels.build_key``)."""
    return kernels.build_key(SOURCE, native)


class CppHashGrid(torch.autograd.Function):
    """``HashGridEncoding.forward`` by the compiled kernel. Its backward is not itself
    differentiable, so callers that need second derivatives (normals from a density gradient
    inside the loss) use the PyTorch path."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, params: torch.Tensor, enc: Any) -> torch.Tensor:
        kernel = load_kernel()
        x = x.contiguous()
        args = (enc._scale, enc._resolution, enc._size, enc._offset, enc.n_dense, enc.table_size)
        ctx.save_for_backward(x, params)
        ctx.args = args
        return kernel.forward(x, params.detach().contiguous(), *args)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        x, params = ctx.saved_tensors
        grad_params, grad_x = load_kernel().backward(
            grad_out.contiguous(), x, params.detach().contiguous(), *ctx.args,
            ctx.needs_input_grad[0])
        return (grad_x if ctx.needs_input_grad[0] else None), grad_params, None
