"""The compiled CPU compositor (``extensions/splat``): the forward and backward of
``rasterize.pixel_pairs`` + ``rasterize.composite`` (which it does not import) in one pass over each pixel, built on
first use (``kernels``); ``None``, with the reason, where it cannot be built."""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from .. import kernels
from .projection import Projected, boxes, depth_order

SOURCE = "splat/splat_cpu.cpp"
_KERNEL = kernels.LazyKernel("splat_cpu", SOURCE)
load_kernel = _KERNEL.load                  # the module, or None where it does not build
unavailable_reason = _KERNEL.reason         # why it does not


class CppComposite(torch.autograd.Function):
    """Alpha compositing by the kernel: gradients reach the 2D means, conics, opacities and
    values, as they reach them through the reference's autograd graph. Not differentiable
    twice (nothing needs it)."""

    @staticmethod
    def forward(ctx, means2d: torch.Tensor, conics: torch.Tensor, opacities: torch.Tensor,
                values: torch.Tensor, box: torch.Tensor, order: torch.Tensor, height: int,
                width: int):
        args = [t.detach().float().contiguous() for t in (means2d, conics, opacities, values)]
        colour, alpha, offsets, gaussians, used = load_kernel().forward(
            *args, box.contiguous(), order.contiguous(), height, width)
        ctx.save_for_backward(*args, offsets, gaussians)
        ctx.size = (height, width)
        ctx.mark_non_differentiable(used)
        return colour, alpha, used

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_colour: torch.Tensor, grad_alpha: torch.Tensor, _unused):
        means2d, conics, opacities, values, offsets, gaussians = ctx.saved_tensors
        grads = load_kernel().backward(grad_colour.float().contiguous(),
                                       grad_alpha.float().contiguous(), means2d, conics,
                                       opacities, values, offsets, gaussians, *ctx.size)
        return (*grads, None, None, None, None)


def composite_cpp(proj: Projected, opacities: torch.Tensor, values: torch.Tensor, height: int,
                  width: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """What ``pixel_pairs`` then ``composite`` return (colour, opacity, pairs composited),
    from the kernel. CPU, float32."""
    box = boxes(proj, opacities, height, width)
    colour, alpha, used = CppComposite.apply(proj.means2d, proj.conics, opacities, values, box,
                                             depth_order(proj), height, width)
    return colour, alpha, int(used)
