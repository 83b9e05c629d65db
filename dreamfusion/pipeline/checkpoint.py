"""Training checkpoints: atomic, checksummed, the newest few kept, refused when incompatible.

A checkpoint is ``checkpoints/step_NNNNNN.pt`` (a plain ``torch.save`` of tensors, numbers and
strings, so ``torch.load(..., weights_only=True)`` reads it) and ``step_NNNNNN.pt.sha256``
beside it, in ``sha256sum`` format so that ``sha256sum -c`` checks it too. The sidecar is
written after the checkpoint, so a checkpoint without one is a save that did not finish.
"""
from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from omegaconf import DictConfig, OmegaConf

from ..config import RunConfig, load_config, parse_yaml, registry
from ..errors import UserError
from ..utils.atomic import atomic_path, write_text
from .representation import Representation

FORMAT = 1
_NAME = re.compile(r"^step_(\d{6,})\.pt$")
# keys that may change between a checkpoint and its resumption: where files go and how they
# are written, the device, numerically equivalent backends, and the fault policy
RESUMABLE = ("output.", "export.", "checkpoint.", "faults.", "device", "nerf.grid.backend",
             "marcher.backend", "gaussians.backend", "guidance.cache_dir", "guidance.text_cache")


class CheckpointError(Exception):
    """A checkpoint that cannot be used: truncated, corrupted, unfinished or incompatible."""


@dataclass(frozen=True)
class Loaded:
    path: Path
    state: dict


def checkpoint_name(step: int) -> str:
    return f"step_{step:06d}.pt"


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_checkpoint(path: Path) -> dict:
    """The verified contents of one checkpoint; ``CheckpointError`` says what is wrong."""
    sidecar = _sidecar(path)
    if not sidecar.is_file():
        raise CheckpointError(f"{path.name} has no checksum file: its save did not finish")
    try:
        data = path.read_bytes()
        expected = sidecar.read_text(encoding="utf-8").split()[0]
    except (OSError, UnicodeDecodeError, IndexError) as exc:
        raise CheckpointError(f"cannot read {path.name}: {exc}") from None
    if _digest(data) != expected:
        raise CheckpointError(f"{path.name} is corrupt or truncated: its SHA-256 does not match "
                              f"{sidecar.name} ({len(data)} bytes)")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:        # any unpickling failure means the same: unusable
        raise CheckpointError(f"{path.name} cannot be read: {str(exc).splitlines()[0]}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path.name} is not a dreamfusion checkpoint of format {FORMAT}")
    missing = _missing(state, _LAYOUT)
    if not missing:         # the scene's modules: those of the representation it was made with
        missing = _missing(state, {"scene": {name: dict for name in _scene_modules(state, path)}})
    if missing:
        raise CheckpointError(f"{path.name} lacks {', '.join(missing)}, which resume and "
                              f"export need")
    return state


# what resume and export read from a checkpoint, and the type each must have
_LAYOUT: dict = {
    "prompt": str, "config": str, "train_seconds": (int, float),
    "scene": dict,                       # the representation's modules (_scene_modules)
    "trainer": {"step": int, "optimizer": {"state": dict, "param_groups": list},
                "lr_scale": (int, float), "rng": {"torch": torch.Tensor}, "schedule": dict},
    "faults": {"rollbacks": int, "bad_steps": list},
}


def _scene_modules(state: dict, path: Path) -> tuple[str, ...]:
    """The scene modules ``state`` must hold: the registry's for the representation its own
    config names (a config older than the key trained the schema's default)."""
    try:
        saved = parse_yaml(state["config"], " saved in the checkpoint") or {}
    except UserError:
        saved = {}
    default = RunConfig.representation
    name = saved.get("representation", default) if isinstance(saved, dict) else default
    try:
        return registry.representation(str(name)).modules
    except registry.UnknownName as exc:
        raise CheckpointError(f"{path.name} was made with {exc}") from None


def _missing(state: dict, layout: dict, prefix: str = "") -> list[str]:
    """The keys of ``layout`` that ``state`` lacks or holds with the wrong type."""
    out = []
    for key, kind in layout.items():
        value = state.get(key)
        if isinstance(kind, dict):
            out += (_missing(value, kind, f"{prefix}{key}.") if isinstance(value, dict)
                    else [f"{prefix}{key}"])
        elif not isinstance(value, kind) or isinstance(value, bool):
            out.append(f"{prefix}{key}")
    return out


