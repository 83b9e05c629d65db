"""MVDream (Shi et al. 2023) as a multi-view SDS prior, built from diffusers parts.

MVDream is Stable Diffusion 2.1-base's UNet, fine-tuned on 3D renders with two changes:

- self-attention runs across the K views of a sample: each transformer block's first
  attention sees the tokens of all K views, ``(B K, L, C) -> (B, K L, C)``
  (``MultiViewAttnProcessor``, on every ``attn1``; cross-attention stays per view);
- each view's camera, a flattened 4 x 4 camera-to-world matrix, goes through an MLP
  ``Linear(16, 4 c) - SiLU - Linear(4 c, 4 c)`` whose output is added to the timestep
  embedding: diffusers' ``class_embed_type="projection"`` is that MLP, fed ``class_labels``.

The VAE, text encoder (OpenCLIP ViT-H, as ``CLIPTextModel``), tokenizer and scheduler are SD
2.1-base's, unchanged by MVDream's fine-tuning. Weights load from MVDream's original
checkpoint (``sd-v2.1-base-4view.pt``: the whole latent diffusion model, its UNet under
``model.diffusion_model.``, LDM key layout), converted by diffusers' own LDM-to-diffusers
conversion plus the camera MLP's keys, or from a diffusers folder whose ``unet/`` is such a
converted UNet.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
from omegaconf import DictConfig

from ...errors import UserError
from ...rendering.cameras import Cameras
from .prior import DiffusersSettings, diffusers_dtype, loading_part
from .stable_diffusion import StableDiffusionPrior

# MVDream's SD 2.1-base UNet (its configs/sd-v2-base.yaml, unet_config.params)
SD21_4VIEW: dict[str, Any] = {
    "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 320,
    "attention_resolutions": [4, 2, 1], "num_res_blocks": 2, "channel_mult": [1, 2, 4, 4],
    "num_head_channels": 64, "use_linear_in_transformer": True, "transformer_depth": 1,
    "context_dim": 1024, "camera_dim": 16}
LDM_PREFIX = "model.diffusion_model."
CAMERA_KEYS = {"camera_embed.0": "label_emb.0.0", "camera_embed.2": "label_emb.0.2"}
VIEWS = 4                   # the published weights' views per sample
IMAGE_SIZE = 256            # and their image size (32 x 32 latents)


def unet_config(params: Mapping[str, Any]) -> dict[str, Any]:
    """diffusers ``UNet2DConditionModel`` config for LDM ``MultiViewUNetModel`` params: a level
    has cross-attention where its downsampling factor is in ``attention_resolutions``; heads
    are ``channels / num_head_channels``."""
    mult = list(params["channel_mult"])
    channels = [params["model_channels"] * m for m in mult]
    attends = [2 ** i in params["attention_resolutions"] for i in range(len(mult))]
    head_channels = params.get("num_head_channels", -1)
    heads = ([c // head_channels for c in channels] if head_channels != -1
             else [params["num_heads"]] * len(mult))
    return {
        "sample_size": params.get("image_size", 32), "in_channels": params["in_channels"],
        "out_channels": params["out_channels"], "block_out_channels": channels,
        "layers_per_block": params["num_res_blocks"],
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attends],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in attends[::-1]],
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "attention_head_dim": heads, "cross_attention_dim": params["context_dim"],
        "use_linear_projection": bool(params.get("use_linear_in_transformer", False)),
        "transformer_layers_per_block": params.get("transformer_depth", 1),
        "flip_sin_to_cos": True, "freq_shift": 0, "act_fn": "silu", "norm_num_groups": 32,
        "class_embed_type": "projection",
        "projection_class_embeddings_input_dim": params["camera_dim"]}


def ldm_unet_keys(unet_state: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, str]:
    """Each diffusers UNet key's LDM name (without ``model.diffusion_model.``): the layout
    MVDream's checkpoint has, the camera MLP as ``camera_embed``."""
    per_level = config["layers_per_block"] + 1
    levels = len(config["block_out_channels"])
    renames: list[tuple[str, str]] = [
        ("time_embedding.linear_1.", "time_embed.0."), ("time_embedding.linear_2.", "time_embed.2."),
        ("class_embedding.linear_1.", "camera_embed.0."),
        ("class_embedding.linear_2.", "camera_embed.2."),
        ("conv_in.", "input_blocks.0.0."), ("conv_norm_out.", "out.0."), ("conv_out.", "out.2."),
        ("mid_block.attentions.0.", "middle_block.1.")]
    renames += [(f"mid_block.resnets.{j}.", f"middle_block.{2 * j}.") for j in range(2)]
    for i in range(levels):
        for j in range(per_level - 1):
            n = per_level * i + j + 1
            renames += [(f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{n}.0."),
                        (f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{n}.1.")]
        renames.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{per_level * (i + 1)}.0.op."))
        up_attends = config["up_block_types"][i].startswith("CrossAttn")
        for j in range(per_level):
            n = per_level * i + j
            renames += [(f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{n}.0."),
                        (f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{n}.1.")]
        renames.append((f"up_blocks.{i}.upsamplers.0.",
                        f"output_blocks.{per_level * i + per_level - 1}.{2 if up_attends else 1}."))
    resnet_parts = [("norm1.", "in_layers.0."), ("conv1.", "in_layers.2."),
                    ("time_emb_proj.", "emb_layers.1."), ("norm2.", "out_layers.0."),
                    ("conv2.", "out_layers.3."), ("conv_shortcut.", "skip_connection.")]
    out = {}
    for key in unet_state:
        for new, old in renames:
            if key.startswith(new):
                rest = key[len(new):]
                if ".resnets." in new:
                    for a, b in resnet_parts:
                        if rest.startswith(a):
                            rest = b + rest[len(a):]
                            break
                out[key] = old + rest
                break
        else:
            raise KeyError(f"no LDM name for {key}")
    return out


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors: ``.safetensors``, or a pickled state dict (``.pt``/``.ckpt``,
    read with ``weights_only=True``; a Lightning checkpoint's ``state_dict`` inside)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"holds a {type(state).__name__}, not a state dict")
    return state


def load_ldm_unet(state: Mapping[str, torch.Tensor], params: Mapping[str, Any]) -> Any:
    """The multi-view UNet from an LDM-layout state dict (keys under ``model.diffusion_model.``;
    the VAE's and text encoder's keys, if any, are not read). A missing or unexpected UNet
    key, or a tensor of the wrong shape, is a ``ValueError`` naming it."""
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    config = unet_config(params)
    with torch.device("meta"):
        skeleton = UNet2DConditionModel(**config)
    expected = {LDM_PREFIX + k for k in ldm_unet_keys(skeleton.state_dict(), config).values()}
    present = {k for k in state if k.startswith(LDM_PREFIX)}
    if not present:
        raise ValueError(f"no key starts with {LDM_PREFIX!r}: not an LDM checkpoint "
                         f"(its first key is {next(iter(state), 'none')!r})")
    for problem, keys in (("missing", sorted(expected - present)),
                          ("unexpected", sorted(present - expected))):
        if keys:
            more = f" and {len(keys) - 1} more" if len(keys) > 1 else ""
            raise ValueError(f"{problem} key {keys[0]!r}{more}")
    renamed = dict(state)
    for ours, ldm in CAMERA_KEYS.items():        # where diffusers' conversion looks for them
        for suffix in ("weight", "bias"):
            renamed[f"{LDM_PREFIX}{ldm}.{suffix}"] = renamed.pop(f"{LDM_PREFIX}{ours}.{suffix}")
    converted = convert_ldm_unet_checkpoint(renamed, config)
    unet = UNet2DConditionModel(**config)
    for name, param in unet.state_dict().items():
        if tuple(converted[name].shape) != tuple(param.shape):
            ldm = LDM_PREFIX + ldm_unet_keys({name: None}, config)[name]
            raise ValueError(f"key {ldm!r} has shape {tuple(converted[name].shape)}, the "
                             f"architecture needs {tuple(param.shape)}")
    unet.load_state_dict(converted, strict=True)
    return unet


def read_ldm_params(path: Path) -> dict[str, Any]:
    """``unet_config.params`` of an LDM yaml (MVDream's ``configs/sd-v2-base.yaml``)."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(OmegaConf.load(path))
    try:
        params = cfg["model"]["params"]["unet_config"]["params"]
    except (KeyError, TypeError):
        raise ValueError("has no model.params.unet_config.params") from None
    return {**SD21_4VIEW, **params}


class MultiViewAttnProcessor:
    """Self-attention over the K views of each sample: the views' tokens are joined into one
    sequence, ``(B K, L, C) -> (B, K L, C)``, attended by diffusers' own processor, and split
    back. With K = 1 it is that processor."""

    def __init__(self, views: int) -> None:
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.views = views
        self.inner = AttnProcessor2_0()

    def __call__(self, attn: Any, hidden_states: torch.Tensor,
                 encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 *args: Any, **kwargs: Any) -> torch.Tensor:
        n, length, channels = hidden_states.shape
        if n % self.views:
            raise ValueError(f"a batch of {n} is not whole samples of {self.views} views")
        joined = hidden_states.reshape(n // self.views, self.views * length, channels)
        out = self.inner(attn, joined, encoder_hidden_states, attention_mask, temb)
        return out.reshape(n, length, channels)


def set_views(unet: Any, views: int) -> None:
    """Join ``views`` views in every self-attention of ``unet`` (cross-attention unchanged)."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    unet.set_attn_processor({name: MultiViewAttnProcessor(views) if name.endswith("attn1.processor")
                             else AttnProcessor2_0() for name in unet.attn_processors})


def camera_embedding(cameras: Cameras) -> torch.Tensor:
    """(B, 16): MVDream's camera input as threestudio-mvdream feeds it: the camera-to-world
    matrix (OpenGL camera axes; Z-up world, azimuth 0 on +X, as ours) with its position
    scaled to unit length, flattened row by row."""
    c2w = cameras.camera_to_world()
    position = c2w[:, :3, 3]
    c2w[:, :3, 3] = position / (position.norm(dim=-1, keepdim=True) + 1e-8)
    return c2w.reshape(-1, 16)


class MVDreamPrior(StableDiffusionPrior):
    """``guidance.prior=mvdream``: renders are resized to 256 (MVDream's size), encoded by SD
    2.1's VAE and denoised four views at a time with their cameras."""

    views = VIEWS
    pipelines = ("StableDiffusionPipeline", "MVDreamPipeline")

    def __init__(self, s: DiffusersSettings, unet: Any, scheduler: Any, vae: Any) -> None:
        if getattr(unet.config, "class_embed_type", None) != "projection":
            raise ValueError("its UNet has no camera embedding (class_embed_type 'projection'): "
                             "a plain Stable Diffusion UNet; give guidance.checkpoint, MVDream's "
                             "sd-v2.1-base-4view checkpoint")
        super().__init__(s, unet, scheduler, vae)
        set_views(self.unet, self.views)

    @classmethod
    def load(cls, s: DiffusersSettings, checkpoint: Path | None = None,
             checkpoint_config: Path | None = None) -> "MVDreamPrior":
        """From a diffusers folder whose UNet has the camera MLP, or from SD 2.1-base's folder
        and MVDream's original ``checkpoint`` (the UNet replaced by the checkpoint's)."""
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

        with loading_part(s, "scheduler"):
            scheduler = DDPMScheduler.from_pretrained(s.folder, subfolder="scheduler")
        with loading_part(s, "vae"):
            vae = AutoencoderKL.from_pretrained(s.folder, subfolder="vae", variant=s.variant("vae"),
                                                **diffusers_dtype(s.dtype))
        if checkpoint is not None:
            unet = load_checkpoint_unet(checkpoint, checkpoint_config)
        elif _unet_class(s.folder) == "MultiViewUNetModel":
            unet = _load_ldm_folder_unet(s)
        else:
            with loading_part(s, "unet"):
                unet = UNet2DConditionModel.from_pretrained(
                    s.folder, subfolder="unet", variant=s.variant("unet"),
                    **diffusers_dtype(s.dtype))
        return cls(s, unet, scheduler, vae)

    @classmethod
    def check_config(cls, cfg: DictConfig) -> Path:
        folder = super().check_config(cfg)
        for key in ("checkpoint", "checkpoint_config"):
            path = cfg.guidance.get(key, "").strip()
            if path and not Path(path).expanduser().is_file():
                raise UserError(f"config guidance.{key}: no file {path!r}")
        return folder

    @classmethod
    def _config_extra(cls, cfg: DictConfig) -> dict[str, Any]:
        g = cfg.guidance
        return {key: Path(g[key]).expanduser() if g[key].strip() else None
                for key in ("checkpoint", "checkpoint_config")}

    @property
    def render_size(self) -> int:       # type: ignore[override]
        return self.settings.render_size or IMAGE_SIZE

    def _unet_inputs(self, cameras: Cameras | None, repeats: int) -> dict[str, Any]:
        if cameras is None or len(cameras) % self.views:
            raise ValueError(f"MVDream denoises whole samples of {self.views} views with "
                             f"their cameras")
        embedding = camera_embedding(cameras).to(self.device, self.dtype)
        return {"class_labels": embedding.repeat(repeats, 1)}


def _unet_class(folder: Path) -> str:
    try:
        return json.loads((folder / "unet" / "config.json").read_text(encoding="utf-8")).get(
            "_class_name", "")
    except (OSError, ValueError, AttributeError):
        return ""


def _load_ldm_folder_unet(s: DiffusersSettings) -> Any:
    """A folder whose ``unet/`` keeps MVDream's own module (``MultiViewUNetModel``: its LDM
    params as the config, LDM key names without the prefix), as in ashawkey's
    ``mvdream-sd2.1-diffusers``."""
    from safetensors.torch import load_file

    with loading_part(s, "unet"):
        unet_dir = s.folder / "unet"
        params = {**SD21_4VIEW, **json.loads((unet_dir / "config.json").read_text("utf-8"))}
        files = sorted(unet_dir.glob("*.safetensors"))
        variant = s.variant("unet")
        chosen = [f for f in files if variant and f".{variant}." in f.name] or files
        if not chosen:
            raise FileNotFoundError(f"no .safetensors weights in {unet_dir}")
        state = {LDM_PREFIX + k: v for k, v in load_file(str(chosen[0])).items()}
        return load_ldm_unet(state, params)


def load_checkpoint_unet(checkpoint: Path, checkpoint_config: Path | None) -> Any:
    """MVDream's UNet from its original checkpoint; a ``UserError`` naming what is wrong."""
    try:
        params = read_ldm_params(checkpoint_config) if checkpoint_config else dict(SD21_4VIEW)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read guidance.checkpoint_config {str(checkpoint_config)!r}: "
                        f"{exc}") from None
    try:
        state = read_state_dict(checkpoint)
        return load_ldm_unet(state, params)
    except UserError:
        raise
    except Exception as exc:        # unreadable file, wrong keys or shapes: the user's to fix
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot load MVDream's UNet from guidance.checkpoint "
                        f"{str(checkpoint)!r}: {why}") from None

