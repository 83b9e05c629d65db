"""The mesh stage: the tetrahedral grid, marching tetrahedra, the mesh regularizers, the
refine command's refusals and, end to end (slow), refine -> SIGKILL -> resume."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import trimesh

from dreamfusion.cli import main
from dreamfusion.mesh.geometry import laplacian, normal_consistency, face_normals
from dreamfusion.mesh.marching_tets import _TABLE, EDGES, marching_tets
from dreamfusion.mesh.tets import lattice, tetrahedra
from dreamfusion.pipeline.checkpoint import read_checkpoint
from dreamfusion.rendering.mesh_raster import edge_neighbours

from conftest import FAST, assert_same_state, fast_run, one_line_error


def test_the_grid_is_conforming_and_positively_oriented():
    n = 3
    points, tets = lattice(n, 1.0), tetrahedra(n)
    assert tets.shape == (6 * n ** 3, 4) and points.shape == ((n + 1) ** 3, 3)
    p = points[tets].double()
    volume = torch.linalg.det(p[:, 1:] - p[:, :1]) / 6
    assert (volume > 0).all() and torch.isclose(volume.sum(), torch.tensor(8.0, dtype=torch.float64))
    # every triangle is shared by two tetrahedra, or lies on the box's surface
    tris = torch.cat([tets[:, [1, 2, 3]], tets[:, [0, 2, 3]], tets[:, [0, 1, 3]],
                      tets[:, [0, 1, 2]]]).sort(-1).values
    _, counts = torch.unique(tris, dim=0, return_counts=True)
    boundary = 6 * 2 * n ** 2                   # two triangles per cell face on the surface
    assert (counts <= 2).all() and int((counts == 1).sum()) == boundary
    assert torch.equal(tetrahedra(n), tets)      # deterministic


def test_each_case_cuts_exactly_the_edges_whose_ends_differ():
    for case in range(16):
        inside = {k for k in range(4) if case >> k & 1}
        used = {int(e) for e in _TABLE[case].flatten() if e >= 0}
        crossing = {i for i, (a, b) in enumerate(EDGES) if (a in inside) != (b in inside)}
        assert used == crossing


def test_marching_a_sphere_gives_one_closed_outward_surface_on_it():
    points, tets = lattice(24, 1.0), tetrahedra(24)
    sdf = (points.norm(dim=-1) - 0.6).requires_grad_(True)
    vertices, faces = marching_tets(points, sdf, tets)
    mesh = trimesh.Trimesh(vertices.detach().numpy(), faces.numpy(), process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent and len(mesh.split()) == 1
    assert mesh.volume > 0.95 * 4 / 3 * torch.pi * 0.6 ** 3     # outward, and round
    radius = vertices.detach().norm(dim=-1)
    assert (radius - 0.6).abs().max() < 0.01                   # linear crossings of a linear SDF
    vertices.sum().backward()
    assert torch.isfinite(sdf.grad).all() and sdf.grad.abs().sum() > 0


def test_normal_consistency_and_laplacian_are_zero_on_a_plane_and_positive_on_a_fold():
    grid = torch.stack(torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij"), -1)
    flat = torch.cat([grid.reshape(-1, 2), torch.zeros(16, 1)], dim=-1)
    quads = [(4 * i + j, 4 * i + j + 1, 4 * i + j + 5, 4 * i + j + 4)
             for i in range(3) for j in range(3)]
    faces = torch.tensor([f for a, b, c, d in quads for f in ((a, b, c), (a, c, d))])
    n = edge_neighbours(faces)
    assert float(normal_consistency(face_normals(flat, faces), n)) < 1e-7
    folded = flat.clone()
    folded[:, 2] = (folded[:, 0] - 1.5).abs()
    assert float(normal_consistency(face_normals(folded, faces), n)) > 0.05
    interior = laplacian(flat, faces, 1.0)
    assert float(laplacian(folded + 0.3 * torch.rand_like(folded), faces, 1.0)) > float(interior)


class _SoftBall(torch.nn.Module):
    """A density falling smoothly from the centre, as a trained NeRF's does at its edge."""
    bound = 1.0

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def density(self, points: torch.Tensor) -> torch.Tensor:
        return 50.0 * torch.exp(-(points.norm(dim=-1) / 0.5) ** 4)

    def albedo(self, points: torch.Tensor) -> torch.Tensor:
        return torch.full_like(points, 0.5)


