"""Everything that can fail on the user's input, checked before any work or any file."""
from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path

import torch
from omegaconf import DictConfig

from ..errors import UserError
from .build import build_prior, resolve_prior_model

MAX_PROMPT = 500


def check_prompt(prompt: str) -> str:
    text = prompt.strip()
    if not text:
        raise UserError("the prompt is empty")
    if len(text) > MAX_PROMPT:
        raise UserError(f"the prompt is {len(text)} characters long; the limit is {MAX_PROMPT}")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise UserError("the prompt contains control characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:      # bytes that were not UTF-8 reach argv as lone surrogates
        raise UserError("the prompt is not valid UTF-8 text") from None
    return text


def slugify(prompt: str, limit: int = 48) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")
    return slug[:limit].rstrip("-") or "run"


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


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but no CUDA device is available; use device=cpu or auto")
    return torch.device(name)


def prepare(prompt: str, cfg: DictConfig, root_check: bool = True,
            dry_run: bool = False) -> tuple[str, Path]:
    """Every check that can fail on the user's input, before any work or any file."""
    prompt = check_prompt(prompt)
    select_device(cfg.device)
    if cfg.guidance.prior == "toy":
        prior = build_prior(cfg)
        prior.parse(prompt)                 # unknown words fail here
        if cfg.prompt.negative.strip():
            prior.parse(cfg.prompt.negative)
    else:
        resolve_prior_model(cfg)            # absent weights fail here, before any folder
    root = Path(cfg.output.root)
    if root_check:
        check_output_root(root, create=not dry_run)
    return prompt, root
