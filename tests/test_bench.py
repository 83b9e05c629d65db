import json

from dreamfusion.cli import main


def test_bench_toy_writes_tables_and_resumes(fast_overrides, tmp_path, capsys):
    args = ["bench", "toy", "--prompts", "a green cylinder", "--results", str(tmp_path / "res"),
            "--runs", str(tmp_path / "runs"), *fast_overrides]
    assert main(args) == 0
    table = (tmp_path / "res" / "toy.md").read_text()
    data = json.loads((tmp_path / "res" / "toy.json").read_text())
    assert "| a green cylinder | 0 |" in table and "bar" in table
    row = data["rows"][0]
    assert 0.0 <= row["silhouette_iou"] <= 1.0 and data["config"]["steps"] == 6
    ckpt = tmp_path / "runs" / "a-green-cylinder-seed0" / "checkpoint.pt"
    stamp = ckpt.stat().st_mtime_ns
    assert main(args) == 0                     # a finished run is not trained again
    assert ckpt.stat().st_mtime_ns == stamp
    assert json.loads((tmp_path / "res" / "toy.json").read_text())["rows"] == data["rows"]


def test_bench_refuses_a_bad_prompt_before_any_run(tmp_path, capsys):
    code = main(["bench", "toy", "--prompts", "a red cube", "a red hamburger",
                 "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "res")])
    assert code == 2 and "hamburger" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "res").exists()
