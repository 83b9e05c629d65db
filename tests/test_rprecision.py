"""CLIP R-Precision on a tiny CLIP that the test trains, saves and loads like real weights."""
from pathlib import Path

import pytest
import torch

from dreamfusion.bench.clip import ClipScorer, normalise_caption, r_precision

CAPTIONS = ["a red cube.", "a blue duck.", "a green cube.", "a yellow duck.", "a red duck.",
            "a blue cube."]
SIZE = 32


def _pair_images() -> torch.Tensor:
    """One distinct image per caption: a coloured square at a caption-specific place."""
    g = torch.Generator().manual_seed(0)
    images = 0.2 * torch.rand(len(CAPTIONS), 3, SIZE, SIZE, generator=g)
    for i in range(len(CAPTIONS)):
        y, x = divmod(i, 3)
        images[i, i % 3, 4 + 12 * y: 14 + 12 * y, 2 + 10 * x: 10 + 10 * x] = 1.0
    return images


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    """A tiny CLIP trained contrastively until each image and its caption map to nearly the
    same vector, saved with save_pretrained."""
    from tiny_diffusers import clip_tokenizer
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    tokenizer = clip_tokenizer()
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=77,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_attention_heads=4,
                           num_hidden_layers=2, image_size=SIZE, patch_size=8),
        projection_dim=16)
    model = CLIPModel(config)
    tokens = tokenizer(CAPTIONS, padding=True, return_tensors="pt")
    images = _pair_images()
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    pixels = (images - mean) / std
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    labels = torch.arange(len(CAPTIONS))
    for _ in range(300):
        out = model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                    pixel_values=pixels)
        loss = (torch.nn.functional.cross_entropy(out.logits_per_image, labels)
                + torch.nn.functional.cross_entropy(out.logits_per_text, labels))
        opt.zero_grad()
        loss.backward()
        opt.step()
    folder = tmp_path_factory.mktemp("models") / "tiny-clip"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_r_precision_is_known_on_a_constructed_case(tiny_clip):
    scorer = ClipScorer.load(str(tiny_clip), torch.device("cpu"))
    assert scorer.image_size == SIZE
    texts = scorer.embed_texts(CAPTIONS)
    images = scorer.embed_images(_pair_images())
    n = len(CAPTIONS)
    own = torch.arange(n)
    r1, ranks = r_precision(texts, images, own)          # each render is its caption's image
    assert r1 == 1.0 and ranks.tolist() == [0] * n
    r1, _ = r_precision(texts, images, (own + 1) % n)    # every render labelled with another
    assert r1 == 0.0
    half = torch.where(own % 2 == 0, own, (own + 1) % n)
    assert r_precision(texts, images, half)[0] == 0.5


def test_ties_count_against_the_render():
    texts = torch.eye(3)
    images = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    r1, ranks = r_precision(texts, images, torch.tensor([0, 1]))
    assert ranks.tolist() == [1, 0] and r1 == 0.5


def test_missing_clip_weights_are_a_one_line_error(tmp_path):
    from dreamfusion.errors import UserError

    with pytest.raises(UserError, match="cannot load CLIP 'B/32'"):
        ClipScorer.load("B/32", torch.device("cpu"))           # offline in the tests
    with pytest.raises(UserError, match="cannot load CLIP"):
        ClipScorer.load(str(tmp_path), torch.device("cpu"))      # a folder without a model


def test_captions_are_normalised_as_dream_fields_did():
    assert normalise_caption("A Bed with a pillow and a blanket. ") == "a bed with a pillow and a blanket."
    assert normalise_caption("a man riding a horse,") == "a man riding a horse."


@pytest.mark.slow
def test_bench_rprecision_trains_scores_and_rescores(tiny_clip, fast_overrides, tmp_path, capsys):
    import json

    from dreamfusion.cli import main

    prompts = tmp_path / "captions.txt"
    prompts.write_text("a red cube\na blue torus\n")
    args = ["bench", "rprecision", "--config", "toy", "--prompts-file", str(prompts),
            "--clip", str(tiny_clip), "--seeds", "0", "--views", "4",
            "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "res"), *fast_overrides]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "[2/2] 'a blue torus' seed 0" in out and "ETA" in out
    data = json.loads((tmp_path / "res" / "rprecision.json").read_text())
    row = data["rows"][0]
    assert row["image_size"] == SIZE and 0.0 <= row["colour"] <= 100.0
    assert data["views"] == 4 and data["elevation"] == 30.0 and data["background"] == [1, 1, 1]
    assert len(data["per_run"]) == 4 and all(len(r["ranks"]) == 4 for r in data["per_run"])
    table = (tmp_path / "res" / "rprecision.md").read_text()
    assert "| DreamFusion paper figures (Imagen, TPU) | L/14 | 79.7 | 58.5 |" in table
    assert (tmp_path / "res" / "images" / "rprecision" / "a-red-cube-seed0.png").is_file()

    ckpt = tmp_path / "runs" / "a-red-cube-seed0" / "checkpoints" / "step_000006.pt"
    stamp = ckpt.stat().st_mtime_ns
    assert main([*args, "--score-only"]) == 0             # scores what is there, trains nothing
    assert ckpt.stat().st_mtime_ns == stamp
    again = json.loads((tmp_path / "res" / "rprecision.json").read_text())
    assert again["rows"] == data["rows"]                  # the same renders, the same scores
    assert main([*args[:-len(fast_overrides)], "--score-only", "--runs",
                 str(tmp_path / "none")]) == 2
