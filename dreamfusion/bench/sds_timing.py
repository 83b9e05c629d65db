"""The measurement of ``dreamfusion bench sds-step`` (its command: ``sds_step.py``): the time
of one SDS step through a Stable-Diffusion-sized model (SD 2.1-base's UNet and VAE, from their
configs, with random weights: no download)."""
from __future__ import annotations

import json
import time
from importlib import resources
from pathlib import Path

import torch

from ..guidance.diffusion.mvdream import MVDreamPrior
from ..guidance.diffusion.prior import DiffusersSettings
from ..guidance.diffusion.stable_diffusion import StableDiffusionPrior
from ..guidance.sds import Condition, sds_loss
from ..pipeline.artifacts import write_json
from ..pipeline.inputs import select_device
from ..rendering.cameras import sample_cameras
from ..utils.atomic import write_text
from .measure import peak_memory_gb, reset_peak_memory, synchronize
from .tables import markdown_table
from .toy import machine


def sd21_base_configs() -> dict:
    return json.loads((resources.files("dreamfusion.bench") / "data" / "sd21_base_configs.json")
                      .read_text(encoding="utf-8"))


def random_sd21_base(device: torch.device, render_size: int, half: bool, tiny: bool = False,
                     views: int = 1) -> StableDiffusionPrior:
    """SD 2.1-base's UNet and VAE with random weights (``tiny``: the tests' tiny layout);
    ``views > 1``: MVDream's, the same UNet with its camera MLP, denoising 4 views together."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    from .random_models import TINY, public_config

    cfg = TINY if tiny else sd21_base_configs()
    torch.manual_seed(0)
    camera = ({"class_embed_type": "projection", "projection_class_embeddings_input_dim": 16}
              if views > 1 else {})
    unet = UNet2DConditionModel.from_config({**public_config(cfg["unet"]), **camera})
    vae = AutoencoderKL.from_config(public_config(cfg["vae"]))
    scheduler = DDPMScheduler.from_config(public_config(cfg["scheduler"]))
    name = "MVDream" if views > 1 else "SD 2.1-base"
    settings = DiffusersSettings(f"random {name}", Path(f"random-{name}"), device, half,
                                 render_size, None)
    cls = MVDreamPrior if views > 1 else StableDiffusionPrior
    return cls(settings, unet, scheduler, vae)


def time_sds_step(device: torch.device, steps: int, render: int, render_size: int,
                  guidance_scale: float, tiny: bool = False, views: int = 1) -> dict:
    """Mean time of ``steps`` SDS steps (after a warm-up) through a random SD 2.1-base
    (fp16 on CUDA, fp32 on the CPU); ``views=4``: through a random MVDream, four views of one
    object with their cameras per step."""
    reset_peak_memory(device)        # bench gpu times SD, then MVDream, in one process
    built = time.perf_counter()
    prior = random_sd21_base(device, render_size, half=True, tiny=tiny, views=views)
    build_s = time.perf_counter() - built
    n_unet = sum(p.numel() for p in prior.unet.parameters())
    n_vae = sum(p.numel() for p in prior.vae.parameters())
    hidden = prior.unet.config.cross_attention_dim
    g = torch.Generator().manual_seed(0)
    cond = Condition(torch.randn(views, 77, hidden, generator=g).to(device),
                     torch.randn(views, 77, hidden, generator=g).to(device))
    # the render stands in for the NeRF's output: this times the guidance alone
    image = torch.rand(views, 3, render, render, generator=g).to(device).requires_grad_(True)
    cameras = sample_cameras(1, (0.0, 30.0), (-180.0, 180.0), (1.5, 2.0), (40.0, 40.0), g,
                             views=views)

    def step() -> None:
        t = torch.randint(20, 980, (1,), generator=g).repeat(views)
        sds_loss(prior, image, t, cond, guidance_scale, cameras=cameras).loss.backward()
        image.grad = None

    step()                                   # warm-up: allocator, kernels, lazy init
    synchronize(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    memory, memory_kind = peak_memory_gb(device)
    mean = sum(times) / len(times)
    return {"machine": machine(), "device": str(device) if device.type == "cpu"
            else torch.cuda.get_device_name(device), "dtype": str(prior.dtype).replace("torch.", ""),
            "views": views, "render": render, "render_size": render_size,
            "latent": render_size // prior.downsampling,
            "guidance_scale": guidance_scale, "unet_params_m": round(n_unet / 1e6, 1),
            "vae_params_m": round(n_vae / 1e6, 1), "steps_timed": steps,
            "seconds_per_step": round(mean, 3), "steps_per_second": round(1.0 / mean, 4),
            "min_seconds": round(min(times), 3), "peak_memory_gb": round(memory, 2),
            "memory_kind": memory_kind, "build_seconds": round(build_s, 1)}


def run_sds_step_bench(device_name: str, steps: int, render: int, render_size: int,
                       guidance_scale: float, results: str) -> dict:
    device = select_device(device_name)
    row = time_sds_step(device, steps, render, render_size, guidance_scale)
    mean, memory, memory_kind = row["seconds_per_step"], row["peak_memory_gb"], row["memory_kind"]
    table = markdown_table(
        ["device", "dtype", "render -> VAE input -> latent", "UNet / VAE params (M)",
         "s per step", "steps/s", "peak memory (GB)"],
        [[row["device"], row["dtype"], f"{render}x{render} -> {render_size} -> {row['latent']}",
          f"{row['unet_params_m']} / {row['vae_params_m']}", f"{mean:.2f}", f"{1.0 / mean:.3f}",
          f"{memory:.1f} ({memory_kind})"]])
    text = (f"# One SDS step with a Stable-Diffusion-sized model\n\nCommand: `dreamfusion bench "
            f"sds-step --device {device_name} --steps {steps}`\n\nMachine: {machine()}\n\n"
            "SD 2.1-base's UNet and VAE built from their configs with random weights (no "
            "download). One step: resize the render, encode it with the VAE (with gradients), "
            "add noise, one UNet call on the conditional and unconditional embeddings together "
            f"(classifier-free guidance {guidance_scale:g}), and the backward pass through the "
            f"VAE encoder to the render. Mean of {steps} steps after one warm-up step.\n\n"
            f"{table}\n")
    suffix = "cpu" if device.type == "cpu" else "cuda"
    write_text(Path(results) / f"sds_step_{suffix}.md", text)
    write_json(Path(results) / f"sds_step_{suffix}.json", row)
    print(table)
    return row
