"""Optional C++ kernels from ``extensions/``, built with torch's extension tooling on first
use and cached per build (torch, Python, compiler, flags, source, CPU); ``None``, with the
reason, where a kernel cannot be built, so that its PyTorch twin runs instead."""
from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
from importlib import resources
from pathlib import Path
from typing import Any

import torch

_FLAGS = ["-O3", "-fopenmp", "-ffp-contract=off", "-fno-trapping-math"]


def cpu_tag() -> str:
    """A short fingerprint of this CPU: kernels are built for it (``-march=native``), so a
    cache directory shared between machines must not hand one CPU's build to another."""
    text = platform.machine() + platform.processor()
    try:
        with open("/proc/cpuinfo") as info:
            text += "".join(line for line in info if line.startswith(("model name", "flags")))
    except OSError:
        pass
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def source(relative: str) -> Path:
    """A kernel source, e.g. ``hashgrid/hashgrid_cpu.cpp``, as installed."""
    return Path(str(resources.files("dreamfusion.extensions").joinpath(*relative.split("/"))))


def compiler_version() -> str:
    """The C++ compiler torch would use (``$CXX`` or ``c++``) and its version line."""
    compiler = os.environ.get("CXX", "c++")
    path = shutil.which(compiler) or compiler
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
        return f"{path} {out.stdout.splitlines()[0] if out.stdout else ''}"
    except (OSError, subprocess.SubprocessError):
        return path


def quiet_cpp_extension() -> None:
    """A CUDA build of torch on a machine without a GPU warns "No CUDA runtime is found" when
    its extension tooling is imported; these kernels are CPU-only, so the warning says nothing
    true about them and would be the first line of every run."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)


def build_key(relative: str, native: bool) -> str:
    """Everything that changes the build: torch's version and install folder (two venvs with
    their own torch never share ``build.ninja``, which embeds its include and library paths),
    Python's headers, the compiler, the flags, the source and, for ``-march=native``, the
    CPU. A venv that reuses the base interpreter's torch shares its build."""
    quiet_cpp_extension()
    import torch.utils.cpp_extension as ext

    parts = [torch.__version__, os.path.dirname(torch.__file__), sys.version,
             sysconfig.get_paths()["include"],
             compiler_version(), " ".join(_FLAGS), str(native), cpu_tag() if native else "",
             hashlib.sha256(source(relative).read_bytes()).hexdigest(),
             " ".join(ext.include_paths())]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _build_dir(name: str, relative: str, native: bool) -> Path:
    root = Path(os.environ.get("DREAMFUSION_CACHE", Path.home() / ".cache" / "dreamfusion"))
    tag = f"torch{torch.__version__}".replace("+", "_")
    target = "native" if native else "generic"
    return root / "extensions" / f"{name}-{tag}-{target}-{build_key(relative, native)}"


def build(name: str, relative: str, native: bool) -> Any:
    """Compile (or load the cached build of) ``extensions/<relative>`` as module ``name``.

    ``-march=native`` lets arithmetic vectorise with the CPU's own SIMD; fused multiply-adds
    stay off (``-ffp-contract=off``), so that every expression rounds as in the PyTorch twin.

    Processes that share the cache (runs packed on one machine, a cluster's workers) build
    one at a time under a lock that dies with its holder. torch's own guard is a ``lock``
    file that a process killed mid-build leaves behind, after which every later load of
    that build waits for ever; holding our lock, no other process of ours is building, so
    such a file is stale and is removed.
    """
    folder = _build_dir(name, relative, native)     # first: its key imports the tooling quietly
    folder.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock
    from torch.utils.cpp_extension import load

    flags = _FLAGS + (["-march=native"] if native else [])
    with FileLock(str(folder / "build.lock")):
        (folder / "lock").unlink(missing_ok=True)
        return load(name=f"dreamfusion_{name}" + ("_native" if native else ""),
                    sources=[str(source(relative))], build_directory=str(folder),
                    extra_cflags=flags, extra_ldflags=["-fopenmp"], verbose=False)


def load(name: str, relative: str) -> tuple[Any | None, str]:
    """The kernel module and ``""``, or ``None`` and why it could not be built."""
    why = ""
    for native in (True, False):    # a compiler without -march=native still gets a kernel
        try:
            return build(name, relative, native), ""
        except Exception as exc:    # no compiler, no ninja, no headers: the torch path remains
            text = str(exc).strip().splitlines()
            why = f"{type(exc).__name__}: {text[-1] if text else ''}"
    return None, why


class LazyKernel:
    """A kernel built the first time it is asked for (about 30 s, then cached on disk):
    ``load()`` gives the module or None, ``reason()`` why it is None."""

    def __init__(self, name: str, relative: str) -> None:
        self.name, self.relative = name, relative
        self._tried = False
        self._module: Any | None = None
        self._why = ""

    def load(self) -> Any | None:
        if not self._tried:
            self._module, self._why = load(self.name, self.relative)
            self._tried = True
        return self._module

    def reason(self) -> str:
        return self._why
