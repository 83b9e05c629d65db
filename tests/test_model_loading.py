"""Loading real-format diffusers folders: what fails is bad input (one line, exit 2, no run
folder), the published file layouts load, and the right files are chosen."""
import json
import shutil
from pathlib import Path

import pytest
import torch

from dreamfusion.cli import main
from dreamfusion.config import load_config
from dreamfusion.guidance.diffusion.weights import download_ignores, weight_variant
from dreamfusion.pipeline.build import build_prior

from test_diffusers_priors import SHORT


def _copy(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / "model"))


def _refused(model: Path, tmp_path: Path, capsys, config: str = "dreamfusion-sd") -> str:
    root = tmp_path / "outputs"
    code = main(["run", "a red cube", "--config", config, "--quiet", f"guidance.model={model}",
                 f"output.root={root}", f"guidance.cache_dir={tmp_path / 'cache'}", *SHORT])
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert not root.exists() or not any(root.iterdir())     # no run folder
    return err


def test_if_tokenizer_is_in_the_published_format(tiny_if):
    names = sorted(p.name for p in (tiny_if / "tokenizer").iterdir())
    assert names == ["special_tokens_map.json", "spiece.model", "tokenizer_config.json"]


def _break_weights(folder: Path, part: str) -> None:
    for f in (folder / part).iterdir():
        if f.name.endswith((".safetensors", ".bin")):
            f.write_bytes(b"not a safetensors file")


@pytest.mark.parametrize("part", ["unet", "vae", "text_encoder"])
def test_corrupt_weights_are_bad_input(part, tiny_sd, tmp_path, capsys):
    model = _copy(tiny_sd, tmp_path)
    _break_weights(model, part)
    err = _refused(model, tmp_path, capsys)
    assert f"cannot load the {part}" in err and str(model) in err


def test_a_broken_tokenizer_is_bad_input(tiny_if, tmp_path, capsys):
    model = _copy(tiny_if, tmp_path)
    (model / "tokenizer" / "spiece.model").write_bytes(b"\x00garbage")
    err = _refused(model, tmp_path, capsys, "dreamfusion-if")
    assert "cannot load the tokenizer" in err


def test_missing_scheduler_config_is_bad_input(tiny_sd, tmp_path, capsys):
    model = _copy(tiny_sd, tmp_path)
    (model / "scheduler" / "scheduler_config.json").unlink()
    assert "cannot load the scheduler" in _refused(model, tmp_path, capsys)


@pytest.mark.parametrize("pipeline", ["StableDiffusionXLPipeline", "StableDiffusion3Pipeline"])
def test_another_kind_of_pipeline_is_refused_by_name(pipeline, tiny_sd, tmp_path, capsys):
    model = _copy(tiny_sd, tmp_path)
    index = json.loads((model / "model_index.json").read_text())
    (model / "model_index.json").write_text(json.dumps(index | {"_class_name": pipeline}))
    err = _refused(model, tmp_path, capsys)
    assert pipeline in err and "StableDiffusionPipeline" in err


def test_an_sd_folder_given_to_the_if_prior_is_refused(tiny_sd, tmp_path, capsys):
    assert "IFPipeline" in _refused(tiny_sd, tmp_path, capsys, "dreamfusion-if")


def test_a_folder_without_model_index_is_refused(tiny_sd, tmp_path, capsys):
    model = _copy(tiny_sd, tmp_path)
    (model / "model_index.json").unlink()
    assert "model_index.json" in _refused(model, tmp_path, capsys)


def test_if_lowercases_and_strips_the_prompt_as_its_pipeline_does(tiny_if, tmp_path):
    cfg = load_config("dreamfusion-if", [f"guidance.model={tiny_if}",
                                         f"guidance.cache_dir={tmp_path}", "guidance.text_cache=false"])
    prior = build_prior(cfg, torch.device("cpu"))
    assert torch.equal(prior.condition("  A Red CUBE, Side View "),
                       prior.condition("a red cube, side view"))


