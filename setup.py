"""Build sageattn3._C: C11 sources from csrc/, plus CUDA kernels from cuda/ when nvcc is found.

Kernel families are plug-ins: every folder cuda/<name>/ with an ARCHS file (targets, e.g.
"80 86 89 90a 120a") is a family. Its .cu files are compiled only for the targets that are both
requested and listed in its ARCHS (matched on the arch number; the family's spelling wins, so
sm_90a-only code is never built for another target); a family left with no target is not
built at all. cuda/common/*.cu is compiled whenever CUDA is. The build writes
sa3_build_config.h into build_temp (never into the tree): the families compiled, as the
X-macro SA3_FAMILIES(X), and per family SA3_FAMILY_ARCHS_<name> / SA3_FAMILY_TARGETS_<name>;
csrc/sa3_registry.c picks the families up from it.

Environment:
  SAGEATTN3_CUDA=0         build without CUDA kernels (the package then serves every call with SDPA)
  SAGEATTN3_CUDA_ARCHS     e.g. "80;86;89;90a;120a" (default: those of that list this nvcc supports)
  SAGEATTN3_CUDA_PTX       also embed PTX of compute_<N> (e.g. 100) in every family with a portable
                           (non-"a") target, so GPUs newer than every cubin JIT it; "none" for none.
                           Default: 100 with the default arch list, none when SAGEATTN3_CUDA_ARCHS is set
  CUDA_HOME / CUDA_PATH    CUDA toolkit root (else the directory of `nvcc` on PATH)
  SAGEATTN3_NVCC_THREADS   parallel nvcc jobs (default: CPU count)
No torch at build time: kernels are plain CUDA with extern "C" launchers.

Strings the C code reports (CUDA version, archs, PTX, host compiler, why no CUDA) go through a
second generated header, sa3_build_info.h, not through -D (quoting differs between compilers).
On Windows, nvcc gets cl.exe from the MSVC installation setuptools itself finds (-ccbin and the
vcvarsall environment), after checking MSVC and the Windows SDK are new enough for C11.
"""
from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
DEFAULT_ARCHS = ["80", "86", "89", "90a", "120a"]
# PTX runs on any GPU of compute capability >= its target: sm_100 is the oldest GPU the default
# cubins miss, so compute_100 serves sm_100/103/110/120/121 and later ones.
DEFAULT_PTX = "100"
ALWAYS_C = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").glob("*.c") if p.name != "sa3_nocuda.c")
CUDA_DIR = ROOT / "cuda"
GEN_SUBDIR = "sa3_generated"  # under build_temp: sa3_build_config.h


def log(msg: str) -> None:
    print(f"sageattn3 build: {msg}", file=sys.stderr, flush=True)


def find_cuda() -> tuple[str | None, str]:
    """(CUDA root or None, reason when None)."""
    if os.environ.get("SAGEATTN3_CUDA", "1").strip().lower() in ("0", "false", "no", "off"):
        return None, "SAGEATTN3_CUDA=0 was set at build time"
    for var in ("CUDA_HOME", "CUDA_PATH"):
        root = os.environ.get(var)
        if root and (Path(root) / "bin" / ("nvcc.exe" if os.name == "nt" else "nvcc")).exists():
            return root, ""
    nvcc = shutil.which("nvcc")
    if nvcc:
        # nvcc on PATH may be a wrapper script: ask it where its toolkit is (TOP=...).
        res = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", os.devnull], capture_output=True, text=True)
        for line in (res.stdout + res.stderr).splitlines():
            if "TOP=" in line:
                top = Path(line.split("TOP=", 1)[1].strip().strip('"')).resolve()
                if (top / "bin").exists():
                    return str(top), ""
        return str(Path(nvcc).resolve().parent.parent), ""
    return None, "nvcc was not found at build time (set CUDA_HOME or put nvcc on PATH, then reinstall)"


def nvcc_path(root: str) -> str:
    return str(Path(root) / "bin" / ("nvcc.exe" if os.name == "nt" else "nvcc"))


def nvcc_version(root: str) -> str:
    out = subprocess.run([nvcc_path(root), "--version"], capture_output=True, text=True).stdout
    for token in out.replace(",", " ").split():
        if token.startswith("V") and token[1:2].isdigit():
            return token[1:]
    return "unknown"


