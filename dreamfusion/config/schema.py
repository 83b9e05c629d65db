"""The run configuration: omegaconf structured configs (types are checked on every merge)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional


@dataclass
class HashGridConfig:
    n_levels: int = 16
    features: int = 2
    table_size_log2: int = 19
    base_resolution: int = 16
    growth: float = 1.447269237440378     # 16 levels from 16 to 2048
    backend: str = "auto"      # auto (tcnn on CUDA, cpp on CPU, where available) | tcnn | cpp | torch
    # coarse to fine (threestudio's progressive hash grid): only the first `start_levels`
    # levels are used at first, one more every `level_every` steps from `start_step`
    start_levels: int = 0      # 0 (or n_levels and more): every level from the first step
    start_step: int = 0
    level_every: int = 500


@dataclass
class NeRFConfig:
    bound: float = 1.0
    grid: HashGridConfig = field(default_factory=HashGridConfig)
    hidden: int = 64
    layers: int = 1
    blob_density: float = 5.0
    blob_radius: float = 0.5
    # analytic (autograd, needs second derivatives: PyTorch encoding only) or
    # finite_difference (forward differences over fd_eps: every encoding backend)
    normals: str = "finite_difference"
    fd_eps: float = 0.01


@dataclass
class DensifyConfig:
    """Adaptive density control (3DGS; DreamGaussian's text-to-3D values)."""
    start: int = 100                      # first step that densifies
    stop: int = 3000                      # no densification from this step on
    every: int = 100                      # steps between densification passes
    grad_threshold: float = 0.01          # mean view-space gradient (NDC units) that densifies
    percent_dense: float = 0.01           # clone below, split above this share of nerf.bound
    min_opacity: float = 0.01             # prune Gaussians more transparent than this
    max_screen_fraction: float = 0.5      # after an opacity reset, prune Gaussians wider than
    max_world_fraction: float = 0.1       # this share of the image or this share of the bound
    opacity_reset_every: int = 700        # opacities to 0.01 every this many steps (0: never)


@dataclass
class GaussianLRConfig:
    position: float = 0.001
    # None: the positions' rate stays put; else it decays exponentially to this at the last
    # step (3DGS and DreamGaussian: 0.00002)
    position_final: Optional[float] = None
    scale: float = 0.005
    rotation: float = 0.005
    opacity: float = 0.05
    colour: float = 0.01
    background: float = 0.001             # the learned background, where there is one


@dataclass
class GaussianConfig:
    """3D Gaussians (representation=gaussians), inside the cube of side 2 * nerf.bound."""
    count: int = 5000                     # initial Gaussians, uniform in a ball
    init_radius: float = 0.5              # of that ball
    init_opacity: float = 0.1
    # no Gaussian thinner than this (world units): 0 as in 3DGS; at low training resolutions
    # it keeps renders at higher ones from breaking up into dots (Mip-Splatting's 3D filter)
    min_scale: float = 0.0
    max_count: int = 200000               # densification stops growing the set here
    # auto: gsplat on CUDA where it imports, the compiled compositor (extensions/splat) on the
    # CPU where it builds, else the PyTorch reference | gsplat | cpp | torch
    backend: str = "auto"
    # classic: 3DGS's 0.3 px^2 screen filter, which widens a small Gaussian more at a low
    # resolution than at a high one | antialiased: with gsplat's opacity compensation
    # sqrt(det Sigma_2D / det(Sigma_2D + 0.3 I)), so a render at any size covers the same area
    rasterize_mode: str = "classic"
    densify: DensifyConfig = field(default_factory=DensifyConfig)
    lr: GaussianLRConfig = field(default_factory=GaussianLRConfig)


@dataclass
class MeshLRConfig:
    """Adam's rates for the mesh stage's parameters."""
    sdf: float = 0.002                    # the grid's SDF values (world units)
    deform: float = 0.005                 # the offsets' pre-tanh values
    colour: float = 0.01                  # the colour field's hash grid and MLP
    background: float = 0.001             # the learned background, where there is one


def _colour_grid() -> "HashGridConfig":
    return HashGridConfig(n_levels=8, table_size_log2=16, base_resolution=16, growth=1.5)


@dataclass
class RefineConfig:
    """The mesh stage (Magic3D's second stage, ``dreamfusion refine RUN_DIR``): a DMTet
    surface initialised from a first stage's density, rasterised and refined by the same
    prior. The schema's values are Magic3D's and threestudio's ``magic3d-refine-sd``; a
    refine run's ``steps``, ``height``/``width``, ``guidance.t_max`` and mesh regularizer
    weights come from here (``pipeline.refine.STAGE_KEYS``)."""
    source: str = ""                      # the first stage's run folder (set by refine)
    after: bool = False                   # `dreamfusion run` refines its own result after
    steps: int = 5000
    render_size: int = 512
    tet_resolution: int = 128             # cells along each side of the box
    t_max: float = 0.5                    # the largest noise level of the stage's steps
    normal_consistency: Any = 10000.0     # 1 - cos between neighbouring faces' normals
    laplacian: Any = 0.0                  # uniform Laplacian of the vertices, in cells^2
    offset_decay: Any = 0.0               # mean squared grid offset, in cells^2
    # the stage's shading mix {albedo, lambertian, textureless} (as ``shading``); None: the
    # first stage's. threestudio's refine shades every step (its point-light material)
    shading: Any = None
    backend: str = "auto"                 # mesh rasteriser: auto (nvdiffrast on CUDA and
                                          # the CPU kernel on CPU, where available, else
                                          # PyTorch) | nvdiffrast | cpp | torch
    colour_grid: "HashGridConfig" = field(default_factory=_colour_grid)
    colour_hidden: int = 32
    colour_fit_steps: int = 300           # fitting the colour field to the first stage's
    lr: MeshLRConfig = field(default_factory=MeshLRConfig)


@dataclass
class MarcherConfig:
    step_size: float = 0.0135             # 2 * sqrt(3) / 256: 256 steps across the box diagonal
    grid_resolution: int = 64
    update_every: int = 16
    warmup_steps: int = 256               # refresh every step until then
    ema_decay: float = 0.95
    threshold: float = 0.01               # opacity over one step
    early_stop_eps: float = 1e-4
    backend: str = "auto"                 # auto (nerfacc on CUDA where it imports) | nerfacc | torch


@dataclass
class CameraConfig:
    elevation: List[float] = field(default_factory=lambda: [-10.0, 90.0])
    azimuth: List[float] = field(default_factory=lambda: [-180.0, 180.0])
    distance: List[float] = field(default_factory=lambda: [1.0, 1.5])
    fov: List[float] = field(default_factory=lambda: [40.0, 70.0])
    # K views of each object per sample, at azimuths 360/K apart from a random base, with one
    # elevation, distance and fov (MVDream: 4); a multi-view prior takes exactly its K
    views_per_sample: int = 1
    # distance scaled by 1 / tan(fov / 2): the object fills the same share of every frame
    relative_distance: bool = False


@dataclass
class ShadingConfig:
    albedo: float = 0.2                   # probabilities of each shading mode per step
    lambertian: float = 0.4
    textureless: float = 0.4
    ambient: float = 0.3
    diffuse: float = 0.7
    light_jitter: float = 0.3
    albedo_only_steps: int = 0            # DreamFusion's warm-up with albedo renders only


@dataclass
class BackgroundConfig:
    kind: str = "learned"                 # solid | learned
    color: List[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])


