"""Many runs at once: ``dreamfusion batch`` and the benches over ``--executor local|ray``, on a
local Ray with 2 CPUs; retries after a killed worker; caches shared by concurrent processes."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import ray

from dreamfusion.cli import main
from dreamfusion.pipeline.checkpoint import read_checkpoint

from conftest import FAST, assert_same_state

TINY = [*FAST, "export.enabled=false"]
TIMES = ("train_seconds", "total_seconds")


def _scores(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in TIMES}


def _batch_rows(runs: Path) -> list[dict]:
    return json.loads((runs / "batch.json").read_text())["rows"]


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray with 2 CPUs for this module's tests (the executor joins it and leaves it
    running); the tests above it start their own, as the command line does."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=100 * 2**20)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_batch_on_ray_matches_local_and_fails_a_bad_prompt_alone(tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# toy captions\na red cube\n\na purple banana\n")
    common = ["batch", str(prompts), *TINY, "--cpus-per-run", "1"]
    assert main([*common, "--runs", str(tmp_path / "local")]) == 1      # one run failed
    assert not ray.is_initialized()
    assert main([*common, "--runs", str(tmp_path / "ray"), "--executor", "ray"]) == 1
    assert not ray.is_initialized()             # the Ray it started is gone again
    out = capsys.readouterr().out
    assert "[1/1]" in out and "'a purple banana' seed 0: failed: the toy prior does not know " \
                              "'banana'" in out
    local, on_ray = _batch_rows(tmp_path / "local"), _batch_rows(tmp_path / "ray")
    assert [r["prompt"] for r in on_ray] == ["a red cube", "a purple banana"]
    assert [r["state"] for r in on_ray] == ["trained", "failed"]
    assert "banana" in on_ray[1]["error"] and on_ray[1]["summary"] is None
    assert not (tmp_path / "ray" / "a-purple-banana-seed0").exists()
    for a, b in zip(local, on_ray):             # same metrics at equal thread counts
        assert a["state"] == b["state"] and a["error"] == b["error"]
        if a["summary"] is not None:
            assert _scores(a["summary"]) == _scores(b["summary"]), a["prompt"]
            assert b["summary"]["threads"] == 1
    table = (tmp_path / "ray" / "batch.md").read_text()
    assert "| a purple banana | 0 | failed |" in table and "Runs: ray: one task per run" in table
    assert "| a red cube | 0 | trained |" in table and "| IoU |" in table

    stamp = (tmp_path / "ray" / "a-red-cube-seed0" / "summary.json").stat().st_mtime_ns
    assert main([*common, "--runs", str(tmp_path / "ray"), "--executor", "ray"]) == 1
    assert [r["state"] for r in _batch_rows(tmp_path / "ray")] == ["done before", "failed"]
    assert (tmp_path / "ray" / "a-red-cube-seed0" / "summary.json").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_bench_executors_times_the_same_runs_each_way(tmp_path, capsys):
    assert main(["bench", "executors", *TINY, "--prompts", "a red cube", "--seeds", "0",
                 "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "res")]) == 0
    data = json.loads((tmp_path / "res" / "executors.json").read_text())
    local, on_ray, equal = data["phases"]
    assert [p["phase"] for p in data["phases"]] == ["local", "ray", "local, equal threads"]
    assert on_ray["rows"][0]["threads"] == equal["rows"][0]["threads"] == 1
    assert _scores(on_ray["rows"][0]) == _scores(equal["rows"][0])
    assert all(p["wall_seconds"] > 0 for p in data["phases"])
    assert data["ray_overhead"]["start"] > 0 and 0 < data["ray_overhead"]["round_trip"] < 5
    text = (tmp_path / "res" / "executors.md").read_text()
    assert "Ray over local: **" in text and "metrics identical to local at equal threads: yes" \
        in text
    assert not ray.is_initialized()             # it started its own Ray and stopped it


@pytest.mark.slow
def test_bench_toy_on_ray_gives_the_same_table_as_local(ray_cluster, tmp_path, capsys):
    common = ["bench", "toy", "--config", "toy", "--prompts", "a green cylinder", "--seeds", "0",
              "1", "--cpus-per-run", "1", *TINY]
    for name in ("local", "ray"):
        assert main([*common, "--executor", name, "--results", str(tmp_path / f"res-{name}"),
                     "--runs", str(tmp_path / f"runs-{name}")]) == 0
    local, on_ray = (json.loads((tmp_path / f"res-{n}" / "toy.json").read_text())
                     for n in ("local", "ray"))
    assert on_ray["executor"] == "ray" and local["executor"] == "local"
    assert [_scores(r) for r in local["rows"]] == [_scores(r) for r in on_ray["rows"]]
    assert [r["seed"] for r in on_ray["rows"]] == [0, 1]            # the jobs' order
    assert "Runs: ray: one task per run, 1 CPU (torch threads) each of 2 in the cluster" in \
        (tmp_path / "res-ray" / "toy.md").read_text()
    assert "--executor ray --cpus-per-run 1" in on_ray["command"]


@pytest.mark.slow
def test_a_killed_worker_is_retried_and_resumes_to_the_same_checkpoint(ray_cluster, tmp_path):
    """Also: a task asking for 2 CPUs runs with 2 threads (the other tests' ask for 1)."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red cube\n")
    longer = [*TINY, "steps=30", "checkpoint.every=10", "output.val_every=100",
              "--cpus-per-run", "2"]
    assert main(["batch", str(prompts), *longer, "--runs", str(tmp_path / "whole")]) == 0
    assert main(["batch", str(prompts), *longer, "faults.kill_at_step=15", "--executor", "ray",
                 "--runs", str(tmp_path / "killed")]) == 0
    row = _batch_rows(tmp_path / "killed")[0]
    assert row["state"] == "resumed", row             # what the retried task saw
    assert row["summary"]["threads"] == 2
    run_dir = tmp_path / "killed" / "a-red-cube-seed0"
    log = (run_dir / "run.log").read_text()
    assert "step 15: killing this process" in log and "resumed at step 10" in log
    assert log.count("killing this process") == 1    # once, although the retry passed step 15
    a = read_checkpoint(tmp_path / "whole" / "a-red-cube-seed0" / "checkpoints" / "step_000030.pt")
    b = read_checkpoint(run_dir / "checkpoints" / "step_000030.pt")
    assert_same_state(a, b)
    assert _scores(row["summary"]) == _scores(_batch_rows(tmp_path / "whole")[0]["summary"])


_BUILD_ONCE = """
import sys, time, torch
from pathlib import Path
from dreamfusion.utils.tensor_cache import cached_tensor
def compute():
    time.sleep(4)           # long enough for the other process to arrive meanwhile
    return torch.arange(1000.0) * 0.5
tensor, computed = cached_tensor(Path(sys.argv[1]), compute)
print(int(computed), float(tensor.sum()))
"""


def test_two_processes_building_one_cache_file_compute_it_once_and_agree(tmp_path):
    path = tmp_path / "cache" / "shared.safetensors"
    procs = [subprocess.Popen([sys.executable, "-c", _BUILD_ONCE, str(path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    results = sorted(out.split() for out, _ in outs)
    assert [r[0] for r in results] == ["0", "1"]          # one computed, one read its file
    assert results[0][1] == results[1][1] == str(float(sum(range(1000)) * 0.5))


_TOY_REFERENCES = """
import sys
from dreamfusion.config import load_config
from dreamfusion.pipeline.build import build_prior
prior = build_prior(load_config("toy", sys.argv[1:]))
images = prior.references(prior.parse("a yellow duck"), 64)
print(float(images.double().sum()), tuple(images.shape))
"""


def test_two_workers_rendering_the_same_toy_references_both_succeed_and_agree(tmp_path):
    env = {**os.environ, "DREAMFUSION_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", _TOY_REFERENCES, "guidance.references=64",
                               "height=32", "width=32"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert outs[0][0] == outs[1][0] and outs[0][0].strip()
    assert len(list((tmp_path / "cache" / "toy").glob("*.safetensors"))) == 1


_STALE_LOCK = """
from dreamfusion import kernels
from dreamfusion.nerf.hashgrid_cpp import SOURCE
folder = kernels._build_dir("hashgrid_cpu", SOURCE, True)
folder.mkdir(parents=True, exist_ok=True)
(folder / "lock").write_text("")    # what torch's builder leaves when it is killed mid-build
assert kernels.build("hashgrid_cpu", SOURCE, True) is not None
print("built")
"""


def test_a_build_killed_midway_does_not_hang_the_next_one(tmp_path):
    """torch waits for ever on the ``lock`` file a killed build leaves; ours removes it."""
    proc = subprocess.run([sys.executable, "-c", _STALE_LOCK], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0 and "built" in proc.stdout, proc.stderr


def test_executor_ray_without_ray_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)          # as if it were not installed
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red cube\n")
    runs = tmp_path / "runs"
    assert main(["batch", str(prompts), "--executor", "ray", "--runs", str(runs)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install -e ".[ray]"' in err
    assert not runs.exists()


def test_a_run_asks_ray_for_a_gpu_where_its_device_would_be_cuda():
    from dreamfusion.bench.fanout import RayExecutor

    executor = RayExecutor(cpus_per_run=1)
    executor.cluster_gpus = 8.0
    assert [executor.gpus_for(d) for d in ("cuda", "cuda:1", "auto", "cpu")] == [1, 1, 1, 0]
    executor.cluster_gpus = None                    # a CPU-only cluster
    assert [executor.gpus_for(d) for d in ("cuda", "auto", "cpu")] == [1, 0, 0]


def test_an_exception_inside_a_task_is_reported_once_not_as_a_lost_worker(ray_cluster):
    from dreamfusion.bench.fanout import RayExecutor

    # a lambda travels by value: the workers cannot import this test module
    ref = ray.remote(lambda: 1 / 0).options(max_retries=3, retry_exceptions=False).remote()
    outcome = RayExecutor(cpus_per_run=1)._result(ref)
    assert outcome.state == "failed" and outcome.error.startswith("ZeroDivisionError:")
    assert "\n" not in outcome.error