def supported_archs(root: str) -> set[str]:
    res = subprocess.run([nvcc_path(root), "--list-gpu-code"], capture_output=True, text=True)
    return {line.strip()[3:] for line in res.stdout.split() if line.strip().startswith("sm_")}


def choose_archs(root: str) -> list[str]:
    wanted = os.environ.get("SAGEATTN3_CUDA_ARCHS")
    archs = [a.strip().replace("sm_", "") for a in (wanted.replace(",", ";").split(";") if wanted else DEFAULT_ARCHS) if a.strip()]
    have = supported_archs(root)
    if have:
        # --list-gpu-code names sm_90, not the arch-specific sm_90a: compare the base number
        missing = [a for a in archs if a.rstrip("af") not in have]
        if missing:
            log(f"nvcc does not support {missing}; skipping them")
        archs = [a for a in archs if a.rstrip("af") in have]
    return archs


def arch_base(arch: str) -> str:
    return arch.rstrip("af")


def target_code(arch: str) -> int:
    """10*arch + 1 for arch-specific targets (90a -> 901), + 2 for PTX (compute_100 -> 1002), as
    sa3_family_runs_on reads them."""
    if arch.startswith("compute_"):
        return 10 * int(arch[len("compute_"):]) + 2
    return 10 * int(arch_base(arch)) + (1 if arch != arch_base(arch) else 0)


def choose_ptx(root: str | None) -> str | None:
    """The PTX target ("100") or None, from SAGEATTN3_CUDA_PTX (see the module docstring)."""
    wanted = os.environ.get("SAGEATTN3_CUDA_PTX")
    if wanted is None:
        wanted = "" if os.environ.get("SAGEATTN3_CUDA_ARCHS") else DEFAULT_PTX
    wanted = wanted.strip().lower().replace("compute_", "").replace("sm_", "")
    if wanted in ("", "none", "0", "off"):
        return None
    if not wanted.isdigit():
        raise RuntimeError(f"SAGEATTN3_CUDA_PTX={wanted!r}: PTX needs a portable target such as 100 (an 'a' target's "
                           "PTX runs on that one GPU only)")
    if root:
        res = subprocess.run([nvcc_path(root), "--list-gpu-arch"], capture_output=True, text=True)
        have = {t.strip() for t in res.stdout.split()}
        if have and f"compute_{wanted}" not in have:
            log(f"nvcc does not support compute_{wanted}; no PTX embedded")
            return None
    return wanted


def family_ptx(family_archs: list[str], ptx: str | None) -> list[str]:
    """["compute_<ptx>"] for a family with a portable (non-"a"/"f") target: its code then runs on
    any newer GPU; a family of arch-specific targets only (wgmma on 90a) gets none."""
    if ptx and any(a == arch_base(a) for a in family_archs):
        return [f"compute_{ptx}"]
    return []


def families() -> list[tuple[str, list[str]]]:
    """(name, archs from its ARCHS file) of every family folder under cuda/, sorted by name."""
    out = []
    for d in sorted(p for p in CUDA_DIR.iterdir() if p.is_dir() and p.name != "common"):
        archs_file = d / "ARCHS"
        if not archs_file.exists():
            continue
        if not d.name.isidentifier():
            raise RuntimeError(f"kernel family folder {d.name!r}: the name must be a C identifier")
        out.append((d.name, archs_file.read_text().replace(";", " ").replace(",", " ").split()))
    return out


def family_targets(requested: list[str], family_archs: list[str]) -> list[str]:
    """The family's targets whose arch number was requested (in the family's spelling)."""
    wanted = {arch_base(a) for a in requested}
    return [a for a in family_archs if arch_base(a) in wanted]


