"""Finished runs under the app's output root, and what the page offers of each: the GLB for
the viewer, the turntable, the metrics and the downloads."""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..utils.atomic import atomic_path

# run folders sit at the root (``dreamfusion run``) or one level down (a batch, a bench), and
# a mesh stage inside the run it refines (``dreamfusion refine``)
DEPTHS = ("*/summary.json", "*/*/summary.json", "*/refine/*/summary.json",
          "*/*/refine/*/summary.json")
OBJ_PARTS = ("model.obj", "model.mtl")
# the metrics shown, in this order, with their labels; the rest stays in summary.json
SHOWN = {"silhouette_iou": "silhouette IoU (toy truth)", "side_iou": "side-view IoU",
         "best_yaw_iou": "IoU after the best yaw", "colour_error": "colour error",
         "toy_r_precision": "toy R@1", "chamfer": "Chamfer distance", "janus": "Janus score",
         "steps": "steps", "train_seconds": "training s", "total_seconds": "total s",
         "representation": "representation", "rollbacks": "rollbacks",
         "export_error": "export"}


@dataclass(frozen=True)
class FinishedRun:
    run_dir: Path
    summary: dict
    finished: float             # when summary.json was written (seconds since the epoch)

    @property
    def prompt(self) -> str:
        return str(self.summary.get("prompt", self.run_dir.name))

    @property
    def label(self) -> str:
        stage = ", mesh stage" if self.summary.get("representation") == "mesh" else ""
        return (f"{self.prompt} (seed {self.summary.get('seed', '?')}{stage}) - "
                f"{self.run_dir.name}")

    def file(self, name: str) -> Path | None:
        path = self.run_dir / name
        return path if path.is_file() else None

    @property
    def glb(self) -> Path | None:
        return self.file("model.glb")

    @property
    def turntable(self) -> Path | None:
        return self.file("turntable.gif")

    @property
    def ply(self) -> Path | None:
        """The 3D Gaussians (``model.ply``) of a Gaussian run."""
        return self.file("model.ply")

    def export_sizes(self) -> tuple[int | None, int | None]:
        """The mesh resolution and texture size the run exported with (its config.yaml)."""
        import yaml

        try:
            export = yaml.safe_load((self.run_dir / "config.yaml").read_text("utf-8"))["export"]
            return int(export["resolution"]), int(export["texture_size"])
        except (OSError, ValueError, TypeError, KeyError, yaml.YAMLError):
            return None, None

    def metrics_rows(self) -> list[list[str]]:
        """[label, value] for each shown metric the run has."""
        rows = []
        for key, label in SHOWN.items():
            if key in self.summary:
                value = self.summary[key]
                rows.append([label, f"{value:.4g}" if isinstance(value, float) else str(value)])
        return rows


def read_run(run_dir: Path) -> FinishedRun | None:
    """The run in ``run_dir`` if it finished (its ``summary.json`` reads), else None."""
    path = run_dir / "summary.json"
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
        finished = path.stat().st_mtime
    except (OSError, ValueError):
        return None
    return FinishedRun(run_dir, summary, finished) if isinstance(summary, dict) else None


def finished_runs(root: Path) -> list[FinishedRun]:
    """Every finished run under ``root``, newest first."""
    if not root.is_dir():
        return []
    found = {p.parent for pattern in DEPTHS for p in root.glob(pattern)}
    runs = [r for r in map(read_run, found) if r is not None]
    return sorted(runs, key=lambda r: (r.finished, r.run_dir.name), reverse=True)


def obj_zip(run: FinishedRun, folder: Path) -> Path | None:
    """The OBJ, its MTL and the texture images the MTL names, as one zip in ``folder``
    (written whole or not at all); None when the run wrote no OBJ."""
    if run.file("model.obj") is None:
        return None
    parts = [run.run_dir / name for name in OBJ_PARTS if run.file(name) is not None]
    parts += [run.run_dir / name for name in _textures(run.run_dir / "model.mtl")]
    target = folder / f"{run.run_dir.name}-obj.zip"
    with atomic_path(target) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path in parts:
                archive.write(path, path.name)
    return target


def _textures(mtl: Path) -> list[str]:
    """The image files an MTL refers to (``map_Kd texture.png``) that exist beside it."""
    try:
        lines = mtl.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    names = []
    for line in lines:
        words = line.split()
        if len(words) >= 2 and words[0].startswith("map_"):
            name = Path(words[-1]).name          # never a path outside the run folder
            if (mtl.parent / name).is_file() and name not in names:
                names.append(name)
    return names
