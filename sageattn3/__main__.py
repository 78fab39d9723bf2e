"""Command line: `python -m sageattn3 [info | check | bench | comfyui-install PATH]`.

  info             environment report: versions, build, devices, which path serves what and why
  check            numeric self-test on this machine (exit 1 if any case fails)
  bench            benchmark against torch SDPA (table, JSON, PNG)
  comfyui-install  install (or --uninstall) the ComfyUI node into a ComfyUI folder
  (no subcommand)  check, then bench on whatever device exists, then a short summary

Exit codes: 0 ok, 1 check/bench/install failed, 2 usage error.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

COMMANDS = ("info", "check", "bench", "comfyui-install")


def build_parser() -> argparse.ArgumentParser:
    from . import _bench, _check

    p = argparse.ArgumentParser(prog="python -m sageattn3", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", metavar="{" + ",".join(COMMANDS) + "}")
    pi = sub.add_parser("info", help="environment report: build, devices, routing, call counters")
    pi.add_argument("--json", action="store_true", help="print the info() dict as JSON")
    pc = sub.add_parser("check", help="numeric self-test (exit 1 on failure)", description=_check.__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    _check.add_arguments(pc)
    pb = sub.add_parser("bench", help="benchmark against torch SDPA", description=_bench.__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    _bench.add_arguments(pb)
    p.set_defaults(_bench_error=pb.error)
    pi2 = sub.add_parser("comfyui-install", help="install the ComfyUI node into a ComfyUI folder")
    pi2.add_argument("path", help="the ComfyUI folder (the one holding custom_nodes/)")
    pi2.add_argument("--uninstall", action="store_true", help="remove what an earlier install added")
    return p


def cmd_info(args) -> int:
    from ._info import format_info, info

    d = info()
    print(json.dumps(d, indent=2, default=str) if args.json else format_info(d))
    return 0


def cmd_comfyui_install(args, extra: List[str]) -> int:
    argv = [args.path] + (["--uninstall"] if args.uninstall else []) + list(extra)
    try:
        from .comfyui import install  # written separately; imported only when asked for
    except ImportError as exc:
        print(f"sageattn3: the ComfyUI installer is not available in this install: {exc}", file=sys.stderr)
        return 1
    try:
        rc = install.main(argv)
    except SystemExit as exc:  # an argparse inside the installer
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return int(rc or 0)


def cmd_default() -> int:
    """No subcommand: self-check, then benchmark, then a summary."""
    from . import __version__, _bench, _check

    print(f"== sageattn3 {__version__}: self-check ==", flush=True)
    rep = _check.run_check()
    print("\n== benchmark against SDPA ==", flush=True)
    bp = argparse.ArgumentParser()
    _bench.add_arguments(bp)
    bargs = bp.parse_args([])
    try:
        result = _bench.run(bargs, _bench.select_shapes(bargs, bp.error))
        bench_line = _bench.summary(result)
        bench_ok = result["ok"]
    except Exception as exc:  # the summary must still come
        bench_line, bench_ok = f"bench: failed: {type(exc).__name__}: {exc}", False
    c = rep.counts()
    print("\n== summary ==")
    print(f"check: {'PASS' if rep.ok else 'FAIL'} ({c['PASS']} passed, {c['FAIL']} failed, {c['SKIP']} skipped) "
          f"on {rep.device}")
    for r in rep.failed:
        print(f"  failed: {r.section}/{r.case} {r.mode}: {r.note}")
    print(bench_line)
    if not bench_ok:
        print("bench: some backend reported an error (see the table)")
    print("details: python -m sageattn3 info")
    return 0 if rep.ok and bench_ok else 1


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = build_parser()
    args, extra = p.parse_known_args(argv)
    if extra and args.cmd != "comfyui-install":
        p.error("unrecognized arguments: " + " ".join(extra))
    if args.cmd is None:
        return cmd_default()
    if args.cmd == "info":
        return cmd_info(args)
    if args.cmd == "check":
        from . import _check
        return _check.main_from_args(args)
    if args.cmd == "bench":
        from . import _bench
        return _bench.main_from_args(args, args._bench_error)
    return cmd_comfyui_install(args, extra)


if __name__ == "__main__":
    sys.exit(main())
