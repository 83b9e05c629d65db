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

__all__ = ["RunConfig", "load_config", "config_keys", "resolve_config_path", "DEFAULT_CONFIG"]


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


def _parse_override(item: str, keys: list[str]) -> dict:
    if "=" not in item:
        raise UserError(f"override {item!r} must look like key.sub=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if key not in keys:
        raise _unknown_key(key, keys, " on the command line")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
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
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read config {str(path)!r}: {exc}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"config {str(path)!r} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"config {str(path)!r} must be a mapping of keys to values")
    where = f" in {path.name}"
    _check_keys(data, keys, where)
    cfg = _merge(OmegaConf.structured(RunConfig), data, where)
    for item in overrides:
        cfg = _merge(cfg, _parse_override(item, keys), " on the command line")
    validate(cfg)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def to_yaml(cfg: DictConfig | ListConfig) -> str:
    return OmegaConf.to_yaml(cfg)
