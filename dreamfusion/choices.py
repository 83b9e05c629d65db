"""The named choices of the config, in one module that imports nothing.

The config is checked before any work, and the CLI must answer bad input without importing
torch; the modules that implement these choices import them from here. The names of
representations, priors and losses are the registry's (``config.registry``).
"""
from __future__ import annotations

from typing import Literal, get_args

HashGridBackend = Literal["auto", "torch", "cpp", "tcnn"]
Marcher = Literal["auto", "torch", "nerfacc"]
Normals = Literal["analytic", "finite_difference"]
Schedule = Literal["uniform", "anneal_linear", "anneal_sqrt", "time_prioritized"]
Weighting = Literal["sds", "uniform", "snr_sqrt"]
SplatBackend = Literal["auto", "torch", "cpp", "gsplat"]
MeshRasterBackend = Literal["auto", "torch", "cpp", "nvdiffrast"]
ShadingMode = Literal["albedo", "lambertian", "textureless"]
# gsplat's names: the 0.3 px^2 filter alone, or with its opacity compensation
RasterizeMode = Literal["classic", "antialiased"]

BACKENDS: tuple[str, ...] = get_args(HashGridBackend)
MARCHERS: tuple[str, ...] = get_args(Marcher)
NORMALS: tuple[str, ...] = get_args(Normals)
SCHEDULES: tuple[str, ...] = get_args(Schedule)
WEIGHTINGS: tuple[str, ...] = get_args(Weighting)
SPLAT_BACKENDS: tuple[str, ...] = get_args(SplatBackend)
MESH_RASTER_BACKENDS: tuple[str, ...] = get_args(MeshRasterBackend)
SHADING_MODES: tuple[str, ...] = get_args(ShadingMode)
RASTERIZE_MODES: tuple[str, ...] = get_args(RasterizeMode)
