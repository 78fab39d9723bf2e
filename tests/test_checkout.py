"""A source checkout whose _C is not built, next to an installed copy (what a non-editable
`pip install .` leaves: running `python -m ...` inside the checkout imports the checkout).

`import sageattn3` / `python -m sageattn3` there must fail with a message naming the cause
and both places, not with "circular import" and an advice to install the CUDA toolkit;
`python -m pytest` there tests the installed copy. Simulated in a temporary folder: a
checkout (setup.py, pyproject.toml, csrc/, the package's .py files, tests/conftest.py) and
an "installed" copy (the package under test, _C included) on PYTHONPATH."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import sageattn3

PKG = Path(sageattn3.__file__).resolve().parent
TESTS = Path(__file__).resolve().parent


def _copy_py(src: Path, dst: Path) -> None:
    for f in src.rglob("*.py"):
        out = dst / f.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, out)


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkout_vs_installed")
    checkout, site = root / "checkout", root / "site"
    (checkout / "csrc").mkdir(parents=True)
    (checkout / "setup.py").write_text("# stand-in\n")
    (checkout / "pyproject.toml").write_text("# stand-in\n")
    _copy_py(PKG, checkout / "sageattn3")
    (checkout / "tests").mkdir()
    shutil.copy(TESTS / "conftest.py", checkout / "tests" / "conftest.py")
    (checkout / "tests" / "test_which_copy.py").write_text(textwrap.dedent("""
        import sageattn3
        def test_imports_the_installed_copy():
            assert sageattn3._ext._C is not None
            print("IMPORTED", sageattn3.__file__)
    """))
    shutil.copytree(PKG, site / "sageattn3", ignore=shutil.ignore_patterns("__pycache__"))
    return checkout, site


def _run(args, cwd, site=None):
    """`python args` in `cwd` with only `site` as the installed copy. -S: no .pth files run, so an
    editable install's import hook (setuptools' __editable__ finder: what CI's `pip install -e .`
    leaves) can't send `import sageattn3` to the tree under test; the environment's
    site-packages stay reachable (numpy, pytest) as plain path entries after `site`."""
    import site as site_mod
    env = dict(os.environ)
    paths = ([str(site)] if site is not None else []) + [p for p in site_mod.getsitepackages() if os.path.isdir(p)]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return subprocess.run([sys.executable, "-S", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def _skip_if_installed_elsewhere(tmp):
    """The "no installed copy" cases need an environment without one (the suite may itself
    be testing a copy in site-packages)."""
    r = _run(["-c", "from importlib.machinery import PathFinder as P; print(P.find_spec('sageattn3'))"], tmp)
    if r.stdout.strip() != "None":
        pytest.skip("sageattn3 is installed in this environment: " + r.stdout.strip())


def _assert_clear_message(r, checkout, site):
    text = r.stdout + r.stderr
    assert r.returncode != 0, text
    assert "circular import" not in text, text
    assert "CUDA toolkit" not in text, text
    assert f"source checkout at {checkout / 'sageattn3'}" in text, text
    assert "is not built" in text and "pip install" in text and "--no-deps" in text, text
    if site is not None:
        assert f"installed copy is at {site / 'sageattn3'}" in text, text
    else:
        assert "no installed copy" in text, text


def test_import_in_unbuilt_checkout_names_the_cause(layout):
    checkout, site = layout
    _assert_clear_message(_run(["-c", "import sageattn3"], checkout, site), checkout, site)


def test_cli_in_unbuilt_checkout_names_the_cause(layout):
    checkout, site = layout
    _assert_clear_message(_run(["-m", "sageattn3", "info"], checkout, site), checkout, site)


def test_unbuilt_checkout_without_installed_copy(layout, tmp_path):
    checkout, _ = layout
    _skip_if_installed_elsewhere(tmp_path)
    _assert_clear_message(_run(["-c", "import sageattn3"], checkout), checkout, None)


def test_python_m_pytest_in_unbuilt_checkout_tests_the_installed_copy(layout):
    checkout, site = layout
    r = _run(["-m", "pytest", "-s", "-p", "no:cacheprovider", "tests"], checkout, site)  # no -q: the header
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"IMPORTED {site / 'sageattn3' / '__init__.py'}" in r.stdout, r.stdout
    assert "testing the installed copy" in r.stdout, r.stdout


def test_python_m_pytest_in_unbuilt_checkout_without_installed_copy_stops_clearly(layout, tmp_path):
    checkout, _ = layout
    _skip_if_installed_elsewhere(tmp_path)
    r = _run(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], checkout)
    assert r.returncode == 4, r.stdout + r.stderr  # pytest's usage error: one message, no collection errors
    _assert_clear_message(r, checkout, None)


def test_installed_copy_from_elsewhere_works(layout, tmp_path):
    _, site = layout
    r = _run(["-c", "import sageattn3; print(sageattn3._ext._C is not None, sageattn3.__file__)"], tmp_path, site)
    assert r.returncode == 0 and r.stdout.startswith("True"), r.stdout + r.stderr


def test_broken_install_still_imports_and_says_why(layout, tmp_path):
    """Not a checkout (no setup.py beside it): a missing _C degrades to SDPA with the reason."""
    site = tmp_path / "broken"
    _copy_py(PKG, site / "sageattn3")
    r = _run(["-c", "import sageattn3; print('LOAD_ERROR', sageattn3._ext.LOAD_ERROR)"], tmp_path, site)
    assert r.returncode == 0, r.stderr
    assert "LOAD_ERROR sageattn3._C could not be imported" in r.stdout and "--no-deps" in r.stdout, r.stdout
    assert r.stderr.count("NoKernelsWarning") == 1, r.stderr
