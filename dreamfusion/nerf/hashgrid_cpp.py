"""The compiled CPU hash-grid kernel (``extensions/hashgrid``), built with torch's extension
tooling on first use and cached; ``None``, with the reason, where it cannot be built."""
from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch.autograd.function import once_differentiable

_why_not: str = ""


def _cpu_tag() -> str:
    """A short fingerprint of this CPU: the kernel is built for it (``-march=native``), so a
    cache directory shared between machines must not hand one CPU's build to another."""
    text = platform.machine() + platform.processor()
    try:
        with open("/proc/cpuinfo") as info:
            text += "".join(line for line in info if line.startswith(("model name", "flags")))
    except OSError:
        pass
    return hashlib.sha1(text.encode()).hexdigest()[:10]


_FLAGS = ["-O3", "-fopenmp", "-ffp-contract=off", "-fno-trapping-math"]


def _source() -> Path:
    return Path(str(resources.files("dreamfusion.extensions") / "hashgrid" / "hashgrid_cpu.cpp"))


def _compiler_version() -> str:
    """The C++ compiler torch would use (``$CXX`` or ``c++``) and its version line."""
    compiler = os.environ.get("CXX", "c++")
    path = shutil.which(compiler) or compiler
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
        return f"{path} {out.stdout.splitlines()[0] if out.stdout else ''}"
    except (OSError, subprocess.SubprocessError):
        return path


def build_key(native: bool) -> str:
    """Everything that changes the build: torch's version and install folder (two venvs with
    their own torch never share ``build.ninja``, which embeds its include and library paths),
    Python's headers, the compiler, the flags, the source and, for ``-march=native``, the
    CPU. A venv that reuses the base interpreter's torch shares its build."""
    _quiet_cpp_extension()
    import torch.utils.cpp_extension as ext

    parts = [torch.__version__, os.path.dirname(torch.__file__), sys.version,
             sysconfig.get_paths()["include"],
             _compiler_version(), " ".join(_FLAGS), str(native), _cpu_tag() if native else "",
             hashlib.sha256(_source().read_bytes()).hexdigest(),
             " ".join(ext.include_paths())]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _build_dir(native: bool) -> Path:
    root = Path(os.environ.get("DREAMFUSION_CACHE", Path.home() / ".cache" / "dreamfusion"))
    tag = f"torch{torch.__version__}".replace("+", "_")
    target = "native" if native else "generic"
    return root / "extensions" / f"hashgrid_cpu-{tag}-{target}-{build_key(native)}"


def _quiet_cpp_extension() -> None:
    """A CUDA build of torch on a machine without a GPU warns "No CUDA runtime is found" when
    its extension tooling is imported; this kernel is CPU-only, so the warning says nothing
    true about it and would be the first line of every run."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)


def _build(native: bool) -> Any:
    build = _build_dir(native)      # first: its build_key imports the tooling quietly
    build.mkdir(parents=True, exist_ok=True)
    from torch.utils.cpp_extension import load

    # the cell arithmetic vectorizes with the CPU's own SIMD (AVX2 or wider: about 1.4x), and
    # only without trapping math (GCC keeps floor() scalar otherwise; results are identical).
    # No fused multiply-adds: x * scale + 0.5 must round as in the reference, or points on a
    # cell boundary land in the neighbouring cell.
    flags = _FLAGS + (["-march=native"] if native else [])
    return load(name="dreamfusion_hashgrid_cpu" + ("_native" if native else ""),
                sources=[str(_source())], build_directory=str(build), extra_cflags=flags,
                extra_ldflags=["-fopenmp"], verbose=False)


@lru_cache(maxsize=None)
def load_kernel() -> Any | None:
    """The kernel module, compiling it the first time (about a minute); None if impossible."""
    global _why_not
    for native in (True, False):    # a compiler without -march=native still gets a kernel
        try:
            return _build(native)
        except Exception as exc:    # no compiler, no ninja, no headers: the torch path remains
            text = str(exc).strip().splitlines()
            _why_not = f"{type(exc).__name__}: {text[-1] if text else ''}"
    return None


def unavailable_reason() -> str:
    return _why_not


class CppHashGrid(torch.autograd.Function):
    """``HashGridEncoding.forward`` by the compiled kernel. Its backward is not itself
    differentiable, so callers that need second derivatives (normals from a density gradient
    inside the loss) use the PyTorch path."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, params: torch.Tensor, enc: Any) -> torch.Tensor:
        kernel = load_kernel()
        x = x.contiguous()
        args = (enc._scale, enc._resolution, enc._size, enc._offset, enc.n_dense, enc.table_size)
        ctx.save_for_backward(x, params)
        ctx.args = args
        return kernel.forward(x, params.detach().contiguous(), *args)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        x, params = ctx.saved_tensors
        grad_params, grad_x = load_kernel().backward(
            grad_out.contiguous(), x, params.detach().contiguous(), *ctx.args,
            ctx.needs_input_grad[0])
        return (grad_x if ctx.needs_input_grad[0] else None), grad_params, None