@dataclass
class ViewRuleConfig:
    name: str = "front"
    suffix: str = ", front view"
    azimuth_centers: List[float] = field(default_factory=lambda: [0.0])
    half_width: float = 45.0
    min_elevation: float = -90.0
    max_elevation: float = 90.0


def _default_views() -> List[ViewRuleConfig]:
    return [
        ViewRuleConfig("overhead", ", overhead view", [0.0], 180.0, 60.0, 90.0),
        ViewRuleConfig("front", ", front view", [0.0], 45.0),
        ViewRuleConfig("back", ", back view", [180.0], 45.0),
        ViewRuleConfig("side", ", side view", [90.0, -90.0], 45.0),
    ]


@dataclass
class PromptConfig:
    view_dependent: bool = True           # add the view's suffix ("..., side view")
    interpolate: bool = False             # mix neighbouring view prompts by azimuth
    perp_neg: bool = False                # Perp-Neg: other views as perpendicular negatives
    perp_neg_weight: float = 1.0
    negative: str = ""                    # negative prompt, in place of the empty prompt in CFG
    views: List[ViewRuleConfig] = field(default_factory=_default_views)


@dataclass
class GuidanceConfig:
    # toy | toy_multiview | stable_diffusion | deepfloyd_if | mvdream
    prior: str = "toy"
    # sds: w(t) (eps_hat - eps) | recon: MVDream's x0 reconstruction, 0.5 |x - x0_hat|^2 with
    # x0_hat from the guided eps, its std rescaled towards the unguided one's by recon_std_rescale
    loss: str = "sds"
    recon_std_rescale: float = 0.5
    guidance_scale: float = 100.0
    weighting: str = "sds"                # sds | uniform | snr_sqrt
    grad_clip: Optional[float] = None
    schedule: str = "uniform"             # uniform | anneal_linear | anneal_sqrt | time_prioritized
    t_min: float = 0.02
    t_max: float = 0.98
    t_max_end: float = 0.5                # where annealed schedules end
    t_min_end: Optional[float] = None     # None: t_min stays put while t_max anneals
    tp_mu: float = 0.5                    # time_prioritized: where t lingers
    tp_sigma: float = 0.25
    anneal_end: float = 1.0               # the share of the run over which annealed t ranges move
    # diffusers priors only
    model: str = ""                       # hub id or local folder in diffusers format
    render_size: Optional[int] = None     # renders are resized to this (SD: before the VAE);
                                          # None: the UNet's sample_size x the VAE's factor
    half_precision: bool = True           # fp16 weights on CUDA (always fp32 on the CPU)
    text_cache: bool = True               # cache text embeddings on disk, keyed by model and prompt
    # mvdream only: MVDream's original checkpoint (sd-v2.1-base-4view.pt, LDM key layout), whose
    # UNet replaces the one of guidance.model (SD 2.1-base: VAE, text encoder, tokenizer, scheduler)
    checkpoint: str = ""
    checkpoint_config: str = ""           # its LDM yaml; empty: MVDream's SD 2.1 architecture
    # toy prior only
    references: int = 128
    uncond_per_caption: int = 8
    front_bias: float = 0.8
    # toy_multiview only: the width (degrees) of the kernel over base cameras that conditions
    # the reference tuples on the render's cameras
    camera_sigma: float = 8.0
    cache_dir: str = ""                   # empty: $DREAMFUSION_CACHE or ~/.cache/dreamfusion


