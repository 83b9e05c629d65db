import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import trimesh

from dreamfusion.cli import main


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")} if root.exists() else set()


@pytest.mark.parametrize("args, fragment", [
    (["run", ""], "prompt is empty"),
    (["run", "   "], "prompt is empty"),
    (["run", "a red hamburger"], "hamburger"),
    (["run", "a red cube\x07"], "control characters"),
    (["run", "a red cube " * 60], "limit"),
    (["run", "a red cube", "stepz=3"], "did you mean 'steps'"),
    (["run", "a red cube", "steps=three"], "steps"),
    (["run", "a red cube", "steps=-1"], "steps"),
    (["run", "a red cube", "--config", "nope.yaml"], "not found"),
    (["run", "a red cube", "device=cuda"] if not torch.cuda.is_available() else
     ["run", "a red cube", "device=tpu"], "device"),
    (["run"], "prompt"),
    (["fly"], "invalid choice"),
    (["run", "a red cube", "prompt.negative=a red hamburger"], "hamburger"),
    (["run", "a red cube", "guidance.schedule=cosine"], "guidance.schedule"),
    (["run", "a red cube", "nerf.grid.backend=gpu"], "nerf.grid.backend"),
    (["bench", "speed", "--points", "0"], "--points"),
    (["bench", "sds-step", "--steps", "0"], "--steps"),
    (["bench", "sds-step", "steps=3"], "no config overrides"),
    (["bench", "sds-step", "--device", "cuda"] if not torch.cuda.is_available() else
     ["bench", "sds-step", "--device", "tpu"], "cuda" if not torch.cuda.is_available() else "tpu"),
    (["run", "a red cube", "guidance.prior=stable_diffusion"], "guidance.model"),
    (["run", "a red cube", "--config", "dreamfusion-sd", "guidance.model=./no/such/folder"],
     "neither a folder nor a hub id"),
])
def test_bad_input_is_one_line_and_exit_2(args, fragment, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = _files(tmp_path)
    code = main(args + [f"output.root={tmp_path / 'outputs'}"] if len(args) > 1 and args[0] == "run"
                else args)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("dreamfusion: error:") and "\n" not in err and fragment in err
    assert "Traceback" not in err
    assert _files(tmp_path) == before          # no run folder, no half-written files


def test_unwritable_output_folder(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = main(["run", "a red cube", f"output.root={blocker / 'outputs'}"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot write to output folder" in err
    assert blocker.read_text() == "not a folder"


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
    for name in ("config.yaml", "metrics.jsonl", "checkpoint.pt", "turntable.gif", "model.glb",
                 "model.obj", "summary.json", "val/step_000003.png"):
        assert (run_dir / name).is_file(), name
    assert "silhouette IoU" in out
    for name in ("model.glb", "model.obj"):
        mesh = trimesh.load(run_dir / name, force="mesh")
        assert len(mesh.vertices) > 0 and len(mesh.faces) > 0
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert state["step"] == 6 and "field" in state and "grid" in state
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
    assert "not a finished run folder" in capsys.readouterr().err


def test_a_run_says_which_hash_grid_backend_it_uses(fast_overrides, capsys):
    assert main(["run", "a blue torus", "nerf.grid.backend=torch", *fast_overrides]) == 0
    assert "hash grid: torch (PyTorch reference)" in capsys.readouterr().err


def test_same_seed_same_result(fast_overrides, tmp_path):
    params = []
    for name in ("a", "b"):
        over = [o for o in fast_overrides if not o.startswith("output.root")]
        assert main(["run", "a red cube", "--quiet", "export.enabled=false",
                     f"output.root={tmp_path / name}", *over]) == 0
        ckpt = next((tmp_path / name).iterdir()) / "checkpoint.pt"
        params.append(torch.load(ckpt, weights_only=True)["field"])
    for key in params[0]:
        assert torch.equal(params[0][key], params[1][key]), key
