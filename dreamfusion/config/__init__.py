"""Load a YAML config over the schema, apply ``key.sub=value`` overrides, and validate."""
from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..errors import UserError
from .schema import RunConfig
from .validate import validate

DEFAULT_CONFIG = "toy"
# Bounds on what is parsed, so that hostile YAML (an alias bomb, thousands of nested
# brackets) is refused in milliseconds: the schema is 4 levels deep and about 120 values
MAX_CONFIG_BYTES = 1 << 20
MAX_OVERRIDE_CHARS = 1 << 16
MAX_DEPTH = 16
MAX_VALUES = 10_000

__all__ = ["RunConfig", "load_config", "bundled_configs", "config_keys", "resolve_config_path", "DEFAULT_CONFIG",
           "parse_yaml"]


def config_keys(node: DictConfig | None = None, prefix: str = "") -> list[str]:
    """Every settable dotted key of the schema (lists are set whole)."""
    node = OmegaConf.structured(RunConfig) if node is None else node
    keys = []
    for name in node.keys():
        child = node._get_node(name)
        full = f"{prefix}{name}"
        if isinstance(child, DictConfig):
            keys += config_keys(child, full + ".")
        else:
            keys.append(full)
    return keys


def _nearest(key: str, keys: list[str]) -> str:
    match = difflib.get_close_matches(key, keys, n=1, cutoff=0.0)
    return match[0] if match else keys[0]


def _unknown_key(key: str, keys: list[str], where: str) -> UserError:
    return UserError(f"unknown config key {key!r}{where}; did you mean {_nearest(key, keys)!r}?")


def resolve_config_path(name: str) -> Path:
    """A file path, or the name of a bundled config (``toy`` -> configs/toy.yaml)."""
    path = Path(name)
    if path.is_file():
        return path
    if path.exists():
        raise UserError(f"config {name!r} is not a file")
    stem = name[:-5] if name.endswith(".yaml") else name
    bundled = resources.files("dreamfusion.configs") / f"{Path(stem).name}.yaml"
    if Path(stem).name == stem and bundled.is_file():
        return Path(str(bundled))
    raise UserError(f"config file {name!r} not found")


def bundled_configs() -> list[str]:
    """The names of the configs that ship with the package (``toy``, ``dreamfusion-sd``...)."""
    folder = resources.files("dreamfusion.configs")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


class NotYAML(UserError):
    """Text that does not parse as YAML (an override may still be a plain string)."""


def _check_size(data: object, where: str) -> None:
    """Refuse nesting deeper than ``MAX_DEPTH`` or more than ``MAX_VALUES`` values, counting
    each use of a YAML alias again (which is what merging it would build)."""
    stack, seen = [(data, 0)], 0
    while stack:
        node, depth = stack.pop()
        seen += 1
        if seen > MAX_VALUES:
            raise UserError(f"config{where} holds more than {MAX_VALUES} values (YAML aliases "
                            f"count each time they are used)")
        if depth > MAX_DEPTH:
            raise UserError(f"config{where} is nested more than {MAX_DEPTH} levels deep")
        if isinstance(node, dict):
            stack += [(v, depth + 1) for v in node.values()]
            stack += [(k, depth + 1) for k in node if isinstance(k, (tuple, list, dict))]
        elif isinstance(node, (list, tuple)):
            stack += [(v, depth + 1) for v in node]


def _bracket_depth(text: str) -> int:
    """The deepest run of open flow brackets, counting those inside quotes too: a bound that
    only absurd text (hundreds of unmatched brackets in a string) reaches without nesting."""
    depth = deepest = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth = max(0, depth - 1)
    return deepest


