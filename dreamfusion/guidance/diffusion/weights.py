"""Find a diffusers-format model: a local folder, the Hugging Face cache, or the hub."""
from __future__ import annotations

import os
import re
from pathlib import Path

from ...errors import UserError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# only model_index.json and the prior's subfolders are fetched (no safety checker, no feature
# extractor); diffusers loads the plain (not the *.fp16.*) files and never the other formats
IGNORE = ["*.ckpt", "*.msgpack", "*.onnx", "*.onnx_data", "*.h5", "*.pb", "*.xml", "*.fp16.*"]


def is_offline() -> bool:
    """True when the hub must not be contacted (``HF_HUB_OFFLINE``, read now, not at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _how_to(name: str) -> str:
    return (f"download it where you are online (`hf download {name}`) and copy the Hugging Face "
            f"cache here, or pass guidance.model=/path/to/a/diffusers/folder")


def resolve_model(name: str, subfolders: tuple[str, ...]) -> Path:
    """The local folder that holds ``name``, downloading only when online and not cached.

    Bad or unavailable input raises ``UserError`` saying what was looked for and how to
    provide it; nothing is downloaded when ``HF_HUB_OFFLINE`` is set.
    """
    path = Path(name).expanduser()
    if path.is_dir():
        missing = [s for s in subfolders if not (path / s).is_dir()]
        if missing:
            raise UserError(f"model folder {name!r} is not a diffusers pipeline folder: it has no "
                            f"{', '.join(s + '/' for s in missing)}")
        return path
    if path.exists() or not HUB_ID.match(name):
        raise UserError(f"model {name!r} is neither a folder nor a hub id (owner/name); "
                        f"pass guidance.model=/path/to/a/diffusers/folder or a hub id")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    patterns = ["model_index.json"] + [f"{s}/*" for s in subfolders]
    try:
        return Path(snapshot_download(name, allow_patterns=patterns, ignore_patterns=IGNORE,
                                      local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        pass
    cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
    if is_offline():
        raise UserError(f"model {name!r} is not a local folder and not in the Hugging Face cache "
                        f"({cache}), and HF_HUB_OFFLINE is set; {_how_to(name)}")
    try:
        from huggingface_hub import list_repo_files

        ignore = list(IGNORE)
        if any(f.endswith(".safetensors") for f in list_repo_files(name)):
            ignore.append("*.bin")          # the same weights twice: take the safe format
        return Path(snapshot_download(name, allow_patterns=patterns, ignore_patterns=ignore))
    except Exception as exc:      # network, auth (gated models), missing repo: all the user's to fix
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"model {name!r} is not a local folder, not in the Hugging Face cache "
                        f"({cache}), and could not be downloaded ({reason}); {_how_to(name)}; "
                        f"gated models (DeepFloyd IF) need their licence accepted and "
                        f"`hf auth login`") from None
