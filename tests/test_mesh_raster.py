"""The mesh rasteriser: nvdiffrast's conventions checked against ray casting through the
same cameras, the compiled kernel against its PyTorch twin, and the silhouette gradients
of antialiasing against finite differences."""
import pytest
import torch

from dreamfusion.rendering import mesh_raster as mr
from dreamfusion.rendering.cameras import Cameras, orbit


def _clip(cams: Cameras, vertices: torch.Tensor) -> torch.Tensor:
    return mr.project(vertices, cams.world_to_clip())


def _soup(n_faces: int, seed: int, spread: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = (torch.rand(n_faces, 1, 3, generator=g) - 0.5) * 2 * spread
    vertices = (centres + 0.25 * torch.randn(n_faces, 3, 3, generator=g)).reshape(-1, 3)
    return vertices, torch.arange(3 * n_faces).view(-1, 3)


def _ray_cast(cams: Cameras, vertices, faces, height, width):
    """Nearest hit per pixel by Moller-Trumbore, in float64: face + 1 (0: none), the hit's
    barycentric weights of vertices 0 and 1, and its distance along the ray."""
    origins, dirs = cams.rays(height, width)
    o, d = origins.double().reshape(-1, 1, 3), dirs.double().reshape(-1, 1, 3)
    v = vertices.double()[faces]                                    # (F, 3, 3)
    e1, e2 = v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]
    p = torch.cross(d.expand(-1, len(faces), -1), e2.expand(len(o), -1, -1), dim=-1)
    det = (e1 * p).sum(-1)
    s = o - v[:, 0]
    w1 = (s * p).sum(-1) / det
    q = torch.cross(s, e1.expand(len(o), -1, -1), dim=-1)
    w2 = (d * q).sum(-1) / det
    t = (e2 * q).sum(-1) / det
    hit = (w1 >= 0) & (w2 >= 0) & (w1 + w2 <= 1) & (t > 0)
    t = torch.where(hit, t, torch.full_like(t, float("inf")))
    best = t.argmin(-1)
    rows = torch.arange(len(o))
    found = torch.isfinite(t[rows, best])
    # the hit is w0 v0 + w1 v1 + w2 v2 with w0 = 1 - w1 - w2
    u = (1 - w1 - w2)[rows, best]
    return (torch.where(found, best + 1, 0).view(len(cams), height, width),
            u.view(len(cams), height, width), w1[rows, best].view(len(cams), height, width),
            t[rows, best].view(len(cams), height, width))


def test_rasterize_agrees_with_ray_casting_through_the_same_cameras():
    """Coverage, perspective-correct (u, v) of vertices 0 and 1, and z/w from the distance,
    per pixel centre, with row 0 at the top of the image (NDC y = +1)."""
    vertices, faces = _soup(30, seed=1)
    cams = Cameras(torch.tensor([10.0, 130.0]), torch.tensor([20.0, -5.0]),
                   torch.tensor([2.3, 2.0]), torch.tensor([40.0, 50.0]))
    height, width = 24, 32
    rast = mr.rasterize(_clip(cams, vertices.double()), faces, (height, width))
    ids, u, v, t = _ray_cast(cams, vertices, faces, height, width)
    same = rast[..., 3].long() == ids
    assert same.float().mean() > 0.995                      # exact but for grazing edges
    hit = same & (ids > 0)
    assert hit.sum() > 200
    assert torch.allclose(rast[..., 0][hit], u[hit], atol=2e-5)
    assert torch.allclose(rast[..., 1][hit], v[hit], atol=2e-5)
    # (the cameras are float32, so agreement is to float32 rounding)
    # z/w of a point at depth d along the camera's axis, near 0.05 and far 50
    forward = cams.basis()[0].double()
    _, dirs = cams.rays(height, width)
    depth = t * (dirs.double() * forward.view(-1, 1, 1, 3)).sum(-1)
    n, f = 0.05, 50.0
    zw = (f + n) / (f - n) - 2 * f * n / ((f - n) * depth)
    assert torch.allclose(rast[..., 2][hit], zw[hit], atol=1e-5)
    assert (rast[~(ids > 0) & same] == 0).all()


