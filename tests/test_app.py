"""dreamfusion app: the run manager and the gallery on their own, then the page itself in
Debian's headless Chromium (a toy run from prompt to downloads, a bad prompt, Stop)."""
import importlib.util
import io
import json
import os
import re
import socket
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from browser import AppProcess, Page, browser_missing, chromium, colour_share
from dreamfusion.app.gallery import finished_runs, obj_zip, read_run
from dreamfusion.app.runner import (Runner, find_run_dir, read_progress, refine_command,
                                    run_command)
from dreamfusion.cli import main
from dreamfusion.errors import UserError
from dreamfusion.guidance.toy.captions import COLORS

# a toy run small enough for a test that still trains a solid, coloured object (about 30 s,
# with 64 reference renders per caption instead of 512 to build)
SMALL = ("height=32 width=32 nerf.grid.n_levels=8 nerf.hidden=32 export.resolution=48 "
         "guidance.references=64 guidance.uncond_per_caption=1 "
         "export.texture_size=128 output.val_every=10 output.val_size=32 "
         "output.turntable_frames=4 output.turntable_size=32 output.log_every=1")
SCREENSHOTS = os.environ.get("DREAMFUSION_APP_SCREENSHOTS")     # a folder to keep them in


# --- without a browser ----------------------------------------------------------------------

