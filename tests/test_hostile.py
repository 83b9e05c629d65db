"""Hostile and unlucky inputs, by class: characters no text may hold, writes that fail,
numbers past what a machine can honour, YAML that would hang or flood, numbers stored as
text, temporary files left by kills, damaged checkpoints, and output that fits a log."""
import dataclasses
import errno
import json
import os
import subprocess
import sys
import time
import typing
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dreamfusion.cli import main
from dreamfusion.config import MAX_DEPTH, load_config, parse_yaml, to_yaml
from dreamfusion.config.limits import RANGES, memory_needs
from dreamfusion.config.schema import RunConfig
from dreamfusion.config.text import bad_character, check_prompt, quote
from dreamfusion.errors import UserError, WriteError
from dreamfusion.export.mesh import no_surface
from dreamfusion.utils.atomic import append_text, is_temp_name

from conftest import FAST


def _fast_run(root: Path, *extra: str) -> Path:
    assert main(["run", "a red cube", "--quiet", *FAST, "export.enabled=false",
                 f"output.root={root}", *extra]) == 0
    return next(p for p in root.iterdir() if p.is_dir())


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("dreamfusion: error:") and "\n" not in err and "Traceback" not in err, err
    return err


# --- 1. characters no prompt or config text can mean ------------------------------------------

REFUSED = ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x00", "\u202e", "\ufeff",
           "\u200b", "\u2066", "\x7f", "\x9b"]


@pytest.mark.parametrize("ch", REFUSED, ids=[f"U+{ord(c):04X}" for c in REFUSED])
def test_every_line_breaking_control_or_format_character_is_refused(ch, tmp_path, capsys,
                                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", f"a red{ch}cube", "steps=2"]) == 2
    assert f"U+{ord(ch):04X}" in _one_line_error(capsys)
    assert main(["run", "a red cube", f"prompt.negative=a blue{ch}cube", "--dry-run"]) == 2
    assert f"config prompt.negative: contains U+{ord(ch):04X}" in _one_line_error(capsys)
    views = tmp_path / "views.yaml"
    views.write_text(json.dumps({"prompt": {"views": [{"name": "front", "suffix": f", {ch}"}]}}))
    assert main(["run", "a red cube", "--config", str(views), "--dry-run"]) == 2
    assert "config prompt.views.0.suffix: contains" in _one_line_error(capsys)
    assert list(tmp_path.iterdir()) == [views]


def test_joiners_and_other_scripts_are_text():
    for prompt in ["a 🧑‍🍳 cooking", "نان‌ها", "日本語の猫", "a café, side view"]:
        assert bad_character(prompt) is None and check_prompt(prompt) == prompt


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=200))
def test_no_accepted_prompt_breaks_the_config_file_it_heads(prompt):
    try:
        prompt = check_prompt(prompt)
    except UserError:
        return
    cfg = load_config("toy")
    text = f"# dreamfusion run {quote(prompt)}\n" + to_yaml(cfg)
    assert text.splitlines()[0].startswith("# dreamfusion run ")
    assert len(text.splitlines()) == len(to_yaml(cfg).splitlines()) + 1
    assert parse_yaml(text, "") == parse_yaml(to_yaml(cfg), "")
    assert json.loads(text.splitlines()[0][len("# dreamfusion run "):]) == prompt


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
    run_dir = _fast_run(tmp_path / "out", "steps=8", "checkpoint.every=4")
    (run_dir / "checkpoints" / "step_000008.pt").unlink()           # as if killed at step 6
    (run_dir / "summary.json").unlink()
    (run_dir / name).unlink()
    (run_dir / name).symlink_to("/dev/full")                        # every write: ENOSPC
    kept = {p.name: p.read_bytes() for p in (run_dir / "checkpoints").iterdir()}
    capsys.readouterr()
    assert main(["run", "--resume", str(run_dir), "--quiet"]) == 2
    err = _one_line_error(capsys)
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
    assert f"{failing}: No space left on device" in _one_line_error(capsys)
    assert list(root.iterdir()) == []


# --- 3. every number has a range a machine can honour ------------------------------------------

def _numeric_fields(cls: type, prefix: str = "") -> list[str]:
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        base = args[0] if typing.get_origin(kind) is typing.Union else kind
        if dataclasses.is_dataclass(base):
            keys += _numeric_fields(base, f"{prefix}{f.name}.")
        elif typing.get_origin(base) in (list, typing.List):
            inner = typing.get_args(base)[0]
            if dataclasses.is_dataclass(inner):
                keys += _numeric_fields(inner, f"{prefix}{f.name}.")
            elif inner in (int, float):
                keys.append(f"{prefix}{f.name}")
        elif base in (int, float) or f.name in ("threshold",) or base is typing.Any:
            keys.append(f"{prefix}{f.name}")
    return keys


