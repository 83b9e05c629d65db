"""Runs with 3D Gaussians through the same CLI, trainer, checkpoints and export as the NeRF."""
import hashlib
import io
import json

import torch
import yaml

from dreamfusion.cli import main
from dreamfusion.gaussians.ply import read_ply
from dreamfusion.gaussians.splat_cpp import load_kernel
from dreamfusion.pipeline.checkpoint import read_checkpoint

from conftest import FAST, FAST_GAUSSIANS, one_line_error


def _run(root, *extra):
    assert main(["run", "a yellow duck", "--quiet", *FAST_GAUSSIANS, f"output.root={root}",
                 *extra]) == 0
    return next(p for p in root.iterdir() if p.is_dir())


def test_a_gaussian_run_writes_meshes_a_ply_and_its_scores(tmp_path):
    run_dir = _run(tmp_path / "out")
    summary = json.loads((run_dir / "summary.json").read_text())
    kernel = "cpp" if load_kernel() else "torch"
    assert summary["representation"] == "gaussians" and summary["rasteriser_backend"] == kernel
    assert 0.0 <= summary["silhouette_iou"] <= 1.0 and "janus" in summary
    for name in ("model.ply", "model.glb", "model.obj", "turntable.gif"):
        assert (run_dir / name).is_file(), name
    state = read_checkpoint(run_dir / "checkpoints" / "step_000006.pt")
    saved = state["scene"]["gaussians"]["means"]
    ply = read_ply(run_dir / "model.ply")
    assert torch.equal(ply.means, saved)            # the PLY is the trained set, all of it
    assert saved.shape[0] != 150                    # density control changed the count
    log = (run_dir / "run.log").read_text()
    assert f"gaussian rasteriser: {kernel} (" in log


def test_a_gaussian_run_repeats_bit_for_bit(tmp_path):
    a = read_checkpoint(next((_run(tmp_path / "a", "export.enabled=false") / "checkpoints")
                             .glob("step_000006.pt")))
    b = read_checkpoint(next((_run(tmp_path / "b", "export.enabled=false") / "checkpoints")
                             .glob("step_000006.pt")))
    for name, tensor in a["scene"]["gaussians"].items():
        assert torch.equal(tensor, b["scene"]["gaussians"][name]), name


def test_export_writes_the_ply_again(tmp_path, capsys):
    run_dir = _run(tmp_path / "out", "export.enabled=false")
    assert not (run_dir / "model.ply").exists()
    assert main(["export", str(run_dir), "--format", "obj"]) == 0
    assert (run_dir / "model.ply").is_file() and (run_dir / "model.obj").is_file()


def test_a_checkpoint_of_one_representation_is_not_resumed_as_the_other(tmp_path, capsys):
    nerf = tmp_path / "nerf"
    assert main(["run", "a red cube", "--quiet", *FAST, "steps=8", "checkpoint.every=4",
                 "export.enabled=false", f"output.root={nerf}"]) == 0
    nerf_dir = next(nerf.iterdir())
    gauss_dir = _run(tmp_path / "gauss", "steps=8", "checkpoint.every=4",
                     "export.enabled=false")
    for run_dir, other in ((nerf_dir, "representation=gaussians"),
                           (gauss_dir, "representation=nerf")):
        (run_dir / "checkpoints" / "step_000008.pt").unlink()
        capsys.readouterr()
        before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
        assert main(["run", "--resume", str(run_dir), other]) == 2
        err = one_line_error(capsys)
        assert "different config" in err and "representation (" in err
        # a config edited by hand to the other representation: the checkpoint says otherwise
        config = run_dir / "config.yaml"
        text = config.read_text()
        mine = "gaussians" if "representation: gaussians" in text else "nerf"
        config.write_text(text.replace(f"representation: {mine}", f"representation: "
                                       f"{other.split('=')[1]}"))
        assert main(["run", "--resume", str(run_dir)]) == 2
        assert f"representation ({mine} -> {other.split('=')[1]})" in one_line_error(capsys)
        assert main(["export", str(run_dir)]) == 2
        assert "cannot load" in one_line_error(capsys)
        config.write_bytes(before[config])
        assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
    # the rasteriser is not part of what was trained: another one may continue the run
    assert main(["run", "--resume", str(gauss_dir), "gaussians.backend=torch", "--quiet"]) == 0
    saved = yaml.safe_load((gauss_dir / "config.yaml").read_text())
    assert saved["gaussians"]["backend"] == "torch"


def test_a_checkpoint_is_checked_for_its_own_representations_modules(tmp_path, capsys):
    from dreamfusion.config import load_config
    from dreamfusion.pipeline.build import build_scene
    from dreamfusion.config import registry
    from dreamfusion.pipeline.checkpoint import checkpoint_name

    for name in ("nerf", "gaussians"):
        cfg = load_config("toy", [*FAST, f"representation={name}"])
        modules = build_scene(cfg, torch.device("cpu")).checkpoint_modules()
        assert tuple(modules) == registry.representation(name).modules
    run_dir = _run(tmp_path / "out", "steps=8", "checkpoint.every=4", "export.enabled=false")
    newest = run_dir / "checkpoints" / checkpoint_name(8)
    state = torch.load(newest, weights_only=True)
    del state["scene"]["gaussians"]
    buffer = io.BytesIO()
    torch.save(state, buffer)
    newest.write_bytes(buffer.getvalue())
    sidecar = newest.with_name(newest.name + ".sha256")
    sidecar.write_text(f"{hashlib.sha256(buffer.getvalue()).hexdigest()}  {newest.name}\n")
    capsys.readouterr()
    assert main(["export", str(run_dir), "--format", "obj"]) == 0      # falls back to step 4
    assert "step_000008.pt lacks scene.gaussians" in capsys.readouterr().err
