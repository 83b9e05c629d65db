"""Score a trained scene against the toy world's ground truth (the toy priors' ``evaluate``)."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

import numpy as np
import torch
from omegaconf import DictConfig

from ...rendering.cameras import Cameras, orbit
from ...rendering.rendered import Rendered
from .raytrace import trace
from .world import COLORS, SHAPES, Caption


class Representation(Protocol):
    """What scoring reads of a trained scene (``pipeline.representation`` has the whole
    interface): renders, and the density with the field it comes from."""
    field: Any

    def render(self, cameras: Cameras, height: int, width: int) -> Rendered: ...

    def density(self, points: torch.Tensor) -> torch.Tensor: ...

SIDE_AZIMUTHS = (90.0, -90.0)


@dataclass
class SilhouetteScores:
    iou: float                 # mean over the evaluation azimuths: the headline metric
    side_iou: float            # mean over the side views (+-90 degrees)
    best_yaw_iou: float        # the same, after the best rotation of the result about Z
    best_yaw: float            # that rotation, degrees
    per_view: list[float]
    azimuths: list[float]


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


def _subset(cams: Cameras, idx: slice) -> Cameras:
    return Cameras(cams.azimuth[idx], cams.elevation[idx], cams.distance[idx], cams.fov[idx])


EVAL_ELEVATIONS = (15.0, 40.0)      # inside the toy cameras' [-10, 45] degrees


@torch.no_grad()
def silhouette_iou(scene: Representation, caption: Caption, cfg: DictConfig, n_azimuths: int = 8,
                   elevations: tuple[float, ...] = EVAL_ELEVATIONS, size: int = 64,
                   yaw_step: float = 9.0) -> SilhouetteScores:
    """IoU of the rendered opacity (> 0.5) with the true silhouette at ``n_azimuths`` views
    per elevation; every score is a mean over all of those views.

    The toy prior cannot tell a result's rotation about the vertical axis for objects whose
    references look alike from every azimuth (a cube is seen from random azimuths, and is
    symmetric), so a well-shaped cube may sit at any yaw. ``best_yaw_iou`` separates shape
    from that: the result is seen from ``a + yaw`` against the truth from ``a``, for the
    ``yaw`` (a multiple of ``yaw_step``) that scores best.
    """
    n_all = round(360.0 / yaw_step)
    stride = n_all // n_azimuths
    if stride * n_azimuths != n_all:
        raise ValueError("yaw_step must divide the spacing of the evaluation azimuths")
    distance, fov = sum(cfg.camera.distance) / 2, sum(cfg.camera.fov) / 2
    ours, truth, azimuths = [], [], []
    for elevation in elevations:
        cams = orbit(n_all, elevation, distance, fov)
        mine, true = [], []
        for start in range(0, n_all, 8):
            part = _subset(cams, slice(start, start + 8))
            out = scene.render(part, size, size)
            mine.append(out.opacity.cpu() > 0.5)
            lights = part.positions / part.positions.norm(dim=-1, keepdim=True)
            # one ray per pixel centre, as the NeRF's opacity is sampled: a supersampled truth
            # would disagree on every boundary pixel that is half covered
            true.append(trace(caption, part, size, lights, (1.0, 1.0, 1.0), cfg.shading.ambient,
                              cfg.shading.diffuse, supersample=1).mask > 0.5)
        ours.append(torch.cat(mine))
        truth.append(torch.cat(true))
        azimuths = [float(cams.azimuth[j * stride]) for j in range(n_azimuths)]
    views = [j * stride for j in range(n_azimuths)]

    def scores_at(shift: int) -> list[float]:
        return [_iou(o[(v + shift) % n_all], t[v]) for o, t in zip(ours, truth) for v in views]

    fixed = scores_at(0)
    best_shift = max(range(n_all), key=lambda k: sum(scores_at(k)))
    side = [s for s, a in zip(fixed, azimuths * len(elevations))
            if any(abs(a - x) < 1e-3 for x in SIDE_AZIMUTHS)]
    best_yaw = (best_shift * yaw_step + 180.0) % 360.0 - 180.0
    best = scores_at(best_shift)
    return SilhouetteScores(sum(fixed) / len(fixed), sum(side) / max(len(side), 1),
                            sum(best) / len(best), best_yaw, fixed, azimuths)


@torch.no_grad()
def colour_error(scene: Representation, caption: Caption, cfg: DictConfig, n_azimuths: int = 8,
                 elevations: tuple[float, ...] = EVAL_ELEVATIONS, size: int = 64) -> float:
    """Mean absolute error of the albedo, in [0, 1] per channel, over the pixels that both
    the result and the truth cover: the colour of the foreground, not its shape."""
    errors, pixels = 0.0, 0
    for elevation in elevations:
        cams = orbit(n_azimuths, elevation, sum(cfg.camera.distance) / 2, sum(cfg.camera.fov) / 2)
        out = scene.render(cams, size, size, "albedo")
        lights = cams.positions / cams.positions.norm(dim=-1, keepdim=True)
        true = trace(caption, cams, size, lights, (1.0, 1.0, 1.0), 1.0, 0.0, supersample=1)
        both = (out.opacity.cpu() > 0.5) & (true.mask > 0.5)
        diff = (out.rgb.cpu() - true.rgb).abs().mean(dim=-1)
        errors += float(diff[both].sum())
        pixels += int(both.sum())
    return errors / pixels if pixels else 1.0


@torch.no_grad()
def toy_r_precision(scene: Representation, caption: Caption, prior: Any, cfg: DictConfig,
                    n_azimuths: int = 8, elevations: tuple[float, ...] = EVAL_ELEVATIONS,
                    per_caption: int = 32) -> float:
    """The toy world's R-Precision: the share of renders whose nearest reference image (L2,
    among ``per_caption`` references of every toy caption, from ``prior``, the toy world's
    ``ToyWorldPrior``) belongs to their own caption."""
    captions = [Caption(c, s) for s in SHAPES for c in COLORS]
    refs = torch.cat([prior.references(c, per_caption) for c in captions]).flatten(1)
    owner = torch.arange(len(captions)).repeat_interleave(per_caption)
    own = captions.index(Caption(caption.color, caption.shape))
    hits, total = 0, 0
    for elevation in elevations:
        cams = orbit(n_azimuths, elevation, sum(cfg.camera.distance) / 2, sum(cfg.camera.fov) / 2)
        lights = cams.positions / cams.positions.norm(dim=-1, keepdim=True)
        out = scene.render(cams, cfg.height, cfg.width, "lambertian", lights)
        ours = out.rgb.cpu().permute(0, 3, 1, 2).flatten(1)
        nearest = torch.cdist(ours, refs).argmin(dim=1)
        hits += int((owner[nearest] == own).sum())
        total += len(nearest)
    return hits / total


@dataclass
class JanusScore:
    janus: float               # share of the front feature's volume on the back half (x < 0)
    feature_volume: float      # the learned front feature's volume over the true one's


@torch.no_grad()
def janus_score(scene: Representation, caption: Caption, density_threshold: float,
                resolution: int = 64) -> JanusScore | None:
    """How much of the object's front feature sits where its back should be.

    The duck's head (with its beak) faces +X and is the only solid above
    ``feature_min_z``; a Janus duck grows a second head behind (score about 0.5) or turns
    round (score 1). The score is the share of the solid voxels (density above
    ``density_threshold``) above that height that lie at x < 0; the truth scores 0.
    """
    shape = SHAPES[caption.shape]
    if not shape.has_front or shape.feature_min_z is None:
        return None
    bound = scene.field.bound
    axis = (torch.arange(resolution) + 0.5) / resolution * 2.0 * bound - bound
    pts = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
    pts = pts[pts[:, 2] > shape.feature_min_z]
    device = next(scene.field.parameters()).device
    density = torch.cat([scene.density(c.to(device)).cpu() for c in pts.split(65536)])
    solid = density > density_threshold
    truth = shape.sdf(pts) < 0
    n_solid = int(solid.sum())
    back = int((solid & (pts[:, 0] < 0)).sum())
    return JanusScore(back / n_solid if n_solid else 0.0, n_solid / max(int(truth.sum()), 1))


@dataclass
class SurfaceScores:
    chamfer: float             # symmetric Chamfer distance to the true surface, world units
    chamfer_best_yaw: float    # the same after the best rotation about Z, to a tenth of yaw_step
    size: float                # the true surface's bounding-box diagonal, for scale
    normal_cosine: float       # mean cos(our normal, the true one at the nearest true point)


def true_surface_samples(caption: Caption, count: int, bound: float = 1.0,
                         resolution: int = 96, seed: int = 0) -> np.ndarray:
    """Points on the toy shape's surface (the zero set of the union of its parts' SDFs):
    marching cubes on the SDF, samples spread by area, then projected onto the zero set by
    three Newton steps along the SDF's gradient."""
    import mcubes

    from ...export.mesh import Mesh, surface_samples

    sdf = SHAPES[caption.shape].sdf
    axis = torch.linspace(-bound, bound, resolution)
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
    values = torch.cat([sdf(c) for c in grid.split(1 << 18)]).reshape((resolution,) * 3)
    vertices, faces = mcubes.marching_cubes(-values.numpy(), 0.0)
    vertices = vertices / (resolution - 1) * 2.0 * bound - bound
    colors = np.zeros_like(vertices)
    points = torch.as_tensor(surface_samples(Mesh(vertices, faces.astype(np.int64), colors),
                                             count, seed), dtype=torch.float32)
    for _ in range(3):
        p = points.clone().requires_grad_(True)
        d = sdf(p)
        (g,) = torch.autograd.grad(d.sum(), p)
        step = (d / g.pow(2).sum(-1).clamp_min(1e-12)).unsqueeze(-1) * g
        # where the SDF has no gradient (a cone's apex and axis, a point exactly on a sqrt's
        # zero) the point stays where marching cubes put it, within half a cell of the surface
        ok = torch.isfinite(step).all(dim=-1, keepdim=True)
        points = torch.where(ok, p - step, p).detach()
    return points.numpy()