PAIRS = {"camera.elevation", "camera.azimuth", "camera.distance", "camera.fov",
         "background.color"}


def test_every_number_in_the_schema_has_a_range():
    numeric = _numeric_fields(RunConfig)
    assert len(numeric) > 60
    for key in numeric:
        if key.startswith("regularizers."):
            assert {"regularizers.weight", "regularizers.step"} <= set(RANGES)
        else:
            assert key in RANGES or key in PAIRS, f"{key} has no range in config/limits.py"


PLAIN = [k for k in RANGES if not k.startswith(("prompt.views.", "regularizers.",
                                                 "faults.inject_nan_at"))]


def _schema_type(key: str) -> type:
    cls: type = RunConfig
    for part in key.split("."):
        kind = typing.get_type_hints(cls)[part]
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        cls = args[0] if typing.get_origin(kind) is typing.Union else kind
    return cls


@pytest.mark.parametrize("key", PLAIN)
def test_a_number_past_its_range_is_refused_by_name(key):
    high = RANGES[key].high
    integer = _schema_type(key) is int
    value = str(int(high) * 10 + 1) if integer else repr(high * 10)
    with pytest.raises(UserError, match=rf"^config {key}: must be in "):
        load_config("toy", [f"{key}={value}"])
    with pytest.raises(UserError, match=rf"^config {key}"):
        load_config("toy", [f"{key}=nan"])
    if not integer:
        with pytest.raises(UserError, match=rf"^config {key}: must be a finite number"):
            load_config("toy", [f"{key}=-inf"])


@pytest.mark.parametrize("overrides, fragment", [
    (["seed=18446744073709551616"], "config seed: must be in [0, 4294967295]"),
    (["nerf.hidden=1000000000000"], "config nerf.hidden: must be in [1, 1024]"),
    (["nerf.layers=100000000"], "config nerf.layers: must be in [1, 16]"),
    (["steps=100000000000000000000000000000"], "config steps: must be in [1, 10000000]"),
    (["prompt.views=[{name: front, half_width: 500}]"], "prompt.views[0].half_width"),
    (["faults.inject_nan_at=[99999999999]"], "config faults.inject_nan_at: must be in"),
    (["regularizers.entropy=[0,1,1,1e30]"], "config regularizers.entropy[3]: must be in"),
    (["nerf.grid.growth=4", "nerf.grid.n_levels=16"], "the finest level would be"),
])
def test_the_issue_s_unbounded_values(overrides, fragment, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "a red cube", *overrides, "--dry-run"]) == 2
    assert fragment in _one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_sizes_that_depend_on_each_other_are_checked_against_memory(tmp_path, capsys,
                                                                     monkeypatch):
    from dreamfusion.pipeline import inputs

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(inputs, "machine_memory", lambda: 8 << 30)
    assert main(["run", "a red cube", "--dry-run"]) == 0            # the default fits in 8 GiB
    capsys.readouterr()
    for big in (["nerf.grid.n_levels=32", "nerf.grid.features=16",
                 "nerf.grid.table_size_log2=24"],
                ["height=2048", "width=2048", "batch_size=64"]):
        assert main(["run", "a red cube", *big, "--dry-run"]) == 2
        err = _one_line_error(capsys)
        assert "this config needs about" in err and "more than the 8.0 GiB" in err
    assert list(tmp_path.iterdir()) == []
    small = memory_needs(load_config("toy"))
    large = memory_needs(load_config("toy", ["height=512", "width=512"]))
    assert large["one training step's samples"] == 256 * small["one training step's samples"]


# --- 4. YAML that would hang or flood ----------------------------------------------------------

def _alias_bomb(levels: int = 9) -> str:
    lines = ["camera:", "  fov: &a0 [40, 60]", "x:"]
    for i in range(1, levels):
        lines.append(f"  l{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("case", ["alias-bomb", "deep-file", "deep-override", "huge-file",
                                  "interpolation-loop"])
