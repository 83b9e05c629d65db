"""Multi-view guidance: cameras in groups of K, the toy world's tuple prior, MVDream's UNet
parts, its checkpoint conversion and a short run with a tiny saved MVDream."""
import json
import math

import pytest
import torch
import trimesh

from dreamfusion.bench.random_models import (TINY, public_config, save_random_mvdream_checkpoint,
                                             write_ldm_config)
from dreamfusion.cli import main
from dreamfusion.config import load_config
from dreamfusion.errors import UserError
from dreamfusion.guidance.diffusion import mvdream
from dreamfusion.guidance.sds import Condition, Guided, reconstruction_target, sds_loss
from dreamfusion.guidance.toy.multiview import ToyMultiviewPrior
from dreamfusion.guidance.toy.prior import optimal_denoiser_eps
from dreamfusion.pipeline.build import build_prior, build_scene
from dreamfusion.pipeline.train import Trainer
from dreamfusion.rendering.cameras import Cameras, sample_cameras

from conftest import FAST, one_line_error

# MVDream's LDM UNet params at the size of the tests' tiny SD (its text encoder is 32 wide)
TINY_MV = {"image_size": 8, "in_channels": 4, "out_channels": 4, "model_channels": 32,
           "attention_resolutions": [1], "num_res_blocks": 1, "channel_mult": [1, 2],
           "num_head_channels": 8, "use_linear_in_transformer": True, "transformer_depth": 1,
           "context_dim": 32, "camera_dim": 16}
TOY_MV = [*FAST, "guidance.prior=toy_multiview", "camera.views_per_sample=4",
          "prompt.view_dependent=false"]


# cameras --------------------------------------------------------------------------------
def test_multiview_cameras_turn_by_360_over_k_around_one_shared_camera():
    g = torch.Generator().manual_seed(3)
    cams = sample_cameras(5, (0.0, 30.0), (-180.0, 180.0), (1.0, 2.0), (20.0, 50.0), g, views=4)
    assert len(cams) == 20
    az = cams.azimuth.view(5, 4)
    turns = (az - az[:, :1]) % 360.0
    assert torch.allclose(turns, torch.tensor([0.0, 90.0, 180.0, 270.0]).expand(5, 4), atol=1e-3)
    for values in (cams.elevation, cams.distance, cams.fov):
        v = values.view(5, 4)
        assert torch.equal(v, v[:, :1].expand(5, 4))
    assert bool((cams.azimuth >= -180).all() and (cams.azimuth < 180).all())
    # one view per object draws exactly what the single-view sampler always drew
    a = sample_cameras(6, (0.0, 30.0), (-180.0, 180.0), (1.0, 2.0), (20.0, 50.0),
                       torch.Generator().manual_seed(1))
    b = sample_cameras(6, (0.0, 30.0), (-180.0, 180.0), (1.0, 2.0), (20.0, 50.0),
                       torch.Generator().manual_seed(1), views=1)
    assert all(torch.equal(x, y) for x, y in zip(vars(a).values(), vars(b).values()))


def test_relative_distance_keeps_the_object_the_same_share_of_the_frame():
    g = torch.Generator().manual_seed(0)
    cams = sample_cameras(64, (0.0, 0.0), (0.0, 0.0), (1.0, 1.0), (15.0, 60.0), g,
                          relative_distance=True)
    half_width = cams.distance * torch.tan(torch.deg2rad(cams.fov) / 2)
    assert torch.allclose(half_width, torch.ones(64), atol=1e-5)


def test_camera_to_world_and_mvdreams_camera_input():
    cams = Cameras(torch.tensor([0.0, 90.0]), torch.tensor([0.0, 30.0]), torch.tensor([2.0, 3.0]),
                   torch.tensor([40.0, 40.0]))
    c2w = cams.camera_to_world()
    # from +X looking at the origin: right +Y, up +Z, backward +X (OpenGL camera axes)
    assert torch.allclose(c2w[0, :3, :3], torch.tensor([[0.0, 0, 1], [1, 0, 0], [0, 1, 0]]), atol=1e-6)
    assert torch.allclose(c2w[:, :3, :3].transpose(1, 2) @ c2w[:, :3, :3], torch.eye(3).expand(2, 3, 3),
                          atol=1e-6)
    assert torch.allclose(c2w[:, :3, 3], cams.positions)
    embedding = mvdream.camera_embedding(cams)
    assert embedding.shape == (2, 16)
    matrices = embedding.view(2, 4, 4)
    assert torch.allclose(matrices[:, :3, 3].norm(dim=-1), torch.ones(2), atol=1e-6)
    assert torch.allclose(matrices[:, :3, :3], c2w[:, :3, :3])
    assert torch.equal(matrices[:, 3], torch.tensor([[0.0, 0, 0, 1]] * 2))