@dataclass
class RegularizerConfig:
    """Weights of the terms added to the SDS loss. Each is a number (constant) or
    ``[start_step, start_value, end_value, end_step]``: linear between the two steps and
    constant outside them (threestudio's notation)."""
    orientation: Any = 0.0                # Ref-NeRF's: sum_i w_i max(0, n_i . d)^2 per ray
    sparsity: Any = 0.0                   # mean sqrt(opacity^2 + 0.01) (threestudio)
    entropy: Any = 0.0                    # mean binary entropy of opacity (stable-dreamfusion)
    # the mesh stage's (representation=mesh; a refine run sets them from refine.*)
    normal_consistency: Any = 0.0         # mean 1 - cos(n_f, n_g) over faces f, g sharing an edge
    laplacian: Any = 0.0                  # mean |v - mean of v's neighbours|^2, in grid cells^2
    offset_decay: Any = 0.0               # mean |grid offset|^2, in grid cells^2


@dataclass
class OptimConfig:
    lr: float = 0.01
    lr_grid_scale: float = 1.0            # the hash table's learning rate relative to lr
    beta1: float = 0.9
    beta2: float = 0.99
    eps: float = 1e-15


@dataclass
class ExportConfig:
    enabled: bool = True
    resolution: int = 128
    threshold: str = "auto"               # auto (sigma = ln 2 / step_size) or a density value
    formats: List[str] = field(default_factory=lambda: ["glb", "obj"])
    texture_size: int = 1024              # baked albedo texture; 0 writes vertex colours
    decimate: int = 20000                 # at most this many faces (0: all); xatlas slows on more
    keep_fraction: float = 0.05           # drop pieces under this share of the largest's faces


@dataclass
class OutputConfig:
    root: str = "outputs"
    val_every: int = 100
    val_size: int = 64
    turntable_frames: int = 24
    turntable_size: int = 96
    turntable_elevation: float = 20.0
    log_every: int = 10
    eval_every: int = 50                  # toy prior: IoU against the truth, for the curve


@dataclass
class CheckpointConfig:
    every: int = 500                      # steps between checkpoints (also one at step 0)
    keep: int = 2                         # the newest checkpoints kept on disk


@dataclass
class FaultConfig:
    max_bad_steps: int = 3                # non-finite steps within `window` steps that
    window: int = 50                      # trigger a rollback to the last checkpoint
    lr_factor: float = 0.5                # learning-rate multiplier at each rollback
    max_rollbacks: int = 3                # then the run stops, keeping its last checkpoint
    # a testing aid: NaN gradients at these steps, the first time each is reached
    inject_nan_at: List[int] = field(default_factory=list)
    # a testing aid for the executors' retries: the process kills itself (SIGKILL) at the end
    # of this step, once per run folder; 0: never
    kill_at_step: int = 0


@dataclass
class RunConfig:
    seed: int = 0
    steps: int = 10000
    height: int = 64
    width: int = 64
    batch_size: int = 1
    device: str = "cpu"                   # cpu | cuda | auto
    representation: str = "nerf"          # nerf | gaussians | mesh
    nerf: NeRFConfig = field(default_factory=NeRFConfig)
    marcher: MarcherConfig = field(default_factory=MarcherConfig)
    gaussians: GaussianConfig = field(default_factory=GaussianConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    shading: ShadingConfig = field(default_factory=ShadingConfig)
    background: BackgroundConfig = field(default_factory=BackgroundConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)
    regularizers: RegularizerConfig = field(default_factory=RegularizerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    faults: FaultConfig = field(default_factory=FaultConfig)
