"""Stable Diffusion and DeepFloyd IF priors on tiny random pipelines saved to disk."""
import json
from pathlib import Path

import pytest
import torch
import trimesh

from dreamfusion.cli import main
from dreamfusion.config import load_config
from dreamfusion.errors import UserError
from dreamfusion.guidance.diffusion.weights import resolve_model
from dreamfusion.guidance.sds import Condition, guided_noise, sds_loss, sds_weight
from dreamfusion.pipeline.build import build_prior

from conftest import FAST
from tiny_diffusers import SCALING


def _prior(kind: str, folder: Path, cache: Path, *extra: str):
    config = {"sd": "dreamfusion-sd", "if": "dreamfusion-if"}[kind]
    cfg = load_config(config, [f"guidance.model={folder}", f"guidance.cache_dir={cache}",
                               "guidance.render_size=16", *extra])
    return build_prior(cfg, torch.device("cpu"))


def test_sd_reads_the_vae_scaling_and_downsampling_from_the_model(tiny_sd, tmp_path):
    prior = _prior("sd", tiny_sd, tmp_path)
    assert prior.scaling_factor == SCALING and prior.downsampling == 2
    images = torch.rand(2, 3, 8, 8)
    latents = prior.encode(images)
    assert latents.shape == (2, 4, 8, 8)          # resized to 16, then down by 2
    x = torch.nn.functional.interpolate(images, (16, 16), mode="bilinear") * 2 - 1
    assert torch.allclose(latents, prior.vae.encode(x).latent_dist.mean * SCALING, atol=1e-5)


@pytest.mark.parametrize("kind", ["sd", "if"])
def test_gradient_at_the_render_is_the_weighted_residual_pushed_through_the_encoder(
        kind, tiny_sd, tiny_if, tmp_path):
    prior = _prior(kind, tiny_sd if kind == "sd" else tiny_if, tmp_path)
    cond = Condition(prior.condition("a red cube, side view"), prior.unconditional())
    images = torch.rand(1, 3, 16, 16, requires_grad=True)
    t = torch.tensor([600])
    noise = torch.randn_like(prior.encode(images))
    sds_loss(prior, images, t, cond, 7.5, "sds", noise=noise).loss.backward()
    # by hand: x_t, eps_hat with classifier-free guidance, and the encoder's VJP
    x = prior.encode(images)
    abar = prior.alphas_cumprod[t].view(1, 1, 1, 1)
    x_t = abar.sqrt() * x.detach() + (1 - abar).sqrt() * noise
    eps_c = prior.predict_noise(x_t, t, cond.positive)
    eps_u = prior.predict_noise(x_t, t, cond.unconditional)
    residual = sds_weight(abar, "sds") * (eps_u + 7.5 * (eps_c - eps_u) - noise)
    expected, = torch.autograd.grad(x, images, grad_outputs=residual)
    assert images.grad.abs().max() > 0
    assert torch.allclose(images.grad, expected, rtol=1e-4, atol=1e-4)


def test_batched_guidance_matches_separate_predictions(tiny_sd, tmp_path):
    prior = _prior("sd", tiny_sd, tmp_path)
    pos, neg = prior.condition("a red cube"), prior.condition("a blue cube")
    x_t, t = torch.randn(1, 4, 8, 8), torch.tensor([300])
    conds = (pos, prior.unconditional(), neg)
    eps_p, eps_u, eps_n = prior.predict_noise_many(x_t, t, conds)     # one UNet call
    for batched, c in zip((eps_p, eps_u, eps_n), conds):
        assert torch.allclose(batched, prior.predict_noise(x_t, t, c), atol=1e-5)
    got = guided_noise(prior, x_t, t, Condition(pos, prior.unconditional(), [(neg, 0.7)]), 100.0).eps
    d = eps_p - eps_u
    dn = eps_n - eps_u
    perp = dn - (dn * d).sum() / (d * d).sum() * d
    assert torch.allclose(got, eps_u + 100.0 * (d - 0.7 * perp), atol=1e-5)


def test_embedding_interpolation_is_linear(tiny_sd, tmp_path):
    prior = _prior("sd", tiny_sd, tmp_path)
    a, b = prior.condition("a red cube, front view"), prior.condition("a red cube, side view")
    assert torch.allclose(prior.mix([(a, 0.25), (b, 0.75)]), 0.25 * a + 0.75 * b)


