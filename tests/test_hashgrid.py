import math

import pytest
import torch

from dreamfusion.nerf.hashgrid import HashGridEncoding, level_layouts


def test_layout_follows_tiny_cuda_nn():
    layouts = level_layouts(16, 19, 16, 1.447269237440378)
    # level 0: scale 15, resolution 16, 16^3 = 4096 rows, dense
    assert (layouts[0].resolution, layouts[0].size, layouts[0].dense) == (16, 4096, True)
    for lay in layouts:
        assert lay.resolution == math.ceil(lay.scale) + 1
        assert lay.size % 8 == 0 and lay.size <= 1 << 19
        assert lay.dense == (lay.resolution ** 3 <= lay.size)
    assert not layouts[-1].dense and layouts[-1].size == 1 << 19
    offsets = [lay.offset for lay in layouts]
    assert offsets == [sum(lay.size for lay in layouts[:i]) for i in range(16)]


def test_corner_lookup_matches_hand_computation():
    enc = HashGridEncoding(n_levels=2, features=1, table_size_log2=10, base_resolution=4,
                           growth=8.0, backend="torch")
    coarse, fine = enc.layouts
    assert coarse.dense and not fine.dense
    with torch.no_grad():
        enc.params.copy_(torch.arange(enc.params.shape[0], dtype=torch.float32).unsqueeze(1))
    # x = 0 sits at the centre of cell (0, 0, 0) of every level (the +0.5 offset), so each
    # level returns the mean of its 8 corner rows
    x = torch.tensor([[0.0, 0.0, 0.0]])
    # coarse: pos = 0 * 3 + 0.5 -> cell 0, frac 0.5 in each dim: the mean of 8 dense rows
    cells = [(i, j, k) for i in (0, 1) for j in (0, 1) for k in (0, 1)]
    r = coarse.resolution
    dense_rows = [i + j * r + k * r * r for i, j, k in cells]

    def tcnn_hash(i, j, k):
        return ((i * 1) ^ ((j * 2654435761) & 0xFFFFFFFF) ^ ((k * 805459861) & 0xFFFFFFFF)) % fine.size

    fine_rows = [fine.offset + tcnn_hash(*c) for c in cells]
    out = enc(x)
    assert out[0, 0].item() == pytest.approx(sum(dense_rows) / 8)
    assert out[0, 1].item() == pytest.approx(sum(fine_rows) / 8)


def test_gradcheck_small_grid():
    enc = HashGridEncoding(n_levels=3, features=2, table_size_log2=8, base_resolution=2,
                           growth=2.0, backend="torch").double()
    with torch.no_grad():
        enc.params.uniform_(-1, 1)
    # steps of 1e-6 almost never cross a cell face, where the interpolant has kinks
    x = (torch.rand(20, 3, dtype=torch.float64) * 0.8 + 0.1).requires_grad_(True)
    params = enc.params

    def fn(p, pts):
        return torch.func.functional_call(enc, {"params": p}, (pts,))

    assert torch.autograd.gradcheck(fn, (params.detach().clone().requires_grad_(True), x),
                                    eps=1e-6, atol=1e-5)
    # double backward, which the normals of the density field need
    assert torch.autograd.gradgradcheck(fn, (params.detach().clone().requires_grad_(True), x),
                                        eps=1e-6, atol=1e-5)