def test_render_size_follows_the_model_unless_set(tiny_sd, tiny_if, tmp_path):
    def size(config, model, *extra):
        cfg = load_config(config, [f"guidance.model={model}", f"guidance.cache_dir={tmp_path}", *extra])
        return build_prior(cfg, torch.device("cpu")).render_size

    assert size("dreamfusion-sd", tiny_sd) == 8 * 2        # UNet sample_size x VAE factor
    assert size("dreamfusion-if", tiny_if) == 8            # pixel space: the sample size
    assert size("dreamfusion-sd", tiny_sd, "guidance.render_size=24") == 24


def test_fp16_variant_files_are_chosen_for_half_precision(tiny_sd, tmp_path):
    from diffusers import UNet2DConditionModel

    model = _copy(tiny_sd, tmp_path)
    assert weight_variant(model, "unet", "fp16") is None          # none there yet
    unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet")
    unet.half().save_pretrained(model / "unet", variant="fp16")
    assert weight_variant(model, "unet", "fp16") == "fp16"
    assert weight_variant(model, "unet", None) is None            # fp32 runs: the plain files
    assert weight_variant(model, "vae", "fp16") is None
    loaded = UNet2DConditionModel.from_pretrained(model, subfolder="unet", variant="fp16",
                                                  torch_dtype=torch.float16)
    assert loaded.dtype == torch.float16


def test_downloads_take_each_folders_weights_once_in_the_form_loaded():
    import fnmatch

    files = ["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
             "unet/diffusion_pytorch_model.fp16.safetensors", "unet/diffusion_pytorch_model.bin",
             "vae/diffusion_pytorch_model.safetensors", "text_encoder/model.fp16.safetensors",
             "text_encoder/model.safetensors", "text_encoder/pytorch_model.bin"]

    def fetched(variant):
        ignore = download_ignores(files, variant)
        return sorted(f for f in files if not any(fnmatch.fnmatch(f, p) for p in ignore))

    assert fetched("fp16") == ["model_index.json", "text_encoder/model.fp16.safetensors",
                               "unet/config.json", "unet/diffusion_pytorch_model.fp16.safetensors",
                               "vae/diffusion_pytorch_model.safetensors"]
    assert fetched(None) == ["model_index.json", "text_encoder/model.safetensors",
                             "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                             "vae/diffusion_pytorch_model.safetensors"]


def test_the_prior_weights_are_counted_from_the_folders_headers(tiny_sd):
    from safetensors.torch import load_file

    from dreamfusion.guidance.diffusion.stable_diffusion import StableDiffusionPrior

    cfg = load_config("dreamfusion-sd", [f"guidance.model={tiny_sd}"])
    numel = sum(t.numel() for part in ("unet", "text_encoder", "vae")
                for f in (tiny_sd / part).glob("*.safetensors") for t in load_file(f).values())
    assert numel > 0
    assert StableDiffusionPrior.memory_needs(cfg, torch.device("cpu")) == {
        "prior weights": 4 * numel}


def test_a_config_that_fits_only_without_the_prior_weights_is_refused(tiny_sd, tmp_path,
                                                                      capsys, monkeypatch):
    from dreamfusion.config.limits import memory_problem

    cfg = load_config("dreamfusion-sd", [f"guidance.model={tiny_sd}", *SHORT])
    lo, hi = 1, 1 << 40             # the least memory that fits the config without the prior
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if memory_problem(cfg, mid, "test") is None else (mid + 1, hi)
    monkeypatch.setattr("dreamfusion.pipeline.inputs.machine_memory", lambda: lo)
    err = _refused(tiny_sd, tmp_path, capsys)
    assert "prior weights" in err and "GiB" in err


@pytest.mark.parametrize("version, key", [("0.30.3", "torch_dtype"), ("0.39.9", "torch_dtype"),
                                          ("0.40.0", "dtype"), ("1.2.0.dev0", "dtype")])
def test_the_dtype_argument_is_spelled_as_the_installed_diffusers_reads_it(version, key,
                                                                           monkeypatch):
    import diffusers

    from dreamfusion.guidance.diffusion.prior import diffusers_dtype

    monkeypatch.setattr(diffusers, "__version__", version)
    assert diffusers_dtype(torch.float16) == {key: torch.float16}