def test_the_starting_level_is_the_one_whose_surface_covers_the_renders():
    from dreamfusion.export.mesh import extract_mesh
    from dreamfusion.mesh.scene import LEVEL_FRACTIONS, matched_level, source_grid
    from dreamfusion.rendering import mesh_raster as mr
    from dreamfusion.rendering.cameras import orbit

    ball, level = _SoftBall(), 25.0
    cams = orbit(4, 20.0, 2.3, 40.0)
    truth = extract_mesh(ball, 96, level * LEVEL_FRACTIONS[8])        # a quarter: wider
    clip = mr.project(torch.as_tensor(truth.vertices), cams.world_to_clip())
    target = mr.rasterize(clip, torch.as_tensor(truth.faces), (48, 48))[..., 3] > 0
    grid = source_grid(ball, 48)
    assert grid.values.shape == (97,) * 3 and grid.stride == 2
    found, iou = matched_level(grid, level, cams, target, "torch")
    assert found == pytest.approx(level * LEVEL_FRACTIONS[8]) and iou > 0.999
    assert matched_level(grid, 1e6, cams, target, "torch") == (1e6, -1.0)   # nothing solid


class _Shell(_SoftBall):
    """Density only between radii 0.3 and 0.6: a field grown as a hollow shell."""

    def density(self, points: torch.Tensor) -> torch.Tensor:
        r = points.norm(dim=-1)
        return 100.0 * torch.sigmoid(40.0 * (r - 0.3)) * torch.sigmoid(40.0 * (0.6 - r))


@pytest.mark.parametrize("grid_bound", [1.0, 1.2])     # the grid's samples, or the lattice's
def test_the_starting_sdf_fills_a_shells_hollow(grid_bound):
    from dreamfusion.mesh.geometry import MeshGeometry
    from dreamfusion.mesh.scene import SourceGrid, initialise, source_grid
    from dreamfusion.nerf.hashgrid import HashGridEncoding

    shell = _Shell()
    encoding = HashGridEncoding(n_levels=2, features=2, table_size_log2=8, base_resolution=4,
                                growth=2.0, backend="torch")
    geometry = MeshGeometry(16, 1.0, encoding, 8, 50.0)
    grid = source_grid(shell, 16)
    if grid_bound != 1.0:
        grid = SourceGrid(grid.values, grid.stride, grid_bound)
    initialise(geometry, shell, grid, 50.0, 1, 0.01, 0)
    vertices, faces = (t.detach().numpy() for t in geometry.surface())
    pieces = trimesh.Trimesh(vertices, faces).split(only_watertight=False)
    assert len(pieces) == 1 and pieces[0].volume > 0
    inside = geometry.sdf.detach() < 0
    assert torch.equal(inside, geometry.lattice.norm(dim=-1) < 0.6)      # the hollow too


def test_refine_refuses_what_it_cannot_refine_and_creates_nothing(tmp_path, capsys):
    assert main(["refine", str(tmp_path / "nope")]) == 2
    assert "no such folder" in one_line_error(capsys)
    (tmp_path / "empty").mkdir()
    assert main(["refine", str(tmp_path / "empty")]) == 2
    assert "not a run folder" in one_line_error(capsys)
    run_dir = fast_run(tmp_path / "runs")
    before = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*"))
    for override, words in (("refine.tet_resolution=2", "refine.tet_resolution"),
                            ("refine.render_size=99999", "refine.render_size"),
                            ("refine.backend=cuda", "refine.backend"),
                            ("refine.backend=nvdiffrast", "nvdiffrast needs a CUDA device"),
                            ("refine.normal_consistency=-1", "refine.normal_consistency"),
                            ("refine.shading={albedo:0.5,lambertian:0.6,textureless:0.0}",
                             "refine.shading"),
                            ("refine.shading={albedo:1.0}", "refine.shading")):
        assert main(["refine", str(run_dir), override]) == 2
        assert words in one_line_error(capsys)
    assert sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")) == before


