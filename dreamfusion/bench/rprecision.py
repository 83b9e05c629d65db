"""``dreamfusion bench rprecision``: DreamFusion's CLIP R-Precision protocol (its Table 1).

For each caption and seed, the finished run is rendered at 30 degrees elevation from evenly
spaced azimuths, shaded in colour and textureless, at the CLIP model's input size on a white
background. Each render retrieves among every caption of the set; R@1 is the share whose own
caption ranks first.
"""
from __future__ import annotations

import sys
from dataclasses import replace
from importlib import resources
from pathlib import Path

from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from ..config import load_config
from ..errors import UserError
from ..pipeline.inputs import prepare, slugify
from ..utils.atomic import write_text
from .tables import markdown_table
from .fanout import Executor, Job, LocalExecutor, add_executor_args, executor_flags, \
    executor_from_args, finished, run_all, summaries
from .toy import machine

if TYPE_CHECKING:       # torch, CLIP and the renderer are imported where used: the CLI's
    import torch        # parser is built from this module and refuses bad input without them

# DreamFusion (Imagen, TPU), Table 1: R-Precision (%) on the 153 object-centric COCO captions
PAPER = {"colour": {"B/32": 75.1, "B/16": 77.5, "L/14": 79.7},
         "textureless": {"B/32": 42.5, "B/16": 46.6, "L/14": 58.5}}
MODES = {"colour": "lambertian", "textureless": "textureless"}   # our shading modes
ELEVATION = 30.0


def read_prompts(path: str | None) -> list[str]:
    """One caption per line; the default is the 153 object-centric COCO captions."""
    if path is None:
        text = (resources.files("dreamfusion.bench") / "data" /
                "coco_object_centric_prompts.txt").read_text(encoding="utf-8")
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read prompts file {path!r}: {exc}") from None
    captions = [line.strip() for line in text.splitlines() if line.strip()]
    if len(captions) < 2:
        raise UserError(f"R-Precision needs at least 2 captions, {path or 'the default'} has "
                        f"{len(captions)}")
    from .clip import normalise_caption

    normalised = [normalise_caption(c) for c in captions]
    if len(set(normalised)) != len(normalised):
        raise UserError("two captions are the same after normalisation: R@1 would be undefined")
    return captions


def render_run(run_dir: Path, size: int, views: int) -> dict[str, torch.Tensor]:
    """Each mode's renders (views, 3, size, size) of the run, on white, at 30 deg elevation."""
    import torch

    from ..pipeline.artifacts import render_views
    from ..pipeline.reexport import load_run
    from ..rendering.cameras import orbit
    from ..rendering.shading import Background

    cfg, scene, _ = load_run(run_dir)
    device = next(scene.field.parameters()).device
    white = replace(scene, background=Background("solid", (1.0, 1.0, 1.0)).to(device))
    cams = orbit(views, ELEVATION, sum(cfg.camera.distance) / 2, sum(cfg.camera.fov) / 2)
    with torch.no_grad():
        return {name: render_views(white, cams, size, mode).permute(0, 3, 1, 2).cpu()
                for name, mode in MODES.items()}


def run_rprecision_bench(cfg: DictConfig, prompts_file: str | None, clip_names: list[str],
                         seeds: list[int], views: int, runs: str, results: str,
                         score_only: bool, limit: int | None, command: str,
                         executor: Executor | None = None) -> dict:
    import torch

    from ..pipeline.artifacts import to_uint8
    from ..pipeline.inputs import select_device
    from ..utils.atomic import write_png
    from .clip import ClipScorer, normalise_caption, r_precision

    captions = read_prompts(prompts_file)[:limit] if limit else read_prompts(prompts_file)
    device = select_device(cfg.device)
    scorers = [ClipScorer.load(name, device) for name in clip_names]   # fail before any run
    runs_dir = Path(runs)
    jobs = [(c, s, runs_dir / f"{slugify(c)}-seed{s}") for c in captions for s in seeds]
    if not score_only:
        for caption in captions:            # every bad caption is refused before any run
            prepare(caption, cfg, root_check=False)
        runs_ = [Job(c, s, d, cfg, f"{c!r} seed {s}") for c, s, d in jobs]
        summaries(runs_, run_all(runs_, executor or LocalExecutor()))
    found = [(i, c, s, d) for i, (c, s, d) in enumerate(jobs) if finished(d)]
    missing = [str(d) for c, s, d in jobs if not finished(d)]
    if not found:
        raise UserError(f"no finished runs under {runs} for these captions and seeds; run the "
                        f"bench without --score-only to train them")
    index = {c: i for i, c in enumerate(captions)}
    renders: dict[int, dict] = {}
    rows, per_run = [], []
    for scorer in scorers:
        if scorer.image_size not in renders:
            renders[scorer.image_size] = {d: render_run(d, scorer.image_size, views)
                                          for _, _, _, d in found}
        texts = scorer.embed_texts([normalise_caption(c) for c in captions])
        row = {"clip": scorer.name, "image_size": scorer.image_size}
        for mode in MODES:
            images = torch.cat([renders[scorer.image_size][d][mode] for _, _, _, d in found])
            own = torch.tensor([index[c] for _, c, _, _ in found]).repeat_interleave(views)
            r1, ranks = r_precision(texts, scorer.embed_images(images), own)
            row[mode] = round(100.0 * r1, 1)
            for k, (_, c, s, d) in enumerate(found):
                per_run.append({"clip": scorer.name, "mode": mode, "caption": c, "seed": s,
                                "ranks": ranks[k * views:(k + 1) * views].tolist()})
        rows.append(row)
    strips = Path(results) / "images" / "rprecision"
    first = renders[min(renders)]
    for _, c, s, d in found[:16]:           # a look at what was scored
        strip = torch.cat([torch.cat(list(first[d][m]), dim=2) for m in MODES], dim=1)
        write_png(strips / f"{slugify(c)}-seed{s}.png", to_uint8(strip.permute(1, 2, 0)))
    return _write(results, rows, per_run, captions, seeds, views, missing, cfg, command)