def test_interpolate_weights_vertex_0_by_u_and_vertex_1_by_v():
    vertices = torch.tensor([[0.0, -0.5, -0.4], [0.0, 0.5, -0.4], [0.0, 0.0, 0.5]])
    faces = torch.tensor([[0, 1, 2]])
    cams = orbit(1, 0.0, 2.0, 60.0)
    rast = mr.rasterize(_clip(cams, vertices), faces, (16, 16))
    attr = torch.eye(3)
    out = mr.interpolate(attr, rast, faces)
    hit = rast[..., 3] > 0
    assert torch.allclose(out[hit][:, 0], rast[..., 0][hit])
    assert torch.allclose(out[hit][:, 1], rast[..., 1][hit])
    assert torch.allclose(out[hit].sum(-1), torch.ones(int(hit.sum())))
    assert (out[~hit] == 0).all()
    # seen from +X, +Z is at the top (row 0) and +Y on the right: vertex 1 (y = +0.5) weighs
    # more on the right of a row
    assert rast[0, 6, 8, 3] == 1 and rast[0, 2, 8, 3] == 0 and rast[0, 15, 8, 3] == 0
    assert rast[0, 9, 10, 1] > 0.5 > rast[0, 9, 5, 1]


def test_texture_reads_row_0_at_v_1():
    image = torch.tensor([[[1.0], [2.0]], [[3.0], [4.0]]])      # 2 x 2, one channel
    uv = torch.tensor([[[[0.25, 0.75], [0.75, 0.25]]]])          # (1, 1, 2, 2)
    out = mr.texture(image, uv)
    assert out.flatten().tolist() == [1.0, 4.0]


def _kernel_or_skip():
    backend, line = mr.resolve_backend("auto", torch.device("cpu"))
    if backend != "cpp":
        pytest.skip(line)


@pytest.mark.parametrize("n_faces,size", [(400, (37, 53)), (3000, (64, 64))])
def test_the_kernel_finds_the_references_triangles_exactly(n_faces, size):
    """Ids equal pixel for pixel: both windings, triangles off the frame, and ties (every
    face drawn twice, so the smaller id must win where depths are equal)."""
    _kernel_or_skip()
    vertices, faces = _soup(n_faces, seed=2, spread=0.9)
    # each face again (exact ties: the first must win) and wound the other way
    faces = torch.cat([faces, faces, faces.flip(1)])
    cams = orbit(3, 25.0, 2.2, 45.0, start_azimuth=17.0)
    screen = mr.screen_vertices(_clip(cams, vertices), *size)
    ref = mr.triangle_ids(screen, faces, *size)
    fast = mr.kernel_ids(screen, faces, *size)
    assert torch.equal(ref, fast)
    assert (ref > 0).float().mean() > 0.3
    assert not ((ref > n_faces) & (ref <= 2 * n_faces)).any()


