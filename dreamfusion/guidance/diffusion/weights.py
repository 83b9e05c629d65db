"""Find a diffusers-format model: a local folder, the Hugging Face cache, or the hub."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Sequence

from ...errors import UserError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# only model_index.json and the prior's subfolders are fetched (no safety checker, no feature
# extractor), and never the formats diffusers does not load
IGNORE = ["*.ckpt", "*.msgpack", "*.onnx", "*.onnx_data", "*.h5", "*.pb", "*.xml"]
WEIGHTS = (".safetensors", ".bin")


def _is_weights(name: str) -> bool:
    return name.endswith(WEIGHTS)


def download_ignores(files: Sequence[str], variant: str | None) -> list[str]:
    """What not to download of a repository holding ``files``: the formats never loaded,
    ``.bin`` weights where the same folder has ``.safetensors``, and, per folder, the plain
    weights where the ``variant`` (``fp16``) files exist, else the variant files: each folder's
    weights arrive once, in the form that will be loaded."""
    ignore = list(IGNORE)
    folders: dict[str, list[str]] = {}
    for f in files:
        if _is_weights(f):
            folders.setdefault(os.path.dirname(f), []).append(os.path.basename(f))
    for folder, names in folders.items():
        prefix = f"{folder}/" if folder else ""
        if any(n.endswith(".safetensors") for n in names):
            ignore.append(f"{prefix}*.bin")
        tagged = [n for n in names if variant and f".{variant}." in n]
        if tagged:
            ignore += [f"{prefix}{n}" for n in names if n not in tagged]
        else:
            ignore += [f"{prefix}*.fp16.*"]
    return ignore


def weight_variant(folder: Path, subfolder: str, variant: str | None) -> str | None:
    """``variant`` where ``folder/subfolder`` has weights of that variant (``*.fp16.*``), else
    None: the plain weights."""
    path = folder / subfolder
    if variant and path.is_dir() and any(f.name.endswith(WEIGHTS) and f".{variant}." in f.name
                                         for f in path.iterdir()):
        return variant
    return None


def _safetensors_numel(path: Path) -> int:
    """The number of elements in a ``.safetensors`` file, from its header alone (8 bytes of
    little-endian length, then JSON of each tensor's dtype, shape and offsets). A header that
    cannot be read counts the file's bytes as float32: the load itself then says what is
    wrong with the file, in the words every other broken part gets."""
    fallback = path.stat().st_size // 4
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            # a corrupt length would otherwise ask for gigabytes of "header"
            if size > min(path.stat().st_size - 8, 100 << 20):
                return fallback
            header = json.loads(f.read(size))
        total = 0
        for name, entry in header.items():
            if name != "__metadata__":
                count = 1
                for n in entry["shape"]:
                    count *= int(n)
                total += count
        return total
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return fallback


def weight_elements(folder: Path, subfolder: str, variant: str | None) -> int:
    """How many numbers ``folder/subfolder`` holds in the weights that load (the ``variant``
    files where there are some; every shard); a ``.bin`` pickle counts as float32."""
    path = folder / subfolder
    if not path.is_dir():
        return 0
    files = [f for f in sorted(path.iterdir()) if f.name.endswith(WEIGHTS)]
    tagged = [f for f in files if variant and f".{variant}." in f.name]
    chosen = tagged or [f for f in files if ".fp16." not in f.name] or files
    safetensors = [f for f in chosen if f.name.endswith(".safetensors")]
    if safetensors:
        return sum(_safetensors_numel(f) for f in safetensors)
    return sum(f.stat().st_size // 4 for f in chosen)


def check_pipeline(folder: Path, accepted: tuple[str, ...], prior: str) -> None:
    """A ``UserError`` unless ``folder/model_index.json`` names one of the ``accepted``
    pipeline classes (an SDXL or SD3 folder has the same subfolder names, not the same
    models)."""
    index = folder / "model_index.json"
    try:
        name = json.loads(index.read_text(encoding="utf-8")).get("_class_name", "")
    except (OSError, ValueError, AttributeError):
        raise UserError(f"model folder {str(folder)!r} is not a diffusers pipeline folder: its "
                        f"model_index.json is missing or unreadable") from None
    if name not in accepted:
        raise UserError(f"model folder {str(folder)!r} holds a {name or 'unnamed pipeline'}; the "
                        f"{prior} prior takes {' or '.join(accepted)}")


def is_offline() -> bool:
    """True when the hub must not be contacted (``HF_HUB_OFFLINE``, read now, not at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _how_to(name: str) -> str:
    return (f"download it where you are online (`hf download {name}`) and copy the Hugging Face "
            f"cache here, or pass guidance.model=/path/to/a/diffusers/folder")


def resolve_model(name: str, subfolders: tuple[str, ...], variant: str | None = None) -> Path:
    """The local folder that holds ``name``, downloading only when online and not cached.

    Bad or unavailable input raises ``UserError`` saying what was looked for and how to
    provide it; nothing is downloaded when ``HF_HUB_OFFLINE`` is set. ``variant`` (``fp16``)
    fetches those weight files where the repository has them.
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
    from huggingface_hub.utils import LocalEntryNotFoundError   # .errors only from 0.25 on

    patterns = ["model_index.json"] + [f"{s}/*" for s in subfolders]
    try:
        return Path(snapshot_download(name, allow_patterns=patterns, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        pass
    cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
    if is_offline():
        raise UserError(f"model {name!r} is not a local folder and not in the Hugging Face cache "
                        f"({cache}), and HF_HUB_OFFLINE is set; {_how_to(name)}")
    try:
        from huggingface_hub import list_repo_files

        ignore = download_ignores(list_repo_files(name), variant)
        return Path(snapshot_download(name, allow_patterns=patterns, ignore_patterns=ignore))
    except Exception as exc:      # network, auth (gated models), missing repo: all the user's to fix
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"model {name!r} is not a local folder, not in the Hugging Face cache "
                        f"({cache}), and could not be downloaded ({reason}); {_how_to(name)}; "
                        f"gated models (DeepFloyd IF) need their licence accepted and "
                        f"`hf auth login`") from None