def write_if_changed(path: Path, lines: list[str]) -> None:
    """Write a generated header only when its text changes, so nvcc/make see no new timestamp."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines) + "\n"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def write_build_config(out_dir: Path, built: list[tuple[str, list[str]]]) -> None:
    lines = ["/* generated by setup.py: the kernel families compiled into this build */",
             "#ifndef SA3_BUILD_CONFIG_H", "#define SA3_BUILD_CONFIG_H",
             "#define SA3_FAMILIES(X) " + " ".join(f"X({name})" for name, _ in built)]
    for name, archs in built:
        lines.append(f'#define SA3_FAMILY_ARCHS_{name} "{" ".join(archs)}"')
        lines.append(f"#define SA3_FAMILY_TARGETS_{name} " + ", ".join(str(target_code(a)) for a in archs))
    lines.append("#endif")
    write_if_changed(out_dir / "sa3_build_config.h", lines)


def c_string(text: str) -> str:
    """A C string literal of text (backslashes and quotes escaped: Windows paths, messages)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'


def write_build_info(out_dir: Path, facts: dict) -> None:
    """sa3_build_info.h: the strings build_info() reports, as SA3_BUILD_<KEY> string macros."""
    keys = ("cuda_version", "cuda_archs", "cuda_ptx", "nvcc_host", "why_no_cuda")
    lines = ["/* generated by setup.py: what this build compiled in (module.c's build_info) */",
             "#ifndef SA3_BUILD_INFO_H", "#define SA3_BUILD_INFO_H"]
    lines += [f"#define SA3_BUILD_{k.upper()} {c_string(str(facts.get(k) or ''))}" for k in keys]
    lines.append("#endif")
    write_if_changed(out_dir / "sa3_build_info.h", lines)


def gxx_version() -> str:
    """The g++ nvcc uses as host compiler on Linux (its default: g++ on PATH), with its version."""
    exe = shutil.which("g++")
    if not exe:
        return "unknown (no g++ on PATH)"
    res = subprocess.run([exe, "-dumpfullversion"], capture_output=True, text=True)
    return f"g++ {res.stdout.strip() or '?'} ({exe})"


def c_flags(compiler_type: str) -> list[str]:
    if compiler_type == "msvc":
        return ["/std:c11", "/O2", "/W3"]
    return ["-std=c11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"]


# ----------------------------------------------------------------------------- MSVC (Windows)
# C11 from MSVC: /std:c11 exists from Visual Studio 2019 16.8 (cl 19.28), and the C11 headers
# of the Universal CRT from Windows SDK 10.0.20348. Checked before compiling, with a message
# that says what to install, instead of a wall of header errors.
MSVC_MIN = (19, 28)
WINSDK_MIN = (10, 0, 20348)


def _version_tuple(text: str) -> tuple:
    return tuple(int(x) for x in re.findall(r"\d+", text))


def parse_cl_version(banner: str):
    """(major, minor, build) from cl.exe's banner ("... Compiler Version 19.38.33134 for x64")."""
    m = re.search(r"Version\s+(\d+)\.(\d+)\.(\d+)", banner)
    return tuple(int(x) for x in m.groups()) if m else None


def parse_winsdk_version(env: dict):
    """The Windows SDK version vcvarsall chose: WindowsSDKVersion ("10.0.22621.0\\"), else the
    version folder in INCLUDE (...\\Windows Kits\\10\\include\\10.0.22621.0\\ucrt)."""
    v = env.get("WINDOWSSDKVERSION") or env.get("WindowsSDKVersion")
    if v and re.match(r"\d+\.\d+\.\d+", v):
        return _version_tuple(v)[:4]
    m = re.search(r"[\\/]include[\\/](\d+\.\d+\.\d+(?:\.\d+)?)[\\/]ucrt", env.get("INCLUDE", ""), re.I)
    return _version_tuple(m.group(1)) if m else None


def check_msvc_c11(cl_version, sdk_version) -> None:
    """Raise RuntimeError saying what to install when MSVC or the SDK can't compile C11."""
    problems = []
    if cl_version is None:
        problems.append("could not read cl.exe's version")
    elif tuple(cl_version[:2]) < MSVC_MIN:
        problems.append(f"cl.exe {'.'.join(map(str, cl_version))} is older than 19.28: /std:c11 needs Visual Studio "
                        "2019 16.8 or newer (install the current 'MSVC ... C++ x64/x86 build tools' in the Visual "
                        "Studio Installer)")
    if sdk_version is None:
        problems.append("could not find the Windows SDK version (WindowsSDKVersion / INCLUDE)")
    elif tuple(sdk_version[:3]) < WINSDK_MIN:
        problems.append(f"Windows SDK {'.'.join(map(str, sdk_version))} is older than 10.0.20348: C11 needs its "
                        "C11-conforming Universal CRT headers (install 'Windows 11 SDK' 10.0.22000+ in the Visual "
                        "Studio Installer)")
    if problems:
        raise RuntimeError("sageattn3 is C11 and can't be built with this MSVC setup: " + "; ".join(problems))