# the toy multi-view prior -------------------------------------------------------------
def _toy_mv(tmp_path, *extra):
    cfg = load_config("toy", [*TOY_MV, "guidance.references=24", f"guidance.cache_dir={tmp_path}",
                              *extra])
    return build_prior(cfg)


def _base(prior, i):
    t = prior.tuples(prior.parse("a yellow duck"), prior.settings.count)
    return t, Cameras(t.azimuth[i], t.elevation[i], torch.full((4,), 2.3), torch.full((4,), 40.0))


def test_a_noised_reference_tuple_is_denoised_to_itself_all_views_together(tmp_path):
    prior = _toy_mv(tmp_path)
    assert isinstance(prior, ToyMultiviewPrior) and prior.views == 4
    cond = prior.stack([prior.condition("a yellow duck")] * 4)
    tuples, cams = _base(prior, 5)
    x0 = tuples.images[5].view(4, 3, 16, 16).float()
    t = torch.full((4,), 50)
    abar = prior.alphas_cumprod[50]
    noise = torch.randn_like(x0)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    eps = prior.predict_noise(x_t, t, cond, cams)
    assert torch.allclose(eps, noise, atol=1e-3)
    # the kept squared norms are the tuples' own, so the prediction is bit for bit the one
    # from the tuples alone
    assert torch.equal(tuples.square_norms, (tuples.images * tuples.images).sum(-1))
    log_w = prior._log_weights(tuples, cond, cams)
    alone = optimal_denoiser_eps(x_t.reshape(1, -1), abar.view(1), tuples.images, log_w)
    assert torch.equal(eps, alone.view_as(eps))
    # view 0 of one tuple and views 1-3 of another: the denoised sample is one whole tuple
    mixed = torch.cat([tuples.images[5].view(4, -1)[:1], tuples.images[9].view(4, -1)[1:]])
    x_t = abar.sqrt() * mixed.view(4, 3, 16, 16).float()
    eps = prior.predict_noise(x_t, t, cond, cams)
    x0_hat = ((x_t - (1 - abar).sqrt() * eps) / abar.sqrt()).reshape(1, -1).double()
    distances = (x0_hat - tuples.images).norm(dim=-1)
    assert float(distances.min()) < 1e-2 * float(tuples.images[0].norm())
    with pytest.raises(ValueError, match="4 views"):
        prior.predict_noise(x_t[:2], t[:2], cond, cams[:2])


def test_the_camera_kernel_weights_tuples_by_their_base_camera(tmp_path):
    prior = _toy_mv(tmp_path, "guidance.camera_sigma=20")
    cond = prior.stack([prior.condition("a yellow duck")] * 4)
    tuples, cams = _base(prior, 2)
    t = torch.full((4,), 999)             # abar ~ 0: the prediction is the prior's mean
    abar = prior.alphas_cumprod[999].double()
    x_t = torch.zeros(4, 3, 16, 16)
    eps = prior.predict_noise(x_t, t, cond, cams).double()
    x0_hat = (-(1 - abar).sqrt() * eps / abar.sqrt()).reshape(-1)
    d_az = (tuples.azimuth[:, 0] - cams.azimuth[0] + 180) % 360 - 180
    d_el = tuples.elevation[:, 0] - cams.elevation[0]
    refs = tuples.images.double()
    # at x_t = 0 the likelihood of reference r is exp(-abar |r|^2 / (2 (1 - abar)))
    logits = (-(d_az.double() ** 2 + d_el.double() ** 2) / (2 * 20.0 ** 2)
              - abar * (refs ** 2).sum(-1) / (2 * (1 - abar)))
    assert torch.allclose(x0_hat, torch.softmax(logits, 0) @ refs, atol=1e-3)
    turned = Cameras(cams.azimuth + 180.0, cams.elevation, cams.distance, cams.fov)
    assert not torch.allclose(prior.predict_noise(x_t, t, cond, turned), eps.float(), atol=1e-3)


