"""Tiny random Stable Diffusion and DeepFloyd IF pipelines, written to disk in the layout of
the published repositories, so that the priors load them exactly as they load real ones.

No tokenizer can be downloaded here, so the tests write their own, in the published files:
a byte-level BPE in CLIP's (``vocab.json`` + ``merges.txt``) and a sentencepiece unigram
model in T5's (``spiece.model``; IF's repositories have no ``tokenizer.json``).
"""
from __future__ import annotations

from pathlib import Path

import torch

from dreamfusion.bench.random_models import TINY, WORDS, save_random_stable_diffusion, write_clip_tokenizer

SCALING = 0.3             # not SD's 0.18215: the prior must read it from the VAE's config


def clip_tokenizer():
    """A CLIP tokenizer loaded from the files SD's repositories publish."""
    import tempfile

    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        return CLIPTokenizer.from_pretrained(write_clip_tokenizer(Path(tmp)))


def write_t5_tokenizer(folder: Path) -> Path:
    """A T5 tokenizer in the form DeepFloyd IF's repositories publish it: ``spiece.model``
    (a sentencepiece unigram model, trained here on the test words), ``tokenizer_config.json``
    and ``special_tokens_map.json``, and no ``tokenizer.json``, so that loading it takes the
    same conversion (sentencepiece + protobuf) as loading the real one."""
    import io
    import json

    import sentencepiece as spm

    folder.mkdir(parents=True, exist_ok=True)
    corpus = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))] * 4
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=model, vocab_size=60, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>", eos_piece="</s>",
        unk_piece="<unk>", hard_vocab_limit=False, minloglevel=2, num_threads=1)
    (folder / "spiece.model").write_bytes(model.getvalue())
    special = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(special))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "T5Tokenizer", "model_max_length": 77, "extra_ids": 0,
         "additional_special_tokens": [], **special}))
    return folder


def t5_tokenizer(folder: Path):
    from transformers import T5Tokenizer

    return T5Tokenizer.from_pretrained(write_t5_tokenizer(folder))


def _unet(**kw):
    from diffusers import UNet2DConditionModel

    config = {k: v for k, v in TINY["unet"].items() if k not in ("in_channels", "out_channels",
                                                                 "cross_attention_dim")}
    return UNet2DConditionModel(**config, **kw)


def save_tiny_stable_diffusion(folder: Path, seed: int = 0) -> Path:
    """SD's layout with tiny random weights (``bench.random_models``: the same writer the GPU
    check uses for its SD 2.1-base-sized model)."""
    configs = dict(TINY, vae=dict(TINY["vae"], scaling_factor=SCALING))
    return save_random_stable_diffusion(folder, configs, seed)


def save_tiny_deepfloyd_if(folder: Path, seed: int = 0) -> Path:
    from diffusers import DDPMScheduler, IFPipeline
    from transformers import T5Config, T5EncoderModel

    import shutil

    torch.manual_seed(seed)
    published = Path(str(folder) + "-tokenizer")
    tokenizer = t5_tokenizer(published)
    text_encoder = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=32, d_ff=37,
                                           d_kv=8, num_layers=2, num_heads=4,
                                           pad_token_id=tokenizer.pad_token_id,
                                           eos_token_id=tokenizer.eos_token_id))
    # IF's UNet predicts noise and a variance (6 channels) and projects T5 features itself
    unet = _unet(in_channels=3, out_channels=6, cross_attention_dim=32, encoder_hid_dim=32)
    scheduler = DDPMScheduler(beta_schedule="squaredcos_cap_v2", num_train_timesteps=1000,
                              prediction_type="epsilon", variance_type="learned_range")
    pipe = IFPipeline(tokenizer=tokenizer, text_encoder=text_encoder, unet=unet,
                      scheduler=scheduler, safety_checker=None, feature_extractor=None,
                      watermarker=None, requires_safety_checker=False)
    pipe.save_pretrained(folder)
    shutil.rmtree(folder / "tokenizer")         # transformers writes tokenizer.json; IF has none
    shutil.copytree(published, folder / "tokenizer")
    return folder
