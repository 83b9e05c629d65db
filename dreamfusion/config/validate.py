"""Checks that types alone cannot express; each failure names its key.

Every number has a range (``limits.RANGES``), every string is checked for the characters no
text may hold, and fields stored as text but meaning a number (``export.threshold``) are
checked as numbers. Nothing here imports torch: the CLI refuses bad input at once.
"""
from __future__ import annotations

import math

from omegaconf import DictConfig, ListConfig

from ..choices import (BACKENDS, MARCHERS, MESH_RASTER_BACKENDS, NORMALS, RASTERIZE_MODES,
                       SCHEDULES, SHADING_MODES, SPLAT_BACKENDS, WEIGHTINGS)
from ..errors import UserError
from . import registry
from .limits import PAIR_RANGES, RANGES
from .text import bad_character

def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise UserError(f"config {key}: {message}")


def _get(cfg: DictConfig, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _in_range(key: str, value: object, name: str | None = None) -> None:
    """``value`` must be a finite number within ``RANGES[key]``; errors name ``name``."""
    name = name or key
    _check(_is_number(value), name, f"must be a number, got {value!r}")
    number = float(value)       # type: ignore[arg-type]
    _check(math.isfinite(number), name, f"must be a finite number, got {value}")
    limits = RANGES[key]
    _check(limits.holds(number), name, f"must be in {limits}, got {value}")


def _ranges(cfg: DictConfig) -> None:
    """Every plain number of the schema within its range (None where the schema allows it)."""
    for key in RANGES:
        # lists, ramps and text are read by their own rules: the view rules below,
        # _validate_regularizers, _validate_export
        if key.startswith(("prompt.views.", "regularizers.", "faults.inject_nan_at",
                           "export.threshold")):
            continue
        value = _get(cfg, key)
        if value is not None:
            _in_range(key, value)
    for i, rule in enumerate(cfg.prompt.views):
        for name in ("azimuth_centers", "half_width", "min_elevation", "max_elevation"):
            values = rule[name] if name == "azimuth_centers" else [rule[name]]
            for value in values:
                _in_range(f"prompt.views.{name}", value, f"prompt.views[{i}].{name}")
        _check(rule.min_elevation <= rule.max_elevation, f"prompt.views[{i}]",
               "needs min_elevation <= max_elevation")
    for step in cfg.faults.inject_nan_at:
        _in_range("faults.inject_nan_at", step)


def _range_pair(cfg: DictConfig, key: str, low: float, high: float) -> None:
    pair = list(_get(cfg, key))
    _check(len(pair) == 2, key, f"must be [min, max], got {pair}")
    _check(low <= pair[0] <= pair[1] <= high, key,
           f"must satisfy {low} <= min <= max <= {high}, got {pair}")


def validate(cfg: DictConfig) -> None:
    """Raise ``UserError`` for the first value out of its range or meaning."""
    _text_and_finite(cfg)
    _ranges(cfg)
    for key, (low, high) in PAIR_RANGES.items():
        _range_pair(cfg, key, low, high)
    _choices(cfg)
    g = cfg.guidance
    probs = [cfg.shading[k] for k in SHADING_MODES]
    _check(abs(sum(probs) - 1.0) < 1e-6, "shading",
           f"albedo + lambertian + textureless must be probabilities summing to 1, got {probs}")
    _check(len(cfg.background.color) == 3 and all(0 <= c <= 1 for c in cfg.background.color),
           "background.color", "must be three values in [0, 1]")
    _check(not registry.prior(g.prior).needs_model or g.model.strip() != "", "guidance.model",
           f"is needed by the {g.prior} prior: a hub id or a local folder in diffusers format")
    _check(0.0 < g.t_min < g.t_max < 1.0, "guidance.t_min",
           f"need 0 < t_min < t_max < 1, got t_min={g.t_min}, t_max={g.t_max}")
    # where t_min moves too, t_max may end below where t_min starts
    floor, floor_name = (g.t_min, "t_min") if g.t_min_end is None else (g.t_min_end, "t_min_end")
    _check(floor <= g.t_max_end <= g.t_max, "guidance.t_max_end",
           f"must lie in [{floor_name}, t_max], got {g.t_max_end}")
    _check(g.t_min_end is None or 0.0 < g.t_min_end <= g.t_max_end, "guidance.t_min_end",
           f"must lie in (0, t_max_end], got {g.t_min_end}")
    _check(len(cfg.prompt.views) > 0, "prompt.views", "needs at least one view rule")
    _validate_export(cfg)
    _validate_resilience(cfg)
    _validate_geometry(cfg)
    _validate_regularizers(cfg)
    _validate_stage_shading(cfg)
    _validate_gaussians(cfg)
    _validate_multiview(cfg)


def _validate_multiview(cfg: DictConfig) -> None:
    g = cfg.guidance
    if registry.prior(g.prior).multiview:
        _check(not cfg.prompt.perp_neg, "prompt.perp_neg",
               f"is for single-view priors: the {g.prior} prior denoises the views together; "
               f"set prompt.perp_neg=false")
    spec = registry.prior(g.prior)
    want = spec.views_per_sample
    _check(want is None or cfg.camera.views_per_sample == want, "camera.views_per_sample",
           f"must be {want} with the {g.prior} prior (its published weights were trained on "
           f"{want} views), got {cfg.camera.views_per_sample}")
    for other in registry.PRIORS.values():
        for key in other.own_keys:
            _check(not g[key].strip() or key in spec.own_keys, f"guidance.{key}",
                   f"is read by the {other.name} prior only (guidance.prior is {g.prior})")
    _check(g.checkpoint.strip() or not g.checkpoint_config.strip(), "guidance.checkpoint_config",
           "describes guidance.checkpoint, which is not set")


def _validate_gaussians(cfg: DictConfig) -> None:
    g = cfg.gaussians
    _check(g.count <= g.max_count, "gaussians.count",
           f"must be <= gaussians.max_count ({g.max_count}), got {g.count}")
    d = g.densify
    _check(d.start <= d.stop, "gaussians.densify.start",
           f"must be <= gaussians.densify.stop ({d.stop}), got {d.start}")
    _check(g.init_radius <= cfg.nerf.bound, "gaussians.init_radius",
           f"must be <= nerf.bound ({cfg.nerf.bound}): the Gaussians start inside the box, "
           f"got {g.init_radius}")
    _check(g.backend != "gsplat" or cfg.device != "cpu", "gaussians.backend",
           "gsplat needs a CUDA device (device=cuda or auto); use auto or torch on the CPU")
    _check(cfg.refine.backend != "nvdiffrast" or cfg.device != "cpu", "refine.backend",
           "nvdiffrast needs a CUDA device (device=cuda or auto); use auto, cpp or torch on "
           "the CPU")
    spec = registry.representation(cfg.representation)
    for name in spec.unsupported_regularizers:
        weight = cfg.regularizers.get(name, 0.0)
        _check(isinstance(weight, (int, float)) and float(weight) == 0.0,
               f"regularizers.{name}", f"the {spec.name} representation does not feed this "
               f"term; set it to 0 with representation={spec.name}")


def _choices(cfg: DictConfig) -> None:
    for key, options in (("nerf.grid.backend", BACKENDS), ("marcher.backend", MARCHERS),
                         ("nerf.normals", NORMALS), ("guidance.prior", tuple(registry.PRIORS)),
                         ("representation", tuple(registry.REPRESENTATIONS)),
                         ("gaussians.backend", SPLAT_BACKENDS),
                         ("refine.backend", MESH_RASTER_BACKENDS),
                         ("refine.colour_grid.backend", BACKENDS),
                         ("gaussians.rasterize_mode", RASTERIZE_MODES),
                         ("guidance.weighting", WEIGHTINGS), ("guidance.schedule", SCHEDULES),
                         ("guidance.loss", tuple(registry.LOSSES)),
                         ("background.kind", ("solid", "learned")),
                         ("device", ("cpu", "cuda", "auto"))):
        value = _get(cfg, key)
        _check(value in options, key, f"must be one of {', '.join(options)}, got {value!r}")


def _validate_export(cfg: DictConfig) -> None:
    e = cfg.export
    if e.threshold != "auto":
        _check(_is_number(e.threshold), "export.threshold",
               f"must be auto or a density, got {e.threshold!r}")
        _in_range("export.threshold", e.threshold)
    _check(e.texture_size == 0 or e.texture_size >= 16, "export.texture_size",
           "must be 0 (vertex colours) or 16..8192")
    _check(e.decimate == 0 or e.decimate >= 4, "export.decimate",
           "must be 0 (off) or at least 4 faces")
    bad = [f for f in e.formats if f not in ("glb", "obj")]
    _check(not bad, "export.formats", f"unknown format {bad[0]!r} (glb, obj)" if bad else "")
    _check(len(e.formats) > 0 or not e.enabled, "export.formats",
           "needs at least one format (or export.enabled=false)")


def _validate_geometry(cfg: DictConfig) -> None:
    n = cfg.nerf
    _check(n.fd_eps <= 0.5 * n.bound, "nerf.fd_eps",
           f"must be in (0, nerf.bound / 2], got {n.fd_eps}")
    g = n.grid
    finest = g.base_resolution * g.growth ** (g.n_levels - 1)
    _check(finest <= 1 << 19, "nerf.grid.growth",
           f"the finest level would be {finest:.3g} cells across (base_resolution x "
           f"growth^(n_levels - 1)); the limit is {1 << 19}")
    p = cfg.prompt
    if p.perp_neg:
        _check(p.view_dependent, "prompt.perp_neg",
               "needs prompt.view_dependent=true: its negatives are the other views' prompts")
        names = {v.name for v in p.views}
        _check({"front", "side", "back"} <= names, "prompt.perp_neg",
               f"needs view rules named front, side and back in prompt.views, got "
               f"{', '.join(sorted(names))}")


def _validate_stage_shading(cfg: DictConfig) -> None:
    mix = cfg.refine.shading
    if mix is None:
        return
    _check(isinstance(mix, DictConfig) and set(mix.keys()) == set(SHADING_MODES),
           "refine.shading", f"must be null (the first stage's) or {{albedo, lambertian, "
           f"textureless}}, got {mix!r}")
    probs = [mix[k] for k in SHADING_MODES]
    _check(all(_is_number(p) and 0 <= p <= 1 for p in probs) and abs(sum(probs) - 1) < 1e-6,
           "refine.shading", f"must be probabilities summing to 1, got {probs}")


def _validate_regularizers(cfg: DictConfig) -> None:
    weights = [(f"regularizers.{name}", value) for name, value in cfg.regularizers.items()]
    # the mesh stage's weights, which a refine run copies into its regularizers
    weights += [(f"refine.{name}", cfg.refine[name]) for name in registry.MESH_TERMS]
    for key, value in weights:
        form = "a weight or [start_step, start_value, end_value, end_step]"
        if isinstance(value, ListConfig):
            v = list(value)
            _check(len(v) == 4, key, f"must be {form}, got {v}")
            for i, x in enumerate(v):
                _in_range("regularizers.step" if i in (0, 3) else "regularizers.weight", x,
                          f"{key}[{i}]")
            _check(float(v[0]) < float(v[3]), key,
                   f"must be {form} with start_step < end_step, got {v}")
        else:
            _check(_is_number(value), key, f"must be {form}, got {value!r}")
            _in_range("regularizers.weight", value, key)


def _is_number(value: object) -> bool:
    """A number, or text that is one: the override grammar (YAML 1.1) reads ``1e-3``, which
    has no dot, as a string."""
    if isinstance(value, bool):
        return False
    try:
        float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return False
    return True


def _validate_resilience(cfg: DictConfig) -> None:
    f = cfg.faults
    _check(f.max_bad_steps <= f.window, "faults.max_bad_steps",
           f"must be <= faults.window ({f.window}), got {f.max_bad_steps}")
    _check(f.lr_factor < 1.0, "faults.lr_factor", f"must be in (0, 1), got {f.lr_factor}")


def _text_and_finite(cfg: DictConfig | ListConfig, prefix: str = "") -> None:
    """No NaN or infinity anywhere (they pass every range check written as a comparison), and
    no string holding a character no text may (a line separator in a negative prompt would
    break every file it is written to)."""
    for key, value in cfg.items() if isinstance(cfg, DictConfig) else enumerate(cfg):
        full = f"{prefix}{key}"
        if isinstance(value, (DictConfig, ListConfig)):
            _text_and_finite(value, full + ".")
        elif isinstance(value, float):
            _check(math.isfinite(value), full, f"must be a finite number, got {value}")
        elif isinstance(value, str):
            bad = bad_character(value)
            if bad is not None and "UTF-8" in bad:
                raise UserError(f"config {full}: is not valid UTF-8 text")
            _check(bad is None, full, f"contains {bad}; text here may not hold control "
                                      f"characters, format characters or line separators")
