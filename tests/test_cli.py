import json
import subprocess
import sys
from pathlib import Path

import torch
import trimesh

from dreamfusion.cli import main


def test_console_script_error_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "dreamfusion", "run", "a purple hamburger"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "hamburger" in proc.stderr and "colours:" in proc.stderr


def test_end_to_end_run_writes_meshes(fast_overrides, tmp_path, capsys):
    assert main(["run", "a blue torus", "--quiet", *fast_overrides]) == 0
    out = capsys.readouterr().out
    run_dir = next((tmp_path / "outputs").iterdir())
    assert run_dir.name.startswith("a-blue-torus-")
    for name in ("config.yaml", "run.log", "metrics.jsonl", "checkpoints/step_000006.pt",
                 "checkpoints/step_000006.pt.sha256", "turntable.gif", "model.glb",
                 "model.obj", "summary.json", "val/step_000003.png"):
        assert (run_dir / name).is_file(), name
    assert "silhouette IoU" in out
    for name in ("model.glb", "model.obj"):
        mesh = trimesh.load(run_dir / name, force="mesh")
        assert len(mesh.vertices) > 0 and len(mesh.faces) > 0
    state = torch.load(run_dir / "checkpoints/step_000006.pt", weights_only=True)
    assert state["trainer"]["step"] == 6 and {"field", "grid"} <= set(state["scene"])
    assert state["prompt"] == "a blue torus" and "steps: 6" in state["config"]
    assert state["trainer"]["schedule"] == {"name": "uniform", "progress": 1.0,
                                            "t_range": [0.02, 0.98]}
    assert "torch" in state["trainer"]["rng"]
    assert "exp_avg_sq" in state["trainer"]["optimizer"]["state"][0]
    assert "steps: 6" in (run_dir / "config.yaml").read_text()
    assert not list(run_dir.rglob("*.tmp*"))                  # atomic writes left no temp files
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["hashgrid_backend"] in ("cpp", "torch")     # auto says what it chose
    for name in ("model.mtl", "texture.png"):                  # textured by default
        assert (run_dir / name).is_file(), name
    assert "map_Kd texture.png" in (run_dir / "model.mtl").read_text()

    # dreamfusion export: the same run, re-exported with other settings
    before = (run_dir / "model.obj").read_bytes()
    assert main(["export", str(run_dir), "--format", "obj", "--texture-size", "0"]) == 0
    obj = (run_dir / "model.obj").read_text()
    assert obj.encode() != before and "mtllib" not in obj       # vertex colours this time
    assert main(["export", str(run_dir), "--format", "fbx"]) == 2
    assert main(["export", str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_a_run_says_which_hash_grid_backend_it_uses(fast_overrides, capsys):
    assert main(["run", "a blue torus", "nerf.grid.backend=torch", *fast_overrides]) == 0
    assert "hash grid: torch (PyTorch reference)" in capsys.readouterr().err


def test_same_seed_same_result(fast_overrides, tmp_path):
    params = []
    for name in ("a", "b"):
        over = [o for o in fast_overrides if not o.startswith("output.root")]
        assert main(["run", "a red cube", "--quiet", "export.enabled=false",
                     f"output.root={tmp_path / name}", *over]) == 0
        ckpt = next((tmp_path / name).iterdir()) / "checkpoints" / "step_000006.pt"
        params.append(torch.load(ckpt, weights_only=True)["scene"]["field"])
    for key in params[0]:
        assert torch.equal(params[0][key], params[1][key]), key


def test_a_run_that_makes_nothing_solid_finishes_and_says_so(fast_overrides, capsys):
    assert main(["run", "a red cube", "--quiet", *fast_overrides, "export.threshold=1e9"]) == 0
    err = capsys.readouterr().err
    run_dir = next(Path(fast_overrides[-1].split("=", 1)[1]).iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert "empty at threshold 1e+09" in summary["export_error"] and "chamfer" not in summary
    assert "no mesh written" in err and "no mesh written" in (run_dir / "run.log").read_text()
    assert not (run_dir / "model.glb").exists()
