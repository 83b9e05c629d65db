"""Hostile input, by class (issue 14): characters no text may hold, numbers past what a
machine can honour, YAML that would hang or flood, numbers stored as text, and answers that
come before torch is imported."""
import dataclasses
import json
import subprocess
import sys
import time
import typing

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dreamfusion.cli import main
from dreamfusion.config import MAX_DEPTH, load_config, parse_yaml, to_yaml
from dreamfusion.config.limits import PAIR_RANGES, RANGES, memory_needs
from dreamfusion.config.schema import RunConfig
from dreamfusion.config.text import bad_character, check_prompt
from dreamfusion.errors import UserError
from dreamfusion.export.mesh import no_surface
from dreamfusion.pipeline.inputs import config_header

from conftest import one_line_error


# --- 1. characters no prompt or config text can mean ------------------------------------------

REFUSED = ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x00", "\u202e", "\ufeff",
           "\u200b", "\u2066", "\x7f", "\x9b"]


@pytest.mark.parametrize("ch", REFUSED, ids=[f"U+{ord(c):04X}" for c in REFUSED])
def test_every_line_breaking_control_or_format_character_is_refused(ch, tmp_path, capsys,
                                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", f"a red{ch}cube", "steps=2"]) == 2
    assert f"U+{ord(ch):04X}" in one_line_error(capsys)
    assert main(["run", "a red cube", f"prompt.negative=a blue{ch}cube", "--dry-run"]) == 2
    assert f"config prompt.negative: contains U+{ord(ch):04X}" in one_line_error(capsys)
    views = tmp_path / "views.yaml"
    views.write_text(json.dumps({"prompt": {"views": [{"name": "front", "suffix": f", {ch}"}]}}))
    assert main(["run", "a red cube", "--config", str(views), "--dry-run"]) == 2
    assert "config prompt.views.0.suffix: contains" in one_line_error(capsys)
    assert list(tmp_path.iterdir()) == [views]


def test_joiners_and_other_scripts_are_text():
    for prompt in ["a 🧑‍🍳 cooking", "نان‌ها", "日本語の猫", "a café, side view"]:
        assert bad_character(prompt) is None and check_prompt(prompt) == prompt


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=200))
def test_no_accepted_prompt_breaks_the_config_file_it_heads(prompt):
    try:
        prompt = check_prompt(prompt)
    except UserError:
        return
    cfg = load_config("toy")
    text = config_header(prompt) + to_yaml(cfg)         # what pipeline.run writes
    assert text.splitlines()[0].startswith("# dreamfusion run ")
    assert len(text.splitlines()) == len(to_yaml(cfg).splitlines()) + 1
    assert parse_yaml(text, "") == parse_yaml(to_yaml(cfg), "")
    assert json.loads(text.splitlines()[0][len("# dreamfusion run "):]) == prompt


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


PAIRS = {*PAIR_RANGES, "background.color"}     # checked as pairs and as a colour
MESH_WEIGHTS = {"refine.normal_consistency", "refine.laplacian", "refine.offset_decay"}
# a mapping of probabilities (or null), checked whole by validate._validate_stage_shading
MAPPINGS = {"refine.shading"}


def test_every_number_in_the_schema_has_a_range():
    numeric = _numeric_fields(RunConfig)
    assert len(numeric) > 60
    for key in numeric:
        # weights or ramps, read by _validate_regularizers (the refine ones too)
        if key.startswith("regularizers.") or key in MESH_WEIGHTS:
            assert {"regularizers.weight", "regularizers.step"} <= set(RANGES)
        elif key in MAPPINGS:
            continue
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
    assert fragment in one_line_error(capsys)
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
        err = one_line_error(capsys)
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
    assert fragment in one_line_error(capsys)


# --- 5. numbers stored as text are checked as numbers -----------------------------------------

@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e999", "-1", "0"])
def test_export_threshold_is_checked_as_a_density(value, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "a red cube", f"export.threshold={value}", "--dry-run"]) == 2
    assert "config export.threshold: must be" in one_line_error(capsys)


@pytest.mark.parametrize("key", ["regularizers.orientation", "regularizers.sparsity"])
@pytest.mark.parametrize("value", ["nan", "inf", "[0,nan,1,10]", "[0,1,1,inf]"])
def test_regularizer_weights_are_finite(key, value):
    with pytest.raises(UserError, match=rf"^config {key}"):
        load_config("toy", [f"{key}={value}"])


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


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["run", "a red hamburger"],
                                  ["run", "a red cube", "steps=0"], ["run", "a red\u2028cube"],
                                  ["run", "--help"], ["run", "a red cube", "steps=" + "[" * 9999],
                                  ["run", "a red cube", "nerf.grid.n_levels=32",
                                   "nerf.grid.features=16", "nerf.grid.table_size_log2=24",
                                   "nerf.grid.base_resolution=512", "nerf.grid.growth=1.1"],
                                  ["bench", "--help"], ["bench", "speed", "--points", "0"],
                                  ["bench", "sds-step", "--steps", "0"],
                                  ["bench", "gpu", "--run-steps", "0"]])
def test_help_version_and_refusals_do_not_import_torch(args):
    code = ("import sys\nfrom dreamfusion.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=120)
    assert proc.stderr.strip().splitlines()[-1] == "False", proc.stderr
