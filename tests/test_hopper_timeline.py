"""scripts/hopper_timeline.py: its text edits still apply to the hopper kernel in this checkout
(each anchor once), and the instrumented kernel compiles for sm_90a where nvcc is found. The
timeline itself needs an H100/H200 (cuda/hopper/NOTES.md, v8)."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_SCRIPTS = ROOT / "scripts"
if not (_SCRIPTS / "hopper_timeline.py").exists() or not (ROOT / "cuda" / "hopper").is_dir():
    pytest.skip("needs the source checkout (scripts/, cuda/hopper/)", allow_module_level=True)
sys.path.insert(0, str(_SCRIPTS))
import hopper_timeline as tl  # noqa: E402
import sass_mma_counts as _counts  # noqa: E402  (its toolkit lookup: CUDA_HOME / CUDA_PATH / PATH)


def _instrumented() -> str:
    return tl.instrument((ROOT / tl.KERNEL).read_text())


def test_edits_apply_once_each():
    src = (ROOT / tl.KERNEL).read_text()
    out = _instrumented()
    assert out != src and out.count("clock64()") == src.count("clock64()") + 9
    assert "for (int i = 0; i < 16; ++i) tl[i] = v[i];" in out and len(tl.STAMPS) == 16


@pytest.mark.parametrize("rows", [128, 192])
def test_stamps_are_read_at_each_ctas_first_row(rows):
    """Two-consumer CTAs cover 128 rows, three-consumer ones 192: the parser takes the row count
    from CTA 0's last stamp and reads every CTA's stamps from its first row."""
    torch = pytest.importorskip("torch")
    heads, s, n = 2, 4 * rows, len(tl.STAMPS)
    raw = torch.full((heads, s), -1, dtype=torch.int32)
    for h in range(heads):
        for c in range(4):
            raw[h, c * rows:c * rows + n] = torch.arange(n, dtype=torch.int32) + 100 * (4 * h + c)
            raw[h, c * rows + n - 1] = rows
    st = tl.parse_stamps(torch, raw)
    assert st["start"].tolist() == [100 * i for i in range(8)]
    assert st["smid"].tolist() == [100 * i + tl.STAMPS.index("smid") for i in range(8)]
    assert st["rows"].tolist() == [rows] * 8


def test_no_stamps_fails_loudly():
    torch = pytest.importorskip("torch")
    with pytest.raises(SystemExit, match="no stamps"):
        tl.parse_stamps(torch, torch.zeros((1, 256), dtype=torch.int32))


def test_a_missing_anchor_fails_loudly():
    with pytest.raises(SystemExit, match="anchor found 0 times"):
        tl.instrument("// not the kernel\n")


def test_instrumented_kernel_compiles(tmp_path):
    bin_dir = _counts.toolkit_bin()
    if bin_dir is None or not (bin_dir / "nvcc").exists():
        pytest.skip("nvcc not found (CUDA_HOME, CUDA_PATH or PATH)")
    nvcc = str(bin_dir / "nvcc")
    # --list-gpu-code lists sm_90, not its arch-specific sm_90a
    if "sm_90" not in subprocess.run([nvcc, "--list-gpu-code"], capture_output=True, text=True).stdout.split():
        pytest.skip("this nvcc lacks sm_90")
    src = tmp_path / "hopper_attn_timeline.cu"
    src.write_text(_instrumented())
    res = subprocess.run([nvcc, "-c", "-O3", "-std=c++17", "--expt-relaxed-constexpr", "-I", str(ROOT / "cuda/common"),
                          "-I", str(ROOT / "cuda/hopper"), "-gencode=arch=compute_90a,code=sm_90a", str(src),
                          "-o", str(tmp_path / "k.o")], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
