"""Runs that survive: SIGKILL and Ctrl-C then --resume, NaN faults, corrupt checkpoints."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dreamfusion.cli import main
from dreamfusion.pipeline.checkpoint import CheckpointStore, read_checkpoint

from conftest import FAST, assert_same_state

INTERVAL = 10
LONG = [*FAST, "steps=120", f"checkpoint.every={INTERVAL}", "output.log_every=1",
        "output.val_every=1000", "export.enabled=false"]


# Gaussians that densify, prune and reset their opacity between the checkpoints
GAUSSIANS = ["representation=gaussians", "gaussians.count=150", "gaussians.max_count=1200",
             "gaussians.init_opacity=0.3", "gaussians.densify.start=10",
             "gaussians.densify.every=15", "gaussians.densify.stop=100",
             "gaussians.densify.opacity_reset_every=60", "gaussians.densify.grad_threshold=0.01",
             "gaussians.lr.position_final=0.0001"]     # a rate that follows the step


def _start(root: Path, *args: str, extra: tuple[str, ...] = ()) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "dreamfusion", "run", *args, "--quiet"]
    if not any(a == "--resume" for a in args):
        cmd += [*LONG, *extra, f"output.root={root}"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run_dir(root: Path) -> Path:
    return next(p for p in root.iterdir() if p.is_dir())


def _logged_step(run_dir: Path) -> int:
    """The last step metrics.jsonl recorded (it is written every step here)."""
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    steps = [json.loads(line)["step"] for line in lines if line.endswith("}")]
    return steps[-1] if steps else 0


def _wait_for_step(root: Path, proc: subprocess.Popen, step: int) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        dirs = [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
        if dirs and _logged_step(dirs[0]) >= step:
            return
        time.sleep(0.02)
    raise TimeoutError(f"step {step} not reached")


def _final_state(run_dir: Path) -> dict:
    return read_checkpoint(run_dir / "checkpoints" / "step_000120.pt")


def _assert_bit_identical(a: dict, b: dict) -> None:
    assert_same_state(a, b)
    assert a["trainer"]["step"] == 120


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """An uninterrupted run with the same seed and config, in its own process."""
    root = tmp_path_factory.mktemp("reference")
    proc = _start(root, "a red cube")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return _final_state(_run_dir(root))


def _kill_at(root: Path, proc: subprocess.Popen, step: int) -> tuple[int, int]:
    """SIGKILL once ``step`` is logged; the step reached and the newest checkpoint's step."""
    _wait_for_step(root, proc, step)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    run_dir = _run_dir(root)
    saved = CheckpointStore(run_dir).latest()
    return _logged_step(run_dir), saved.state["trainer"]["step"]


@pytest.mark.slow
def test_sigkill_then_resume_is_bit_identical(reference, tmp_path):
    root = tmp_path / "killed"
    reached, saved = _kill_at(root, _start(root, "a red cube"), 47)   # not on a checkpoint
    run_dir = _run_dir(root)
    assert 47 <= reached < 120 and reached - saved <= INTERVAL        # at most one interval lost
    assert len(CheckpointStore(run_dir).paths()) == 2                 # the last two are kept
    assert f"step {saved}: saved" in (run_dir / "run.log").read_text()

    # killed again, while resumed, at another point
    reached, saved = _kill_at(root, _start(root, "--resume", str(run_dir)), 83)
    assert 83 <= reached < 120 and reached - saved <= INTERVAL

    proc = _start(root, "--resume", str(run_dir))
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    _assert_bit_identical(reference, _final_state(run_dir))
    assert f"resumed at step {saved}" in (run_dir / "run.log").read_text()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == list(range(1, 121))             # the lost steps are logged once, not twice
    evals = [r["step"] for r in records if "eval_silhouette_iou" in r]
    assert evals == [50, 100, 120]                  # the IoU curve, once per point too