def test_without_gradio_the_app_names_its_extra(monkeypatch, capsys, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gradio" else real(name, *a))
    monkeypatch.chdir(tmp_path)
    assert main(["app"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dreamfusion: error:") and "pip install 'dreamfusion[app]'" in err
    assert list(tmp_path.iterdir()) == []


def test_a_taken_port_is_one_clear_line(capsys, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["app", "--port", str(port), "--root", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"dreamfusion: error: port {port} on 127.0.0.1 is taken (another app or "
                   f"server is listening there); choose another with --port")
    assert not (tmp_path / "out").exists()


def test_the_run_command_keeps_a_dash_prompt_a_prompt(tmp_path):
    command = run_command("-a red cube", "toy", ["steps=5"], tmp_path)
    assert command[3:] == ["run", "--config", "toy", "--", "-a red cube", "steps=5",
                           f"output.root={tmp_path}"]


def test_the_run_folder_is_the_new_one_with_this_prompt(tmp_path):
    def folder(name: str, prompt: str) -> Path:
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text(f'# dreamfusion run "{prompt}"\nseed: 0\n')
        return tmp_path / name

    folder("a-red-cube-old", "a red cube")
    before = {p.name for p in tmp_path.iterdir()}
    folder("a-blue-torus-new", "a blue torus")           # another process's run
    assert find_run_dir(tmp_path, before, "a red cube") is None
    ours = folder("a-red-cube-new", "a red cube")
    assert find_run_dir(tmp_path, before, "a red cube") == ours


def test_progress_is_the_last_step_record_and_the_newest_strip(tmp_path):
    (tmp_path / "val").mkdir()
    for step in (10, 20):
        (tmp_path / "val" / f"step_{step:06d}.png").write_bytes(b"")
    records = [{"step": 9, "loss": 1.0, "t": 0.5, "seconds": 1.0},
               {"step": 10, "eval_silhouette_iou": 0.5}]
    (tmp_path / "metrics.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in records) + '{"step": 11, "lo')   # being written
    record, strip = read_progress(tmp_path)
    assert record["step"] == 9 and strip.name == "step_000020.png"


def _toy_run(root: Path, prompt: str, seed: int, age: float) -> Path:
    run = root / f"{prompt.replace(' ', '-')}-{seed}"
    run.mkdir(parents=True)
    (run / "model.obj").write_text("mtllib model.mtl\nv 0 0 0\n")
    (run / "model.mtl").write_text("newmtl albedo\nmap_Kd texture.png\n")
    (run / "texture.png").write_bytes(b"\x89PNG fake")
    (run / "model.glb").write_bytes(b"glTF")
    (run / "summary.json").write_text(json.dumps(
        {"prompt": prompt, "seed": seed, "silhouette_iou": 0.91234, "steps": 10}))
    os.utime(run / "summary.json", (time.time() - age, time.time() - age))
    return run


def test_the_gallery_lists_finished_runs_newest_first_and_zips_the_obj(tmp_path):
    root = tmp_path / "outputs"
    old = _toy_run(root, "a red cube", 0, age=100)
    new = _toy_run(root / "batch-x", "a blue torus", 1, age=10)
    (root / "unfinished").mkdir()
    (root / "unfinished" / "config.yaml").write_text("seed: 0\n")
    (new / "model.ply").write_bytes(b"ply\n")             # a Gaussian run's splats
    stage = _toy_run(old / "refine", "a red cube", 0, age=50)     # its mesh stage, inside it
    summary = json.loads((stage / "summary.json").read_text())
    (stage / "summary.json").write_text(json.dumps({**summary, "representation": "mesh"}))
    os.utime(stage / "summary.json", (time.time() - 50, time.time() - 50))
    runs = finished_runs(root)
    assert [r.run_dir for r in runs] == [new, stage, old]
    assert "mesh stage" in runs[1].label and "mesh stage" not in runs[2].label
    runs.pop(1)
    assert runs[0].ply == new / "model.ply" and runs[1].ply is None
    assert runs[1].metrics_rows()[0] == ["silhouette IoU (toy truth)", "0.9123"]
    archive = obj_zip(read_run(old), tmp_path)
    with zipfile.ZipFile(archive) as z:
        assert sorted(z.namelist()) == ["model.mtl", "model.obj", "texture.png"]
        assert z.read("texture.png") == (old / "texture.png").read_bytes()


def test_refine_is_checked_before_its_child_starts_and_creates_nothing(tmp_path):
    assert refine_command(tmp_path / "run", ["refine.steps=5"])[3:] == [
        "refine", str(tmp_path / "run"), "refine.steps=5"]
    runner = Runner(tmp_path / "outputs")
    not_a_run = _toy_run(tmp_path / "outputs", "a red cube", 0, age=0)   # no config.yaml
    before = sorted(p.name for p in not_a_run.iterdir())
    with pytest.raises(UserError, match="not a run folder"):
        runner.start_refine(not_a_run)
    with pytest.raises(UserError, match="no such folder"):
        runner.start_refine(tmp_path / "gone")
    assert sorted(p.name for p in not_a_run.iterdir()) == before
    assert not (tmp_path / "gone").exists() and not runner.snapshot().active


def test_a_model_that_cannot_load_fails_the_run_with_the_clis_line(tmp_path, capsys):
    args = ["guidance.model=./no/such/model", "device=cpu"]
    assert main(["run", "a red cube", "--config", "dreamfusion-sd", *args,
                 f"output.root={tmp_path / 'cli'}"]) == 2
    cli_line = capsys.readouterr().err.strip()
    runner = Runner(tmp_path / "outputs")
    runner.start("a red cube", "dreamfusion-sd", args)     # checked in the run's own process
    deadline = time.monotonic() + 120
    while runner.snapshot().active:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    snap = runner.snapshot()
    assert snap.state == "failed" and snap.message == cli_line, snap
    assert snap.run_dir is None and list((tmp_path / "outputs").iterdir()) == []


@pytest.mark.slow
def test_one_run_at_a_time_and_stop_keeps_a_checkpoint(tmp_path, fast_overrides):
    root = tmp_path / "outputs"
    runner = Runner(root)
    with pytest.raises(UserError, match="does not know 'hamburger'"):
        runner.start("a red hamburger", "toy", [])
    with pytest.raises(UserError, match="'--quiet' must look like key.sub=value"):
        runner.start("a red cube", "toy", ["--quiet"])       # a flag is not a key
    assert not root.exists() or list(root.iterdir()) == []
    overrides = [o for o in fast_overrides if not o.startswith(("steps=", "output.root="))]
    runner.start("a red cube", "toy", [*overrides, "steps=100000", "output.log_every=1"])
    with pytest.raises(UserError, match="one at a time"):
        runner.start("a blue torus", "toy", overrides)
    with pytest.raises(UserError, match="give no output.root"):
        Runner(root).start("a blue torus", "toy", ["output.root=elsewhere"])
    deadline = time.monotonic() + 180
    while runner.snapshot().step < 2:
        assert runner.snapshot().active and time.monotonic() < deadline, runner.snapshot()
        time.sleep(0.2)
    assert runner.stop()
    while runner.snapshot().active:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    snap = runner.snapshot()
    assert snap.state == "stopped", snap
    match = re.search(r"stopped by SIGINT at step (\d+); saved checkpoints/step_(\d+)\.pt",
                      snap.message)
    assert match and match.group(1) == str(int(match.group(2))), snap.message
    assert f"dreamfusion run --resume {snap.run_dir}" in snap.message
    assert (snap.run_dir / "checkpoints" / f"step_{int(match.group(1)):06d}.pt").is_file()
    assert not runner.stop()


# --- in the browser -------------------------------------------------------------------------

def _browser_or_skip() -> None:
    why = browser_missing()
    if why is not None:
        if os.environ.get("CI"):        # .ci/run installs them: a skip there would hide a failure
            pytest.fail(why)
        pytest.skip(why)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    _browser_or_skip()
    base = tmp_path_factory.mktemp("app")
    env = {**os.environ, "DREAMFUSION_CACHE": str(tmp_path_factory.getbasetemp() / "cache"),
           "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(base / "hf-hub")}
    server = AppProcess(base / "outputs", env)
    driver = chromium()
    try:
        yield Page(driver, server.url), base / "outputs", server
    finally:
        driver.quit()
        server.close()


def _wait_until_ended(page: Page, timeout: float = 300) -> str:
    return page.wait_for(lambda: page.status() if page.status().startswith(
        ("Finished:", "Stopped:", "dreamfusion:", "the run")) else None, timeout, "the run's end")


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


def test_a_bad_prompt_shows_the_clis_line_and_the_app_goes_on(app, capsys):
    page, root, _ = app
    assert main(["run", "a red banana"]) == 2
    cli_line = capsys.readouterr().err.strip()
    page.fill("#prompt textarea", "a red banana")
    page.click("generate")
    assert page.wait_for(lambda: page.status() == cli_line, 30, "the error line")
    page.fill("#overrides textarea", "stepz=3")
    page.fill("#prompt textarea", "a red cube")
    page.click("generate")
    assert page.wait_for(lambda: "did you mean 'steps'" in page.status(), 30)
    assert not root.exists() or list(root.iterdir()) == []
    assert _fetch(page.url).startswith(b"<!doctype html>")       # still answering
    assert page.remote_requests() == []


@pytest.mark.slow
def test_generate_shows_the_mesh_and_offers_the_runs_files(app):
    page, root, _ = app
    page.generate("a red cube", 60, SMALL)
    page.wait_for(lambda: "Training" in page.status(), 120, "training to start")
    page.wait_for(lambda: page.links("val") or page.driver.find_elements(
        "css selector", "#val img"), 120, "a validation strip")
    page.screenshot(SCREENSHOTS, "running.png")
    ended = _wait_until_ended(page)
    assert ended.startswith("Finished: wrote "), ended
    run_dir = Path(ended.removeprefix("Finished: wrote ").split(" in ")[0])
    assert run_dir.parent == root and (run_dir / "summary.json").is_file()
    summary = json.loads((run_dir / "summary.json").read_text())

    image = page.wait_for(lambda: _drawn(page, "run-viewer"), 60, "the 3D viewer")
    assert colour_share(image, COLORS["red"]) > 0.02          # the cube, in its colour
    metrics = page.find("#run-metrics").text
    assert "silhouette IoU (toy truth)" in metrics and f"{summary['silhouette_iou']:.4g}" in metrics
    assert page.find("#run-turntable img").get_attribute("src")
    page.screenshot(SCREENSHOTS, "finished.png")

    links = page.links("run-files")
    glb = [u for u in links if u.endswith("model.glb")]
    zipped = [u for u in links if u.endswith("-obj.zip")]
    assert len(glb) == 1 and len(zipped) == 1, links
    assert _fetch(glb[0]) == (run_dir / "model.glb").read_bytes()
    with zipfile.ZipFile(io.BytesIO(_fetch(zipped[0]))) as z:
        assert sorted(z.namelist()) == ["model.mtl", "model.obj", "texture.png"]
        for name in z.namelist():
            assert z.read(name) == (run_dir / name).read_bytes(), name

    # the gallery opens the newest finished run; re-export writes it again, at 40 per side
    page.open_tab("Gallery")
    page.wait_for(lambda: _drawn(page, "gallery-viewer"), 60, "the gallery's viewer")
    old_glb = (run_dir / "model.glb").read_bytes()
    page.fill("#gallery-tab input[type=number]", "40")
    page.click("reexport")
    page.wait_for(lambda: page.status("export-status").startswith("wrote "), 120, "the re-export")
    done = page.status("export-status")
    assert str(run_dir / "model.glb") in done
    new_glb = (run_dir / "model.glb").read_bytes()
    assert new_glb != old_glb
    page.wait_for(lambda: any(_fetch(u) == new_glb for u in page.links("gallery-files")
                              if u.endswith("model.glb")), 30, "the new GLB's link")
    page.screenshot(SCREENSHOTS, "gallery.png")
    assert page.remote_requests() == []


def _drawn(page: Page, viewer: str):
    """The viewer's canvas once it shows more than the background."""
    image = page.canvas_image(viewer)
    return image if (image.min(axis=2) < 200).mean() > 0.01 else None


@pytest.mark.slow
def test_stop_saves_a_checkpoint_the_cli_resumes(app, capsys):
    page, root, _ = app
    page.open_tab("Generate")
    page.generate("a red cube", 40, SMALL)      # its references are cached by now
    page.wait_for(lambda: not page.driver.find_elements("css selector", "#run-viewer canvas"),
                  30, "the last run's mesh to leave the viewer")
    page.wait_for(lambda: re.search(r"step ([1-9]\d*)/40", page.status()), 240, "step 1")
    page.click("stop")
    ended = _wait_until_ended(page)
    match = re.search(r"Stopped: dreamfusion: stopped by SIGINT at step (\d+); saved "
                      r"checkpoints/step_\d+\.pt in (\S+); continue with: dreamfusion run "
                      r"--resume (\S+)$", ended)
    assert match and match.group(2) == match.group(3), ended
    run_dir, step = Path(match.group(2)), int(match.group(1))
    assert 0 < step < 40 and not (run_dir / "summary.json").exists()
    assert main(["run", "--resume", str(run_dir), "--quiet"]) == 0
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 40
    assert page.remote_requests() == []
