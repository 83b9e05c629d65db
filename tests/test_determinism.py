import torch

from dreamfusion.utils.determinism import deterministic_on


def _gather_backward(index: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    x = torch.zeros(5000, 3, requires_grad=True)
    (x[index] * weights).sum().backward()
    return x.grad


def test_cpu_runs_use_deterministic_kernels_and_restore_the_setting():
    g = torch.Generator().manual_seed(0)
    index, weights = torch.randint(5000, (60000,), generator=g), torch.randn(60000, 3, generator=g)
    before = torch.are_deterministic_algorithms_enabled()
    with deterministic_on(torch.device("cpu")):
        assert torch.are_deterministic_algorithms_enabled()
        first = _gather_backward(index, weights)
        # a repeated-index gather's backward: summed from several threads at once otherwise
        assert all(torch.equal(first, _gather_backward(index, weights)) for _ in range(10))
    assert torch.are_deterministic_algorithms_enabled() == before
    with deterministic_on(torch.device("cuda")):     # CUDA kernels are left as they are
        assert torch.are_deterministic_algorithms_enabled() == before
