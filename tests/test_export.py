import numpy as np
import torch
from PIL import Image
import pytest
import trimesh

from dreamfusion.errors import UserError
from dreamfusion.export.mesh import auto_threshold, extract_mesh
from dreamfusion.export.writers import world_to_gltf, write_meshes

from fields import SphereField


def test_sphere_mesh_is_accurate_and_outward(tmp_path):
    field = SphereField(radius=0.5, sigma=100.0, sharpness=20.0)
    mesh = extract_mesh(field, 64, threshold=50.0)
    error = np.abs(np.linalg.norm(mesh.vertices, axis=1) - 0.5)
    assert error.max() < 0.01 and error.mean() < 0.002   # under 1% of the object's size
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    assert tm.is_watertight and tm.volume > 0          # closed, normals pointing out
    assert mesh.colors.shape == (len(mesh.vertices), 3)
    paths = write_meshes(mesh, tmp_path, ["glb", "obj"])
    for path in paths:
        loaded = trimesh.load(path, force="mesh", process=False)
        assert len(loaded.vertices) == len(mesh.vertices) and len(loaded.faces) == len(mesh.faces)
        assert np.allclose(np.linalg.norm(loaded.vertices, axis=1).mean(), 0.5, atol=0.01)


def test_a_shell_meshes_as_one_outward_piece_and_a_torus_keeps_its_hole():
    from dreamfusion.export.mesh import grid_surface

    axis = np.linspace(-1.0, 1.0, 49)
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    radius = np.sqrt(x ** 2 + y ** 2 + z ** 2)
    shell = 100.0 * ((radius > 0.3) & (radius < 0.6))        # a Gaussian field grown as a shell
    vertices, faces = grid_surface(shell.astype(np.float32), 1.0, 50.0)
    pieces = trimesh.Trimesh(vertices, faces).split(only_watertight=False)
    assert len(pieces) == 1 and pieces[0].volume > 0
    assert np.linalg.norm(vertices, axis=1).min() > 0.5        # no wall left around the hollow
    ring = np.sqrt((np.sqrt(x ** 2 + y ** 2) - 0.5) ** 2 + z ** 2)
    torus = (100.0 * (ring < 0.2)).astype(np.float32)
    vertices, faces = grid_surface(torus, 1.0, 50.0)
    mesh = trimesh.Trimesh(vertices, faces)
    assert mesh.is_watertight and mesh.euler_number == 0          # genus one: the hole is open


def test_axes_for_gltf():
    # world Z-up, front +X  ->  glTF Y-up, front +Z
    up, front = np.array([[0.0, 0.0, 1.0]]), np.array([[1.0, 0.0, 0.0]])
    assert np.allclose(world_to_gltf(up), [[0, 1, 0]])
    assert np.allclose(world_to_gltf(front), [[0, 0, 1]])
    basis = world_to_gltf(np.eye(3))
    assert np.isclose(np.linalg.det(basis), 1.0)       # a rotation, no mirror


def test_empty_field_is_a_clear_error():
    field = SphereField(radius=0.5, sigma=1.0)
    with pytest.raises(UserError, match="empty.*range.*try a threshold of .*export.threshold"):
        extract_mesh(field, 16, threshold=auto_threshold(0.027))


def test_sphere_export_is_within_one_percent_chamfer_and_textured(tmp_path):
    from dreamfusion.export.mesh import chamfer_distance, surface_samples
    from dreamfusion.export.pipeline import ExportSettings, export_field

    field = SphereField(radius=0.5, sigma=100.0, sharpness=20.0)
    written = export_field(field, ExportSettings(64, 50.0, ("glb", "obj"), 128, 0, 0.05),
                           tmp_path)
    assert {p.name for p in written} == {"model.glb", "model.obj", "model.mtl", "texture.png"}
    loaded = trimesh.load(tmp_path / "model.obj", force="mesh", process=False)
    ours = surface_samples(extract_mesh(field, 64, 50.0), 20000)
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(20000, 3))
    truth = 0.5 * truth / np.linalg.norm(truth, axis=1, keepdims=True)
    assert chamfer_distance(ours, truth) < 0.01 * 1.0            # under 1% of the diameter
    assert len(loaded.faces) > 0 and loaded.visual.uv.shape == (len(loaded.vertices), 2)
    texture = np.asarray(Image.open(tmp_path / "texture.png"))
    assert texture.shape == (128, 128, 3)
    # the texture holds the albedo field: texels sampled at the mesh's UVs match it
    uv = loaded.visual.uv
    px = np.clip((uv * 128 - 0.5).round().astype(int), 0, 127)
    sampled = texture[127 - px[:, 1], px[:, 0]] / 255.0
    expected = field.albedo(torch.as_tensor(loaded.vertices[:, [2, 0, 1]],
                                            dtype=torch.float32)).numpy()
    assert np.abs(sampled - expected).mean() < 0.03


def test_texture_rasterizer_and_dilation_cover_a_triangle_and_its_border():
    from dreamfusion.export.texture import dilate, rasterize_uv

    uvs = np.array([[0.1, 0.1], [0.9, 0.1], [0.1, 0.9]], dtype=np.float32)
    face_of, bary = rasterize_uv(uvs, np.array([[0, 1, 2]]), 32)
    covered = face_of >= 0
    assert abs(covered.mean() - 0.32) < 0.03                      # the triangle's area
    assert np.allclose(bary[covered].sum(axis=1), 1.0, atol=1e-5)
    assert covered[31 - 4, 4] and not covered[4, 28]             # row 0 is v = 1
    image = np.where(covered[..., None], 1.0, 0.0).astype(np.float32)
    grown = dilate(image, covered, 2)
    ring = ~covered & (np.roll(covered, 1, 0) | np.roll(covered, -1, 0)
                       | np.roll(covered, 1, 1) | np.roll(covered, -1, 1))
    assert np.allclose(grown[ring], 1.0) and np.allclose(grown[covered], 1.0)


def test_floaters_are_dropped_and_decimation_caps_faces():
    from dreamfusion.export.mesh import Mesh, decimate, keep_large_components

    big = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    small = trimesh.creation.icosphere(subdivisions=0, radius=0.05)     # 20 faces: 1.6%
    small.apply_translation([0.8, 0, 0])
    both = trimesh.util.concatenate([big, small])
    mesh = Mesh(both.vertices.astype(np.float32), both.faces.astype(np.int64),
                np.full((len(both.vertices), 3), 0.5, dtype=np.float32))
    kept = keep_large_components(mesh, 0.05)
    assert len(kept.faces) == len(big.faces) and np.abs(kept.vertices).max() <= 0.5 + 1e-6
    fewer = decimate(kept, 200)
    assert 0 < len(fewer.faces) <= 200 and fewer.colors.shape == (len(fewer.vertices), 3)
