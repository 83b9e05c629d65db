"""Stable Diffusion pipelines with random weights, written to disk in the published layout.

A machine without the hub (a GPU box behind a firewall, CI) can still run the whole SD code
path, loading included: ``model_index.json``, ``scheduler/``, ``tokenizer/`` (``vocab.json``
and ``merges.txt``, CLIP's byte-level BPE, as the SD repositories ship it), ``text_encoder/``,
``unet/`` and ``vae/``, each written by its library's ``save_pretrained``. The tokenizer knows
the 256 bytes and whole-word merges for the given words only; it is a real CLIP tokenizer,
not SD's vocabulary.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch

#: a UNet, VAE and text encoder of the SD 2.1-base layout, small enough for a CPU test
TINY = {
    "unet": {"sample_size": 8, "in_channels": 4, "out_channels": 4, "layers_per_block": 1,
             "block_out_channels": [32, 64], "attention_head_dim": 8, "cross_attention_dim": 32,
             "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
             "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "norm_num_groups": 32},
    "vae": {"in_channels": 3, "out_channels": 3, "latent_channels": 4, "sample_size": 16,
            "block_out_channels": [32, 64], "norm_num_groups": 32,
            "down_block_types": ["DownEncoderBlock2D"] * 2,
            "up_block_types": ["UpDecoderBlock2D"] * 2, "scaling_factor": 0.18215},
    "text_encoder": {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4,
                     "num_hidden_layers": 2, "max_position_embeddings": 77, "vocab_size": 1000},
    "scheduler": {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
                  "num_train_timesteps": 1000, "prediction_type": "epsilon",
                  "clip_sample": False, "steps_offset": 1},
}

WORDS = ("a", "an", "the", "red", "blue", "yellow", "green", "cube", "duck", "hamburger",
         "front", "side", "back", "overhead", "view", ",", "photo", "of", "ugly")


def _byte_chars() -> list[str]:
    """GPT-2's printable stand-ins for the 256 byte values, as CLIP's BPE vocabulary uses."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1),
            *range(ord("\u00ae"), ord("\u00ff") + 1)]
    extra = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(extra)) for b in range(256)]


def write_clip_tokenizer(folder: Path, words: Sequence[str] = WORDS) -> Path:
    """A CLIP tokenizer in the files the SD repositories publish (``vocab.json``,
    ``merges.txt``, ``tokenizer_config.json``, ``special_tokens_map.json``; no
    ``tokenizer.json``) with every byte and each of ``words`` merged whole."""
    chars = _byte_chars()
    vocab_list = chars + [c + "</w>" for c in chars]
    merges: list[tuple[str, str]] = []
    for word in words:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merges.append((pieces[0], pieces[1]))
            pieces = [pieces[0] + pieces[1]] + pieces[2:]
            vocab_list.append(pieces[0])
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocab_list))}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in dict.fromkeys(merges)]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
               "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(special), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True,
         **special}), encoding="utf-8")
    return folder


def public_config(config: dict) -> dict:
    """A saved config without its ``_class_name``-style bookkeeping keys, for ``from_config``."""
    return {k: v for k, v in config.items() if not k.startswith("_")}


def save_random_stable_diffusion(folder: Path, configs: dict, seed: int = 0,
                                 dtype: torch.dtype = torch.float32) -> Path:
    """An SD pipeline folder with random weights in ``dtype`` from architecture ``configs``
    (keys ``unet``, ``vae``, ``text_encoder``, ``scheduler``; diffusers / transformers config
    dicts, such as SD 2.1-base's in ``bench/data`` or ``TINY``)."""
    import diffusers
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    tokenizer = CLIPTokenizer.from_pretrained(write_clip_tokenizer(folder / "tokenizer"))
    text = public_config(configs["text_encoder"])
    text["vocab_size"] = max(int(text.get("vocab_size", 0)), len(tokenizer))
    text.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)
    parts = {
        "unet": UNet2DConditionModel.from_config(public_config(configs["unet"])),
        "vae": AutoencoderKL.from_config(public_config(configs["vae"])),
        "text_encoder": CLIPTextModel(CLIPTextConfig(**text)),
    }
    for name, model in parts.items():
        model.to(dtype).save_pretrained(folder / name)
    DDPMScheduler.from_config(public_config(configs["scheduler"])).save_pretrained(folder / "scheduler")
    index = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": diffusers.__version__,
             "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
             "text_encoder": ["transformers", "CLIPTextModel"],
             "tokenizer": ["transformers", "CLIPTokenizer"],
             "scheduler": ["diffusers", "DDPMScheduler"], "safety_checker": [None, None],
             "feature_extractor": [None, None], "requires_safety_checker": False}
    (folder / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    return folder


def save_random_mvdream_checkpoint(path: Path, params: dict, seed: int = 0,
                                   dtype: torch.dtype = torch.float32) -> Path:
    """MVDream's original checkpoint with random weights: a pickled state dict whose UNet
    tensors lie under ``model.diffusion_model.`` with MVDream's LDM names (the camera MLP
    as ``camera_embed.0`` and ``camera_embed.2``), for LDM ``MultiViewUNetModel`` ``params``."""
    from diffusers import UNet2DConditionModel

    from ..guidance.diffusion.mvdream import LDM_PREFIX, ldm_unet_keys, unet_config

    torch.manual_seed(seed)
    config = unet_config(params)
    state = {k: v.to(dtype) for k, v in UNet2DConditionModel(**config).state_dict().items()}
    names = ldm_unet_keys(state, config)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({LDM_PREFIX + names[k]: v.contiguous() for k, v in state.items()}, path)
    return path


def write_ldm_config(path: Path, params: dict) -> Path:
    """An LDM yaml in the layout of MVDream's ``configs/sd-v2-base.yaml`` (its UNet part)."""
    from omegaconf import OmegaConf

    target = "mvdream.ldm.modules.diffusionmodules.openaimodel.MultiViewUNetModel"
    cfg = {"model": {"target": "mvdream.ldm.interface.LatentDiffusionInterface",
                     "params": {"unet_config": {"target": target, "params": dict(params)}}}}
    path.parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(cfg), path)
    return path
