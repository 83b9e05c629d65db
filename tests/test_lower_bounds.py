"""Which versions of the model libraries this test run imports: CI runs the guidance tests a
second time with the lower bounds that setup.py declares (``.ci/run``), and this says so."""
import re
from pathlib import Path

from importlib.metadata import version


def _declared() -> dict[str, str]:
    setup = (Path(__file__).resolve().parents[1] / "setup.py").read_text(encoding="utf-8")
    return {name.lower(): low for name, low in re.findall(r'"([A-Za-z_]+)>=([\d.]+)"', setup)}


def test_the_libraries_we_call_directly_are_at_or_above_their_declared_minimum():
    declared = _declared()
    for name in ("diffusers", "transformers", "huggingface_hub", "accelerate", "scipy", "gsplat",
                 "nerfacc"):
        have = tuple(int(p) for p in re.findall(r"\d+", version(name))[:3])
        low = tuple(int(p) for p in declared[name].split("."))
        assert have[:len(low)] >= low, (name, version(name), declared[name])


def test_the_ci_lower_bound_pass_uses_exactly_the_declared_minimums():
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text(encoding="utf-8")
    pinned = dict(re.findall(r'"([A-Za-z_]+)==([\d.]+)"', ci))
    declared = _declared()
    for name in ("diffusers", "transformers", "huggingface_hub", "accelerate", "scipy", "gsplat",
                 "nerfacc"):
        assert pinned[name].startswith(declared[name]), (name, pinned[name], declared[name])
