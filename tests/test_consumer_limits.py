"""Consumer-limits mode (sageattn3/_limits.py, csrc/sa3_limits.c) and the mma family's choice of
configuration per GPU class (cuda/mma/mma_configs.h), on CPU: what-if device facts through the
families' own supports()/config(), the setting's parsing and plumbing, info() and check reporting.
The same paths on the H200: tests/test_gpu_consumer.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

import sageattn3  # noqa: E402
from sageattn3 import _dispatch, _info, _limits, _selftest  # noqa: E402
from sageattn3._ext import _C  # noqa: E402

pytestmark = pytest.mark.skipif(_C is None, reason="needs the C extension")

H200 = (90, 132, 232448, 233472)          # sm_90, its own limits
RTX5090 = (120, 170, 101376, 102400)      # a real RTX 5090's facts
H200_AS_5090 = (120, 132, 101376, 102400, 90)  # the H200 under SAGEATTN3_CONSUMER_LIMITS=sm120
A100 = (80, 108, 166912, 167936)


def _prob(d):
    x = torch.zeros((1, 2, 64, d), dtype=torch.float16)
    return _C.problem(x, x, x)


def _mma_on_sm90_or_skip():
    fams = {f["name"]: f["archs"] for f in _C.families()}
    if "mma" not in fams or not any(a.startswith("90") for a in fams["mma"]):
        pytest.skip("needs the mma family compiled for sm_90 (the what-if devices run its binary)")


# ----------------------------------------------------------------------------- the setting
@pytest.mark.parametrize("raw,want", [("sm120", "sm120"), ("SM_89", "sm89"), (" sm86 ", "sm86"), ("", None),
                                      ("0", None), ("off", None), (None, None)])
def test_parse(raw, want):
    assert _limits.parse(raw) == want


@pytest.mark.parametrize("raw", ["sm90", "sm100", "rtx5090", "1"])
def test_parse_rejects_unknown_profiles_naming_the_choices(raw):
    with pytest.raises(ValueError, match="sm86, sm89, sm120"):
        _limits.parse(raw)


def test_profiles_are_the_geforce_limits():
    p = _limits.profiles()
    assert set(p) == {"sm86", "sm89", "sm120"}
    for name, f in p.items():
        assert f["sm_arch"] == int(name[2:]) and f["smem_optin"] == 99 * 1024 and f["smem_per_sm"] == 100 * 1024


def test_c_setting_validates_and_returns_the_previous_profile():
    prev = _C.set_consumer_limits(None)
    try:
        assert _C.set_consumer_limits("sm89") is None
        assert _C.set_consumer_limits("sm120") == "sm89"
        with pytest.raises(ValueError, match="unknown profile 'sm7'"):
            _C.set_consumer_limits("sm7")
        with pytest.raises(TypeError, match="str or None"):
            _C.set_consumer_limits(120)
        assert _C.set_consumer_limits(None) == "sm120"  # a failed call left it unchanged
    finally:
        _C.set_consumer_limits(prev)


def test_set_mode_drops_cached_facts_and_self_test_decisions():
    prev = _limits.set_mode(None)
    try:
        _dispatch._device_cache[7] = {"sm_arch": 90, "families": ["mma"]}
        _selftest.trusted.add((7, "mma"))
        assert _limits.set_mode("sm120") is None and _limits.mode() == "sm120"
        assert 7 not in _dispatch._device_cache and (7, "mma") not in _selftest.trusted
        assert "sm_120" in _limits.describe() and "101376" in _limits.describe()
        assert _limits.set_mode(None) == "sm120" and _limits.describe() is None
    finally:
        _limits.set_mode(prev)


def _run(code, **env):
    e = {k: v for k, v in os.environ.items() if k != _limits.ENV}
    e.update(env)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, timeout=120)
    assert r.returncode == 0, r.stderr
    return r


def test_environment_variable_applies_at_import_and_a_bad_value_warns():
    code = "from sageattn3 import _limits, _ext; print(_limits.mode(), _ext._C.set_consumer_limits(None))"
    assert _run(code, SAGEATTN3_CONSUMER_LIMITS="sm120").stdout.split() == ["sm120", "sm120"]
    r = _run(code, SAGEATTN3_CONSUMER_LIMITS="sm121")
    assert r.stdout.split() == ["None", "None"] and "SAGEATTN3_CONSUMER_LIMITS='sm121'" in r.stderr


def test_info_and_check_report_the_mode():
    prev = _limits.set_mode("sm89")
    try:
        d = sageattn3.info()
        assert d["consumer_limits"] and "sm_89" in d["consumer_limits"]
        assert "CONSUMER LIMITS" in _info.format_info(d)
    finally:
        _limits.set_mode(prev)
    assert sageattn3.info()["consumer_limits"] is None
    r = _run("import sageattn3._check as c, sys; sys.exit(c.main(['--cpu', '--json', '-']))",
             SAGEATTN3_CONSUMER_LIMITS="sm120")
    assert json.loads(r.stdout)["consumer_limits"] == "sm120" and "CONSUMER LIMITS" in r.stderr


# ----------------------------------------------------------------------------- configurations per class
@pytest.mark.parametrize("facts", [RTX5090, H200_AS_5090])
def test_99kb_devices_get_the_small_configurations(facts):
    _mma_on_sm90_or_skip()
    if facts[-1] != 90 and not any(a.startswith("120") for f in _C.families() if f["name"] == "mma"
                                   for a in f["archs"]):
        facts = H200_AS_5090  # this build has no sm_120 binary: the same facts as seen from the H200
    cfg = {(d, pv): _prob(d).config("mma", pv, facts=facts) for d in (64, 128) for pv in ("fp16", "fp8")}
    assert all(c.startswith("small-smem") for c in cfg.values()), cfg
    assert "2 K/V stages" in cfg[128, "fp8"] and "2 CTA(s) per SM here" in cfg[128, "fp8"]  # 49152 B
    assert "8 warps x 1 m-tiles" in cfg[128, "fp16"]  # the no-spill 16-bit row
    for d in (64,):
        assert "2 CTA(s) per SM here" in cfg[d, "fp16"] and "2 CTA(s) per SM here" in cfg[d, "fp8"]
    assert _prob(256).config("mma", "fp8", facts=facts).startswith("small-smem DP=256 FP8")
    key, why = _prob(256).supports("mma", "fp16", facts=facts)
    assert key == "smem_limit" and "101376" in why and "pv='fp8' serves it" in why
    # fp16-accumulated FP8 (the GeForce default): one m-tile at D=128 (no spills), none at D=256,
    # where "pv_mode" hands the call to the plan's next entry, pv="fp8"
    assert _prob(64).config("mma", "fp8_f16acc", facts=facts).startswith("small-smem DP=64 FP8 (fp16-accumulated)")
    assert "4 warps x 1 m-tiles" in _prob(128).config("mma", "fp8_f16acc", facts=facts)
    key, why = _prob(256).supports("mma", "fp8_f16acc", facts=facts)
    assert key == "pv_mode" and "pv='fp8' serves it" in why
    assert _prob(192).supports("mma", "fp16", facts=facts)[0] == "smem_limit"  # pads to DP=256


def test_large_devices_keep_the_large_configurations():
    _mma_on_sm90_or_skip()
    for d in (64, 128, 256):
        for pv in ("fp16", "fp8", "fp8_f16acc"):
            assert _prob(d).config("mma", pv, facts=H200).startswith("large-smem"), (d, pv)
    assert "2 CTA(s) per SM here" in _prob(256).config("mma", "fp16", facts=H200)  # 114688 B x 2 in 228 KB
    a100_as_h200 = A100 + (90,)  # an A100's 163 KB: every large row fits, it stays large
    assert _prob(128).config("mma", "fp16", facts=a100_as_h200).startswith("large-smem")
    assert "1 CTA(s) per SM here" in _prob(128).config("mma", "fp16", facts=a100_as_h200)


def test_config_raises_where_supports_declines_and_a_tiny_limit_is_refused():
    _mma_on_sm90_or_skip()
    with pytest.raises(_C.UnsupportedError, match="^smem_limit: "):
        _prob(256).config("mma", "fp16", facts=H200_AS_5090)
    tiny = (90, 132, 48 * 1024, 64 * 1024)  # below even the small rows at D=128
    key, why = _prob(128).supports("mma", "fp16", facts=tiny)
    assert key == "smem_limit" and "49152" in why


def test_hopper_declines_under_consumer_limits_and_is_left_out_of_check():
    fams = {f["name"]: f["archs"] for f in _C.families()}
    if "hopper" not in fams:
        pytest.skip("no hopper family in this build")
    key, why = _prob(128).supports("hopper", "fp8", facts=H200_AS_5090)
    assert key == "arch" and "sm_90 only" in why
    dev = {"sm_arch": 120, "sm_count": 132, "smem_optin": 101376, "smem_per_sm": 102400, "hw_arch": 90,
           "families": ["hopper", "mma"]}
    assert _dispatch.declines_arch("hopper", dev)
    here = _dispatch.families_here(dev)
    assert "hopper" not in here and ("mma" in here) == ("mma" in fams)
    dev90 = dict(dev, sm_arch=90, smem_optin=232448, smem_per_sm=233472)
    assert "hopper" in _dispatch.families_here(dev90)


def test_policy_on_the_reported_arch():
    from sageattn3 import _policy

    assert _policy.plan(120, "auto", "auto") == (("nvfp4", "fp16"), ("mma", "fp8_f16acc"), ("mma", "fp8"))
    assert _policy.plan(89, "auto", "auto") == (("mma", "fp8_f16acc"), ("mma", "fp8"))
    assert ("mma", 120) not in _policy.VERIFIED and ("nvfp4", 120) not in _policy.VERIFIED  # so the self-test runs under the mode too
