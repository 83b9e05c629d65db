"""Bad input of every kind: one line, exit code 2, before any work, and no file touched."""
import os
import re
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dreamfusion.cli import main
from dreamfusion.config import config_keys
from dreamfusion.pipeline.inputs import new_run_dir, slugify

NO_CUDA = not torch.cuda.is_available()
# config files the table refers to, written before the snapshot
FILES = {
    "unknown-key.yaml": b"steps: 10\nnerf:\n  hiden: 3\n",
    "wrong-type.yaml": b"steps: many\n",
    "a-list.yaml": b"- steps\n- 10\n",
    "broken.yaml": b"steps: [10\n",
    "latin1.yaml": b"# caf\xe9\nsteps: 10\n",
    "alias-bomb.yaml": ("camera:\n  fov: &a0 [40, 60]\nx:\n" + "".join(
        f"  l{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n" for i in range(1, 9))).encode(),
    "deep.yaml": b"steps: " + b"[" * 20000 + b"]" * 20000 + b"\n",
    "line-separator.yaml": "prompt:\n  negative: \"a red\u2028cube\"\n".encode(),
    "prompts.txt": b"a red cube\na blue torus\n",
    "no-prompts.txt": b"# only a comment\n\n",
    "twins.txt": b"a red cube\nA red cube!\n",
}


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*")}


