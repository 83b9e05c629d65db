"""The compiled CPU kernel against the PyTorch reference: outputs and gradients."""
import pytest
import torch

from dreamfusion.nerf.field import NeRFField
from dreamfusion.nerf.hashgrid import HashGridEncoding
from dreamfusion.nerf.hashgrid_cpp import CppHashGrid, load_kernel, unavailable_reason

pytestmark = pytest.mark.skipif(load_kernel() is None,
                                reason=f"the CPU kernel cannot be built here: {unavailable_reason()}")

# 16 x 2 x 2^19 (DreamFusion's: dense coarse levels, then hashed ones) and a small grid
# with 4 features per level and a 2^12 table
GRIDS = [(16, 2, 19, 16, 1.447269237440378), (6, 4, 12, 4, 1.8)]


def _pair(grid):
    torch.manual_seed(0)
    ref = HashGridEncoding(*grid, backend="torch")
    cpp = HashGridEncoding(*grid, backend="cpp")
    ref.params.data.uniform_(-1.0, 1.0)
    cpp.load_state_dict(ref.state_dict())
    return ref, cpp


def _points(n=4000):
    x = torch.rand(n, 3)
    corners = torch.tensor([[a, b, c] for a in (0.0, 1.0) for b in (0.0, 1.0) for c in (0.0, 1.0)])
    faces = torch.rand(64, 3)
    faces[torch.arange(64), torch.arange(64) % 3] = (torch.arange(64) % 2).float()
    return torch.cat([corners, faces, torch.tensor([[0.5, 0.5, 0.5], [1 - 1e-7, 1e-7, 0.25]]), x])


@pytest.mark.parametrize("grid", GRIDS)
def test_kernel_matches_the_reference_outputs_and_gradients(grid):
    ref, cpp = _pair(grid)
    assert 0 < ref.n_dense < ref.n_levels          # both index formulas are exercised
    x = _points()
    g = torch.randn(x.shape[0], ref.output_dim)
    out_ref, out_cpp = ref(x), cpp(x)
    scale = float(out_ref.detach().abs().max())
    assert torch.allclose(out_cpp, out_ref, rtol=1e-5, atol=1e-5 * scale)
    (out_ref * g).sum().backward()
    (out_cpp * g).sum().backward()
    assert torch.allclose(cpp.params.grad, ref.params.grad, rtol=1e-5,
                          atol=1e-5 * float(ref.params.grad.abs().max()))
    xr, xc = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    (ref(xr) * g).sum().backward()
    (CppHashGrid.apply(xc, cpp.params, cpp) * g).sum().backward()
    assert torch.allclose(xc.grad, xr.grad, rtol=1e-5, atol=1e-5 * float(xr.grad.abs().max()))


def test_kernel_wraps_points_outside_the_cube_as_the_reference_does():
    ref, cpp = _pair(GRIDS[0])
    x = torch.rand(500, 3) * 6.0 - 3.0        # dense indices below zero and past the table
    with torch.no_grad():
        out_ref, out_cpp = ref(x), cpp(x)
    assert torch.allclose(out_cpp, out_ref, rtol=1e-5, atol=1e-5 * float(out_ref.abs().max()))


def test_auto_uses_the_kernel_only_where_no_second_derivative_is_needed():
    _, cpp = _pair(GRIDS[1])
    x = torch.rand(10, 3)
    assert cpp._use_kernel(x)
    assert not cpp._use_kernel(x.clone().requires_grad_(True))   # normals inside the loss
    with torch.no_grad():
        assert cpp._use_kernel(x.clone().requires_grad_(True))
    assert not cpp._use_kernel(x.double())
    assert not HashGridEncoding(*GRIDS[1], backend="torch")._use_kernel(x)


def test_a_checkpoint_moves_between_backends(tmp_path):
    ref, _ = _pair(GRIDS[0])
    torch.save(ref.state_dict(), tmp_path / "grid.pt")
    auto = HashGridEncoding(*GRIDS[0], backend="auto")
    auto.load_state_dict(torch.load(tmp_path / "grid.pt", weights_only=True))
    x = torch.rand(500, 3)
    with torch.no_grad():
        assert torch.allclose(auto(x), ref(x), atol=1e-6)


def _fields(**grid_kw):
    torch.manual_seed(0)
    fields = []
    for backend in ("torch", "cpp"):
        enc = HashGridEncoding(6, 2, 12, 4, 1.8, backend=backend, **grid_kw)
        fields.append(NeRFField(1.0, enc, 16, 1, 5.0, 0.5, normals="finite_difference",
                                fd_eps=0.01))
    with torch.no_grad():
        fields[0].encoding.params.uniform_(-1.0, 1.0)
    fields[1].load_state_dict(fields[0].state_dict())
    return fields


def _close(a, b):
    return torch.allclose(a, b, rtol=1e-4, atol=1e-5 * max(float(b.detach().abs().max()), 1e-6))


@pytest.mark.parametrize("start_levels", [0, 3])
def test_finite_difference_normals_run_on_the_kernel_and_match_the_reference(
        start_levels, monkeypatch):
    ref, fast = _fields(start_levels=start_levels)
    calls = []
    original = CppHashGrid.apply
    monkeypatch.setattr(CppHashGrid, "apply", lambda *a: calls.append(1) or original(*a))
    x = torch.rand(3000, 3) * 1.6 - 0.8
    light = torch.nn.functional.normalize(torch.randn(3), dim=0)
    outs = []
    for field in (ref, fast):
        sigma, albedo, normals = field(x, with_normals=True)
        # a loss through density, albedo and the normals, as a lambertian step has
        ((normals @ light).clamp_min(0) * albedo.sum(-1) + 1e-3 * sigma).sum().backward()
        outs.append((sigma, albedo, normals))
    assert calls, "the kernel did not serve the finite-difference call"
    for r, f in zip(*outs):
        assert _close(f, r)
    for (name, p_ref), (_, p_fast) in zip(ref.named_parameters(), fast.named_parameters()):
        assert _close(p_fast.grad, p_ref.grad), name


def test_the_build_folder_is_keyed_by_torchs_install_and_the_compiler(monkeypatch):
    from dreamfusion.nerf import hashgrid_cpp

    key = hashgrid_cpp.build_key(True)
    assert key == hashgrid_cpp.build_key(True) and key != hashgrid_cpp.build_key(False)
    monkeypatch.setattr(torch, "__file__", "/another/venv/site-packages/torch/__init__.py")
    assert hashgrid_cpp.build_key(True) != key      # another venv's build.ninja is not ours
    monkeypatch.undo()
    monkeypatch.setenv("CXX", "clang++-that-is-not-here")
    assert hashgrid_cpp.build_key(True) != key      # another compiler


def test_the_kernel_is_decided_once_not_on_every_call(monkeypatch):
    calls = []
    real = HashGridEncoding.kernel_for
    monkeypatch.setattr(HashGridEncoding, "kernel_for",
                        lambda self, device: calls.append(device) or real(self, device))
    enc = HashGridEncoding(*GRIDS[1], backend="auto")
    assert calls == []                  # not at construction: the grid may go to CUDA first
    x = torch.rand(64, 3)
    with torch.no_grad():
        for _ in range(3):
            enc(x)
    assert calls == ["cpu"] and enc.active_backend == "cpp"  # at the first call, only then
    enc.to(torch.float32)                               # a move decides again, once
    enc(x)
    assert calls == ["cpu", "cpu"] and enc.active_backend == "cpp"
