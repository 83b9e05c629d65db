import numpy as np
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


def test_axes_for_gltf():
    # world Z-up, front +X  ->  glTF Y-up, front +Z
    up, front = np.array([[0.0, 0.0, 1.0]]), np.array([[1.0, 0.0, 0.0]])
    assert np.allclose(world_to_gltf(up), [[0, 1, 0]])
    assert np.allclose(world_to_gltf(front), [[0, 0, 1]])
    basis = world_to_gltf(np.eye(3))
    assert np.isclose(np.linalg.det(basis), 1.0)       # a rotation, no mirror


def test_empty_field_is_a_clear_error():
    field = SphereField(radius=0.5, sigma=1.0)
    with pytest.raises(UserError, match="empty.*range.*export.threshold="):
        extract_mesh(field, 16, threshold=auto_threshold(0.027))