@pytest.mark.slow
def test_gaussians_resume_after_sigkill_bit_identically(tmp_path):
    """A variable number of Gaussians, densified and pruned between checkpoints: the resumed
    run ends where an uninterrupted one does, count, parameters and Adam's moments."""
    reference_root = tmp_path / "reference"
    proc = _start(reference_root, "a yellow duck", extra=tuple(GAUSSIANS))
    assert proc.wait(timeout=600) == 0, proc.communicate()
    reference = _final_state(_run_dir(reference_root))
    assert reference["scene"]["gaussians"]["means"].shape[0] != 150   # it densified
    root = tmp_path / "killed"
    reached, saved = _kill_at(root, _start(root, "a yellow duck", extra=tuple(GAUSSIANS)), 55)
    assert 55 <= reached < 120 and reached - saved <= INTERVAL
    proc = _start(root, "--resume", str(_run_dir(root)))
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    _assert_bit_identical(reference, _final_state(_run_dir(root)))


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stop_signal_saves_a_checkpoint_and_resume_is_bit_identical(sig, reference, tmp_path):
    root = tmp_path / "interrupted"
    proc = _start(root, "a red cube")
    _wait_for_step(root, proc, 33)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    run_dir = _run_dir(root)
    stopped = _logged_step(run_dir)
    assert proc.returncode == 130
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"stopped by {sig.name} at step {stopped}" in err and f"--resume {run_dir}" in err
    latest = CheckpointStore(run_dir).latest()
    assert latest.state["trainer"]["step"] == stopped          # nothing lost at all

    code = main(["run", "--resume", str(run_dir), "--quiet"])
    assert code == 0
    _assert_bit_identical(reference, _final_state(run_dir))


def _fast_run(tmp_path: Path, *extra: str) -> tuple[int, Path]:
    code = main(["run", "a red cube", "--quiet", *FAST, "export.enabled=false",
                 f"output.root={tmp_path / 'out'}", *extra])
    return code, _run_dir(tmp_path / "out")


def test_nan_gradients_are_skipped_and_repeated_ones_roll_back(tmp_path, capsys):
    code, run_dir = _fast_run(tmp_path, "steps=30", "checkpoint.every=5", "output.log_every=1",
                              "faults.window=5", "faults.inject_nan_at=[3,12,13,14]")
    err = capsys.readouterr().err
    assert code == 0, err
    log = (run_dir / "run.log").read_text()
    assert "step 3: skipped, non-finite gradients in encoding.params" in log
    assert "step 14: 3 non-finite steps of the last 5; rolled back to step 10" in log
    assert "learning rate x0.5" in log and "rolled back" in err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rollbacks"] == 1 and summary["steps"] == 30
    final = CheckpointStore(run_dir).latest().state
    assert final["trainer"]["lr_scale"] == 0.5
    assert [g["lr"] for g in final["trainer"]["optimizer"]["param_groups"]] == [0.005, 0.005]
    for params in final["scene"]["field"].values():
        assert torch.isfinite(params.float()).all()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
               if "loss" in line]
    assert [r["step"] for r in records] == list(range(1, 31))   # the rolled-back steps are gone
    assert "fault" in records[2] and "fault" not in records[11]  # step 12 was redone cleanly


