"""Write files so that a crash leaves either the old file or the new one, never half of one."""
from __future__ import annotations

import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import WriteError

# mkstemp makes files 0600; a finished file gets the mode open() would have given it
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: not every filesystem allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_PREFIX, _SUFFIX = ".{name}.", ".tmp{suffix}"
# what mkstemp makes of them: random characters between the prefix and the suffix
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]+\.tmp(\.[^./]+)?$")


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is one of ``atomic_path``'s temporary files."""
    return _TEMP_NAME.match(name) is not None


def remove_temp_files(folder: Path) -> list[Path]:
    """Delete the temporary files that killed writes left anywhere under ``folder``; the
    paths removed. Call it only where no other process writes (a run folder being resumed
    or re-exported)."""
    removed = []
    for path in sorted(Path(folder).rglob(".*.tmp*")):
        if path.is_file() and is_temp_name(path.name):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed over it.

    A failed write (a full disk, a file-size limit) raises ``WriteError`` naming ``path``;
    the temporary file is removed and the previous ``path``, if any, is left as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_PREFIX.format(name=path.name),
                                   suffix=_SUFFIX.format(suffix=path.suffix))
        os.fchmod(fd, 0o666 & ~_UMASK)
        os.close(fd)
    except OSError as exc:
        raise WriteError(path, exc) from None
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
        fsync_folder(path.parent)
    except OSError as exc:
        raise WriteError(path, exc) from None
    finally:
        tmp_path.unlink(missing_ok=True)


def append_text(path: str | os.PathLike, text: str) -> None:
    """Append ``text`` (whole lines) to ``path``, creating it if needed.

    Unbuffered, so a killed process leaves whole lines. A failed append (a full disk, a
    read-only file) is cut back to the file's previous length and raises ``WriteError``
    naming ``path``, like every other write.
    """
    data = text.encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as exc:
        raise WriteError(Path(path), exc) from None
    try:
        size = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except OSError as exc:
            try:
                os.ftruncate(fd, size)      # no half line for a later append to run into
            except OSError:
                pass
            raise WriteError(Path(path), exc) from None
    finally:
        os.close(fd)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_png(path: str | os.PathLike, image) -> None:
    """An (H, W, 3) uint8 array as a PNG."""
    import imageio.v3 as iio

    with atomic_path(path) as tmp:
        iio.imwrite(tmp, image, extension=".png")