def test_a_run_with_no_surface_is_refused_with_a_suggestion(tmp_path, capsys):
    # a density threshold no density reaches: the first stage holds nothing solid
    run_dir = fast_run(tmp_path / "runs", "export.threshold=1e9")
    assert main(["refine", str(run_dir), *_TINY_REFINE]) == 2
    err = one_line_error(capsys)
    assert "no surface to refine" in err and "train it longer" in err
    assert not (run_dir / "refine").exists()


def test_a_mesh_config_without_a_first_stage_is_refused(tmp_path, capsys):
    assert main(["run", "a red cube", "representation=mesh", *FAST,
                 f"output.root={tmp_path}"]) == 2
    assert "dreamfusion refine" in one_line_error(capsys)
    assert not any(tmp_path.iterdir())


# a refine stage of seconds: a 12-cell grid, 24-pixel renders
_TINY_REFINE = ["refine.steps=8", "refine.render_size=24", "refine.tet_resolution=12",
                "refine.colour_fit_steps=20", "refine.colour_grid.n_levels=4",
                "refine.colour_grid.table_size_log2=12", "refine.normal_consistency=0.1",
                "refine.laplacian=0.01", "refine.offset_decay=0.01", "checkpoint.every=3"]


def _refine_cmd(source: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "dreamfusion", "refine", str(source), "--quiet",
            *_TINY_REFINE, *extra]