@pytest.mark.parametrize("kind", ["sd", "if"])
def test_text_embedding_cache_is_hit_on_the_second_call(kind, tiny_sd, tiny_if, tmp_path):
    folder = tiny_sd if kind == "sd" else tiny_if
    first = _prior(kind, folder, tmp_path)
    emb = first.condition("a yellow duck, back view")
    assert first.text.misses == 1 and emb.shape == (1, 77, 32)
    again = _prior(kind, folder, tmp_path)
    assert torch.equal(again.condition("a yellow duck, back view"), emb)
    assert again.text.misses == 0 and again._text_encoder is None     # never even loaded
    assert len(list((tmp_path / "text").glob("*.safetensors"))) == 1


def test_if_is_pixel_space_and_drops_the_predicted_variance(tiny_if, tmp_path):
    prior = _prior("if", tiny_if, tmp_path, "guidance.render_size=8")
    x = prior.encode(torch.rand(1, 3, 16, 16))
    assert x.shape == (1, 3, 8, 8) and x.min() >= -1 and x.max() <= 1
    assert prior.unet.config.out_channels == 6
    eps = prior.predict_noise(x, torch.tensor([10]), prior.unconditional())
    assert eps.shape == (1, 3, 8, 8)


def test_v_prediction_is_converted_to_noise(tiny_sd, tmp_path):
    prior = _prior("sd", tiny_sd, tmp_path)
    prior.prediction_type = "v_prediction"
    x_t, v, t = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8), torch.tensor([700])
    abar = prior.alphas_cumprod[t].view(1, 1, 1, 1)
    assert torch.allclose(prior._eps(x_t, t, v), abar.sqrt() * v + (1 - abar).sqrt() * x_t)


def test_an_absent_model_stops_with_what_was_looked_for(tmp_path, capsys):
    with pytest.raises(UserError, match="HF_HUB_OFFLINE"):
        resolve_model("nobody/no-such-model", ("unet",))
    with pytest.raises(UserError, match="neither a folder nor a hub id"):
        resolve_model(str(tmp_path / "missing" / "folder"), ("unet",))
    (tmp_path / "half").mkdir()
    with pytest.raises(UserError, match="no unet/"):
        resolve_model(str(tmp_path / "half"), ("unet",))
    root = tmp_path / "outputs"
    code = main(["run", "a hamburger", "--config", "dreamfusion-sd",
                 "guidance.model=nobody/no-such-model", f"output.root={root}"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "nobody/no-such-model" in err and "guidance.model=" in err
    assert not root.exists() or not any(root.iterdir())


SHORT = [*FAST, "steps=3", "guidance.render_size=16", "device=cpu", "export.resolution=24",
         "shading.albedo_only_steps=0", "nerf.blob_density=10", "marcher.warmup_steps=2"]


@pytest.mark.parametrize("config", ["dreamfusion-sd", "dreamfusion-if", "dreamgaussian-sd",
                                    "dreamgaussian-if"])
def test_a_short_run_with_a_tiny_pipeline_exports_a_mesh(config, tiny_sd, tiny_if, tmp_path,
                                                         capsys):
    folder = tiny_sd if config.endswith("-sd") else tiny_if
    # three steps cannot make the Gaussians opaque: start them so, for a surface to export
    gaussians = ["gaussians.init_opacity=0.5"] if "gaussian" in config else []
    code = main(["run", "a red cube", "--config", config, "--quiet", f"guidance.model={folder}",
                 f"output.root={tmp_path / 'out'}", f"guidance.cache_dir={tmp_path / 'cache'}",
                 "prompt.interpolate=true", "prompt.perp_neg=true", *SHORT, *gaussians])
    assert code == 0, capsys.readouterr().err
    run_dir, = (tmp_path / "out").iterdir()
    for name in ("model.glb", "model.obj"):
        mesh = trimesh.load(run_dir / name, force="mesh")
        assert len(mesh.vertices) > 0 and len(mesh.faces) > 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 3
    assert f"model: {folder}" in (run_dir / "config.yaml").read_text()
    assert (run_dir / "model.ply").is_file() == ("gaussian" in config)


def test_the_text_encoder_is_freed_once_every_prompt_is_encoded(tiny_sd, tmp_path):
    from dreamfusion.pipeline.build import build_scene
    from dreamfusion.pipeline.train import Trainer

    cfg = load_config("dreamfusion-sd", [f"guidance.model={tiny_sd}", *SHORT,
                                         f"guidance.cache_dir={tmp_path}"])
    trainer = Trainer(cfg, build_scene(cfg, torch.device("cpu")),
                      build_prior(cfg, torch.device("cpu")), "a red cube")
    trainer.encode_prompts()
    assert trainer.prior._text_encoder is None
    assert trainer.prior.text.misses == 5          # four views and the empty prompt
    trainer.train_step()
    assert trainer.prior.text.misses == 5 and trainer.prior._text_encoder is None
