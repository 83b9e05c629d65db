"""The README's screenshots of ``dreamfusion app``: a full toy run, driven in headless Chromium.

    python tests/tools/app_screenshots.py [results/images/app] ["a yellow duck"]

Writes running.png (training, with the newest validation renders), finished.png (the mesh in
the viewer, the turntable, the metrics and the downloads) and gallery.png.
"""
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from browser import AppProcess, Page, chromium  # noqa: E402


def main() -> int:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "results/images/app")
    prompt = sys.argv[2] if len(sys.argv) > 2 else "a yellow duck"
    import os

    with tempfile.TemporaryDirectory() as root:
        server = AppProcess(Path(root) / "outputs", dict(os.environ))
        driver = chromium()
        try:
            page = Page(driver, server.url)
            page.generate(prompt, 1000, "output.val_every=100")
            page.wait_for(lambda: re.search(r"step ([3-9]\d\d)/1000", page.status()), 900,
                          "step 300")
            time.sleep(1.5)             # the newest strip, shown by the next poll
            page.screenshot(folder, "running.png")
            page.wait_for(lambda: page.status().startswith(("Finished", "Stopped", "dream")),
                          900, "the end of the run")
            time.sleep(5)               # the viewer draws the GLB
            page.screenshot(folder, "finished.png")
            page.open_tab("Gallery")
            time.sleep(6)
            page.screenshot(folder, "gallery.png")
            print(page.status())
        finally:
            driver.quit()
            server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
