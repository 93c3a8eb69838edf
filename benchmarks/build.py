"""Benchmark: `build:` kernel specs - cold build, cache hit, one-file-patch rebuild, side by side.

The three are measured in one run on the same source and configuration, so their ratios hold
across machines: the cold build is the peer the other two are compared against.
  cold     a configuration this cache has never built (a unique CONFIG_LOCALVERSION), new O= dir
  hit      the same spec again: resolved from the image cache, make never runs
  patch    the same configuration plus a one-line patch to mm/page_alloc.c: reused O= dir
ccache is disabled during the run unless --ccache (it would turn "cold" into a cache replay).
The benchmark's work tree, O= dir and images are removed afterwards unless --keep.

    mtaudit bench build [--src debian-source:6.1] [--arch x86_64] [--ccache] [--keep]
"""
from __future__ import annotations

import argparse
import difflib
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path


def _patch_one_file(tree: Path, rel: str, tag: str) -> str:
    """A unified diff adding one comment line to `rel` (still a real recompile of that file)."""
    old = (tree / rel).read_text(errors="replace").splitlines(keepends=True)
    new = old[:1] + [f"/* {tag} */\n"] + old[1:]
    return "".join(difflib.unified_diff(old, new, f"a/{rel}", f"b/{rel}"))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--src", default="debian-source:6.1", help="SRC of the build: spec (default debian-source:6.1)")
    p.add_argument("--arch", default="x86_64", help="x86_64 or arm64 (default x86_64)")
    p.add_argument("--file", default="mm/page_alloc.c", help="file the one-line patch touches")
    p.add_argument("--ccache", action="store_true", help="leave ccache on (default: off during the run)")
    p.add_argument("--keep", action="store_true", help="keep the benchmark's O= dir and images")


def run(a: argparse.Namespace) -> int:
    from collectors.build import source as buildsrc
    from collectors.collect import resolve_kernel

    if not a.ccache:
        os.environ["CCACHE_DISABLE"] = "1"

    def say(m: str) -> None:
        print(f"  {m}", file=sys.stderr, flush=True)
    tag = f"bench{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="mtaudit-bench-build-") as td:
        frag = Path(td) / "bench.config"
        frag.write_text(f'CONFIG_LOCALVERSION="-{tag}"\n')
        spec = f"build:{a.src},arch={a.arch},config={frag}"
        src = buildsrc.identify(a.src, say)
        tree = buildsrc.pristine(src, say)              # fetch/extract are not part of the build
        patch = Path(td) / "one-file.patch"
        patch.write_text(_patch_one_file(tree, a.file, tag))
        rows = []
        made = []
        try:
            for label, s in (("cold build", spec), ("cache hit", spec),
                             (f"one-file patch ({a.file})", f"{spec},patch={patch}")):
                print(f"{label} ...", file=sys.stderr, flush=True)
                t0 = time.perf_counter()
                k = resolve_kernel(s, None, say)
                dt = time.perf_counter() - t0
                made.append(k)
                rows.append((label, dt, k.build.get("cached"), len(k.build.get("changed_files", []))))
        finally:
            if not a.keep:
                for k in made:
                    shutil.rmtree(k.build["entry"], ignore_errors=True)
                if made:
                    shutil.rmtree(Path(made[0].build["build_dir"]).parent, ignore_errors=True)
    cold = rows[0][1]
    print(f"\n{'step':40s} {'seconds':>9s} {'vs cold':>9s}  notes")
    for label, dt, cached, nchanged in rows:
        note = "image cache" if cached else f"make, {nchanged} patched file(s) rewritten"
        print(f"{label:40s} {dt:9.1f} {dt / cold:9.3f}  {note}")
    print(f"\nrelease {made[0].release}; -j{made[0].build['jobs']}; ccache {'on' if a.ccache else 'off'}; "
          f"cold/hit = {cold / rows[1][1]:.0f}x, cold/patch = {cold / rows[2][1]:.1f}x")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap)
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
