"""Range checks that types alone cannot express; each failure names its key."""
from __future__ import annotations

import math

from omegaconf import DictConfig, ListConfig

from ..errors import UserError
from ..guidance.schedules import SCHEDULES
from ..guidance.sds import WEIGHTINGS
from ..nerf.field import NORMALS
from ..nerf.hashgrid import BACKENDS
from ..nerf.marcher import MARCHERS

PRIORS = ("toy", "stable_diffusion", "deepfloyd_if")


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise UserError(f"config {key}: {message}")


def _positive(cfg: DictConfig, *keys: str) -> None:
    for key in keys:
        value = _get(cfg, key)
        _check(value > 0, key, f"must be > 0, got {value}")


def _get(cfg: DictConfig, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _range_pair(cfg: DictConfig, key: str, low: float, high: float) -> None:
    pair = list(_get(cfg, key))
    _check(len(pair) == 2, key, f"must be [min, max], got {pair}")
    _check(low <= pair[0] <= pair[1] <= high, key,
           f"must satisfy {low} <= min <= max <= {high}, got {pair}")


def validate(cfg: DictConfig) -> None:
    """Raise ``UserError`` for the first out-of-range value."""
    _finite(cfg)
    _positive(cfg, "steps", "height", "width", "batch_size", "nerf.bound", "nerf.hidden",
              "nerf.layers", "nerf.grid.n_levels", "nerf.grid.features",
              "nerf.grid.base_resolution", "nerf.blob_radius", "marcher.step_size",
              "marcher.grid_resolution", "marcher.update_every", "optim.lr",
              "export.resolution", "output.val_every", "output.val_size",
              "output.turntable_frames", "output.turntable_size", "output.log_every",
              "output.eval_every",
              "guidance.references", "guidance.uncond_per_caption", "guidance.guidance_scale")
    _at_most(cfg, height=4096, width=4096, batch_size=256, **{
        "nerf.grid.n_levels": 32, "nerf.grid.features": 16, "marcher.grid_resolution": 512,
        "export.resolution": 1024})
    _check(cfg.seed >= 0, "seed", f"must be >= 0, got {cfg.seed}")
    _check(10 <= cfg.nerf.grid.table_size_log2 <= 24, "nerf.grid.table_size_log2",
           f"must be in [10, 24], got {cfg.nerf.grid.table_size_log2}")
    _check(cfg.nerf.grid.growth >= 1.0, "nerf.grid.growth", f"must be >= 1, got {cfg.nerf.grid.growth}")
    _check(cfg.nerf.grid.backend in BACKENDS, "nerf.grid.backend",
           f"must be one of {', '.join(BACKENDS)}, got {cfg.nerf.grid.backend!r}")
    _check(cfg.marcher.backend in MARCHERS, "marcher.backend",
           f"must be one of {', '.join(MARCHERS)}, got {cfg.marcher.backend!r}")
    _check(0.0 < cfg.marcher.ema_decay <= 1.0, "marcher.ema_decay", "must be in (0, 1]")
    _check(cfg.marcher.threshold >= 0.0, "marcher.threshold", "must be >= 0")
    _range_pair(cfg, "camera.elevation", -90.0, 90.0)
    _range_pair(cfg, "camera.azimuth", -180.0, 180.0)
    _range_pair(cfg, "camera.distance", 1e-6, math.inf)
    _range_pair(cfg, "camera.fov", 1.0, 179.0)
    probs = [cfg.shading.albedo, cfg.shading.lambertian, cfg.shading.textureless]
    _check(all(p >= 0 for p in probs) and abs(sum(probs) - 1.0) < 1e-6, "shading",
           f"albedo + lambertian + textureless must be probabilities summing to 1, got {probs}")
    _check(cfg.background.kind in ("solid", "learned"), "background.kind",
           f"must be solid or learned, got {cfg.background.kind!r}")
    _check(len(cfg.background.color) == 3 and all(0 <= c <= 1 for c in cfg.background.color),
           "background.color", "must be three values in [0, 1]")
    g = cfg.guidance
    _check(g.prior in PRIORS, "guidance.prior", f"must be one of {', '.join(PRIORS)}, got {g.prior!r}")
    _check(g.prior == "toy" or g.model.strip() != "", "guidance.model",
           f"is needed by the {g.prior} prior: a hub id or a local folder in diffusers format")
    _check(g.render_size is None or 8 <= g.render_size <= 4096, "guidance.render_size",
           f"must be null (the model's own size) or in [8, 4096], got {g.render_size}")
    _check(g.tp_sigma > 0, "guidance.tp_sigma", f"must be > 0, got {g.tp_sigma}")
    _check(cfg.prompt.perp_neg_weight >= 0, "prompt.perp_neg_weight", "must be >= 0")
    _check(g.weighting in WEIGHTINGS, "guidance.weighting", f"must be one of {', '.join(WEIGHTINGS)}")
    _check(g.schedule in SCHEDULES, "guidance.schedule", f"must be one of {', '.join(SCHEDULES)}")
    _check(0.0 < g.t_min < g.t_max < 1.0, "guidance.t_min",
           f"need 0 < t_min < t_max < 1, got t_min={g.t_min}, t_max={g.t_max}")
    _check(g.t_min <= g.t_max_end <= g.t_max, "guidance.t_max_end",
           f"must lie in [t_min, t_max], got {g.t_max_end}")
    _check(g.t_min_end is None or 0.0 < g.t_min_end <= g.t_max_end, "guidance.t_min_end",
           f"must lie in (0, t_max_end], got {g.t_min_end}")
    _check(0.0 <= g.front_bias <= 1.0, "guidance.front_bias", "must be in [0, 1]")
    _check(len(cfg.prompt.views) > 0, "prompt.views", "needs at least one view rule")
    _check(cfg.export.threshold == "auto" or _is_float(cfg.export.threshold), "export.threshold",
           f"must be auto or a number, got {cfg.export.threshold!r}")
    _check(cfg.export.texture_size == 0 or 16 <= cfg.export.texture_size <= 8192,
           "export.texture_size", "must be 0 (vertex colours) or 16..8192")
    _check(cfg.export.decimate == 0 or cfg.export.decimate >= 4, "export.decimate",
           "must be 0 (off) or at least 4 faces")
    _check(0.0 <= cfg.export.keep_fraction <= 1.0, "export.keep_fraction", "must be in [0, 1]")
    bad = [f for f in cfg.export.formats if f not in ("glb", "obj")]
    _check(not bad, "export.formats", f"unknown format {bad[0]!r} (glb, obj)" if bad else "")
    _check(cfg.device in ("cpu", "cuda", "auto"), "device", f"must be cpu, cuda or auto, got {cfg.device!r}")
    _validate_resilience(cfg)
    _validate_geometry(cfg)
    _validate_regularizers(cfg)


def _validate_geometry(cfg: DictConfig) -> None:
    n = cfg.nerf
    _check(n.normals in NORMALS, "nerf.normals",
           f"must be one of {', '.join(NORMALS)}, got {n.normals!r}")
    _check(0.0 < n.fd_eps <= 0.5 * n.bound, "nerf.fd_eps",
           f"must be in (0, nerf.bound / 2], got {n.fd_eps}")
    g = n.grid
    _check(g.start_levels >= 0, "nerf.grid.start_levels",
           f"must be >= 0 (0 or n_levels and more: every level), got {g.start_levels}")
    _check(g.start_step >= 0, "nerf.grid.start_step", f"must be >= 0, got {g.start_step}")
    _check(g.level_every >= 1, "nerf.grid.level_every", f"must be >= 1, got {g.level_every}")
    p = cfg.prompt
    if p.perp_neg:
        _check(p.view_dependent, "prompt.perp_neg",
               "needs prompt.view_dependent=true: its negatives are the other views' prompts")
        names = {v.name for v in p.views}
        _check({"front", "side", "back"} <= names, "prompt.perp_neg",
               f"needs view rules named front, side and back in prompt.views, got "
               f"{', '.join(sorted(names))}")


def _validate_regularizers(cfg: DictConfig) -> None:
    for name, value in cfg.regularizers.items():
        key = f"regularizers.{name}"
        if isinstance(value, ListConfig):
            v = list(value)
            ok = len(v) == 4 and all(_is_number(x) for x in v)
            if ok:
                v = [float(x) for x in v]
                ok = 0 <= v[0] < v[3] and v[1] >= 0 and v[2] >= 0
            _check(ok, key, "must be a weight >= 0 or [start_step, start_value, end_value, "
                            f"end_step] with 0 <= start_step < end_step and weights >= 0, got {v}")
            _check(all(math.isfinite(x) for x in v), key, f"must be finite, got {v}")
        else:
            _check(_is_number(value) and math.isfinite(float(value)) and float(value) >= 0, key,
                   f"must be a weight >= 0 or [start_step, start_value, end_value, end_step], "
                   f"got {value!r}")


def _is_number(value: object) -> bool:
    """A number, or text that is one: the override grammar (YAML 1.1) reads ``1e-3``, which
    has no dot, as a string."""
    if isinstance(value, bool):
        return False
    try:
        float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


def _validate_resilience(cfg: DictConfig) -> None:
    _positive(cfg, "checkpoint.every", "checkpoint.keep", "faults.max_bad_steps", "faults.window")
    f = cfg.faults
    _check(f.max_bad_steps <= f.window, "faults.max_bad_steps",
           f"must be <= faults.window ({f.window}), got {f.max_bad_steps}")
    _check(0.0 < f.lr_factor < 1.0, "faults.lr_factor", f"must be in (0, 1), got {f.lr_factor}")
    _check(f.max_rollbacks >= 0, "faults.max_rollbacks", f"must be >= 0, got {f.max_rollbacks}")
    _check(all(s >= 1 for s in f.inject_nan_at), "faults.inject_nan_at",
           f"steps count from 1, got {list(f.inject_nan_at)}")


def _finite(cfg: DictConfig, prefix: str = "") -> None:
    """No NaN or infinity anywhere (they pass every range check written as a comparison), and
    no string that cannot be written back out as UTF-8."""
    for key, value in cfg.items() if isinstance(cfg, DictConfig) else enumerate(cfg):
        full = f"{prefix}{key}"
        if isinstance(value, (DictConfig, ListConfig)):
            _finite(value, full + ".")
        elif isinstance(value, float):
            _check(math.isfinite(value), full, f"must be a finite number, got {value}")
        elif isinstance(value, str):
            _check(_is_utf8(value), full, "is not valid UTF-8 text")


def _at_most(cfg: DictConfig, **limits: int) -> None:
    """Upper bounds where a typo would only show as an exhausted memory much later."""
    for key, limit in limits.items():
        value = _get(cfg, key)
        _check(value <= limit, key, f"must be <= {limit}, got {value}")


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:      # bytes that were not UTF-8 reach argv as lone surrogates
        return False
    return True
