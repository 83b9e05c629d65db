"""tiny-cuda-nn and nerfacc against the PyTorch references, on a CUDA device where they import
(skipped otherwise, with the reason); and what each backend choice does without them."""
import pytest
import torch

from dreamfusion.rendering.cameras import orbit
from dreamfusion.nerf.hashgrid import HashGridEncoding
from dreamfusion.nerf.hashgrid_tcnn import load_tcnn, unavailable_reason
from dreamfusion.nerf.marcher import load_nerfacc, march_rays, marcher_for
from dreamfusion.nerf.occupancy import OccupancyGrid

GRIDS = [(16, 2, 19, 16, 1.447269237440378), (6, 4, 12, 4, 1.8)]
needs_tcnn = pytest.mark.skipif(load_tcnn() is None,
                                reason=f"tiny-cuda-nn is not usable here: {unavailable_reason()}")
needs_nerfacc = pytest.mark.skipif(load_nerfacc() is None,
                                   reason="nerfacc does not import on a CUDA device here")


def _points(n=4000, device="cuda"):
    corners = torch.tensor([[a, b, c] for a in (0.0, 1.0) for b in (0.0, 1.0) for c in (0.0, 1.0)])
    faces = torch.rand(64, 3)
    faces[torch.arange(64), torch.arange(64) % 3] = (torch.arange(64) % 2).float()
    return torch.cat([corners, faces, torch.rand(n, 3)]).to(device)


@needs_tcnn
@pytest.mark.parametrize("grid", GRIDS)
def test_tcnn_matches_the_reference_outputs_and_gradients(grid):
    torch.manual_seed(0)
    ref = HashGridEncoding(*grid, backend="torch").cuda()
    fast = HashGridEncoding(*grid, backend="tcnn").cuda()
    ref.params.data.uniform_(-1.0, 1.0)
    fast.load_state_dict(ref.state_dict())
    assert fast.active_backend == "tcnn"
    x = _points()
    g = torch.randn(x.shape[0], ref.output_dim, device="cuda")
    out_ref, out_fast = ref(x), fast(x)
    assert torch.allclose(out_fast, out_ref, rtol=1e-5, atol=1e-5 * float(out_ref.abs().max()))
    (out_ref * g).sum().backward()
    (out_fast * g).sum().backward()
    assert torch.allclose(fast.params.grad, ref.params.grad, rtol=1e-5,
                          atol=1e-5 * float(ref.params.grad.abs().max()))


@needs_nerfacc
def test_nerfacc_marches_the_same_samples_from_the_same_grid():
    torch.manual_seed(0)
    grid = OccupancyGrid(1.0, 32, 0.02, 0.01, 0.95).cuda()
    grid.binary.copy_(torch.rand(32 ** 3, device="cuda") < 0.3)
    cams = orbit(3, 20.0, 2.3, 40.0, start_azimuth=10.0)
    origins, dirs = cams.rays(24, 24)
    origins, dirs = origins.reshape(-1, 3).cuda(), dirs.reshape(-1, 3).cuda()
    ours = march_rays(origins, dirs, grid, 1.0, 0.02, backend="torch")
    theirs = march_rays(origins, dirs, grid, 1.0, 0.02, backend="nerfacc")
    assert torch.equal(theirs.ray_indices, ours.ray_indices)
    assert torch.allclose(theirs.t_starts, ours.t_starts, atol=1e-5)
    assert torch.allclose(theirs.t_ends, ours.t_ends, atol=1e-5)


def test_without_cuda_every_choice_falls_back_to_a_working_backend():
    x = torch.rand(50, 3)
    ref = HashGridEncoding(*GRIDS[1], backend="torch")
    for backend in ("tcnn", "auto"):
        enc = HashGridEncoding(*GRIDS[1], backend=backend)
        enc.load_state_dict(ref.state_dict())
        with torch.no_grad():
            assert torch.allclose(enc(x), ref(x), atol=1e-6)
    assert HashGridEncoding(*GRIDS[1], backend="tcnn").active_backend == "torch"
    assert "no kernel for cpu" in HashGridEncoding(*GRIDS[1], backend="tcnn").describe_backend()
    grid = OccupancyGrid(1.0, 8, 0.05, 0.01, 0.95)
    assert marcher_for("auto", torch.device("cpu"), grid) == "torch"
    assert marcher_for("nerfacc", torch.device("cpu"), grid) == "torch"