def _write(results: str, rows: list[dict], per_run: list[dict], captions: list[str],
           seeds: list[int], views: int, missing: list[str], cfg: DictConfig, command: str) -> dict:
    table = [["ours", r["clip"], f"{r['colour']:.1f}", f"{r['textureless']:.1f}"] for r in rows]
    table += [["DreamFusion paper figures (Imagen, TPU)", clip, f"{PAPER['colour'][clip]:.1f}",
               f"{PAPER['textureless'][clip]:.1f}"] for clip in PAPER["colour"]]
    protocol = (f"{len(captions)} captions x {len(seeds)} seeds ({', '.join(map(str, seeds))}), "
                f"{views} azimuths at {ELEVATION:.0f} deg elevation, colour (lambertian, lit "
                f"from the camera) and textureless renders at each CLIP model's input size on a "
                f"white background; R@1 against all {len(captions)} captions, normalised as "
                f"Dream Fields did.")
    text = (f"# CLIP R-Precision (DreamFusion's protocol)\n\nCommand: `{command}`\n\n"
            f"Machine: {machine()}\n\nProtocol: {protocol}\n\n"
            + markdown_table(["system", "CLIP", "colour R@1 %", "textureless R@1 %"], table)
            + "\n\nPaper figures: DreamFusion (Poole et al. 2022), Table 1, with Imagen on TPUs; "
              "they are quoted, not measured here.\n")
    if missing:
        text += f"\n{len(missing)} runs were missing and not scored.\n"
    data = {"command": command, "machine": machine(), "argv": sys.argv, "protocol": protocol,
            "captions": captions, "seeds": seeds, "views": views, "elevation": ELEVATION,
            "background": [1.0, 1.0, 1.0], "rows": rows, "paper": PAPER, "missing": missing,
            "per_run": per_run, "config": OmegaConf.to_container(cfg)}
    write_text(Path(results) / "rprecision.md", text)
    from ..pipeline.artifacts import write_json

    write_json(Path(results) / "rprecision.json", data)
    return data



def add_parser(bench_sub) -> None:
    rp = bench_sub.add_parser("rprecision",
                              help="CLIP R-Precision, DreamFusion's Table 1 protocol")
    rp.add_argument("overrides", nargs="*", metavar="key.sub=value")
    rp.add_argument("--config", default="dreamfusion-sd",
                    help="the runs' config (default: dreamfusion-sd, which needs its weights)")
    rp.add_argument("--prompts-file", default=None,
                    help="one caption per line (default: the 153 object-centric COCO captions)")
    rp.add_argument("--clip", nargs="+", default=["B/32", "B/16", "L/14"],
                    help="CLIP models: B/32, B/16, L/14 (OpenAI's) or transformers folders")
    rp.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    rp.add_argument("--views", type=int, default=8, help="azimuths rendered per run")
    rp.add_argument("--limit", type=int, default=None, help="only the first N captions")
    rp.add_argument("--score-only", action="store_true",
                    help="score the finished runs under --runs; train nothing")
    rp.add_argument("--runs", default="outputs/bench-rprecision")
    rp.add_argument("--results", default="results")
    add_executor_args(rp)


def main(args) -> int:
    if args.views < 1 or (args.limit is not None and args.limit < 2):
        raise UserError("--views must be >= 1 and --limit >= 2")
    executor = executor_from_args(args)
    cfg = load_config(args.config, args.overrides)
    command = " ".join(["dreamfusion bench rprecision", *args.overrides, "--config",
                        args.config, "--clip", *args.clip, "--seeds", *map(str, args.seeds),
                        "--views", str(args.views), "--runs", args.runs]
                       + (["--prompts-file", args.prompts_file] if args.prompts_file else [])
                       + (["--limit", str(args.limit)] if args.limit else [])
                       + ["--score-only"] * args.score_only + executor_flags(args).split())
    run_rprecision_bench(cfg, args.prompts_file, args.clip, args.seeds, args.views, args.runs,
                         args.results, args.score_only, args.limit, command, executor)
    return 0