def surface_scores(mesh_vertices: np.ndarray, mesh_faces: np.ndarray, caption: Caption,
                   count: int = 20000, yaw_step: float = 9.0) -> SurfaceScores:
    """How far the exported mesh is from the toy object's true surface, and how well its
    faces' normals (outward, counter-clockwise front) follow the true ones, both at the
    best yaw."""
    from scipy.spatial import cKDTree

    from ...export.mesh import Mesh, oriented_samples

    ours, our_normals = oriented_samples(
        Mesh(mesh_vertices, mesh_faces, np.zeros_like(mesh_vertices)), count)
    truth, true_normals = _true_samples(caption.shape, count)
    ours_tree, truth_tree = cKDTree(ours), cKDTree(truth)

    def turn(yaw: float) -> np.ndarray:
        c, s = np.cos(np.radians(yaw)), np.sin(np.radians(yaw))
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])

    def chamfer_at(yaw: float, queries: int = count) -> float:
        # turning ours by yaw = turning the truth by -yaw: both trees are built once
        r = turn(yaw)
        return 0.5 * float(truth_tree.query(ours[:queries] @ r.T)[0].mean()
                           + ours_tree.query(truth[:queries] @ r)[0].mean())

    # a coarse search on a tenth of the samples, its three best yaws refined to a tenth of
    # the step (a cube 4.5 deg off its true yaw is 1% of its size off in Chamfer alone), then
    # the full measure at those
    yaws = np.arange(yaw_step, 360.0, yaw_step)
    coarse = sorted(yaws, key=lambda y: chamfer_at(y, count // 10))[:3]
    fine = np.arange(-0.5, 0.5 + 1e-9, 0.1) * yaw_step
    candidates = [0.0] + [min(y + fine, key=lambda f: chamfer_at(f, count // 10))
                          for y in coarse]
    scores = [chamfer_at(y) for y in candidates]
    best = int(np.argmin(scores))
    r = turn(candidates[best])
    _, nearest = truth_tree.query(ours @ r.T)
    cosine = np.sum((our_normals @ r.T) * true_normals[nearest], axis=-1)
    size = float(np.linalg.norm(truth.max(axis=0) - truth.min(axis=0)))
    return SurfaceScores(scores[0], scores[best], size, float(np.nanmean(cosine)))


@lru_cache(maxsize=8)
def _true_samples(shape: str, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Points on the true surface and its outward unit normals there: the SDF's central
    difference over a thousandth of the object (its autograd gradient is zero exactly on
    the zero set of ``max`` and ``length`` terms, where the samples lie)."""
    points = true_surface_samples(Caption("white", shape), count)
    p, h = torch.as_tensor(points, dtype=torch.float64), 1e-3
    sdf = SHAPES[shape].sdf
    steps = h * torch.eye(3, dtype=torch.float64)
    g = torch.stack([sdf(p + e) - sdf(p - e) for e in steps], dim=-1)
    return points, torch.nn.functional.normalize(g, dim=-1).numpy()


def toy_metrics(scene: Representation, prior: Any, prompt: str, cfg: DictConfig,
                mesh_vertices: np.ndarray | None, mesh_faces: np.ndarray | None,
                density_threshold: float) -> dict:
    """Every ground-truth score of a toy run, rounded, as ``summary.json`` keeps them."""
    caption = prior.parse(prompt)
    scores = silhouette_iou(scene, caption, cfg)
    out = {"silhouette_iou": round(scores.iou, 4), "side_iou": round(scores.side_iou, 4),
           "best_yaw_iou": round(scores.best_yaw_iou, 4), "best_yaw": scores.best_yaw,
           "iou_per_view": [round(s, 4) for s in scores.per_view],
           "eval_elevations": list(EVAL_ELEVATIONS),
           "colour_error": round(colour_error(scene, caption, cfg), 4),
           "toy_r_precision": round(toy_r_precision(scene, caption, prior, cfg), 4)}
    if mesh_vertices is not None:
        surface = surface_scores(mesh_vertices, mesh_faces, caption)
        out.update(chamfer=round(surface.chamfer, 4),
                   chamfer_best_yaw=round(surface.chamfer_best_yaw, 4),
                   normal_cosine=round(surface.normal_cosine, 4),
                   true_size=round(surface.size, 4))
    janus = janus_score(scene, caption, density_threshold)
    if janus is not None:
        out.update(janus=round(janus.janus, 4), feature_volume=round(janus.feature_volume, 4))
    return out