def msvc_env(plat_spec: str = "x64") -> dict:
    """os.environ plus what vcvarsall sets (PATH with cl.exe, INCLUDE, LIB, WindowsSDKVersion),
    found the way setuptools finds MSVC (vswhere / registry through its msvc helpers), so no
    Developer Command Prompt is needed. A prompt that already has cl.exe and INCLUDE is used as is."""
    env = dict(os.environ)
    if shutil.which("cl.exe") and env.get("INCLUDE"):
        return env
    for modname in ("setuptools._distutils.compilers.C.msvc", "setuptools._distutils._msvccompiler",
                    "distutils._msvccompiler"):
        try:
            get_vc_env = getattr(importlib.import_module(modname), "_get_vc_env")
        except (ImportError, AttributeError):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            vc = get_vc_env(plat_spec)  # raises with setuptools' own "install Build Tools" message
        env.update({k.upper(): v for k, v in vc.items()})
        return env
    raise RuntimeError("could not locate MSVC: this setuptools has no MSVC helper (_get_vc_env); run the build "
                       "from a 'x64 Native Tools Command Prompt for VS' instead")


def msvc_for_nvcc() -> tuple:
    """(directory of cl.exe for nvcc's -ccbin, environment for nvcc, cl version), after the C11
    checks."""
    env = msvc_env()
    cl = shutil.which("cl.exe", path=env.get("PATH"))
    if cl is None:
        raise RuntimeError("MSVC was found but its PATH has no cl.exe")
    banner = subprocess.run([cl], capture_output=True, text=True, env=env).stderr
    cl_version = parse_cl_version(banner)
    check_msvc_c11(cl_version, parse_winsdk_version(env))
    return str(Path(cl).parent), env, cl_version


def attach_cuda_objects(ext, objs: list) -> None:
    """The kernels' objects join the link and its staleness check: build_ext relinks only when a
    source or a `depends` entry is newer than the library, and extra_objects are neither, so an
    edited .cu would otherwise be recompiled and the old library kept."""
    ext.extra_objects = list(ext.extra_objects or []) + objs
    ext.depends = list(ext.depends or []) + objs


