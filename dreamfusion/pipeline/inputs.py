"""Everything that can fail on the user's input, checked before any work or any file.

Importing this module does not import torch: the CLI runs ``check_words`` first, so that a
prompt or config it refuses is answered at once; torch comes in with ``prepare``.
"""
from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from ..config import registry
from ..config.limits import machine_memory, memory_problem
from ..config.text import check_prompt, quote
from ..errors import UserError

if TYPE_CHECKING:
    import torch

def slugify(prompt: str, limit: int = 48) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")
    return slug[:limit].rstrip("-") or "run"


def config_header(prompt: str) -> str:
    """The first line of a run's ``config.yaml``: the prompt, quoted with JSON's escapes so
    that no text can end the comment line (the app finds a new run's folder by it)."""
    return f"# dreamfusion run {quote(prompt)}\n"


def check_output_root(root: Path, create: bool = True) -> None:
    """Fail before any work if run folders cannot be created under ``root``; with
    ``create=False`` nothing is created (a dry run), and the check is by permissions only."""
    if not create:
        existing = next(p for p in [root, *root.absolute().parents] if p.exists())
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise UserError(f"cannot write to output folder {str(root)!r}: "
                            f"{str(existing)!r} is not a writable folder")
        return
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write to output folder {str(root)!r}: "
                        f"{exc.strerror or exc}") from None


def new_run_dir(root: Path, prompt: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = f"{slugify(prompt)}-{stamp}"
    for n in range(1000):
        path = root / (base if n == 0 else f"{base}-{n}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise UserError(f"cannot find a free run folder name under {str(root)!r}")


def check_words(prompt: str, cfg: DictConfig) -> str:
    """The prompt, stripped, once it and the negative prompt are words the prior can read
    (its registry entry's ``check_words``: the toy priors know a small vocabulary); no torch,
    no files."""
    prompt = check_prompt(prompt)
    check = registry.prior(cfg.guidance.prior).check_words
    if check is not None:
        registry.resolve(check)(prompt, cfg)
    return prompt


def run_root(cfg: DictConfig) -> Path:
    """Where new run folders go (an empty ``output.root`` is the current folder)."""
    return Path(cfg.output.root)


def select_device(name: str) -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but no CUDA device is available; use device=cpu or auto")
    return torch.device(name)


def check_cpu_memory(cfg: DictConfig) -> None:
    """``check_memory`` for a config that runs on the CPU, without importing torch (so the
    CLI refuses at once); other devices are checked by ``prepare``."""
    if cfg.device == "cpu":
        _refuse_if(memory_problem(cfg, machine_memory(), "this machine's"))


def check_memory(cfg: DictConfig, device: torch.device, with_prior: bool = True) -> None:
    """Refuse a config that cannot fit in the device's memory, with the figures; the prior's
    weights count ``with_prior`` (not for an export, which loads none)."""
    prior = None
    if with_prior:
        from .build import prior_class

        prior = prior_class(cfg).memory_needs(cfg, device)
    if device.type != "cuda":
        _refuse_if(memory_problem(cfg, machine_memory(), "this machine's", prior))
        return
    import torch

    available = torch.cuda.get_device_properties(device).total_memory
    _refuse_if(memory_problem(cfg, available, f"{torch.cuda.get_device_name(device)} GPU",
                              prior))


def _refuse_if(problem: str | None) -> None:
    if problem is not None:
        raise UserError(problem)


def prepare(prompt: str, cfg: DictConfig, root_check: bool = True,
            dry_run: bool = False) -> tuple[str, Path]:
    """Every check that can fail on the user's input, before any work or any file."""
    from .build import check_prior

    prompt = check_words(prompt, cfg)
    check_prior(cfg)            # absent weights, a toy world of non-square renders: no folder
    check_memory(cfg, select_device(cfg.device))        # with the weights that were found
    root = run_root(cfg)
    if root_check:
        check_output_root(root, create=not dry_run)
    return prompt, root
