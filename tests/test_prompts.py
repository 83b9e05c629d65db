import math

import pytest

from dreamfusion.guidance.prompts import PromptSettings, perp_neg_weights, target_for
from dreamfusion.guidance.views import ViewRule, view_of, view_weights

RULES = (ViewRule("overhead", ", overhead view", (0.0,), 180.0, 60.0, 90.0),
         ViewRule("front", ", front view", (0.0,), 45.0),
         ViewRule("back", ", back view", (180.0,), 45.0),
         ViewRule("side", ", side view", (90.0, -90.0), 45.0))


@pytest.mark.parametrize("azimuth, elevation, view", [
    (10.0, 20.0, "front"), (-44.0, 0.0, "front"), (-170.0, 0.0, "back"), (179.0, 0.0, "back"),
    (-80.0, 0.0, "side"), (90.0, -10.0, "side"), (100.0, 75.0, "overhead")])
def test_view_labels(azimuth, elevation, view):
    assert view_of(azimuth, elevation, RULES).name == view


@pytest.mark.parametrize("azimuth, elevation, weights", [
    (0.0, 10.0, {"front": 1.0}),
    (30.0, 10.0, {"front": 2 / 3, "side": 1 / 3}),
    (-45.0, 10.0, {"front": 0.5, "side": 0.5}),
    (90.0, 10.0, {"side": 1.0}),
    (135.0, 10.0, {"side": 0.5, "back": 0.5}),
    (-160.0, 0.0, {"back": 7 / 9, "side": 2 / 9}),
    (180.0, 0.0, {"back": 1.0}),
    (30.0, 80.0, {"overhead": 1.0}),
])
def test_interpolation_weights(azimuth, elevation, weights):
    got = view_weights(azimuth, elevation, RULES)
    assert got.keys() == weights.keys()
    for name, w in weights.items():
        assert got[name] == pytest.approx(w)


def test_targets_for_each_remedy():
    base = PromptSettings("a yellow duck", RULES, view_dependent=False)
    assert target_for(100.0, 10.0, base).positive == (("a yellow duck", 1.0),)
    views = PromptSettings("a yellow duck", RULES)
    t = target_for(100.0, 10.0, views)
    assert (t.view, t.positive, t.negatives) == ("side", (("a yellow duck, side view", 1.0),), ())
    interp = PromptSettings("a yellow duck", RULES, interpolate=True)
    t = target_for(30.0, 10.0, interp)
    assert dict(t.positive) == pytest.approx({"a yellow duck, front view": 2 / 3,
                                             "a yellow duck, side view": 1 / 3})
    perp = PromptSettings("a yellow duck", RULES, interpolate=True, perp_neg=True,
                          perp_neg_weight=2.0)
    t = target_for(30.0, 10.0, perp)
    r = 2 / 3               # threestudio's position between side (0) and front (1)
    assert dict(t.negatives) == pytest.approx({
        "a yellow duck, front view": 2.0 * (4 * math.exp(-r / 2) - 2.426),
        "a yellow duck, side view": 2.0 * (4 * math.exp(-(1 - r) / 2) - 2.426)})
    assert target_for(0.0, 80.0, perp).negatives == ()          # overhead: no Perp-Neg


@pytest.mark.parametrize("azimuth, expected", [
    (0.0, {"side": 1.574}),                         # the front's own prompt is no negative
    (90.0, {"front": 1.574}), (-90.0, {"front": 1.574}),
    (180.0, {"front": 1.967, "side": 0.394})])
def test_perp_neg_weights_follow_the_paper_and_threestudio(azimuth, expected):
    settings = PromptSettings("a duck", RULES, perp_neg=True)
    got = {name.split(", ")[1].split()[0]: w
           for name, w in target_for(azimuth, 10.0, settings).negatives}
    assert got == pytest.approx(expected, abs=1e-3)
    # continuous where the anchors meet, whichever side the camera is on
    a, b = perp_neg_weights(89.999), perp_neg_weights(90.001)
    assert a["front"] == pytest.approx(b["front"], abs=1e-3)
    assert a["side"] == pytest.approx(b["side"], abs=1e-3)