class BuildExt(build_ext):
    def build_extensions(self):
        ctype = self.compiler.compiler_type
        gen_dir = Path(self.build_temp) / GEN_SUBDIR
        for ext in self.extensions:
            ext.extra_compile_args = c_flags(ctype) + list(ext.extra_compile_args or [])
            cuda_root = getattr(ext, "cuda_root", None)
            built = []
            if cuda_root:
                for name, archs in families():
                    targets = family_targets(ext.cuda_archs, archs)
                    if targets:
                        targets += family_ptx(archs, ext.cuda_ptx)
                        built.append((name, targets))
                    else:
                        log(f"kernel family {name!r} not built: none of its archs ({' '.join(archs)}) "
                            f"was requested ({' '.join(ext.cuda_archs)})")
            write_build_config(gen_dir, built)
            nvcc_host = ""
            if ctype == "msvc":  # the C11 checks apply with or without CUDA
                self.nvcc_ccbin, self.nvcc_env, cl_version = msvc_for_nvcc()
                nvcc_host = f"msvc {'.'.join(map(str, cl_version))} ({self.nvcc_ccbin})"
            elif cuda_root:
                nvcc_host = gxx_version()
            write_build_info(gen_dir, dict(ext.build_facts, nvcc_host=nvcc_host if cuda_root else ""))
            ext.include_dirs = list(ext.include_dirs) + [str(gen_dir)]
            if cuda_root:
                log("kernel families: " + (", ".join(f"{n} ({' '.join(a)})" for n, a in built) or "none"))
                attach_cuda_objects(ext, self.compile_cuda(ext, cuda_root, ctype, built, gen_dir))
        super().build_extensions()

    def compile_cuda(self, ext, root: str, ctype: str, built, gen_dir: Path) -> list[str]:
        out_dir = Path(self.build_temp) / "cuda"
        host = ["-Xcompiler", "/MD" if ctype == "msvc" else "-fPIC"]
        env = None
        if ctype == "msvc":
            host += ["-ccbin", self.nvcc_ccbin]
            env = self.nvcc_env
        # --threads 0: nvcc compiles the architectures of one file in parallel
        common = [nvcc_path(root), "-c", "-O3", "-std=c++17", "-lineinfo", "--expt-relaxed-constexpr", "--threads", "0",
                  "-Icuda/common", f"-I{gen_dir}", *host, "-Xptxas=-warn-spills"]

        def gencode(archs):
            # "compute_N" embeds PTX (code=compute_N); every other target a cubin
            return [f"-gencode=arch={a},code={a}" if a.startswith("compute_") else
                    f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]

        # cuda/common has no kernels; it is compiled for the requested targets like the rest.
        groups = [("common", ext.cuda_archs)] + list(built)
        objs, jobs = [], []
        for folder, archs in groups:
            (out_dir / folder).mkdir(parents=True, exist_ok=True)
            for src in sorted((CUDA_DIR / folder).glob("*.cu")):
                obj = out_dir / folder / (src.stem + (".obj" if os.name == "nt" else ".o"))
                objs.append(str(obj))
                jobs.append(common + gencode(archs) + [str(src.relative_to(ROOT)), "-o", str(obj)])

        def run(cmd):
            log(" ".join(cmd))
            res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
            sys.stderr.write(res.stdout + res.stderr)
            if res.returncode != 0:
                raise RuntimeError(f"nvcc failed ({res.returncode}) on {cmd[-3]}")

        workers = int(os.environ.get("SAGEATTN3_NVCC_THREADS", os.cpu_count() or 1))
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            list(pool.map(run, jobs))
        return objs


def make_extension() -> Extension:
    import numpy as np

    sources = list(ALWAYS_C)
    macros: list = []
    libs, lib_dirs, link_args = [], [], []
    root, why = find_cuda()
    archs: list[str] = []
    ptx = None
    if root:
        archs = choose_archs(root)
        if not archs:
            root, why = None, "this nvcc supports none of the requested architectures"
    facts = {"why_no_cuda": why}
    if root:
        version = nvcc_version(root)
        ptx = choose_ptx(root)
        log(f"CUDA {version} at {root}; kernels for {', '.join('sm_' + a for a in archs)}"
            + (f" + PTX compute_{ptx}" if ptx else ""))
        macros.append(("SA3_HAVE_CUDA", "1"))
        facts = {"cuda_version": version, "cuda_archs": ";".join("sm_" + a for a in archs),
                 "cuda_ptx": f"compute_{ptx}" if ptx else ""}
        static = "cudart_static.lib" if os.name == "nt" else "libcudart_static.a"
        candidates = [Path(root) / d for d in ("lib/x64", "lib64", "lib", "targets/x86_64-linux/lib",
                                                 "targets/sbsa-linux/lib")]
        found = [str(d) for d in candidates if (d / static).exists()]
        if not found:
            raise RuntimeError(f"CUDA at {root} has no {static}; set SAGEATTN3_CUDA=0 for a CPU-only build")
        lib_dirs.append(found[0])
        if os.name == "nt":
            libs.append("cudart_static")
        else:
            # Static runtime: the wheel needs no libcudart at run time, only the driver.
            libs += ["cudart_static", "dl", "rt", "pthread"]
            link_args.append("-lstdc++")
    else:
        log(f"building WITHOUT CUDA kernels: {why}. Every call will use torch SDPA.")
        sources.append("csrc/sa3_nocuda.c")
    ext = Extension(
        "sageattn3._C",
        sources=sources,
        include_dirs=["csrc", "cuda/common", np.get_include()],
        define_macros=macros,
        libraries=libs,
        library_dirs=lib_dirs,
        extra_link_args=link_args,
    )
    ext.cuda_root = root
    ext.cuda_archs = archs
    ext.cuda_ptx = ptx
    ext.build_facts = facts
    return ext


setup(ext_modules=[make_extension()], cmdclass={"build_ext": BuildExt})