def test_view_prompts_keep_the_tuples_whose_view_lies_in_their_region(tmp_path):
    prior = _toy_mv(tmp_path, "guidance.camera_sigma=360")
    views = ["front", "side", "back", "side"]
    cond = prior.stack([prior.condition(f"a yellow duck, {v} view") for v in views])
    tuples = prior.tuples(prior.parse("a yellow duck"), prior.settings.count)
    log_w = prior._log_weights(tuples, cond, Cameras(*(torch.zeros(4),) * 2, torch.ones(4),
                                                      torch.ones(4)))
    kept = [labels for labels, lw in zip(tuples.labels, log_w) if lw > -100]
    assert kept and all(labels == views for labels in kept)
    assert len(kept) < len(tuples.labels)
    # interpolated view prompts weight the regions by their mixture weights
    mixed = prior.mix([(prior.condition("a yellow duck, front view"), 0.25),
                       (prior.condition("a yellow duck, side view"), 0.75)])
    assert dict((c.view, w) for c, w in mixed.views[0].captions) == {"front": 0.25, "side": 0.75}


def test_a_multiview_step_hands_the_prior_each_objects_k_views_with_their_cameras(tmp_path):
    cfg = load_config("toy", [*TOY_MV, "batch_size=2", f"output.root={tmp_path}"])
    prior = build_prior(cfg)
    seen = []
    original = prior.predict_noise

    def spy(x_t, t, condition, cameras=None):
        seen.append((x_t.shape, t.tolist(), cameras.azimuth.clone()))
        return original(x_t, t, condition, cameras)

    prior.predict_noise = spy
    trainer = Trainer(cfg, build_scene(cfg, torch.device("cpu")), prior, "a yellow duck")
    stats = trainer.train_step()
    assert math.isfinite(stats.loss) and len(seen) == 2
    for shape, t, azimuth in seen:
        assert shape == (4, 3, 16, 16) and len(set(t)) == 1
        assert torch.allclose((azimuth - azimuth[0]) % 360, torch.tensor([0.0, 90, 180, 270]),
                              atol=1e-3)


def test_a_short_toy_multiview_run_scores_against_the_truth(tmp_path):
    assert main(["run", "a yellow duck", "--quiet", *TOY_MV, "export.enabled=false",
                 f"output.root={tmp_path}"]) == 0
    run_dir, = tmp_path.iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert "janus" in summary and "silhouette_iou" in summary


# the x0 reconstruction loss -------------------------------------------------------------
def test_the_reconstruction_loss_pulls_the_render_to_the_rescaled_x0():
    g = torch.Generator().manual_seed(0)
    x_t, eps, eps_c = (torch.randn(4, 4, 8, 8, generator=g) for _ in range(3))
    abar = torch.full((4, 1, 1, 1), 0.4)
    x0 = (x_t - 0.6 ** 0.5 * eps) / 0.4 ** 0.5
    x0_c = (x_t - 0.6 ** 0.5 * eps_c) / 0.4 ** 0.5
    got = reconstruction_target(x_t, abar, Guided(eps, eps_c), 0.5)
    assert torch.allclose(got, 0.5 * x0 * x0_c.std() / x0.std() + 0.5 * x0, atol=1e-5)
    assert torch.allclose(reconstruction_target(x_t, abar, Guided(eps, eps_c), 0.0), x0, atol=1e-5)


def test_the_reconstruction_losss_gradient_is_the_render_minus_its_target(tmp_path):
    prior = build_prior(load_config("toy", [*FAST, f"guidance.cache_dir={tmp_path}"]))
    cond = Condition(prior.condition("a red cube"), prior.unconditional())
    images = torch.rand(1, 3, 16, 16, requires_grad=True)
    t, noise = torch.tensor([400]), torch.randn(1, 3, 16, 16)
    sds_loss(prior, images, t, cond, 7.5, noise=noise, loss="recon",
             recon_std_rescale=0.5).loss.backward()
    x = images.detach() * 2 - 1
    abar = prior.alphas_cumprod[400]
    x_t = abar.sqrt() * x + (1 - abar).sqrt() * noise
    eps_c = prior.predict_noise(x_t, t, cond.positive)
    eps_u = prior.predict_noise(x_t, t, cond.unconditional)
    target = reconstruction_target(x_t, abar.view(1, 1, 1, 1),
                                   Guided(eps_u + 7.5 * (eps_c - eps_u), eps_c), 0.5)
    assert torch.allclose(images.grad, 2 * (x - target), atol=1e-4)


