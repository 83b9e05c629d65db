"""Unlucky runs, by class (issue 14): writes that fail (appends included), temporary files
left by kills, damaged checkpoints, an empty output root, and progress that fits a log."""
import errno
import os
from pathlib import Path

import pytest
import torch

from dreamfusion.cli import main
from dreamfusion.errors import WriteError
from dreamfusion.utils.atomic import append_text, is_temp_name

from conftest import FAST, fast_run, one_line_error


# --- 2. every write, appends included, fails the documented way -------------------------------

def test_a_failed_append_names_the_file_and_leaves_no_half_line(tmp_path, monkeypatch):
    log = tmp_path / "run.log"
    log.write_text("first\n")
    real = os.write

    def half_then_full(fd: int, data) -> int:
        real(fd, bytes(data[:3]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(WriteError, match="run.log: No space left on device"):
        append_text(log, "second line\n")
    monkeypatch.undo()
    assert log.read_text() == "first\n"
    if Path("/dev/full").exists():
        with pytest.raises(WriteError, match="/dev/full: No space left on device"):
            append_text("/dev/full", "a line\n")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("name", ["run.log", "metrics.jsonl"])
def test_a_full_disk_under_a_log_stops_resume_with_one_line_and_keeps_checkpoints(
        name, tmp_path, capsys):
    run_dir = fast_run(tmp_path / "out", "steps=8", "checkpoint.every=4")
    (run_dir / "checkpoints" / "step_000008.pt").unlink()           # as if killed at step 6
    (run_dir / "summary.json").unlink()
    (run_dir / name).unlink()
    (run_dir / name).symlink_to("/dev/full")                        # every write: ENOSPC
    kept = {p.name: p.read_bytes() for p in (run_dir / "checkpoints").iterdir()}
    capsys.readouterr()
    assert main(["run", "--resume", str(run_dir), "--quiet"]) == 2
    err = one_line_error(capsys)
    assert f"cannot write {run_dir / name}: No space left on device" in err
    assert {p.name: p.read_bytes() for p in (run_dir / "checkpoints").iterdir()} == kept


def test_an_unwritable_cache_costs_time_not_the_run(tmp_path):
    from dreamfusion.utils.tensor_cache import cached_tensor

    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder would be")
    tensor, computed = cached_tensor(blocker / "toy" / "x.safetensors", lambda: torch.ones(2))
    assert computed and torch.equal(tensor, torch.ones(2))


@pytest.mark.parametrize("failing", ["config.yaml", "step_000000.pt"])
def test_a_write_that_fails_before_the_first_checkpoint_leaves_no_run_folder(
        failing, tmp_path, capsys, monkeypatch):
    from dreamfusion.utils import atomic

    real = atomic.os.replace

    def full_disk(src, dst):
        if Path(dst).name == failing:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", full_disk)
    root = tmp_path / "out"
    assert main(["run", "a red cube", "--quiet", *FAST, f"output.root={root}"]) == 2
    assert f"{failing}: No space left on device" in one_line_error(capsys)
    assert list(root.iterdir()) == []


def test_export_flags_are_refused_before_any_work_with_advice_that_fits(tmp_path, capsys):
    run_dir = fast_run(tmp_path / "out", "steps=2")
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")}
    for flags, fragment in ([["--threshold", "nan"], "config export.threshold: must be a finite"],
                            [["--resolution", "1"], "config export.resolution: must be in [8"]):
        assert main(["export", str(run_dir), *flags]) == 2
        err = one_line_error(capsys)
        assert fragment in err and "try" not in err
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")} == before


# --- 6. temporary files of killed writes --------------------------------------------------------

@pytest.mark.slow
def test_resume_and_export_clean_temporary_files_anywhere_in_the_run(tmp_path, capsys):
    run_dir = fast_run(tmp_path / "out", "steps=8", "checkpoint.every=4", "export.enabled=true")
    (run_dir / "checkpoints" / "step_000008.pt").unlink()
    (run_dir / "summary.json").unlink()
    left = [run_dir / ".texture.png.x7k2m9qa.tmp.png",
            run_dir / "val" / ".step_000003.png.abcd_123.tmp.png",
            run_dir / "checkpoints" / ".step_000008.pt.q1w2e3r4.tmp.pt"]
    mine = run_dir / "notes.tmp.txt"           # not ours: kept
    for path in [*left, mine]:
        path.write_bytes(b"")
    assert all(is_temp_name(p.name) for p in left) and not is_temp_name(mine.name)
    assert main(["run", "--resume", str(run_dir), "--quiet"]) == 0
    assert not any(p.exists() for p in left) and mine.exists()
    log = (run_dir / "run.log").read_text()
    assert "removed .texture.png.x7k2m9qa.tmp.png" in log and "removed val/.step_000003" in log
    left[0].write_bytes(b"")
    capsys.readouterr()
    assert main(["export", str(run_dir), "--format", "obj"]) == 0
    assert not left[0].exists() and "removed .texture.png" in capsys.readouterr().err
    assert not [p for p in run_dir.rglob("*") if is_temp_name(p.name)]


# --- 7. one checkpoint loader for resume and export --------------------------------------------

def _resave(path: Path, state: dict) -> None:
    import hashlib
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    path.write_bytes(buffer.getvalue())
    digest = hashlib.sha256(buffer.getvalue()).hexdigest()
    path.with_name(path.name + ".sha256").write_text(f"{digest}  {path.name}\n")


@pytest.mark.parametrize("damage", ["prompt", "trainer.step", "scene.field", "faults"])
def test_a_checkpoint_with_a_good_checksum_but_missing_keys_is_skipped_by_both(damage, tmp_path,
                                                                                capsys):
    run_dir = fast_run(tmp_path / "out", "steps=8", "checkpoint.every=4")
    (run_dir / "summary.json").unlink()
    newest = run_dir / "checkpoints" / "step_000008.pt"
    state = torch.load(newest, weights_only=True)
    node = state
    *parents, last = damage.split(".")
    for part in parents:
        node = node[part]
    del node[last]
    _resave(newest, state)
    capsys.readouterr()
    assert main(["export", str(run_dir), "--format", "obj"]) == 0
    assert f"step_000008.pt lacks {damage}" in capsys.readouterr().err
    (run_dir / "checkpoints" / "step_000004.pt").unlink()
    for command in (["export", str(run_dir)], ["run", "--resume", str(run_dir)]):
        assert main(command) == 2
        err = one_line_error(capsys)
        assert "no usable checkpoint" in err and f"lacks {damage}" in err


def test_a_checkpoint_whose_tensors_do_not_fit_is_one_line_for_both(tmp_path, capsys):
    run_dir = fast_run(tmp_path / "out", "steps=4", "checkpoint.every=4")
    (run_dir / "summary.json").unlink()
    for path in (run_dir / "checkpoints").glob("*.pt"):
        state = torch.load(path, weights_only=True)
        name = next(iter(state["scene"]["field"]))
        state["scene"]["field"][name] = torch.zeros(3)
        _resave(path, state)
    capsys.readouterr()
    for command in (["export", str(run_dir)], ["run", "--resume", str(run_dir), "--quiet"]):
        assert main(command) == 2
        assert "cannot load" in one_line_error(capsys)


# --- 8. output.root= says and does the same -----------------------------------------------------

def test_an_empty_output_root_is_the_current_folder_in_word_and_deed(tmp_path, capsys,
                                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "a red cube", "output.root=", "--dry-run"]) == 0
    assert f"the run would go under {tmp_path}/" in capsys.readouterr().err
    assert main(["run", "a red cube", "--quiet", *FAST, "export.enabled=false",
                 "output.root="]) == 0
    assert [p.name.startswith("a-red-cube-") for p in tmp_path.iterdir()] == [True]


# --- output that fits where it goes --------------------------------------------------------------

def test_progress_in_a_log_is_a_line_every_few_percent_with_the_events(tmp_path, capsys):
    overrides = [o for o in FAST if not o.startswith("steps=")]
    assert main(["run", "a red cube", *overrides, "steps=40", "export.enabled=false",
                 f"output.root={tmp_path}"]) == 0
    err = capsys.readouterr().err             # pytest's capture is not a terminal
    assert "\r" not in err
    steps = [line for line in err.splitlines() if line.startswith("dreamfusion: step ")
             and "%)" in line]
    assert 10 <= len(steps) <= 21, err
    assert steps[-1].startswith("dreamfusion: step 40/40 (100%) loss ") and "ETA" in steps[-1]
    run_log = next(tmp_path.iterdir()) / "run.log"
    for line in run_log.read_text().splitlines():
        assert line[20:] in err                             # every event, without its stamp


def test_progress_style_is_decided_by_where_stderr_goes():
    from dreamfusion.pipeline.runlog import progress_style

    class Terminal:
        def isatty(self) -> bool:
            return True

    assert progress_style(False, Terminal()) == "bar"
    assert progress_style(False, open(os.devnull, "w")) == "lines"
    assert progress_style(True, Terminal()) == "quiet"
