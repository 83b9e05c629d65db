"""Our files in the programs that consume them: the Khronos glTF validator (npm
``gltf-validator``) and Blender, run headless. Skipped where they are not installed, except in
CI, which installs both (see .ci/run) and must run these checks."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from dreamfusion.export.pipeline import ExportSettings, export_field

from browser import require
from fields import BoxField

TOOLS = Path(__file__).parent / "tools"
VALIDATOR = Path(os.environ.get("DREAMFUSION_GLTF_VALIDATOR",
                                Path(__file__).parents[1] / ".gl" / "node_modules"))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("box")
    field = BoxField()
    export_field(field, ExportSettings(48, 50.0, ("glb", "obj"), 128, 0, 0.05), out)
    lines = (out / "model.obj").read_text().splitlines()
    counts = {key: sum(line.startswith(key + " ") for line in lines) for key in ("v", "f")}
    world = np.array([[float(t) for t in line.split()[1:4]] for line in lines
                      if line.startswith("v ")])[:, [2, 0, 1]]        # Y-up file -> Z-up world
    return out, counts, world.min(axis=0), world.max(axis=0)


def test_the_glb_passes_the_khronos_validator(exported):
    require(shutil.which("node") is not None and (VALIDATOR / "gltf-validator").is_dir(),
             "node with the npm package gltf-validator")
    out, *_ = exported
    result = subprocess.run(["node", str(TOOLS / "validate_gltf.js"), str(VALIDATOR),
                             str(out / "model.glb")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    issues = json.loads(result.stdout)["issues"]
    assert issues["numErrors"] == 0, issues["messages"]
    assert issues["numWarnings"] == 0, issues["messages"]


@pytest.mark.parametrize("name", ["model.glb", "model.obj"])
def test_blender_imports_the_mesh_textured_and_upright(exported, name, tmp_path):
    require(shutil.which("blender") is not None, "blender")
    out, counts, lo, hi = exported
    report = tmp_path / "report.json"
    blender = shutil.which("blender")
    # Blender embeds the system Python and finds its home (and numpy) from the first python3
    # on PATH; a virtualenv's or pyenv's there would hide the system packages
    env = {**os.environ, "PATH": f"{Path(blender).parent}:{os.environ.get('PATH', '')}"}
    subprocess.run([blender, "-b", "--factory-startup", "-noaudio", "--python-exit-code", "1",
                    "--python", str(TOOLS / "blender_import.py"), "--", str(out / name),
                    str(report)], check=True, capture_output=True, timeout=300, env=env)
    seen = json.loads(report.read_text())
    assert seen["objects"] == 1
    assert (seen["vertices"], seen["faces"]) == (counts["v"], counts["f"])
    assert seen["uv_layers"] == 1 and len(seen["textures"]) == 1
    # Blender is Z-up like our world, and shows the front (our +X) to its front view, which
    # looks from -Y: Blender (x, y, z) = world (y, -x, z)
    expect_lo, expect_hi = np.array([lo[1], -hi[0], lo[2]]), np.array([hi[1], -lo[0], hi[2]])
    assert np.allclose(seen["bbox_min"], expect_lo, atol=1e-4)
    assert np.allclose(seen["bbox_max"], expect_hi, atol=1e-4)
    assert seen["bbox_max"][2] - seen["bbox_min"][2] > 0.9          # the tall axis is up