# MVDream's UNet parts ------------------------------------------------------------------
def _sd_unet(**extra):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(**public_config(TINY["unet"]), **extra).eval()


def _inputs(n):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(n, 4, 8, 8, generator=g), torch.full((n,), 500),
            torch.randn(n, 77, 32, generator=g))


def test_one_view_and_a_zero_camera_embedding_is_the_plain_sd_unet():
    sd = _sd_unet()
    mv = _sd_unet(class_embed_type="projection", projection_class_embeddings_input_dim=16)
    missing, unexpected = mv.load_state_dict(sd.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("class_embedding.") for k in missing)
    torch.nn.init.zeros_(mv.class_embedding.linear_2.weight)
    torch.nn.init.zeros_(mv.class_embedding.linear_2.bias)
    mvdream.set_views(mv, 1)
    x, t, text = _inputs(3)
    cameras = mvdream.camera_embedding(sample_cameras(3, (0.0, 30.0), (-180.0, 180.0),
                                                      (1.0, 2.0), (40.0, 40.0)))
    with torch.no_grad():
        expected = sd(x, t, encoder_hidden_states=text).sample
        got = mv(x, t, encoder_hidden_states=text, class_labels=cameras).sample
    assert torch.allclose(got, expected, atol=1e-5)


def test_multiview_attention_lets_one_view_see_another():
    unet = _sd_unet(class_embed_type="projection", projection_class_embeddings_input_dim=16)
    x, t, text = _inputs(4)
    cameras = torch.randn(4, 16)
    changed = x.clone()
    changed[2] += 1.0

    def view_1(views, sample):
        mvdream.set_views(unet, views)
        with torch.no_grad():
            return unet(sample, t, encoder_hidden_states=text, class_labels=cameras).sample[1]

    assert not torch.allclose(view_1(4, x), view_1(4, changed), atol=1e-4)
    assert torch.allclose(view_1(1, x), view_1(1, changed), atol=1e-6)
    with pytest.raises(ValueError, match="whole samples"):
        view_1(3, x)


def test_mvdreams_sd21_architecture_is_sd21_bases_unet_with_a_camera_mlp():
    from dreamfusion.bench.sds_timing import sd21_base_configs

    sd = sd21_base_configs()["unet"]
    config = mvdream.unet_config(mvdream.SD21_4VIEW)
    for key in ("block_out_channels", "layers_per_block", "down_block_types", "up_block_types",
                "attention_head_dim", "cross_attention_dim", "use_linear_projection",
                "flip_sin_to_cos", "freq_shift", "in_channels", "out_channels"):
        assert config[key] == sd[key], key
    assert config["projection_class_embeddings_input_dim"] == 16


