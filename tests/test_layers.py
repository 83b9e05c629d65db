"""The package imports one way: each layer only from the layers below it (or itself)."""
import ast
from pathlib import Path

import dreamfusion

ROOT = Path(dreamfusion.__file__).parent
# higher imports lower; equal ranks do not import each other
RANKS = {"__main__": 11, "cli": 10, "app": 9, "bench": 8, "pipeline": 7, "config": 6,
         "guidance": 5, "gaussians": 5, "mesh": 5, "nerf": 4, "export": 3, "utils": 2, "rendering": 2,
         "choices": 1, "errors": 1, "kernels": 1, "__init__": 0}


def _layer(path: Path) -> str:
    return path.relative_to(ROOT).parts[0].removesuffix(".py")


def _imported_layers(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    depth = len(path.relative_to(ROOT).parts) - 1        # folders below the package root
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level and node.level > depth and node.module:
                out.add(node.module.split(".")[0])           # from ..layer import x
            elif node.level and node.level > depth:
                out.update(a.name for a in node.names)       # from .. import layer
            elif node.level == 0 and (node.module or "").startswith("dreamfusion."):
                out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names
                       if a.name.startswith("dreamfusion."))
    return out


def test_every_layer_imports_only_from_layers_below_it():
    wrong = []
    for path in ROOT.rglob("*.py"):
        layer = _layer(path)
        assert layer in RANKS, f"{layer} has no rank: add it to RANKS"
        for other in _imported_layers(path) - {layer}:
            if other in ("configs", "extensions"):
                continue
            if RANKS[other] >= RANKS[layer]:
                wrong.append(f"{path.relative_to(ROOT)} imports {other}")
    assert not wrong, wrong


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["dreamfusion", *parts])


def _imported_modules(path: Path) -> set[str]:
    """The package's modules that ``path`` imports anywhere (top level or in a function):
    ``from .x import y`` counts as ``x.y`` where that is a module, else as ``x``."""
    here = _module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                out.add(f"{module}.{alias.name}" if f"{module}.{alias.name}" in MODULES
                        else module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m in MODULES}


MODULES = {_module_name(p): p for p in ROOT.rglob("*.py")}
GRAPH = {name: _imported_modules(path) - {name} for name, path in MODULES.items()}


def _reachable(start: str) -> set[str]:
    seen, stack = set(), [start]
    while stack:
        for other in GRAPH[stack.pop()]:
            if other not in seen:
                seen.add(other)
                stack.append(other)
    return seen


def test_no_module_imports_itself_round_a_circle():
    circles = sorted(f"{a} <-> {b}" for a in GRAPH for b in GRAPH[a]
                     if a < b and a in _reachable(b))
    assert not circles, circles


def test_the_pipeline_never_reaches_the_toy_world():
    """The run flow is generic: a toy prior's checks and scores are its registry entry's and
    its own methods, so nothing the pipeline imports, directly or through others, is toy."""
    for name in MODULES:
        if name.startswith("dreamfusion.pipeline"):
            toy = sorted(m for m in _reachable(name) | {name} if ".toy" in m)
            assert not toy, f"{name} reaches {toy}"


def test_stable_diffusion_and_gaussians_never_import_the_toy_world():
    for folder in ("guidance/diffusion", "gaussians", "rendering", "export"):
        for path in (ROOT / folder).rglob("*.py"):
            assert "toy" not in path.read_text(encoding="utf-8").replace("toy-", ""), path
