import os
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, monkeypatch):
    # the toy references are cached per session, never in the user's home
    monkeypatch.setenv("DREAMFUSION_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    # no test may reach the hub or read the user's Hugging Face cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path_factory.getbasetemp() / "hf-hub"))
    torch.manual_seed(0)


FAST = [  # a run small enough for the unit tests (seconds, not minutes)
    "steps=6", "height=16", "width=16", "nerf.grid.n_levels=4", "nerf.grid.table_size_log2=12",
    "nerf.hidden=16", "marcher.grid_resolution=16", "marcher.warmup_steps=2",
    "marcher.update_every=2", "guidance.references=16", "guidance.uncond_per_caption=1",
    "export.resolution=32", "export.texture_size=64", "output.val_every=3", "output.val_size=16",
    "output.turntable_frames=3", "output.turntable_size=16",
]

# the same with 3D Gaussians, densifying and pruning within those steps
FAST_GAUSSIANS = [
    *FAST, "representation=gaussians", "gaussians.count=150", "gaussians.max_count=600",
    "gaussians.min_scale=0.03", "gaussians.densify.start=2", "gaussians.densify.every=2",
    "gaussians.densify.stop=5", "gaussians.densify.opacity_reset_every=0",
    "gaussians.init_opacity=0.5",
    "gaussians.densify.grad_threshold=0.001",
]


def assert_same_state(a: dict, b: dict) -> None:
    """Two checkpoints' scenes and Adam moments equal, tensor for tensor."""
    for module, params in a["scene"].items():
        for name, tensor in params.items():
            assert torch.equal(tensor, b["scene"][module][name]), f"{module}.{name}"
    for key, moments in a["trainer"]["optimizer"]["state"].items():
        for name, value in moments.items():
            assert torch.equal(value, b["trainer"]["optimizer"]["state"][key][name]), name
    assert a["trainer"]["step"] == b["trainer"]["step"]


@pytest.fixture
def fast_overrides(tmp_path: Path) -> list[str]:
    return FAST + [f"output.root={tmp_path / 'outputs'}"]


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true",
                     help="also run the tests marked slow (end-to-end runs, browsers, Ray)")


def pytest_configure(config):
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    config.addinivalue_line(
        "markers", "slow: an end-to-end test of minutes; skipped unless --slow (.ci/run passes it)")


def pytest_collection_modifyitems(config, items):
    # the common path (`python -m pytest -q tests`) stays within minutes on two cores; CI
    # runs the slow tests as a stage of their own, so nothing goes untested
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="slow end-to-end test: run with --slow")
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    from tiny_diffusers import save_tiny_stable_diffusion

    return save_tiny_stable_diffusion(tmp_path_factory.mktemp("models") / "tiny-sd")


@pytest.fixture(scope="session")
def tiny_if(tmp_path_factory) -> Path:
    from tiny_diffusers import save_tiny_deepfloyd_if

    return save_tiny_deepfloyd_if(tmp_path_factory.mktemp("models") / "tiny-if")


def fast_run(root: Path, *extra: str) -> Path:
    """A finished tiny run of "a red cube" under ``root`` (no meshes unless ``extra`` asks)."""
    from dreamfusion.cli import main

    assert main(["run", "a red cube", "--quiet", *FAST, "export.enabled=false",
                 f"output.root={root}", *extra]) == 0
    return next(p for p in root.iterdir() if p.is_dir())


def one_line_error(capsys) -> str:
    """What the CLI wrote to stderr, checked to be one ``dreamfusion: error:`` line."""
    err = capsys.readouterr().err.strip()
    assert err.startswith("dreamfusion: error:") and "\n" not in err and "Traceback" not in err, err
    return err