CASES = [
    # prompts
    (["run", ""], "prompt is empty"),
    (["run", "   "], "prompt is empty"),
    (["run", "a red cube " * 60], "the limit is 500"),
    (["run", "a red cube\x07"], "U+0007 (control character) at character 11"),
    (["run", "a red\ncube"], "control characters"),
    (["run", "a red cube \udcff"], "not valid UTF-8"),
    (["run", "a red\u2028cube"], "U+2028 (LINE SEPARATOR) at character 6"),
    (["run", "a red\x85cube"], "U+0085"),
    (["run", "a red\u202ecube"], "U+202E (RIGHT-TO-LEFT OVERRIDE)"),
    (["run", "\ufeffa red cube"], "U+FEFF"),
    (["run", "a red hamburger"], "hamburger"),
    (["run", "a red cube", "prompt.negative=a red hamburger"], "hamburger"),
    (["run"], "prompt"),
    # keys and types
    (["run", "a red cube", "stepz=3"], "did you mean 'steps'"),
    (["run", "a red cube", "nerf.grid=3"], "unknown config key 'nerf.grid'"),
    (["run", "a red cube", "steps"], "must look like key.sub=value"),
    (["run", "a red cube", "=5"], "unknown config key ''"),
    (["run", "a red cube", "steps=three"], "steps"),
    (["run", "a red cube", "steps=1.5"], "steps"),
    (["run", "a red cube", "prompt.view_dependent=maybe"], "prompt.view_dependent"),
    (["run", "a red cube", "camera.elevation=10"], "camera.elevation"),
    # out-of-range values
    (["run", "a red cube", "steps=-1"], "config steps: must be in [1, 10000000], got -1"),
    (["run", "a red cube", "height=0"], "config height: must be in [8, 4096], got 0"),
    (["run", "a red cube", "export.resolution=0"], "config export.resolution: must be in [8, 1024], got 0"),
    (["run", "a red cube", "marcher.grid_resolution=0"], "marcher.grid_resolution"),
    (["run", "a red cube", "export.resolution=5000"], "config export.resolution: must be in [8, 1024], got 5000"),
    (["run", "a red cube", "shading.albedo=0.9"], "summing to 1"),
    (["run", "a red cube", "guidance.t_min=0.9", "guidance.t_max=0.5"], "t_min < t_max"),
    (["run", "a red cube", "guidance.t_min=0.5", "guidance.t_max=0.5"], "t_min < t_max"),
    (["run", "a red cube", "camera.elevation=[50,10]"], "camera.elevation"),
    (["run", "a red cube", "camera.fov=[40]"], "must be [min, max]"),
    (["run", "a red cube", "optim.lr=nan"], "optim.lr"),
    (["run", "a red cube", "optim.lr=inf"], "must be a finite number"),
    (["run", "a red cube", "nerf.grid.table_size_log2=40"], "nerf.grid.table_size_log2"),
    (["run", "a red cube", "seed=-1"], "config seed"),
    (["run", "a red cube", "seed=18446744073709551616"], "config seed: must be in [0, 4294967295]"),
    (["run", "a red cube", "nerf.hidden=1000000000000"], "config nerf.hidden: must be in"),
    (["run", "a red cube", "nerf.layers=100000000"], "config nerf.layers: must be in"),
    (["run", "a red cube", "steps=100000000000000000000000000000"], "config steps: must be in"),
    (["run", "a red cube", "export.threshold=nan"], "config export.threshold: must be a finite"),
    (["run", "a red cube", "export.threshold=-inf"], "config export.threshold"),
    (["run", "a red cube", "steps=" + "[" * 20000 + "]" * 20000], "nested more than 16"),
    (["run", "a red cube", "output.root=${output.root}"], "Recursive interpolation"),
    (["run", "a red cube", "nerf.grid.n_levels=32", "nerf.grid.features=16",
      "nerf.grid.table_size_log2=24", "nerf.grid.base_resolution=512", "nerf.grid.growth=1.1"],
     "this config needs about 128.8 GiB"),
    (["run", "a red cube", "export.formats=[fbx]"], "unknown format 'fbx'"),
    (["run", "a red cube", "checkpoint.every=0"], "checkpoint.every"),
    (["run", "a red cube", "output.eval_every=0"], "config output.eval_every: must be in [1, 10000000]"),
    (["run", "a red cube", "guidance.model=\udcff"], "guidance.model: is not valid UTF-8"),
    (["run", "a red cube", "faults.lr_factor=2"], "faults.lr_factor"),
    (["run", "a red cube", "guidance.schedule=cosine"], "guidance.schedule"),
    (["run", "a red cube", "nerf.grid.backend=gpu"], "nerf.grid.backend"),
    # geometry, Perp-Neg and regularizers
    (["run", "a red cube", "nerf.normals=sobel"], "config nerf.normals: must be one of"),
    (["run", "a red cube", "nerf.fd_eps=0"], "config nerf.fd_eps"),
    (["run", "a red cube", "nerf.grid.start_levels=-1"], "config nerf.grid.start_levels"),
    (["run", "a red cube", "nerf.grid.level_every=0"], "config nerf.grid.level_every"),
    (["run", "a red cube", "prompt.perp_neg=true", "prompt.view_dependent=false"],
     "prompt.perp_neg: needs prompt.view_dependent=true"),
    (["run", "a red cube", "regularizers.sparsity=-1"], "config regularizers.sparsity"),
    (["run", "a red cube", "regularizers.orientation=[0,10]"], "config regularizers.orientation"),
    (["run", "a red cube", "regularizers.entropy=[500,1,2,100]"], "start_step < end_step"),
    (["run", "a red cube", "regularizers.entropy=lots"], "config regularizers.entropy"),
    (["run", "a red cube", "regularizers.sparsity=nan"], "config regularizers.sparsity"),
    (["run", "a red cube", "guidance.render_size=4"], "config guidance.render_size"),
    (["run", "a red cube", "device=cuda"] if NO_CUDA else
     ["run", "a red cube", "device=tpu"], "device"),
    # 3D Gaussians
    (["run", "a red cube", "representation=splats"],
     "config representation: must be one of nerf, gaussians, mesh, got 'splats'"),
    (["run", "a red cube", "representation=gaussians", "gaussians.count=0"],
     "config gaussians.count: must be in [1, 10000000], got 0"),
    (["run", "a red cube", "--config", "toy-gaussians", "gaussians.count=-5"],
     "config gaussians.count: must be in [1, 10000000], got -5"),
    (["run", "a red cube", "--config", "toy-gaussians", "gaussians.count=7000"],
     "config gaussians.count: must be <= gaussians.max_count (6000)"),
    (["run", "a red cube", "--config", "toy-gaussians", "gaussians.max_count=0"],
     "config gaussians.max_count: must be in [1, 10000000], got 0"),
    (["run", "a red cube", "--config", "toy-gaussians", "gaussians.densify.grad_threshold=0"],
     "config gaussians.densify.grad_threshold: must be in (0, 1000000], got 0"),
    (["run", "a red cube", "--config", "toy-gaussians", "gaussians.densify.grad_threshold=-1"],
     "config gaussians.densify.grad_threshold: must be in (0"),
    (["run", "a red cube", "--config", "toy-gaussians", "gaussians.densify.percent_dense=2"],
     "config gaussians.densify.percent_dense: must be in (0, 1], got 2"),
    (["run", "a red cube", "--config", "toy-gaussians", "gaussians.densify.min_opacity=1.5"],
     "config gaussians.densify.min_opacity: must be in [0, 0.99], got 1.5"),
    # a mapping where the schema holds a list: omegaconf raises a bare TypeError for it
    (["run", "a red cube", "camera.elevation={a: 1}"],
     "config camera.elevation on the command line: must be a list"),
    (["run", "a red cube", "--config", "toy-gaussians", "gaussians.rasterize_mode=mip"],
     "config gaussians.rasterize_mode: must be one of classic, antialiased, got 'mip'"),
    (["run", "a red cube", "--config", "toy-gaussians", "gaussians.lr.position_final=0"],
     "config gaussians.lr.position_final: must be in (0, 1e+30], got 0"),
    (["run", "a red cube", "--config", "toy-gaussians", "gaussians.densify.start=500",
      "gaussians.densify.stop=100"], "config gaussians.densify.start: must be <= "),
    (["run", "a red cube", "--config", "toy-gaussians", "gaussians.init_radius=3"],
     "config gaussians.init_radius: must be <= nerf.bound"),
    (["run", "a red cube", "--config", "toy-gaussians", "gaussians.backend=cuda"],
     "config gaussians.backend: must be one of auto, torch, cpp, gsplat"),
    (["run", "a red cube", "--config", "toy-gaussians", "gaussians.backend=gsplat"],
     "config gaussians.backend: gsplat needs a CUDA device"),
    (["run", "a red cube", "--config", "toy-gaussians", "regularizers.orientation=1"],
     "config regularizers.orientation: the gaussians representation does not feed this term"),
    # multi-view guidance
    (["run", "a yellow duck", "--config", "toy-multiview", "prompt.view_dependent=true",
      "prompt.perp_neg=true"], "config prompt.perp_neg: is for single-view priors"),
    (["run", "a red cube", "--config", "mvdream-sd21", "guidance.model=x",
      "camera.views_per_sample=2"], "config camera.views_per_sample: must be 4"),
    (["run", "a red cube", "--config", "mvdream-sd21"], "guidance.model"),
    (["run", "a red cube", "guidance.checkpoint=x.pt"], "is read by the mvdream prior only"),
    (["run", "a red cube", "camera.views_per_sample=17"], "camera.views_per_sample"),
    (["run", "a red cube", "guidance.loss=x0"], "config guidance.loss: must be one of sds, recon"),
    # config files
    (["run", "a red cube", "--config", "nope.yaml"], "not found"),
    (["run", "a red cube", "--config", "."], "is not a file"),
    (["run", "a red cube", "--config", "unknown-key.yaml"], "'nerf.hiden' in unknown-key.yaml"),
    (["run", "a red cube", "--config", "wrong-type.yaml"], "steps"),
    (["run", "a red cube", "--config", "a-list.yaml"], "must be a mapping"),
    (["run", "a red cube", "--config", "broken.yaml"], "not valid YAML"),
    (["run", "a red cube", "--config", "latin1.yaml"], "cannot read config"),
    (["run", "a red cube", "--config", "alias-bomb.yaml"], "holds more than 10000 values"),
    (["run", "a red cube", "--config", "deep.yaml"], "nested more than 16 levels deep"),
    (["run", "a red cube", "--config", "line-separator.yaml"],
     "config prompt.negative: contains U+2028"),
    # models and paths
    (["run", "a red cube", "guidance.prior=stable_diffusion"], "guidance.model"),
    (["run", "a red cube", "--config", "dreamfusion-sd", "guidance.model=./no/such/folder"],
     "neither a folder nor a hub id"),
    (["run", "a red cube", "output.root=unknown-key.yaml/outputs"], "cannot write to output"),
    (["run", "--resume", "no-such-run"], "no such folder"),
    (["run", "--resume", "."], "no config.yaml"),
    (["run", "--resume", ".", "--config", "toy"], "give no --config"),
    (["run", "a red cube", "--dry-run", "--resume", "."], "does not combine"),
    (["export", "no-such-run"], "cannot export 'no-such-run': no such folder"),
    # commands and flags
    (["fly"], "invalid choice"),
    (["run", "a red cube", "--fast"], "unrecognized arguments: --fast"),
    (["bench", "speed", "--points", "0"], "--points"),
    (["bench", "sds-step", "--steps", "0"], "--steps"),
    (["bench", "sds-step", "steps=3"], "no config overrides"),
    (["bench", "sds-step", "--device", "cuda"] if NO_CUDA else
     ["bench", "sds-step", "--device", "tpu"], "cuda" if NO_CUDA else "tpu"),
    (["bench", "toy", "--prompts", "a red cube", "a red hamburger"], "hamburger"),
    # many runs: batch and the executors
    (["batch", "no-such-prompts.txt"], "cannot read prompts file 'no-such-prompts.txt'"),
    (["batch", "no-prompts.txt"], "has no prompts"),
    (["batch", "twins.txt"], "would share the run folder 'a-red-cube'"),
    (["batch", "prompts.txt", "stepz=3"], "did you mean 'steps'"),
    (["batch", "prompts.txt", "--config", "dreamfusion-sd", "guidance.model=./no/such/folder"],
     "neither a folder nor a hub id"),
    (["batch", "prompts.txt", "--executor", "dask"], "invalid choice: 'dask'"),
    (["batch", "prompts.txt", "--cpus-per-run", "0"], "--cpus-per-run must be >= 1"),
    (["batch", "prompts.txt", "--retries", "-1"], "--retries must be >= 0"),
    (["batch", "prompts.txt", "--ray-address", "10.0.0.1:6379"], "needs --executor ray"),
    (["bench", "toy", "--cpus-per-run", "-2"], "--cpus-per-run must be >= 1"),
    (["bench", "remedies", "--executor", "spark"], "invalid choice: 'spark'"),
    (["bench", "rprecision", "--config", "toy", "--cpus-per-run", "0"], "--cpus-per-run"),
    (["bench", "executors", "--cpus-per-run", "0"], "--cpus-per-run must be >= 1"),
    (["bench", "executors", "--config", "dreamfusion-sd", "guidance.model=x"], "guidance.prior=toy"),
    (["bench", "executors", "--runs", "."], "times fresh runs, and '.' already holds some"),
    # the web app: refused before the page is built
    (["app", "--port", "0"], "--port must be between 1 and 65535, got 0"),
    (["app", "--port", "http"], "invalid int value: 'http'"),
    (["app", "--host", "no-such-host.invalid"], "cannot listen on --host 'no-such-host.invalid'"),
    (["app", "steps=5"], "app takes flags, not config overrides: steps=5"),
    (["app", "--root", "prompts.txt/outputs"], "cannot write to output folder"),
]


