"""benchmarks/bench_ring_chunks.py off the GPU: its uneven cuts, and its measuring code on a
small CPU problem with a stand-in timer (the chunked, merged result must equal the full call)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_ring_chunks.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_ring_chunks", PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("n, parts", [(82992, 2), (82992, 4), (82992, 8), (9, 8), (101, 3), (5, 1)])
def test_uneven_cuts_cover_all_keys(bench, n, parts):
    cuts = bench.uneven_cuts(n, parts)
    sizes = [b - a for a, b in zip(cuts[:-1], cuts[1:])]
    assert cuts[0] == 0 and cuts[-1] == n and len(sizes) == parts and min(sizes) >= 1
    if n >= 100 * parts and parts > 1:
        assert max(sizes) > 1.2 * min(sizes)  # really uneven


def test_measure_on_cpu(bench):
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 97, 4, 32, generator=gen) for _ in range(3))
    calls = []

    def timed(fn):
        fn()
        calls.append(fn)
        return {"ms": 1.0}

    res = bench.measure(torch, q, k, v, [1, 2, 4], timed)
    assert [e["parts"] for e in res["splits"]] == [1, 2, 4]
    for e in res["splits"]:
        assert sum(e["chunk_lengths"]) == 97 and len(e["steps"]) == e["parts"]
        assert e["out_max_err_vs_full"] < 1e-5 and e["lse_max_err_vs_full"] < 1e-5, e
    assert res["splits"][2]["total_vs_full"] == 1.0 and len(calls) == 1 + (1 + 1) + (2 + 2) + (4 + 2)


def test_main_without_cuda_exits_cleanly(bench, capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert bench.main([]) == 0
    assert "no CUDA device" in capsys.readouterr().out