class CheckpointStore:
    """The checkpoints of one run folder, newest first."""

    def __init__(self, run_dir: Path, keep: int = 2) -> None:
        self.folder = Path(run_dir) / "checkpoints"
        self.keep = keep

    def paths(self) -> list[Path]:
        """Checkpoint files, newest step first (checked or not)."""
        if not self.folder.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.folder.iterdir()
                 if (m := _NAME.match(p.name))]
        return [p for _, p in sorted(found, reverse=True)]

    def save(self, state: dict, step: int) -> Path:
        """Write atomically (temporary file, fsync, rename), then its checksum, then prune."""
        buffer = io.BytesIO()
        torch.save({"format": FORMAT, **state}, buffer)
        data = buffer.getvalue()
        path = self.folder / checkpoint_name(step)
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
        write_text(_sidecar(path), f"{_digest(data)}  {path.name}\n")
        for old in self.paths()[self.keep:]:
            old.unlink(missing_ok=True)
            _sidecar(old).unlink(missing_ok=True)
        return path

    def latest(self, on_bad: Callable[[Path, str], None] | None = None) -> Loaded | None:
        """The newest checkpoint that verifies; each one skipped is reported to ``on_bad``."""
        for path in self.paths():
            try:
                return Loaded(path, read_checkpoint(path))
            except CheckpointError as exc:
                if on_bad is not None:
                    on_bad(path, str(exc))
        return None


def _flat(container: object, prefix: str = "") -> dict[str, object]:
    if isinstance(container, dict):
        out: dict[str, object] = {}
        for key, value in container.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: container}


def config_differences(saved_yaml: str, cfg: DictConfig) -> list[str]:
    """``key (saved -> now)`` for each key that differs and would change training."""
    saved = _flat(parse_yaml(saved_yaml, " saved in the checkpoint") or {})
    now = _flat(OmegaConf.to_container(cfg, resolve=True))
    # a key newer than the checkpoint trained as its default does: at the default, no change
    defaults = _flat(OmegaConf.to_container(OmegaConf.structured(RunConfig)))
    saved = {**{k: v for k, v in defaults.items() if k not in saved and k in now}, **saved}
    keys = sorted(set(saved) | set(now))
    return [f"{k} ({saved.get(k, '<absent>')} -> {now.get(k, '<absent>')})" for k in keys
            if saved.get(k) != now.get(k) and not k.startswith(RESUMABLE)]


def load_scene(scene: Representation, loaded: Loaded) -> None:
    """Put a checkpoint's field, occupancy grid and background into ``scene``; a checkpoint
    whose tensors do not fit the config is a ``UserError`` naming it."""
    saved = loaded.state["scene"]
    modules = scene.checkpoint_modules()
    missing = [name for name in modules if name not in saved]
    if missing:
        raise UserError(f"cannot load {loaded.path}: it holds {', '.join(sorted(saved))}, not "
                        f"the {', '.join(missing)} this config's representation needs")
    try:
        for name, module in modules.items():
            module.load_state_dict(saved[name])
    except (RuntimeError, KeyError, ValueError) as exc:
        raise UserError(f"cannot load {loaded.path}: {str(exc).splitlines()[0]}") from None
    scene.set_step(int(loaded.state["trainer"]["step"]))


@dataclass(frozen=True)
class RunCheckpoint:
    """A run folder opened for resume or export: its config and newest good checkpoint."""
    cfg: DictConfig
    loaded: Loaded
    skipped: list[str]          # why each newer checkpoint was passed over

    @property
    def step(self) -> int:
        return int(self.loaded.state["trainer"]["step"])

    @property
    def prompt(self) -> str:
        return str(self.loaded.state["prompt"])


def open_run(run_dir: Path, overrides: Sequence[str], action: str) -> RunCheckpoint:
    """The one way ``--resume`` and ``export`` read a run folder: its ``config.yaml`` with
    ``overrides``, and the newest checkpoint that verifies (checksum, format, layout).
    ``action`` ("resume", "export") words the errors."""
    if not run_dir.is_dir():
        raise UserError(f"cannot {action} {str(run_dir)!r}: no such folder")
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise UserError(f"cannot {action} {str(run_dir)!r}: it has no config.yaml, so it is "
                        f"not a run folder")
    cfg = load_config(str(config), list(overrides))
    skipped: list[str] = []
    loaded = CheckpointStore(run_dir).latest(lambda path, why: skipped.append(why))
    if loaded is None:
        why = f" ({'; '.join(skipped)})" if skipped else ""
        raise UserError(f"cannot {action} {str(run_dir)!r}: no usable checkpoint{why}"
                        + ("; start the run again" if action == "resume" else ""))
    return RunCheckpoint(cfg, loaded, skipped)


def check_compatible(loaded: Loaded, cfg: DictConfig) -> None:
    """Refuse a checkpoint whose training config differs from ``cfg``, naming the keys."""
    diffs = config_differences(loaded.state.get("config", ""), cfg)
    if diffs:
        raise UserError(f"checkpoint {loaded.path} was made with a different config: "
                        f"{'; '.join(diffs)}")

