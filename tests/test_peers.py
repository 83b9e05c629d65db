"""A representation and a loss arrive as peers: registered from outside the package
(``peers.py``), they train, checkpoint, resume bit for bit and export through the CLI."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dreamfusion.config import load_config, registry
from dreamfusion.errors import UserError
from dreamfusion.pipeline.checkpoint import read_checkpoint

import peers
from conftest import FAST, assert_same_state

TESTS = Path(__file__).parent
# the CLI, in a child process that first registers the peers (as a plugin's import would)
CLI = ("import sys; sys.path.insert(0, sys.argv.pop(1)); import peers; peers.register(); "
       "from dreamfusion.cli import main; sys.exit(main(sys.argv[1:]))")
PEERS = ["representation=flat", "guidance.loss=sds_baseline", "steps=8", "checkpoint.every=3",
         "export.formats=[glb,obj]"]


@pytest.fixture(autouse=True)
def _registered():
    """The peers registered here too (reading their checkpoints needs their entries), and
    gone again after each test."""
    peers.register()
    yield
    registry.REPRESENTATIONS.pop("flat")
    registry.LOSSES.pop("sds_baseline")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CLI, str(TESTS), *args], capture_output=True,
                          text=True, timeout=600)


def _run(root: Path, *extra: str) -> subprocess.CompletedProcess:
    return _cli("run", "a red cube", "--quiet", *FAST, *PEERS, *extra, f"output.root={root}")


def _final(root: Path) -> tuple[Path, dict]:
    run_dir = next(p for p in root.iterdir() if p.is_dir())
    return run_dir, read_checkpoint(run_dir / "checkpoints" / "step_000008.pt")


def test_a_peer_representation_and_loss_train_resume_and_export_through_the_cli(tmp_path):
    done = _run(tmp_path / "a")
    assert done.returncode == 0, done.stderr
    run_dir, reference = _final(tmp_path / "a")
    killed = _run(tmp_path / "b", "faults.kill_at_step=4")
    assert killed.returncode == -9, killed.stderr             # SIGKILL after step 4
    resumed_dir = next(p for p in (tmp_path / "b").iterdir() if p.is_dir())
    resumed = _cli("run", "--resume", str(resumed_dir), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    _, state = _final(tmp_path / "b")
    assert_same_state(reference, state)                      # scene, Adam moments, step
    loss_a, loss_b = reference["trainer"]["loss"], state["trainer"]["loss"]
    assert loss_a["updates"] == loss_b["updates"] == 8
    assert torch.equal(loss_a["baseline"], loss_b["baseline"])
    assert torch.equal(loss_a["mean"], loss_b["mean"])
    assert float(loss_a["baseline"]) != 0.0                  # its own Adam group moved it
    # the loss's parameter is the optimiser's last group, after the scene's
    assert len(reference["trainer"]["optimizer"]["param_groups"]) == 2
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["representation"] == "flat" and summary["flat_backend"] == "flat"
    assert "silhouette_iou" in summary                       # the toy prior scored it
    terms = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])["terms"]
    assert {"sds", "baseline"} <= set(terms)
    # the representation exported itself: its own file and its own mesh
    assert (run_dir / "colour.txt").is_file()
    glb = (run_dir / "model.glb").read_bytes()
    exported = _cli("export", str(run_dir), "--format", "obj")
    assert exported.returncode == 0, exported.stderr
    corners = [line for line in (run_dir / "model.obj").read_text().splitlines()
               if line.startswith("v ")]
    assert len(corners) == 8 and all(abs(abs(float(x)) - 0.5) < 1e-6
                                     for line in corners for x in line.split()[1:4])
    assert (run_dir / "model.glb").read_bytes() == glb       # only the OBJ was asked for


def test_unknown_names_are_refused_never_read_as_a_default():
    with pytest.raises(UserError, match="representation: must be one of nerf, gaussians, mesh, flat,"):
        load_config("toy", ["representation=flatt"])
    with pytest.raises(UserError, match="guidance.loss: must be one of sds, recon, sds_baseline,"):
        load_config("toy", ["guidance.loss=vsd"])
    with pytest.raises(registry.UnknownName, match="unknown prior 'zero123'"):
        registry.prior("zero123")
    with pytest.raises(ValueError, match="registered already"):
        registry.register_representation(registry.representation("nerf"))


def test_every_builtin_registry_entry_resolves():
    for table in (registry.REPRESENTATIONS, registry.LOSSES, registry.PRIORS):
        for spec in table.values():
            for ref in (spec.builder, getattr(spec, "memory", None),
                        getattr(spec, "check_words", None)):
                if ref is not None:
                    assert callable(registry.resolve(ref)), (spec.name, ref)
