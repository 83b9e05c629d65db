"""Tiny random Stable Diffusion and DeepFloyd IF pipelines, written to disk with
``save_pretrained`` so that the priors load them exactly as they load real checkpoints.

No tokenizer can be downloaded here, so the tests write their own: a byte-level BPE in
CLIP's format and a unigram vocabulary in T5's.
"""
from __future__ import annotations

from pathlib import Path

import torch

WORDS = ("a", "an", "the", "red", "blue", "yellow", "green", "cube", "duck", "hamburger",
         "front", "side", "back", "overhead", "view", ",", "photo", "of", "ugly")
SCALING = 0.3             # not SD's 0.18215: the prior must read it from the VAE's config


def _byte_chars() -> list[str]:
    """GPT-2's printable stand-ins for the 256 byte values, as CLIP's BPE vocabulary uses."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1),
            *range(ord("\u00ae"), ord("\u00ff") + 1)]
    extra = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(extra)) for b in range(256)]


def clip_tokenizer():
    from transformers import CLIPTokenizer

    chars = _byte_chars()
    vocab_list = chars + [c + "</w>" for c in chars]
    merges = []
    for word in WORDS:              # merge each word whole, letter by letter
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merges.append((pieces[0], pieces[1]))
            pieces = [pieces[0] + pieces[1]] + pieces[2:]
            if pieces[0] not in vocab_list:
                vocab_list.append(pieces[0])
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocab_list))}
    return CLIPTokenizer(vocab=vocab, merges=list(dict.fromkeys(merges)), model_max_length=77)


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

    return UNet2DConditionModel(
        sample_size=8, block_out_channels=(32, 64), layers_per_block=1, attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), norm_num_groups=32, **kw)


def save_tiny_stable_diffusion(folder: Path, seed: int = 0) -> Path:
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = clip_tokenizer()
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_attention_heads=4,
        num_hidden_layers=2, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    unet = _unet(in_channels=4, out_channels=4, cross_attention_dim=32)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, sample_size=16,
                        block_out_channels=(32, 64), norm_num_groups=32,
                        down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, scaling_factor=SCALING)
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                              num_train_timesteps=1000, prediction_type="epsilon", clip_sample=False,
                              steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                   unet=unet, scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return folder


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