def test_a_run_that_cannot_recover_stops_and_keeps_its_checkpoint(tmp_path, capsys):
    code, run_dir = _fast_run(tmp_path, "steps=40", "checkpoint.every=5", "optim.lr=1e30")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("dreamfusion: training diverged at step")
    assert "after 3 rollbacks" in err[-1] and "optim.lr" in err[-1] and str(run_dir) in err[-1]
    assert err[-2].count("rolled back") == 0 and sum("rolled back" in e for e in err) == 3
    kept = CheckpointStore(run_dir).latest()
    assert kept.state["trainer"]["step"] == 0 and not (run_dir / "summary.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["flip", "truncate", "no-checksum"])
def test_a_damaged_checkpoint_is_reported_and_resume_falls_back(damage, tmp_path, capsys):
    code, run_dir = _fast_run(tmp_path, "steps=12", "checkpoint.every=4")
    assert code == 0
    newest = run_dir / "checkpoints" / "step_000012.pt"
    original = read_checkpoint(newest)
    data = newest.read_bytes()
    if damage == "flip":
        newest.write_bytes(data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 1])
                           + data[len(data) // 2 + 1:])
    elif damage == "truncate":
        newest.write_bytes(data[:len(data) // 3])
    else:
        Path(str(newest) + ".sha256").unlink()
    capsys.readouterr()
    assert main(["run", "--resume", str(run_dir), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "step_000012.pt" in err and "falling back to step_000008.pt" in err
    assert "falling back to step_000008.pt" in (run_dir / "run.log").read_text()
    redone = read_checkpoint(newest)                # steps 9-12 trained again, identically
    for name, tensor in original["scene"]["field"].items():
        assert torch.equal(tensor, redone["scene"]["field"][name]), name


def test_resume_refuses_an_incompatible_config_and_a_finished_run(tmp_path, capsys):
    code, run_dir = _fast_run(tmp_path, "steps=8", "checkpoint.every=4")
    (run_dir / "checkpoints" / "step_000008.pt").unlink()      # as if killed after step 4
    capsys.readouterr()
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert main(["run", "--resume", str(run_dir), "nerf.hidden=32", "steps=9"]) == 2
    err = capsys.readouterr().err
    assert "different config" in err and "nerf.hidden (16 -> 32)" in err and "steps (8 -> 9)" in err
    config = run_dir / "config.yaml"
    config.write_text(config.read_text().replace("lr: 0.01", "lr: 0.02"))
    assert main(["run", "--resume", str(run_dir)]) == 2
    assert "optim.lr (0.01 -> 0.02)" in capsys.readouterr().err
    config.write_bytes(before[config])
    assert main(["run", "a blue torus", "--resume", str(run_dir)]) == 2
    assert "is a run of 'a red cube'" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
    # where files go and how they are written may change
    assert main(["run", "--resume", str(run_dir), "--quiet", "export.enabled=true",
                 "export.resolution=24", "checkpoint.every=2"]) == 0
    assert (run_dir / "model.glb").is_file() and "resolution: 24" in config.read_text()
    assert main(["run", "--resume", str(run_dir)]) == 2
    assert "has finished all 8 steps" in capsys.readouterr().err


def test_resume_clears_partial_saves_and_refuses_a_folder_without_checkpoints(tmp_path, capsys):
    code, run_dir = _fast_run(tmp_path, "steps=8", "checkpoint.every=4")
    ckpts = run_dir / "checkpoints"
    (ckpts / "step_000008.pt").unlink()
    partial = ckpts / ".step_000008.pt.k3j2.tmp.pt"             # what a kill mid-save leaves
    partial.write_bytes(b"half")
    assert main(["run", "--resume", str(run_dir), "--quiet"]) == 0
    assert not partial.exists() and "removed checkpoints/.step_000008.pt.k3j2.tmp.pt" in \
        (run_dir / "run.log").read_text()
    for p in ckpts.iterdir():
        p.write_bytes(b"garbage")
    assert main(["run", "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "no usable checkpoint" in err and "corrupt or truncated" in err


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_ones(tmp_path, capsys, monkeypatch):
    from dreamfusion.pipeline import checkpoint

    real = Path.write_bytes
    saves = []

    def full_disk(self: Path, data: bytes) -> int:
        if self.parent.name == "checkpoints":
            saves.append(self)
            if len(saves) == 3:                      # the third save: step 4
                real(self, data[: len(data) // 2])
                raise OSError(28, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(checkpoint.Path, "write_bytes", full_disk)
    code = main(["run", "a red cube", "--quiet", *FAST, "steps=8", "checkpoint.every=2",
                 f"output.root={tmp_path / 'out'}"])
    err = capsys.readouterr().err.strip()
    run_dir = _run_dir(tmp_path / "out")
    assert code == 2 and "\n" not in err and "Traceback" not in err
    assert "cannot write" in err and "step_000004.pt: No space left on device" in err
    ckpts = run_dir / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == [
        "step_000000.pt", "step_000000.pt.sha256", "step_000002.pt", "step_000002.pt.sha256"]
    assert read_checkpoint(ckpts / "step_000002.pt")["trainer"]["step"] == 2
    monkeypatch.undo()
    assert main(["run", "--resume", str(run_dir), "--quiet"]) == 0


def test_a_write_over_the_file_size_limit_keeps_the_previous_mesh(tmp_path):
    """A real failing write (RLIMIT_FSIZE makes write(2) fail with EFBIG, as a full disk fails
    with ENOSPC): the export stops with one line and the previous model.glb is intact."""
    resource = pytest.importorskip("resource")
    assert main(["run", "a red cube", "--quiet", *FAST, f"output.root={tmp_path / 'out'}"]) == 0
    run_dir = _run_dir(tmp_path / "out")
    glb = (run_dir / "model.glb").read_bytes()
    assert len(glb) > 8000

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (8000, 8000))

    proc = subprocess.run([sys.executable, "-m", "dreamfusion", "export", str(run_dir),
                           "--format", "glb", "--resolution", "48"], preexec_fn=limit,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "File too large" in proc.stderr
    assert "model.glb" in proc.stderr or "texture" in proc.stderr
    assert (run_dir / "model.glb").read_bytes() == glb
    assert not list(run_dir.glob(".*tmp*"))


def test_an_atomic_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
    import errno

    from dreamfusion.errors import WriteError
    from dreamfusion.utils.atomic import atomic_path, write_text

    target = tmp_path / "model.glb"
    target.write_bytes(b"old")
    with pytest.raises(WriteError, match="model.glb: No space left on device; its previous"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half of the new one")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]
    write_text(target, "new")
    umask = os.umask(0)
    os.umask(umask)
    assert target.read_text() == "new"
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask     # not mkstemp's 0600