# MVDream's checkpoint ------------------------------------------------------------------
def test_mvdreams_ldm_names_are_the_ones_diffusers_conversion_reads(tmp_path):
    """Our LDM names, converted back by diffusers' own conversion, give every tensor back:
    so a checkpoint written with them has the real checkpoint's layout."""
    path = save_random_mvdream_checkpoint(tmp_path / "mv.pt", TINY_MV, seed=4)
    state = torch.load(path, weights_only=True)
    for key in ("model.diffusion_model.camera_embed.0.weight",
                "model.diffusion_model.camera_embed.2.bias",
                "model.diffusion_model.time_embed.0.weight",
                "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight",
                "model.diffusion_model.input_blocks.1.0.in_layers.2.weight",
                "model.diffusion_model.input_blocks.2.0.op.weight",
                "model.diffusion_model.middle_block.1.proj_in.weight",
                "model.diffusion_model.middle_block.2.emb_layers.1.weight",
                "model.diffusion_model.output_blocks.1.1.conv.weight",
                "model.diffusion_model.output_blocks.3.1.transformer_blocks.0.attn2.to_k.weight",
                "model.diffusion_model.out.2.weight"):
        assert key in state, key
    unet = mvdream.load_ldm_unet(state, TINY_MV)
    names = mvdream.ldm_unet_keys(unet.state_dict(), mvdream.unet_config(TINY_MV))
    for name, value in unet.state_dict().items():
        assert torch.equal(value, state[mvdream.LDM_PREFIX + names[name]]), name


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.pop("model.diffusion_model.camera_embed.2.weight"),
     "missing key 'model.diffusion_model.camera_embed.2.weight'"),
    (lambda s: s.__setitem__("model.diffusion_model.label_emb.0.0.weight", torch.zeros(1)),
     "unexpected key 'model.diffusion_model.label_emb.0.0.weight'"),
    (lambda s: s.__setitem__("model.diffusion_model.out.2.bias", torch.zeros(7)),
     "key 'model.diffusion_model.out.2.bias' has shape (7,)"),
])
def test_a_checkpoint_with_a_wrong_key_is_a_one_line_error_naming_it(edit, message, tiny_sd,
                                                                     tmp_path, capsys):
    path = save_random_mvdream_checkpoint(tmp_path / "mv.pt", TINY_MV)
    state = torch.load(path, weights_only=True)
    edit(state)
    torch.save(state, path)
    root = tmp_path / "out"
    code = main(["run", "a red cube", "--config", "mvdream-sd21", "--quiet", *SHORT_MV,
                 f"guidance.model={tiny_sd}", f"guidance.checkpoint={path}",
                 f"guidance.checkpoint_config={write_ldm_config(tmp_path / 'mv.yaml', TINY_MV)}",
                 f"output.root={root}", f"guidance.cache_dir={tmp_path / 'cache'}"])
    err = one_line_error(capsys)
    assert code == 2 and message in err and "guidance.checkpoint" in err
    assert not root.exists() or not any(root.iterdir())


def test_a_plain_sd_unet_is_not_taken_for_mvdream(tiny_sd, tmp_path, capsys):
    code = main(["run", "a red cube", "--config", "mvdream-sd21", "--quiet", *SHORT_MV,
                 f"guidance.model={tiny_sd}", f"output.root={tmp_path / 'out'}",
                 f"guidance.cache_dir={tmp_path / 'cache'}"])
    assert code == 2 and "no camera embedding" in one_line_error(capsys)


SHORT_MV = [*FAST, "steps=2", "guidance.render_size=16", "device=cpu", "export.resolution=24",
            "nerf.blob_density=10", "marcher.warmup_steps=2", "camera.distance=[2.0,2.5]",
            "camera.relative_distance=false", "nerf.grid.table_size_log2=12"]


def _converted_folder(tiny_sd, tmp_path):
    """A diffusers folder whose UNet is MVDream's, converted: what a user saves once."""
    import shutil

    folder = tmp_path / "tiny-mvdream"
    shutil.copytree(tiny_sd, folder)
    path = save_random_mvdream_checkpoint(tmp_path / "mv.pt", TINY_MV, seed=2)
    unet = mvdream.load_ldm_unet(torch.load(path, weights_only=True), TINY_MV)
    shutil.rmtree(folder / "unet")
    unet.save_pretrained(folder / "unet")
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "_class_name": "MVDreamPipeline"}))
    return folder, unet


def test_the_three_ways_to_give_mvdreams_weights_load_the_same_unet(tiny_sd, tmp_path):
    from safetensors.torch import save_file

    folder, unet = _converted_folder(tiny_sd, tmp_path)
    base = ["--config", "mvdream-sd21"]
    cfg = load_config(base[1], [*SHORT_MV, f"guidance.model={folder}"])
    from_folder = build_prior(cfg, torch.device("cpu"))
    cfg = load_config(base[1], [*SHORT_MV, f"guidance.model={tiny_sd}",
                                f"guidance.checkpoint={tmp_path / 'mv.pt'}",
                                f"guidance.checkpoint_config={write_ldm_config(tmp_path / 'c.yaml', TINY_MV)}"])
    from_checkpoint = build_prior(cfg, torch.device("cpu"))
    # MVDream's own module kept in a diffusers folder (LDM names without the prefix)
    ldm = tmp_path / "ldm-folder"
    import shutil

    shutil.copytree(folder, ldm)
    shutil.rmtree(ldm / "unet")
    (ldm / "unet").mkdir()
    state = torch.load(tmp_path / "mv.pt", weights_only=True)
    save_file({k[len(mvdream.LDM_PREFIX):]: v for k, v in state.items()},
              str(ldm / "unet" / "diffusion_pytorch_model.safetensors"))
    (ldm / "unet" / "config.json").write_text(json.dumps({"_class_name": "MultiViewUNetModel",
                                                          **TINY_MV}))
    from_ldm_folder = build_prior(load_config("mvdream-sd21", [*SHORT_MV, f"guidance.model={ldm}"]),
                                  torch.device("cpu"))
    expected = unet.state_dict()
    for prior in (from_folder, from_checkpoint, from_ldm_folder):
        got = prior.unet.state_dict()
        assert all(torch.equal(got[k], expected[k]) for k in expected)
        assert prior.views == 4 and prior.render_size == 16


