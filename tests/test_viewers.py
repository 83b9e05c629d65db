"""Our files in the web viewers people open them in, in headless Chromium: ``model.glb`` in
three.js's GLTFLoader and ``model.ply`` in Spark (a maintained 3DGS renderer for three.js),
both from npm (``.ci/run``). The object is an axis-aligned box of unequal sides coloured by
position, so a file in the wrong frame, flipped, or with its colours misread shows in where
the box is drawn and which way its colours run. Skipped where Chromium or the npm packages
are missing, except in CI, which installs them and must run these checks."""
import base64
import functools
import http.server
import io
import math
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dreamfusion.export.pipeline import ExportSettings, export_field
from dreamfusion.gaussians.model import SH_C0, STATISTICS, Gaussians, inverse_sigmoid
from dreamfusion.gaussians.ply import write_ply

from browser import browser_missing, chromium, require
from fields import BoxField

TOOLS = Path(__file__).parent / "tools"
MODULES = Path(os.environ.get("DREAMFUSION_VIEWER_MODULES",
                              Path(__file__).parents[1] / ".gl" / "node_modules"))
SIZE, FOV, DISTANCE = 256, 40.0, 2.5
HALF, CENTRE = (0.2, 0.35, 0.5), (0.0, 0.0, 0.1)       # BoxField's


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A local web server holding the viewer page, the npm packages and the models."""
    missing = browser_missing()
    require(missing is None, missing or "")
    for package in ("three", "@sparkjsdev/spark"):
        require((MODULES / package / "package.json").exists(), f"npm {package}")
    root = tmp_path_factory.mktemp("site")
    (root / "node_modules").symlink_to(MODULES.resolve())
    for name in ("viewer.html", "viewer.js"):
        shutil.copy(TOOLS / name, root / name)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.extensions_map = {".js": "text/javascript", ".wasm": "application/wasm",
                              ".html": "text/html", ".glb": "model/gltf-binary"}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _show(url: str, kind: str, name: str) -> np.ndarray:
    """The viewer's canvas (SIZE, SIZE, 3) in [0, 1] once it has drawn the file."""
    driver = chromium()
    try:
        driver.get(f"{url}/viewer.html?kind={kind}&file=/{name}&distance={DISTANCE}")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            state = driver.execute_script("return [window.viewerDone, window.viewerError]")
            if state[1]:
                pytest.fail(f"the {kind} viewer failed: {state[1]}")
            if state[0]:
                break
            time.sleep(0.25)
        else:
            pytest.fail(f"the {kind} viewer did not finish in 120 s")
        data = driver.execute_script(
            "return document.querySelector('canvas').toDataURL('image/png')")
    finally:
        driver.quit()
    png = base64.b64decode(data.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float64) / 255.0


def _pixel(y: float, z: float) -> tuple[int, int]:
    """(row, column) where the box's front face (x = +0.2) shows the world point (y, z):
    the camera on +X at DISTANCE, our Z up, so +Y is to the right."""
    f = 0.5 * SIZE / math.tan(math.radians(FOV) / 2)
    depth = DISTANCE - (CENTRE[0] + HALF[0])
    return int(0.5 * SIZE - f * z / depth), int(0.5 * SIZE + f * y / depth)


def _check_box(image: np.ndarray, edge_px: float) -> None:
    drawn = image.sum(-1) > 0.15
    rows, cols = np.nonzero(drawn)
    assert rows.size > 0, "nothing was drawn"
    top, left = _pixel(CENTRE[1] - HALF[1], CENTRE[2] + HALF[2])
    bottom, right = _pixel(CENTRE[1] + HALF[1], CENTRE[2] - HALF[2])
    seen = (rows.min(), rows.max(), cols.min(), cols.max())
    assert np.allclose(seen, (top, bottom, left, right), atol=edge_px), (seen, (top, bottom,
                                                                                 left, right))
    # BoxField's albedo is (p + 1) / 2: red from the front face's x, green growing to the
    # right (+Y), blue growing upwards (+Z)
    for y, z in ((-0.2, 0.1), (0.2, 0.1), (0.0, -0.2), (0.0, 0.4)):
        r, c = _pixel(y, z)
        patch = image[r - 2:r + 3, c - 2:c + 3].reshape(-1, 3).mean(0)
        want = np.array([(CENTRE[0] + HALF[0] + 1) / 2, (y + 1) / 2, (z + 1) / 2])
        assert np.abs(patch - want).max() < 0.08, ((y, z), patch, want)


def test_three_gltfloader_draws_the_glb_upright_where_and_in_the_colour_it_should(site):
    root, url = site
    export_field(BoxField(), ExportSettings(64, 50.0, ("glb",), 256, 0, 0.05), root)
    _check_box(_show(url, "glb", "model.glb"), edge_px=3)


def _box_of_gaussians() -> Gaussians:
    """Small, nearly opaque Gaussians filling BoxField's box, each the field's colour at its
    centre, written as a run writes them (``write_ply``)."""
    axes = [torch.linspace(c - h + 0.015, c + h - 0.015, int(round(2 * h / 0.03)) + 1)
            for c, h in zip(CENTRE, HALF)]
    means = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    n = means.shape[0]
    quats = torch.zeros(n, 4)
    quats[:, 0] = 1.0
    g = Gaussians(0, 1.0)
    g.load_state_dict({"means": means, "log_scales": torch.full((n, 3), math.log(0.012)),
                       "quats": quats, "opacity_logits": inverse_sigmoid(torch.full((n,), 0.95)),
                       "sh_dc": ((means.clamp(-1, 1) + 1) / 2 - 0.5) / SH_C0,
                       **{name: torch.zeros(n) for name in STATISTICS}})
    return g


def test_spark_draws_the_ply_upright_where_and_in_the_colour_it_should(site):
    root, url = site
    write_ply(_box_of_gaussians(), root / "model.ply")
    _check_box(_show(url, "ply", "model.ply"), edge_px=4)
