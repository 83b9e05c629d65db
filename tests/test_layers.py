"""The package imports one way: each layer only from the layers below it (or itself)."""
import ast
from pathlib import Path

import dreamfusion

ROOT = Path(dreamfusion.__file__).parent
# higher imports lower; equal ranks do not import each other
RANKS = {"__main__": 11, "cli": 10, "app": 9, "bench": 8, "pipeline": 7, "config": 6, "export": 5,
         "guidance": 5, "gaussians": 4, "nerf": 3, "utils": 3, "rendering": 2, "choices": 1,
         "errors": 1, "kernels": 1, "__init__": 0}


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


def test_stable_diffusion_and_gaussians_never_import_the_toy_world():
    for folder in ("guidance/diffusion", "gaussians", "rendering", "export"):
        for path in (ROOT / folder).rglob("*.py"):
            assert "toy" not in path.read_text(encoding="utf-8").replace("toy-", ""), path