def parse_yaml(text: str, where: str) -> object:
    """YAML with bounded size, depth and alias expansion; ``where`` names it in errors
    (" in toy.yaml"). Raises ``UserError`` naming the first problem."""
    if len(text) > MAX_CONFIG_BYTES:
        raise UserError(f"config{where} is {len(text)} characters long; the limit is "
                        f"{MAX_CONFIG_BYTES}")
    if _bracket_depth(text) > 8 * MAX_DEPTH:
        # refused before PyYAML recurses through thousands of levels (a second or more)
        raise UserError(f"config{where} is nested more than {MAX_DEPTH} levels deep")
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise UserError(f"config{where} is nested more than {MAX_DEPTH} levels deep") from None
    except yaml.YAMLError as exc:
        raise NotYAML(f"config{where} is not valid YAML: {str(exc).splitlines()[0]}") from None
    _check_size(data, where)
    return data


def _check_keys(data: object, keys: list[str], where: str, prefix: str = "") -> None:
    if not isinstance(data, dict):
        return
    for name, value in data.items():
        full = f"{prefix}{name}"
        if full in keys:
            continue
        if any(k.startswith(full + ".") for k in keys):
            _check_keys(value, keys, where, full + ".")
        else:
            raise _unknown_key(full, keys, where)


def _merge(cfg: DictConfig, data: dict, where: str) -> DictConfig:
    try:
        return OmegaConf.merge(cfg, data)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        message = str(exc).splitlines()[0]
        raise UserError(f"config {key}{where}: {message}") from None
    except TypeError:       # omegaconf's own error for a mapping given for a list, or back
        key, wanted = _container_mismatch(cfg, data)
        raise UserError(f"config {key}{where}: must be a {wanted}") from None


def _container_mismatch(cfg: DictConfig, data: dict, prefix: str = "") -> tuple[str, str]:
    """The first key of ``data`` whose value is a mapping where ``cfg`` holds a list, or the
    reverse, and what it must be."""
    for key, value in data.items():
        node = cfg.get(key) if isinstance(cfg, DictConfig) else None
        full = prefix + str(key)
        if isinstance(node, ListConfig) and isinstance(value, dict):
            return full, "list"
        if isinstance(node, DictConfig) and isinstance(value, list):
            return full, "mapping"
        if isinstance(node, DictConfig) and isinstance(value, dict):
            found = _container_mismatch(node, value, full + ".")
            if found[0] != "?":
                return found
    return "?", "value of the schema's kind"


def _parse_override(item: str, keys: list[str]) -> dict:
    if "=" not in item:
        raise UserError(f"override {item!r} must look like key.sub=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if key not in keys:
        raise _unknown_key(key, keys, " on the command line")
    if len(raw) > MAX_OVERRIDE_CHARS:
        raise UserError(f"override {key}= is {len(raw)} characters long; the limit is "
                        f"{MAX_OVERRIDE_CHARS}")
    try:
        value = parse_yaml(raw, f" {key} on the command line") if raw.strip() else ""
    except NotYAML:
        value = raw       # not YAML: a string, which the schema types or refuses
    if isinstance(value, str) or value is None:
        value = raw       # keep strings verbatim ("auto", "1e-3" stays typed by the schema)
    data: dict = {}
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return data


def load_config(name: str = DEFAULT_CONFIG, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """The resolved, validated, read-only config. Bad input raises ``UserError``."""
    path = resolve_config_path(name)
    keys = config_keys()
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise UserError(f"config {str(path)!r} is {size} bytes; the limit is "
                            f"{MAX_CONFIG_BYTES}")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read config {str(path)!r}: {exc}") from None
    data = parse_yaml(text, f" {str(path)!r}") or {}
    if not isinstance(data, dict):
        raise UserError(f"config {str(path)!r} must be a mapping of keys to values")
    where = f" in {path.name}"
    _check_keys(data, keys, where)
    cfg = _merge(OmegaConf.structured(RunConfig), data, where)
    for item in overrides:
        cfg = _merge(cfg, _parse_override(item, keys), " on the command line")
    try:
        OmegaConf.resolve(cfg)      # interpolations (${...}) become values, or fail here
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        raise UserError(f"config {key}: {str(exc).splitlines()[0]}") from None
    validate(cfg)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def to_yaml(cfg: DictConfig | ListConfig) -> str:
    return OmegaConf.to_yaml(cfg)