@pytest.mark.slow
def test_refine_writes_a_closed_textured_run_and_resumes_bit_exactly(tmp_path):
    """A NeRF run refined: its own run folder inside the first, a welded watertight GLB in
    one piece, the regularizers logged per step; a refine killed mid-run and resumed ends
    where an uninterrupted one does."""
    source = fast_run(tmp_path / "runs", "steps=40", "export.enabled=true")
    done = subprocess.run(_refine_cmd(source), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    (first,) = (source / "refine").iterdir()
    for name in ("config.yaml", "metrics.jsonl", "turntable.gif", "model.glb", "model.obj",
                 "texture.png", "summary.json"):
        assert (first / name).is_file(), name
    summary = json.loads((first / "summary.json").read_text())
    assert summary["representation"] == "mesh" and summary["steps"] == 8
    from dreamfusion.config import load_config

    stage = load_config(str(first / "config.yaml"))      # the toy stage's shading mix
    assert (stage.shading.albedo, stage.shading.lambertian) == (0.0, 1.0)
    assert "starting surface: density level" in (first / "run.log").read_text()
    mesh = trimesh.load(first / "model.glb", force="mesh")
    mesh.merge_vertices(merge_tex=True, merge_norm=True)
    assert mesh.is_watertight and len(mesh.split()) == 1
    step = json.loads((first / "metrics.jsonl").read_text().splitlines()[0])
    assert {"sds", "normal_consistency", "laplacian", "offset_decay"} <= set(step["terms"])
    glb = (first / "model.glb").read_bytes()
    again = subprocess.run([sys.executable, "-m", "dreamfusion", "export", str(first)],
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert (first / "model.glb").read_bytes() == glb         # the same mesh, exported again

    killed = subprocess.run(_refine_cmd(source, "faults.kill_at_step=5"), capture_output=True,
                            text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr
    (second,) = [p for p in (source / "refine").iterdir() if p != first]
    # a refine run resumed as a first stage is refused; as itself it finishes
    as_nerf = subprocess.run([sys.executable, "-m", "dreamfusion", "run", "--resume",
                              str(second), "representation=nerf"], capture_output=True, text=True)
    assert as_nerf.returncode == 2 and "representation" in as_nerf.stderr
    resumed = subprocess.run([sys.executable, "-m", "dreamfusion", "run", "--resume",
                              str(second), "--quiet"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    final = "checkpoints/step_000008.pt"
    assert_same_state(read_checkpoint(first / final), read_checkpoint(second / final))


@pytest.mark.slow
def test_bench_refine_scores_both_stages(tmp_path):
    """One caption, one seed, tiny settings: a row per stage, with the meshes checked."""
    assert main(["bench", "refine", "--config", "toy", "--prompts", "a red cube", "--seeds", "0",
                 "--results", str(tmp_path / "res"), "--runs", str(tmp_path / "runs"),
                 *FAST, "steps=40", *_TINY_REFINE]) == 0
    summary, table = (tmp_path / "res" / "refine.md").read_text().split("## Every run")
    assert summary.count("| nerf | a red cube | 1 |") == 1        # one caption, one seed
    rows = [line for line in table.splitlines() if line.startswith("| nerf | a red cube")]
    assert [row.split(" | ")[3] for row in rows] == ["first", "mesh"]
    assert "yes (1)" in rows[1]                 # the refined mesh: closed, one piece
    cosines = [float(row.split(" | ")[7]) for row in rows]     # mostly facing the right way
    assert all(0.5 < c <= 1.0 for c in cosines), rows
    assert all(float(row.split(" | ")[-1].strip(" |")) > 0 for row in rows)   # peak GB
    import imageio.v3 as iio

    strip = iio.imread(tmp_path / "res" / "images" / "refine" / "nerf" / "a-red-cube-seed0.png")
    assert strip.shape == (128, 8 * 64, 3)      # the first stage above its mesh stage
    assert (strip[:64] != strip[64:]).any()


def test_refine_summary_names_the_targets_each_caption_misses():
    """Means over seeds, the worst seed, and every missed target, from the bench's rows."""
    from dreamfusion.bench.refine import summary_table

    def row(stage, chamfer, iou=0.95, colour=0.02, closed=True, pieces=1, train=20.0, total=25.0):
        return {"representation": "nerf", "prompt": "a red cube", "stage": stage,
                "chamfer_share": chamfer, "best_yaw_iou": iou, "colour_error": colour,
                "closed": closed, "pieces": pieces, "train_seconds": train, "total_seconds": total}

    good = [row("first", 0.02), row("mesh", 0.008, total=18.0),
            row("first", 0.03), row("mesh", 0.009, total=18.0)]
    line = summary_table(good).splitlines()[-1]
    assert "2.50% -> 0.85%" in line and "0.90%" in line and line.endswith("| none |"), line
    bad = good[:2] + [row("first", 0.015), row("mesh", 0.011, iou=0.92, colour=0.05,
                                                 pieces=2, total=30.0)]
    line = summary_table(bad).splitlines()[-1]
    assert line.endswith("| Chamfer, IoU, closed, colour, half, time |"), line


def test_the_surface_band_marches_what_the_whole_grid_marches_and_refreshes_only_when_needed():
    from dreamfusion.mesh.marching_tets import SurfaceBand

    points, tets = lattice(12, 1.0), tetrahedra(12)
    cell = 2.0 / 12
    band = SurfaceBand(tets, 2.0 * cell)
    g = torch.Generator().manual_seed(0)
    sdf = points.norm(dim=-1) - 0.5
    for step in range(12):
        if step == 8:               # a jump far from the surface: a new blob appears
            sdf = torch.minimum(sdf, (points - torch.tensor([0.8, 0.8, 0.8])).norm(dim=-1) - 0.1)
        else:                       # small steps, as training takes
            sdf = sdf + 0.05 * cell * torch.randn(sdf.shape, generator=g)
        full = marching_tets(points, sdf, tets)
        banded = marching_tets(points, sdf, band.select(sdf))
        assert torch.equal(full[0], banded[0]) and torch.equal(full[1], banded[1])
        assert len(band.select(sdf)) < len(tets) / 2
        if step == 7:
            assert band.refreshes == 1      # small steps never left the band
    assert band.refreshes == 2