def test_mvdreams_noise_prediction_sees_all_four_views_and_their_cameras(tiny_sd, tmp_path):
    folder, _ = _converted_folder(tiny_sd, tmp_path)
    prior = build_prior(load_config("mvdream-sd21", [*SHORT_MV, f"guidance.model={folder}"]),
                        torch.device("cpu"))
    text = prior.stack([prior.condition("a red cube")] * 4)
    assert text.shape[0] == 4
    cams = sample_cameras(1, (0.0, 30.0), (-180.0, 180.0), (1.0, 2.0), (40.0, 40.0), views=4)
    x, t = torch.randn(4, 4, 8, 8), torch.full((4,), 300)
    eps = prior.predict_noise(x, t, text, cams)
    turned = Cameras(cams.azimuth + 45.0, cams.elevation, cams.distance, cams.fov)
    assert not torch.allclose(eps, prior.predict_noise(x, t, text, turned), atol=1e-5)
    with pytest.raises(ValueError, match="4 views"):
        prior.predict_noise(x[:2], t[:2], text[:2], cams[:2])


def test_a_short_run_with_a_tiny_saved_mvdream_writes_a_mesh(tiny_sd, tmp_path, capsys):
    path = save_random_mvdream_checkpoint(tmp_path / "sd-v2.1-base-4view.pt", TINY_MV)
    code = main(["run", "a red cube", "--config", "mvdream-sd21", "--quiet", *SHORT_MV,
                 f"guidance.model={tiny_sd}", f"guidance.checkpoint={path}",
                 f"guidance.checkpoint_config={write_ldm_config(tmp_path / 'mv.yaml', TINY_MV)}",
                 f"output.root={tmp_path / 'out'}", f"guidance.cache_dir={tmp_path / 'cache'}"])
    assert code == 0, capsys.readouterr().err
    run_dir, = (tmp_path / "out").iterdir()
    mesh = trimesh.load(run_dir / "model.glb", force="mesh")
    assert len(mesh.vertices) > 0 and len(mesh.faces) > 0
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 2


def test_an_unreadable_checkpoint_config_is_bad_input(tiny_sd, tmp_path, capsys):
    path = save_random_mvdream_checkpoint(tmp_path / "mv.pt", TINY_MV)
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {}\n")
    code = main(["run", "a red cube", "--config", "mvdream-sd21", "--quiet", *SHORT_MV,
                 f"guidance.model={tiny_sd}", f"guidance.checkpoint={path}",
                 f"guidance.checkpoint_config={bad}", f"output.root={tmp_path / 'out'}"])
    assert code == 2 and "unet_config" in one_line_error(capsys)
    with pytest.raises(UserError, match="no file"):
        build_prior(load_config("mvdream-sd21", [*SHORT_MV, f"guidance.model={tiny_sd}",
                                                 f"guidance.checkpoint={tmp_path / 'none.pt'}"]))


def test_a_checkpoint_older_than_the_multiview_keys_resumes_at_their_defaults():
    from omegaconf import OmegaConf

    from dreamfusion.pipeline.checkpoint import config_differences

    cfg = load_config("toy", FAST)
    older = OmegaConf.to_container(cfg)
    del older["camera"]["views_per_sample"], older["guidance"]["loss"]
    assert config_differences(OmegaConf.to_yaml(older), cfg) == []
    four = load_config("toy", [*FAST, "camera.views_per_sample=4"])
    assert config_differences(OmegaConf.to_yaml(older), four) == ["camera.views_per_sample (1 -> 4)"]