@pytest.mark.parametrize("args, fragment", CASES, ids=[f"{i:02d}" for i in range(len(CASES))])
def test_bad_input_is_one_line_exit_2_and_touches_nothing(args, fragment, tmp_path, capsys,
                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DREAMFUSION_CACHE", str(tmp_path / "cache"))
    for name, data in FILES.items():
        (tmp_path / name).write_bytes(data)
    before = _tree(tmp_path)
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("dreamfusion: error:") and "\n" not in err, err
    assert fragment in err, err
    assert _tree(tmp_path) == before            # no run folder, no cache, no half-written file
    assert not (tmp_path / "outputs").exists()


def test_the_table_covers_every_kind_the_issue_lists():
    assert len(CASES) >= 25


def test_unwritable_output_folder(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = main(["run", "a red cube", f"output.root={blocker / 'outputs'}"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot write to output folder" in err
    assert blocker.read_text() == "not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes through any permission")
def test_unreadable_config_and_read_only_output(tmp_path, capsys):
    config = tmp_path / "secret.yaml"
    config.write_text("steps: 10\n")
    config.chmod(0)
    assert main(["run", "a red cube", "--config", str(config)]) == 2
    assert "cannot read config" in capsys.readouterr().err
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert main(["run", "a red cube", f"output.root={locked}"]) == 2
    assert "cannot write to output folder" in capsys.readouterr().err


def test_dry_run_checks_and_prints_the_config_without_writing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "a red cube", "--dry-run", "steps=5"]) == 0
    captured = capsys.readouterr()
    assert "steps: 5" in captured.out and "are valid" in captured.err
    assert list(tmp_path.iterdir()) == []


# --- property-based: nothing the parser is fed ends in a traceback -----------------------------

KEYS = config_keys()
VALUES = st.one_of(
    st.text(max_size=12), st.integers(-10**12, 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.lists(st.integers(-400, 400), max_size=3).map(lambda v: str(v).replace(" ", "")),
    st.sampled_from(["true", "no", "null", "~", "[", "{a: 1}", "1e999", "auto", "-0", ""]))
OVERRIDES = st.one_of(
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS), VALUES),
    st.builds(lambda k, v: f"{k}={v}", st.text(max_size=12), VALUES),
    st.text(max_size=20))
