"""One source of defaults: the schema. A component's constructor may leave a parameter
without a default (the config always passes it) or give it the schema's value; a default
that disagrees with the schema is what a run from a config never sees and a test or bench
built by hand always does, so it fails here."""
import dataclasses
import inspect

import pytest
from omegaconf import OmegaConf

from dreamfusion.config import RunConfig
from dreamfusion.config.schema import DensifyConfig
from dreamfusion.gaussians.density_control import DensifySettings
from dreamfusion.gaussians.model import Gaussians
from dreamfusion.gaussians.renderer import GaussianRenderer
from dreamfusion.guidance.schedules import TimestepSchedule
from dreamfusion.nerf.field import NeRFField
from dreamfusion.nerf.hashgrid import HashGridEncoding
from dreamfusion.nerf.occupancy import OccupancyGrid
from dreamfusion.nerf.renderer import RenderSettings

SCHEMA = OmegaConf.to_container(OmegaConf.structured(RunConfig))


def _at(key: str):
    node = SCHEMA
    for part in key.split("."):
        node = node[part]
    return node


# each component, the config section its parameters are read from, and the parameters
# whose key there has another name
COMPONENTS = [
    (HashGridEncoding, "nerf.grid", {}),
    (NeRFField, "nerf", {}),
    (OccupancyGrid, "marcher", {"resolution": "grid_resolution", "bound": "nerf.bound"}),
    (RenderSettings, "marcher", {"ambient": "shading.ambient", "diffuse": "shading.diffuse",
                                 "marcher": "backend"}),
    (Gaussians, "gaussians", {"bound": "nerf.bound"}),
    (GaussianRenderer, "gaussians", {"mode": "rasterize_mode", "ambient": "shading.ambient",
                                     "diffuse": "shading.diffuse"}),
    (DensifySettings, "gaussians.densify", {"max_count": "gaussians.max_count",
                                            "extent": "nerf.bound"}),
    (TimestepSchedule, "guidance", {"name": "schedule"}),
]


def _schema_key(section: str, name: str, renamed: dict) -> str | None:
    key = renamed.get(name, name)
    for candidate in (key, f"{section}.{key}"):
        try:
            _at(candidate)
            return candidate
        except (KeyError, TypeError):
            continue
    return None


@pytest.mark.parametrize("component, section, renamed", COMPONENTS,
                         ids=[c[0].__name__ for c in COMPONENTS])
def test_a_constructor_default_is_the_schemas_or_absent(component, section, renamed):
    checked = 0
    for name, param in inspect.signature(component).parameters.items():
        key = _schema_key(section, name, renamed)
        if key is None or param.default is inspect.Parameter.empty:
            continue
        assert param.default == _at(key), (f"{component.__name__}({name}={param.default!r}) "
                                           f"but the schema's {key} is {_at(key)!r}")
        checked += 1
    # the mapping is not vacuous: every parameter but the built objects is a schema key
    names = [n for n in inspect.signature(component).parameters
             if n not in ("encoding", "generator", "device", "self")]
    assert all(_schema_key(section, n, renamed) for n in names), \
        [n for n in names if not _schema_key(section, n, renamed)]


def test_density_control_takes_the_schemas_section_by_name():
    """``DensifySettings`` is the densify section and the two values density control needs
    from elsewhere, field for field: a key added to one and not the other fails here."""
    ours = [f.name for f in dataclasses.fields(DensifySettings)]
    assert ours == [f.name for f in dataclasses.fields(DensifyConfig)] + ["max_count", "extent"]
