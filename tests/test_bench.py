import json
from pathlib import Path

import imageio.v3 as imageio
import pytest

from dreamfusion.cli import main


@pytest.mark.slow
def test_bench_toy_writes_tables_for_both_representations_and_resumes(fast_overrides, tmp_path,
                                                                      capsys):
    args = ["bench", "toy", "--prompts", "a green cylinder", "a yellow duck", "--seeds", "0",
            "--results", str(tmp_path / "res"), "--runs", str(tmp_path / "runs"),
            *fast_overrides, "output.val_every=2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "[4/4] gaussians 'a yellow duck' seed 0" in out and "ETA" in out
    table = (tmp_path / "res" / "toy.md").read_text()
    data = json.loads((tmp_path / "res" / "toy.json").read_text())
    assert "| nerf | a green cylinder | 0 |" in table and "| gaussians | a yellow duck | 0 |" in table
    assert "bar" in table and "Chamfer" in table and "## Representations compared" in table
    assert "| gaussians | a yellow duck |" in table.split("## Representations compared")[1]
    assert data["config_names"] == ["toy", "toy-gaussians"]
    row, duck, g_row, g_duck = data["rows"]
    assert [r["representation"] for r in data["rows"]] == ["nerf"] * 2 + ["gaussians"] * 2
    assert 0.0 < row["chamfer"] < row["true_size"] and row["chamfer_best_yaw"] <= row["chamfer"]
    assert 0.0 <= row["silhouette_iou"] <= 1.0 and data["configs"]["toy"]["steps"] == 6
    assert len(row["iou_per_view"]) == 16 and 0.0 <= row["colour_error"] <= 1.0
    assert 0.0 <= row["toy_r_precision"] <= 1.0 and "janus" in duck and "janus" not in row
    assert g_duck["rasteriser_backend"] in ("cpp", "torch") and "janus" in g_duck
    summary = json.loads((tmp_path / "runs" / "nerf" / "a-yellow-duck-seed0" / "summary.json")
                         .read_text())
    assert {k: duck[k] for k in summary if k in duck} == {k: summary[k] for k in summary if k in duck}
    for name in ("images/toy-nerf/a-green-cylinder-seed0.png",
                 "images/toy-gaussians/a-yellow-duck-seed0.png",
                 "plots/toy-nerf_iou_vs_step.png", "plots/toy-gaussians_iou_vs_step.png"):
        assert (tmp_path / "res" / name).stat().st_size > 500, name
        assert f"]({name})" in table
    strip = imageio.imread(tmp_path / "res" / "images" / "toy-nerf" / "a-yellow-duck-seed0.png")
    assert strip.shape == (64, 8 * 64, 3)
    ckpt = tmp_path / "runs" / "gaussians" / "a-green-cylinder-seed0" / "checkpoints" / \
        "step_000006.pt"
    stamp = ckpt.stat().st_mtime_ns
    assert main(args) == 0                     # a finished run is not trained again
    assert ckpt.stat().st_mtime_ns == stamp
    assert json.loads((tmp_path / "res" / "toy.json").read_text())["rows"] == data["rows"]


def test_bench_toy_takes_one_config_per_representation(tmp_path, capsys):
    code = main(["bench", "toy", "--config", "toy", "toy", "--runs", str(tmp_path / "runs")])
    assert code == 2 and "one config per representation" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_bench_refuses_a_bad_prompt_before_any_run(tmp_path, capsys):
    code = main(["bench", "toy", "--prompts", "a red cube", "a red hamburger",
                 "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "res")])
    assert code == 2 and "hamburger" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "res").exists()


@pytest.mark.slow
def test_bench_remedies_writes_one_row_per_remedy(fast_overrides, tmp_path):
    args = ["bench", "remedies", "--seeds", "0", "--variants", "plain prompt",
            "interpolated + Perp-Neg", "multi-view prior", "--results", str(tmp_path / "res"),
            "--runs", str(tmp_path / "runs"), *fast_overrides]
    assert main(args) == 0
    table = (tmp_path / "res" / "remedies.md").read_text()
    rows = json.loads((tmp_path / "res" / "remedies.json").read_text())["rows"]
    assert [r["variant"] for r in rows] == ["plain prompt", "interpolated + Perp-Neg",
                                            "multi-view prior"]
    assert "| plain prompt | 1 |" in table and "| interpolated + Perp-Neg | 1 |" in table
    # the cost table: views per step, and steps/s from each run's own timing
    assert "| multi-view prior | 4 | " in table and "| plain prompt | 1 | " in table
    assert [r["views_per_sample"] for r in rows] == [1, 1, 4]
    multiview = (tmp_path / "runs" / "multi-view-prior-seed0" / "config.yaml").read_text()
    assert "prior: toy_multiview" in multiview and "views_per_sample: 4" in multiview
    assert all(0.0 <= r["janus"] <= 1.0 and "side_iou" in r for r in rows)
    saved = (tmp_path / "runs" / "interpolated-perp-neg-seed0" / "config.yaml").read_text()
    assert "perp_neg: true" in saved and "interpolate: true" in saved
    for name in ("plots/remedies.png", "images/remedies/plain-prompt-seed0.png",
                 "images/remedies/interpolated-perp-neg-seed0.png"):
        assert (tmp_path / "res" / name).stat().st_size > 500, name
        assert f"]({name})" in table


def test_bench_remedies_refuses_bad_input_before_any_run(tmp_path, capsys):
    code = main(["bench", "remedies", "--variants", "garlic", "--runs", str(tmp_path / "r")])
    assert code == 2 and "garlic" in capsys.readouterr().err and not (tmp_path / "r").exists()
    code = main(["bench", "remedies", "--prompt", "a red cube", "--runs", str(tmp_path / "r")])
    assert code == 2 and "no front" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_bench_sds_step_runs_the_sd_code_path(monkeypatch, tmp_path):
    import dreamfusion.bench.sds_timing as sds_timing

    real = sds_timing.sd21_base_configs()
    tiny = {**real,
            "unet": {**real["unet"], "block_out_channels": [32, 64], "attention_head_dim": 8,
                     "layers_per_block": 1, "cross_attention_dim": 32,
                     "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
                     "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"]},
            "vae": {**real["vae"], "block_out_channels": [32, 64], "layers_per_block": 1,
                    "down_block_types": ["DownEncoderBlock2D"] * 2,
                    "up_block_types": ["UpDecoderBlock2D"] * 2}}
    monkeypatch.setattr(sds_timing, "sd21_base_configs", lambda: tiny)
    assert main(["bench", "sds-step", "--device", "cpu", "--steps", "1", "--render", "16",
                 "--render-size", "16", "--results", str(tmp_path)]) == 0
    row = json.loads((tmp_path / "sds_step_cpu.json").read_text())
    assert row["latent"] == 8 and row["seconds_per_step"] > 0 and row["peak_memory_gb"] > 0
    assert "| cpu | float32 | 16x16 -> 16 -> 8 |" in (tmp_path / "sds_step_cpu.md").read_text()


def test_the_toy_run_row_is_a_whole_run_with_its_own_peak(fast_overrides):
    from omegaconf import OmegaConf

    from dreamfusion.bench.speed_rows import measure_toy_run
    from dreamfusion.config import load_config

    cfg = load_config("toy", [o for o in fast_overrides if not o.startswith("output.root=")])
    row = measure_toy_run(OmegaConf.to_container(cfg), "cpu")
    assert row["toy_run_seconds"] > 0 and 0.0 <= row["toy_run_iou"] <= 1.0
    assert 0.1 < row["toy_run_peak_gb"] < 24


@pytest.mark.slow
def test_bench_speed_measures_each_backend_against_the_reference(fast_overrides, tmp_path):
    from dreamfusion.gaussians.splat_cpp import load_kernel as splat_kernel
    from dreamfusion.nerf.hashgrid_cpp import load_kernel

    # no full toy runs: evaluating them with the PyTorch reference took 2 of this test's 2.5
    # minutes, and `dreamfusion run` is tested on its own
    assert main(["bench", "speed", "--device", "cpu", "--points", "2000", "--repeats", "1",
                 "--toy-steps", "2", "--sd-steps", "0", "--no-toy-run",
                 "--results", str(tmp_path / "res"), *fast_overrides]) == 0
    data = json.loads((tmp_path / "res" / "speed_cpu.json").read_text())
    rows = data["rows"]
    expected = ["torch", "torch, analytic normals"] + (["cpp"] if load_kernel() else [])
    assert [r["backend"] for r in rows] == expected
    assert [r["normals"] for r in rows][:2] == ["finite_difference", "analytic"]
    for r in rows:
        assert r["grid_forward"] > 0 and r["grid_forward_backward"] > 0
        assert r["render_rays"] > 0 and r["render_train_rays"] > 0 and r["samples_per_ray"] > 0
        assert r["toy_steps_per_second"] > 0 and "toy_run_seconds" not in r
        assert r["peak_memory_gb"] > 0.05
    assert data["sd_step"] is None and data["config"]["steps"] == 6
    table = (tmp_path / "res" / "speed_cpu.md").read_text()
    assert "| torch | finite_difference | " in table and "(1.0x)" in table
    splats = data["gaussian_rows"]
    kernels = ["torch"] + (["cpp"] if splat_kernel() else [])
    assert [(r["backend"], r["gaussians"]) for r in splats] == [
        (k, n) for k in kernels for n in (10_000, 50_000)]
    # both measured; which is faster is not asserted (a timing under load can invert it)
    assert all(r["images_per_second"] > 0 and r["train_images_per_second"] > 0 for r in splats)
    assert splats[1]["pairs"] > splats[0]["pairs"] > 10_000
    assert [r["pairs"] for r in splats[2:]] == [r["pairs"] for r in splats[:2]]
    assert "| torch | 50,000 |" in table
    meshes = data["mesh_rows"]
    from dreamfusion.bench.mesh_speed import mesh_backends

    assert [(r["backend"], r["mesh"], r["size"]) for r in meshes] == [
        (k, m, s) for k in mesh_backends() for m in ("10k", "100k") for s in (64, 256)]
    assert all(r["renders_per_second"] > 0 and r["train_renders_per_second"] > 0
               and r["visibility_per_second"] > 0 for r in meshes)
    assert 8_000 < meshes[0]["faces"] < 20_000 and 80_000 < meshes[2]["faces"] < 200_000


@pytest.mark.slow
def test_bench_gpu_runs_every_part_with_tiny_models_on_a_cpu(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])       # the CUDA tests, by path
    assert main(["bench", "gpu", "--device", "cpu", "--tiny", "--run-steps", "3",
                 "--sd-steps", "1", "--results", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "speed_cpu_tiny.json").read_text())
    assert report["tests"]["exit_code"] == 0 and "skipped" in report["tests"]["summary"]
    assert [r["backend"] for r in report["backends"]][:2] == ["torch", "torch, analytic normals"]
    assert report["sds_step"]["steps_per_second"] > 0
    assert report["mvdream_step"]["views"] == 4 and report["mvdream_step"]["steps_per_second"] > 0
    nerf, gaussians, mesh = report["sd_runs"]
    assert (nerf["config"], gaussians["config"]) == ("dreamfusion-sd", "dreamgaussian-sd")
    assert mesh["config"] == "refine of dreamfusion-sd" and "refused" not in mesh, mesh
    assert mesh["steps"] == 3 and mesh["backend"] in ("cpp", "torch")
    assert {"model.glb", "model.obj"} <= set(mesh["exported"])
    assert nerf["steps"] == 3 and {"model.glb", "model.obj"} <= set(nerf["exported"])
    assert {"model.glb", "model.ply"} <= set(gaussians["exported"])
    assert gaussians["backend"] in ("cpp", "torch")
    text = (tmp_path / "speed_cpu_tiny.md").read_text()
    for heading in ("## CUDA-only tests", "## Backends", "## SD- and MVDream-sized SDS steps",
                    "## `dreamfusion run`", "| MVDream | cpu | float32 | 4 x 16x16"):
        assert heading in text


def test_bench_gpu_without_a_gpu_is_refused_in_one_line(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        return
    assert main(["bench", "gpu", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "needs a CUDA GPU" in err and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


def _own_peak() -> float:
    import torch

    from dreamfusion.bench.measure import peak_memory_gb

    return peak_memory_gb(torch.device("cpu"))[0]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="Linux's /proc")
def test_a_fresh_process_reports_its_own_peak_memory_not_its_parents():
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import torch

    from dreamfusion.bench.measure import peak_memory_gb, reset_peak_memory

    cpu = torch.device("cpu")
    ballast = torch.ones(2 ** 30, dtype=torch.uint8)              # 1 GiB, touched
    parent = peak_memory_gb(cpu)[0]
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        child = pool.submit(_own_peak).result()
    # ru_maxrss would give the child the parent's peak: spawn forks, then execs
    assert child < parent - 0.5, (child, parent)
    del ballast
    reset_peak_memory(cpu)
    assert peak_memory_gb(cpu)[0] < parent - 0.5