PROMPTS = st.one_of(st.text(max_size=600),
                    st.sampled_from(["a red cube", "a yellow duck, side view", "a blue torus"]))


@pytest.mark.slow
@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompt=PROMPTS, overrides=st.lists(OVERRIDES, max_size=4))
def test_random_prompts_and_overrides_never_raise(prompt, overrides, tmp_path, capsys):
    code = main(["run", prompt, *overrides, "--dry-run", f"output.root={tmp_path / 'out'}"])
    captured = capsys.readouterr()
    assert code in (0, 2), captured.err
    assert "Traceback" not in captured.err
    if code == 2:
        assert captured.err.startswith("dreamfusion: error:") and captured.err.count("\n") == 1
    assert not (tmp_path / "out").exists()


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompt=st.text(min_size=1, max_size=600))
def test_no_prompt_names_a_folder_outside_the_output_root(prompt, tmp_path):
    slug = slugify(prompt)
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", slug) and len(slug) <= 48
    root = tmp_path / "outputs"
    first, second = new_run_dir(root, prompt), new_run_dir(root, prompt)
    assert first != second                              # unique, even within one second
    for path in (first, second):
        assert path.parent == root and path.resolve().is_relative_to(root.resolve())
        path.rmdir()


@pytest.mark.parametrize("prompt", ["../../etc/passwd", "a/b\\c", "..", ".", "~root", "日本語の猫",
                                    "/abs/path", "a" * 400])
def test_hostile_prompts_stay_inside_outputs(prompt, tmp_path):
    path = new_run_dir(tmp_path, prompt)
    assert path.parent == tmp_path and ".." not in path.name and "/" not in path.name
    assert len(path.name) <= 48 + len("-20261124-120000-999")
