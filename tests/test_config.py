import pytest

from dreamfusion.config import config_keys, load_config
from dreamfusion.errors import UserError


def test_default_config_loads_and_overrides_apply():
    cfg = load_config("toy", ["steps=5", "nerf.grid.n_levels=4", "camera.fov=[30, 35]",
                              "export.threshold=12.5", "background.kind=learned"])
    assert cfg.steps == 5 and cfg.nerf.grid.n_levels == 4
    assert list(cfg.camera.fov) == [30.0, 35.0]
    assert cfg.export.threshold == "12.5" and cfg.background.kind == "learned"
    assert cfg.guidance.prior == "toy"


def test_every_key_is_overridable():
    keys = config_keys()
    assert "nerf.grid.table_size_log2" in keys and "prompt.views" in keys
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize("override, fragments", [
    ("nerf.grd.n_levels=4", ["nerf.grd.n_levels", "did you mean 'nerf.grid.n_levels'"]),
    ("stepz=4", ["stepz", "'steps'"]),
    ("steps=abc", ["steps"]),
    ("steps=-5", ["steps", "must be in [1, 10000000], got -5"]),
    ("height=0", ["height"]),
    ("guidance.t_min=0.9", ["t_min"]),
    ("shading.albedo=0.9", ["shading", "sum"]),
    ("guidance.schedule=cosine", ["guidance.schedule"]),
    ("camera.elevation=[50, 10]", ["camera.elevation"]),
    ("steps", ["key.sub=value"]),
])
def test_bad_overrides_name_the_key(override, fragments):
    with pytest.raises(UserError) as info:
        load_config("toy", [override])
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_config_files(tmp_path):
    good = tmp_path / "mine.yaml"
    good.write_text("steps: 7\nnerf:\n  hidden: 8\n")
    cfg = load_config(str(good))
    assert cfg.steps == 7 and cfg.nerf.hidden == 8
    bad_key = tmp_path / "bad.yaml"
    bad_key.write_text("nerf:\n  hiden: 8\n")
    with pytest.raises(UserError, match="nerf.hiden.*nerf.hidden"):
        load_config(str(bad_key))
    bad_type = tmp_path / "type.yaml"
    bad_type.write_text("steps: many\n")
    with pytest.raises(UserError, match="steps"):
        load_config(str(bad_type))
    with pytest.raises(UserError, match="not found"):
        load_config(str(tmp_path / "missing.yaml"))
    broken = tmp_path / "broken.yaml"
    broken.write_text("steps: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(str(broken))
