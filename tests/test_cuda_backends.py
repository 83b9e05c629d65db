"""tiny-cuda-nn, nerfacc and nvdiffrast against the PyTorch references, on a CUDA device where they import
(skipped otherwise, with the reason); and what each backend choice does without them."""
import pytest
import torch

from dreamfusion.rendering import mesh_raster as mr
from dreamfusion.rendering.cameras import orbit
from dreamfusion.nerf.hashgrid import HashGridEncoding
from dreamfusion.nerf.hashgrid_tcnn import load_tcnn, unavailable_reason
from dreamfusion.nerf.marcher import load_nerfacc, march_rays, marcher_for
from dreamfusion.nerf.occupancy import OccupancyGrid

GRIDS = [(16, 2, 19, 16, 1.447269237440378), (6, 4, 12, 4, 1.8)]
needs_tcnn = pytest.mark.skipif(load_tcnn() is None,
                                reason=f"tiny-cuda-nn is not usable here: {unavailable_reason()}")
needs_nvdiffrast = pytest.mark.skipif(
    not torch.cuda.is_available() or mr.nvdiffrast_missing() is not None,
    reason=f"nvdiffrast is not usable here: {mr.nvdiffrast_missing() or 'no CUDA device'}")
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


def _clip(mesh: object, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    vertices = torch.tensor(mesh.vertices, dtype=torch.float32, device=device)
    faces = torch.tensor(mesh.faces, dtype=torch.long, device=device)
    cams = orbit(3, 20.0, 2.3, 40.0, start_azimuth=10.0)
    return mr.project(vertices, cams.world_to_clip().to(device)), faces


def _coverage_and_gradient(antialias, clip: torch.Tensor, rast: torch.Tensor,
                           faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    colour = torch.rand(clip.shape[1], 3, device=clip.device)
    rgb = mr.interpolate(colour, rast, faces)
    rgb = torch.cat([rgb, (rast[..., 3:] > 0).float()], dim=-1)
    out = antialias(rgb, rast, clip, faces)
    grad, = torch.autograd.grad(out[..., 3].sum(), clip, retain_graph=True)
    return out.detach(), grad


def _agree(a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor],
           share: float, cosine: float) -> None:
    assert ((a[0] - b[0]).abs() < 0.05).float().mean() > share
    cos = torch.nn.functional.cosine_similarity(a[1].flatten(), b[1].flatten(), dim=0)
    assert cos > cosine, cos


@needs_nvdiffrast
def test_nvdiffrast_rasterizes_as_the_reference_does_and_antialias_runs_on_it():
    """Its rows flipped to ours: the same triangle per pixel but at shared edges (ties go
    either way), the same (u, v, z/w) there, and our antialiasing on its ``rast`` gives
    the silhouettes and vertex gradients it gives on the reference's."""
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.6)     # closed, 1280 faces
    clip, faces = _clip(sphere, "cuda")
    clip.requires_grad_(True)
    theirs = mr.rasterize(clip, faces, (48, 64), backend="nvdiffrast")
    ours = mr.rasterize(clip, faces, (48, 64), backend="torch")
    same = theirs[..., 3] == ours[..., 3]
    assert same.float().mean() > 0.97 and (ours[..., 3] > 0).float().mean() > 0.2
    hit = same & (ours[..., 3] > 0)
    assert torch.allclose(theirs[hit][:, :3], ours[hit][:, :3], atol=1e-4)
    _agree(_coverage_and_gradient(mr.antialias, clip, theirs, faces),
           _coverage_and_gradient(mr.antialias, clip, ours, faces), 0.99, 0.9)


@needs_nvdiffrast
def test_antialias_matches_nvdiffrasts_where_triangles_are_larger_than_pixels():
    """nvdiffrast's own ``antialias`` (rows flipped to ours and back) looks for the edge among
    the silhouette edges of the covered pixel's triangle only; on a box of 12 faces, whose
    triangles are far larger than pixels, that triangle owns the edge, and the two blend
    alike (on a CPU, the same search written in PyTorch gave 99.9% of pixels alike and
    gradient cosine 0.999). On sub-pixel triangles they part (``test_mesh_raster``)."""
    import nvdiffrast.torch as dr
    import trimesh

    def theirs(colour, rast, clip, faces):
        out = dr.antialias(colour.flip(1).contiguous(), rast.flip(1).contiguous(),
                           clip.contiguous(), faces.to(torch.int32).contiguous())
        return out.flip(1)

    clip, faces = _clip(trimesh.creation.box(extents=(0.8, 0.8, 0.8)), "cuda")
    clip.requires_grad_(True)
    rast = mr.rasterize(clip, faces, (96, 128), backend="nvdiffrast")
    _agree(_coverage_and_gradient(theirs, clip, rast, faces),
           _coverage_and_gradient(mr.antialias, clip, rast, faces), 0.99, 0.95)


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
    assert mr.resolve_backend("auto", torch.device("cpu"))[0] in ("cpp", "torch")
    with pytest.raises(RuntimeError, match="CUDA only"):
        mr.resolve_backend("nvdiffrast", torch.device("cpu"))