def _square(shift: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A square facing the camera at +X (two triangles), moved by ``shift`` along Y."""
    corners = torch.tensor([[0.0, -0.4, -0.4], [0.0, 0.4, -0.4], [0.0, 0.4, 0.4],
                            [0.0, -0.4, 0.4]], dtype=torch.float64)
    moved = corners + torch.stack([torch.zeros_like(shift), shift, torch.zeros_like(shift)])
    return moved, torch.tensor([[0, 1, 2], [0, 2, 3]])


def _weighted_coverage(shift: torch.Tensor) -> torch.Tensor:
    vertices, faces = _square(shift)
    cams = orbit(1, 0.0, 2.0, 60.0)
    clip = _clip(cams, vertices)
    rast = mr.rasterize(clip, faces, (20, 20))
    mask = (rast[..., 3:] > 0).to(clip.dtype)
    soft = mr.antialias(mask, rast, clip, faces)
    ramp = torch.linspace(0.0, 1.0, 20, dtype=clip.dtype).view(1, 1, 20, 1)
    return (soft * ramp).sum()


def test_antialias_gives_silhouettes_the_gradient_of_their_covered_area():
    """Without antialiasing a hard mask has no gradient in the square's position; with it,
    the gradient is the finite difference of the antialiased image (piecewise linear in
    the edges' positions between pixel centres)."""
    shift = torch.tensor(0.013, dtype=torch.float64, requires_grad=True)
    _weighted_coverage(shift).backward()
    h = 1e-4
    with torch.no_grad():
        fd = (_weighted_coverage(shift + h) - _weighted_coverage(shift - h)) / (2 * h)
    assert abs(float(fd)) > 1.0
    assert torch.allclose(shift.grad, fd, rtol=1e-4)


def test_antialias_leaves_edges_between_faces_that_face_the_same_way():
    """The square's diagonal is not a silhouette: only pixels at its outline change."""
    vertices, faces = _square(torch.tensor(0.013, dtype=torch.float64))
    cams = orbit(1, 0.0, 2.0, 60.0)
    clip = _clip(cams, vertices)
    rast = mr.rasterize(clip, faces, (20, 20))
    colour = (rast[..., 3:] > 0).to(clip.dtype)
    out = mr.antialias(colour, rast, clip, faces)
    changed = (out != colour).squeeze(-1)[0]
    ids = rast[0, ..., 3]
    inner = (ids[1:-1, 1:-1] > 0) & (ids[:-2, 1:-1] > 0) & (ids[2:, 1:-1] > 0) \
        & (ids[1:-1, :-2] > 0) & (ids[1:-1, 2:] > 0)
    assert changed.any() and not changed[1:-1, 1:-1][inner].any()


def test_edge_neighbours_on_a_closed_and_an_open_surface():
    tetra = torch.tensor([[0, 2, 1], [0, 1, 3], [1, 2, 3], [0, 3, 2]])
    n = mr.edge_neighbours(tetra)
    assert (n >= 0).all()
    for f in range(4):
        for k in range(3):
            a, b = tetra[f, (k + 1) % 3], tetra[f, (k + 2) % 3]
            assert {int(a), int(b)} <= set(tetra[n[f, k]].tolist()) and n[f, k] != f
    assert (mr.edge_neighbours(torch.tensor([[0, 1, 2]])) == -1).all()


def _sphere_coverage(scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.5)    # 5,120 faces
    vertices = torch.tensor(sphere.vertices, dtype=torch.float64) * scale
    faces = torch.tensor(sphere.faces)
    clip = _clip(orbit(1, 20.0, 2.3, 40.0), vertices)
    rast = mr.rasterize(clip, faces, (48, 48))
    mask = (rast[..., 3:] > 0).to(clip.dtype)
    return mask, mr.antialias(mask, rast, clip, faces)


def test_antialias_finds_silhouettes_of_triangles_smaller_than_pixels():
    """A sphere of 5,120 faces seen at 48 pixels (about a quarter of a pixel a face, as a
    DMTet surface at 64): the triangle at an outline pixel's centre seldom owns the
    silhouette edge. Its outline is still blended and its covered area still has a
    gradient, of the sign and size of the area's own: nvdiffrast's blend counts a slanted
    edge in both its row and its column pairs, so the analytic derivative of the hard
    coverage (2 area / scale) is between one and three times smaller."""
    scale = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    mask, soft = _sphere_coverage(scale)
    m = mask[0, ..., 0].bool()
    outline = (m[:, 1:] != m[:, :-1]).sum() + (m[1:, :] != m[:-1, :]).sum()
    changed = int((soft != mask).sum())
    assert changed > 0.5 * int(outline)            # before this check: none of 120
    soft.sum().backward()
    area = float(mask.sum())
    assert 2 * area < float(scale.grad) < 3 * 2 * area, (float(scale.grad), area)