def test_hostile_yaml_is_refused_in_one_line_at_once(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "hostile.yaml"
    args = ["run", "a red cube", "--config", str(path), "--dry-run"]
    if case == "alias-bomb":
        path.write_text(_alias_bomb())
        fragment = "holds more than 10000 values"
    elif case == "deep-file":
        path.write_text("steps: " + "[" * 20000 + "]" * 20000 + "\n")
        fragment = f"nested more than {MAX_DEPTH} levels deep"
    elif case == "deep-override":
        args = ["run", "a red cube", "steps=" + "[" * 20000 + "]" * 20000, "--dry-run"]
        fragment = f"nested more than {MAX_DEPTH} levels deep"
    elif case == "huge-file":
        path.write_text("# padding\n" * 200_000)
        fragment = "the limit is 1048576"
    else:
        path.write_text("output:\n  root: ${output.root}/x\n")
        fragment = "config output.root: Recursive interpolation"
    started = time.perf_counter()
    assert main(args) == 2
    # not a speed target: a bound that an exponential merge or a hang would blow through
    assert time.perf_counter() - started < 10
    assert fragment in _one_line_error(capsys)


# --- 5. numbers stored as text are checked as numbers -----------------------------------------

@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e999", "-1", "0"])
def test_export_threshold_is_checked_as_a_density(value, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "a red cube", f"export.threshold={value}", "--dry-run"]) == 2
    assert "config export.threshold: must be" in _one_line_error(capsys)


@pytest.mark.parametrize("key", ["regularizers.orientation", "regularizers.sparsity"])
@pytest.mark.parametrize("value", ["nan", "inf", "[0,nan,1,10]", "[0,1,1,inf]"])
def test_regularizer_weights_are_finite(key, value):
    with pytest.raises(UserError, match=rf"^config {key}"):
        load_config("toy", [f"{key}={value}"])


def test_export_flags_are_refused_before_any_work_with_advice_that_fits(tmp_path, capsys):
    run_dir = _fast_run(tmp_path / "out", "steps=2")
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")}
    for flags, fragment in ([["--threshold", "nan"], "config export.threshold: must be a finite"],
                            [["--resolution", "1"], "config export.resolution: must be in [8"]):
        assert main(["export", str(run_dir), *flags]) == 2
        err = _one_line_error(capsys)
        assert fragment in err and "try" not in err
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")} == before


def test_no_surface_advice_fits_the_cause():
    assert "diverged" in str(no_surface(float("nan"), float("nan"), 1.0))
    assert "diverged" in str(no_surface(0.0, float("inf"), 1.0))
    assert "everywhere" in str(no_surface(5.0, 5.0, 1.0))
    assert "train more steps" in str(no_surface(0.0, 0.0, 1.0))
    for lo, hi, threshold in [(0.0, 50.0, 100.0), (2.0, 50.0, 1.0), (1e-9, 1e-3, 1.0)]:
        message = str(no_surface(lo, hi, threshold))
        suggestion = float(message.split("try a threshold of ")[1].split(" ")[0])
        assert lo < suggestion < hi, message
        load_config("toy", [f"export.threshold={suggestion}"])        # advice that validates


# --- 6. temporary files of killed writes --------------------------------------------------------

def test_resume_and_export_clean_temporary_files_anywhere_in_the_run(tmp_path, capsys):
    run_dir = _fast_run(tmp_path / "out", "steps=8", "checkpoint.every=4", "export.enabled=true")
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
    run_dir = _fast_run(tmp_path / "out", "steps=8", "checkpoint.every=4")
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
        err = _one_line_error(capsys)
        assert "no usable checkpoint" in err and f"lacks {damage}" in err


def test_a_checkpoint_whose_tensors_do_not_fit_is_one_line_for_both(tmp_path, capsys):
    run_dir = _fast_run(tmp_path / "out", "steps=4", "checkpoint.every=4")
    (run_dir / "summary.json").unlink()
    for path in (run_dir / "checkpoints").glob("*.pt"):
        state = torch.load(path, weights_only=True)
        name = next(iter(state["scene"]["field"]))
        state["scene"]["field"][name] = torch.zeros(3)
        _resave(path, state)
    capsys.readouterr()
    for command in (["export", str(run_dir)], ["run", "--resume", str(run_dir), "--quiet"]):
        assert main(command) == 2
        assert "cannot load" in _one_line_error(capsys)


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


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["run", "a red hamburger"],
                                  ["run", "a red cube", "steps=0"], ["run", "a red\u2028cube"],
                                  ["run", "--help"], ["run", "a red cube", "steps=" + "[" * 9999],
                                  ["run", "a red cube", "nerf.grid.n_levels=32",
                                   "nerf.grid.features=16", "nerf.grid.table_size_log2=24",
                                   "nerf.grid.base_resolution=512", "nerf.grid.growth=1.1"]])
def test_help_version_and_refusals_do_not_import_torch(args):
    code = ("import sys\nfrom dreamfusion.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=120)
    assert proc.stderr.strip().splitlines()[-1] == "False", proc.stderr
