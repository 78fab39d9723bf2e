"""scripts/ab_builds.py: the A/B harness of cuda/hopper/NOTES.md. Its summary, the staging of a build
beside this checkout's package, the round-robin over builds (with the GPU child replaced) and its
argument errors; the timing itself needs an H100/H200."""
import importlib.machinery
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_SCRIPTS = ROOT / "scripts"
if not (_SCRIPTS / "ab_builds.py").exists():
    pytest.skip("needs the source checkout (scripts/)", allow_module_level=True)
sys.path.insert(0, str(_SCRIPTS))
import ab_builds as ab  # noqa: E402


def test_summary_takes_the_fastest_round_and_compares_to_the_first_build():
    recs = [("base", "flux", 410.0, 400.0), ("new", "flux", 396.0, 401.0),
            ("base", "flux", 408.0, 402.0), ("new", "flux", 399.0, 399.0),
            ("base", "16k", 6700.0, 8800.0)]
    table = ab.summarize(recs).splitlines()
    assert table[0].startswith("| shape | base us (xbase)") and len(table) == 4
    assert "| flux | 408.0 (1.000), 0.99 | 396.0 (0.971), 1.01 |" == table[2]
    assert table[3] == "| 16k | 6700.0 (1.000), 1.31 | - |"


def test_stage_puts_the_extension_beside_a_copy_of_the_package(tmp_path):
    ext = tmp_path / "fin11.so"
    ext.write_bytes(b"not really an extension")
    where = ab.stage(ext, tmp_path / "0")
    pkg = where / "sageattn3"
    assert (pkg / "__init__.py").is_file()
    exts = sorted(p.name for p in pkg.glob("_C*"))
    assert exts == ["_C" + importlib.machinery.EXTENSION_SUFFIXES[0]]
    assert (pkg / exts[0]).read_bytes() == b"not really an extension"


def test_run_alternates_the_builds_and_reverses_every_other_round(tmp_path, monkeypatch, capsys):
    for n in ("a", "b"):
        (tmp_path / f"{n}.so").write_bytes(f"extension {n}".encode())
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    order = []

    def fake(cmd, env, cwd, capture_output, text):
        name, shapes = cmd[-2], cmd[-1].split(",")
        order.append(name)
        first, rest = env["PYTHONPATH"].split(os.pathsep)
        assert rest == "/elsewhere" and env["SA3_AB_STAGED"] == first
        (ext,) = Path(first, "sageattn3").glob("_C*")
        assert ext.read_bytes() == f"extension {name}".encode()  # each process gets its own build
        out = "".join(f"AB {name} {s} {100.0 if name == 'a' else 90.0} 120.0\n" for s in shapes)
        return subprocess.CompletedProcess(cmd, 0, stdout=out, stderr="")

    monkeypatch.setattr(ab.subprocess, "run", fake)
    ab.main(["run", str(tmp_path / "a.so"), str(tmp_path / "b.so"), "--shapes", "flux,s1k", "--rounds", "3"])
    assert order == ["a", "b", "b", "a", "a", "b"]
    out = capsys.readouterr().out
    assert "| flux | 100.0 (1.000), 1.20 | 90.0 (0.900), 1.33 |" in out
    assert out.count("round 3:") == 4


def test_a_run_without_results_says_so():
    assert ab.summarize([]) == "(no results)"


def test_a_failing_build_stops_the_run_with_its_error(tmp_path, monkeypatch):
    (tmp_path / "a.so").write_bytes(b"x")
    monkeypatch.setattr(ab.subprocess, "run",
                        lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, stdout="", stderr="ImportError: boom"))
    with pytest.raises(SystemExit, match="a failed in round 1:\nImportError: boom"):
        ab.main(["run", str(tmp_path / "a.so"), "--shapes", "flux", "--rounds", "1"])


@pytest.mark.parametrize("argv,msg", [
    ([], "usage"),
    (["run", "x.so", "--shapes", "flux,nope"], "unknown shapes \\['nope'\\]"),
    (["run", "x.so", "--rounds", "0"], "--rounds must be a positive integer"),
    (["run", "x.so", "--shapes"], "--shapes needs a value"),
    (["run", "x.so", "--fast"], "unknown option --fast"),
    (["run", "missing/x.so", "--shapes", "flux"], "no such extension file"),
    (["run", "a/x.so", "b/x.so"], "distinct file names"),
    (["build"], "usage"),
    (["build", "o.so", "--shapes", "flux"], "usage"),
])
def test_bad_arguments_say_what_is_wrong(argv, msg):
    with pytest.raises(SystemExit, match=msg):
        ab.main(argv)


def test_shapes_name_their_key_length_where_it_differs():
    """wan-cross (the Wan 14B step's cross-attention) times 82,992 queries on 512 keys; the
    self-attention shapes keep Sk = Sq."""
    assert ab.SHAPES["wan-cross"] == (1, 40, 82992, 128, False, 512)
    assert all(len(s) == 5 for n, s in ab.SHAPES.items() if n != "wan-cross")


def test_short_key_sweep_lists_its_cases_without_a_gpu():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("on a GPU the sweep times for a minute; run it by hand")
    r = subprocess.run([sys.executable, str(_SCRIPTS / "sweep_short_keys.py")], capture_output=True, text=True,
                       cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0 and "no CUDA device" in r.stdout and "512" in r.stdout, r.stderr


def test_short_key_sweep_takes_its_shapes_from_the_command_line():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("on a GPU the sweep times; run it by hand")
    r = subprocess.run([sys.executable, str(_SCRIPTS / "sweep_short_keys.py"), "--queries", "8192x24,4608x40",
                        "--keys", "1536,2560"], capture_output=True, text=True, cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, r.stderr
    assert "((8192, 24), (4608, 40))" in r.stdout and "(1536, 2560)" in r.stdout, r.stdout
