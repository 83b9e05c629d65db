"""``model.ply`` in the layout of 3D Gaussian Splatting (Kerbl et al.), which SuperSplat,
the Blender add-ons and most splat viewers read: one binary little-endian ``vertex`` element
with float32 properties ``x y z nx ny nz f_dc_0..2 opacity scale_0..2 rot_0..3``, holding the
stored (pre-activation) values: log scales (``min_scale`` applied), logit opacity, the SH DC
coefficients and the quaternion ``w x y z``. The normals are zero, as 3DGS writes them.
Coordinates are this project's world: Z up, the object's front towards +X.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..utils.atomic import atomic_path
from .model import STATISTICS, Gaussians

FIELDS = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"]
          + [f"scale_{i}" for i in range(3)] + [f"rot_{i}" for i in range(4)])


def write_ply(gaussians: Gaussians, path: Path) -> Path:
    """Write ``gaussians`` to ``path`` atomically; returns ``path``."""
    from plyfile import PlyData, PlyElement

    g = gaussians
    with torch.no_grad():
        columns = torch.cat([g.means, torch.zeros_like(g.means), g.sh_dc,
                             g.opacity_logits.unsqueeze(-1), torch.log(g.scales), g.quats],
                            dim=-1)
    values = columns.detach().cpu().numpy().astype(np.float32)
    rows = np.empty(values.shape[0], dtype=[(name, "f4") for name in FIELDS])
    for i, name in enumerate(FIELDS):
        rows[name] = values[:, i]
    with atomic_path(path) as tmp:
        PlyData([PlyElement.describe(rows, "vertex")]).write(str(tmp))
    return path


class PlyError(ValueError):
    """A file that is not a 3DGS PLY."""


def read_ply(path: Path, bound: float = 1.0) -> Gaussians:
    """The Gaussians of a 3DGS ``model.ply`` (any extra properties, such as ``f_rest_*``, are
    ignored); ``PlyError`` names what is missing."""
    from plyfile import PlyData

    try:
        data = PlyData.read(str(path))
        vertex = data["vertex"]
    except (OSError, KeyError, ValueError) as exc:
        raise PlyError(f"{path}: not a readable PLY with a vertex element ({exc})") from None
    names = set(vertex.data.dtype.names or ())
    missing = [f for f in FIELDS if f not in names and not f.startswith("n")]
    if missing:
        raise PlyError(f"{path}: not a 3DGS PLY, it lacks {', '.join(missing)}")
    column = lambda *fs: torch.from_numpy(  # noqa: E731
        np.stack([np.asarray(vertex[f], dtype=np.float32) for f in fs], axis=-1))
    g = Gaussians(0, bound)
    g.load_state_dict({
        "means": column("x", "y", "z"), "sh_dc": column("f_dc_0", "f_dc_1", "f_dc_2"),
        "opacity_logits": column("opacity").squeeze(-1),
        "log_scales": column("scale_0", "scale_1", "scale_2"),
        "quats": column("rot_0", "rot_1", "rot_2", "rot_3"),
        **{name: torch.zeros(len(vertex.data)) for name in STATISTICS}})
    return g
