"""`build:` kernel specs: source + patches + config fragment -> a cached, bootable Kernel.

Cache key = source identity (Debian package version, tarball sha256, git HEAD + hash of the
uncommitted diff) + each patch's sha256 + the config request (base + fragments) + arch +
compiler version + the recipe version below.  A hit returns in well under a second without
running make or a compiler; a miss reuses the work tree and O= directory of the same
(source, arch, config, compiler), so a changed patch recompiles only the files it changes.
The finished image goes into build/images/<key> atomically; a failure leaves nothing there.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from analyzer.atomic import atomic_dir, atomic_file

from . import kconfig
from ..kernels.spec import Kernel, parse_config
from .source import Patch, Source, apply_patches, identify, load_patches, pristine, sync_patched, work_tree
from .cache import cache_root, locked, sha256_file
from ..errors import CollectError, ToolMissingError

RECIPE = 1          # bump when the way kernels are built changes (invalidates the image cache)
ENV_FIXED = {"KBUILD_BUILD_USER": "mtaudit", "KBUILD_BUILD_HOST": "mtaudit", "LC_ALL": "C"}
# Compile units of a cold build, used for the progress bar until this machine has built the
# same configuration once (measured: 6.1 tinyconfig + shipped fragment, x86_64 and arm64).
DEFAULT_UNITS = {"amd64": 1280, "arm64": 845}
_UNIT = re.compile(r"^\s+(?:CC|AS|CC \[M\])\s+\S+\.o$")
# the final link: "LD vmlinux.o", ".tmp_vmlinux.kallsyms*", "KSYMS" (not the vdso's OBJCOPY)
_LINK = re.compile(r"^\s+(?:LD\s+(?:\.tmp_)?vmlinux|KSYMS\s)")
_ERR = re.compile(r"error[:\s]|Error \d|undefined reference|No rule to make target|\*\*\*", re.I)


class BuildError(CollectError):
    """make failed; the message names the first error line and the full log in the cache."""


@dataclass(frozen=True)
class Toolchain:
    arch: str              # Debian arch
    karch: str             # kernel ARCH=
    cross: str             # CROSS_COMPILE= ("" when native)
    cc: str                # the compiler make will call (for the version / cache key)
    target: str            # bzImage | Image
    image_rel: str         # path of the image under O=
    ccache: bool


def toolchain(arch: str) -> Toolchain:
    """Check the host tools before anything is fetched; one line naming the package if missing."""
    _frag, karch, target, image_rel = kconfig.ARCH_BUILD[arch]
    native = platform.machine() in ({"amd64": "x86_64", "arm64": "aarch64"}[arch],)
    cross = "" if native else {"amd64": "x86_64-linux-gnu-", "arm64": "aarch64-linux-gnu-"}[arch]
    cc = cross + "gcc"
    if not shutil.which(cc):
        pkg = "gcc" if native else "gcc-" + cross.rstrip("-").replace("_", "-")
        why = "" if native else f"arch={arch} on a {platform.machine()} host cross-compiles: "
        raise ToolMissingError(f"{why}{cc} not found (apt-get install {pkg})")
    for tool, pkg in (("make", "make"), ("flex", "flex"), ("bison", "bison"), ("bc", "bc"),
                      ("patch", "patch"), ("tar", "tar"), ("xz", "xz-utils")):
        if not shutil.which(tool):
            raise ToolMissingError(f"{tool} not found: kernel builds need it (apt-get install {pkg})")
    if arch == "amd64" and not any(Path(d, "gelf.h").exists() for d in ("/usr/include", "/usr/local/include")):
        raise ToolMissingError("libelf headers (gelf.h) not found: x86 kernel builds need them "
                               "for objtool (apt-get install libelf-dev)")
    return Toolchain(arch, karch, cross, cc, target, image_rel, shutil.which("ccache") is not None)


def compiler_version(cc: str) -> str:
    """`cc --version` first line, memoised by the binary's path, size and mtime (a cache hit
    must not run a compiler)."""
    real = os.path.realpath(shutil.which(cc) or cc)
    st = os.stat(real)
    memo = cache_root() / "build" / "cc" / (hashlib.sha256(real.encode()).hexdigest()[:24] + ".json")
    stamp = [st.st_size, st.st_mtime_ns]
    if memo.exists():
        d = json.loads(memo.read_text())
        if d.get("stat") == stamp:
            return d["version"]
    out = subprocess.run([real, "--version"], capture_output=True, text=True).stdout
    version = (out.splitlines() or ["unknown"])[0].strip()
    with atomic_file(str(memo), "w") as f:
        json.dump({"path": real, "stat": stamp, "version": version}, f)
    return version


def cache_key(src: Source, patches: list[Patch], plan: kconfig.ConfigPlan, arch: str, cc: str) -> str:
    doc = {"recipe": RECIPE, "source": src.identity, "patches": [p.sha256 for p in patches],
           "config": plan.digest, "arch": arch, "compiler": cc}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def tree_key(src: Source, plan: kconfig.ConfigPlan, arch: str, cc: str) -> str:
    doc = {"recipe": RECIPE, "source": src.identity, "config": plan.digest, "arch": arch, "compiler": cc}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


# -- the entry point -----------------------------------------------------------------------
def build_kernel(spec, spec_text: str, say):
    """Resolve a parsed `build:` Spec to a Kernel, building (or reusing) it."""
    t0 = time.monotonic()
    tc = toolchain(spec.arch)
    patches = load_patches(spec.patches)
    plan = kconfig.plan(spec.arch, spec.base, spec.config)
    src = identify(spec.file, say)
    ccv = compiler_version(tc.cc)
    key = cache_key(src, patches, plan, spec.arch, ccv)
    images = cache_root() / "build" / "images"
    entry = images / key[:32]
    if not (entry / "kernel.json").exists():
        _build(spec, tc, src, patches, plan, ccv, key, entry, say)
        cached = False
    else:
        say(f"cache hit: build {key[:12]} ({time.monotonic() - t0:.1f}s)")
        cached = True
    info = json.loads((entry / "kernel.json").read_text())
    cfg = entry / "config"
    mods = entry / "mod" / "lib" / "modules" / info["release"]
    k = Kernel(spec=spec_text, arch=spec.arch, release=info["release"], version=f"build:{key[:16]}",
               image=entry / info["image"], config_path=cfg, modules=mods if mods.is_dir() else None)
    k.config = parse_config(cfg.read_text(errors="replace"))
    # names and paths as this spec gives them (the cached entry may come from another spelling
    # of the same content)
    k.build = {**info["build"], **_inputs(src, patches, plan), "cached": cached, "entry": str(entry)}
    return k


def _inputs(src: Source, patches: list[Patch], plan: kconfig.ConfigPlan) -> dict:
    return {"source": {"spec": src.spec, "kind": src.kind, "identity": src.identity, **src.info},
            "patches": [{"name": p.name, "path": str(p.path), "sha256": p.sha256} for p in patches],
            "fragment": {"base": plan.base, "sha256": plan.digest,
                         "files": [{"name": f.name, "path": str(f), "sha256": sha256_file(f)}
                                   for f in plan.fragments]}}


def _build(spec, tc: Toolchain, src: Source, patches: list[Patch], plan: kconfig.ConfigPlan,
           ccv: str, key: str, entry: Path, say) -> None:
    ptree = pristine(src, say)
    tmp_root = cache_root() / "build" / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    if patches:
        say(f"patch: checking {len(patches)} patch(es) against {src.identity}")
    with tempfile.TemporaryDirectory(prefix="patch-", dir=tmp_root) as scratch:
        new = apply_patches(patches, ptree, Path(scratch))     # raises before anything is touched
    tk = tree_key(src, plan, spec.arch, ccv)
    base = cache_root() / "build" / "trees" / tk[:24]
    with locked(cache_root() / "build" / "trees" / f"{tk[:24]}.lock"):
        if (entry / "kernel.json").exists():                   # built meanwhile by another run
            return
        wt = work_tree(ptree, base, say)
        changed = sync_patched(wt, ptree, new)
        if patches:
            say(f"patch: {len(patches)} applied; {len(changed)} file(s) differ from the last build here")
        obj = base / "obj"
        log = base / "build.log"
        log.write_text("")
        final = configure(wt, obj, tc, plan, say, log)
        warm = (obj / ".mtaudit-built").exists()
        t_make = time.monotonic()
        try:
            _make(wt, obj, tc, final, say, log, plan, warm)
        except BuildError:
            _keep_log(log, key)
            raise
        build_s = time.monotonic() - t_make
        release = (obj / "include" / "config" / "kernel.release").read_text().strip()
        (obj / ".mtaudit-built").touch()
        say(f"install: {release} -> image cache")
        with atomic_dir(str(entry)) as tmpd:
            t = Path(tmpd)
            img_name = Path(tc.image_rel).name
            shutil.copyfile(obj / tc.image_rel, t / img_name)
            shutil.copyfile(obj / ".config", t / "config")
            shutil.copyfile(log, t / "build.log")
            (t / "fragment.config").write_text(kconfig.fragment_text(plan))
            if patches:
                (t / "patches").mkdir()
                for i, p in enumerate(patches):
                    shutil.copyfile(p.path, t / "patches" / f"{i:02d}-{p.name}")
            if any(v == "m" for v in final.values()):
                _modules_install(wt, obj, tc, t / "mod", log)
            requested = plan.requested()
            info = {"release": release, "image": img_name, "build": {
                **_inputs(src, patches, plan),
                "config_requested": {s: final.get(s, "n") for s in sorted(requested)},
                "arch": spec.arch, "compiler": ccv, "ccache": tc.ccache, "cache_key": key,
                "incremental": warm, "changed_files": changed, "build_s": round(build_s, 1),
                "jobs": _jobs(), "kernelrelease": release, "build_dir": str(obj),
            }}
            (t / "kernel.json").write_text(json.dumps(info, indent=1) + "\n")


def _jobs() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _make_argv(tc: Toolchain, obj: Path, *targets: str) -> list[str]:
    argv = ["make", f"O={obj}", f"ARCH={tc.karch}", f"-j{_jobs()}"]
    if tc.cross:
        argv.append(f"CROSS_COMPILE={tc.cross}")
    if tc.ccache:
        argv.append(f"CC=ccache {tc.cc}")
    return argv + list(targets)


def _env() -> dict[str, str]:
    return {**os.environ, **ENV_FIXED}


def _quiet(argv: list[str], cwd: Path, log: Path, what: str) -> None:
    """Run a short step, appending to the build log; one line with its last error on failure."""
    with open(log, "a") as lf:
        lf.write(f"$ {' '.join(argv)}\n")
        lf.flush()
        r = subprocess.run(argv, cwd=cwd, stdout=lf, stderr=subprocess.STDOUT, env=_env())
    if r.returncode != 0:
        raise BuildError(f"{what} failed (exit {r.returncode}): {_first_error(log)} (log: {log})")


def configure(wt: Path, obj: Path, tc: Toolchain, plan: kconfig.ConfigPlan, say, log: Path) -> dict[str, str]:
    """base config + fragments -> obj/.config, checked; done once per O= directory.

    A failed or interrupted configuration removes the O= directory, so the next run starts
    clean instead of trusting a half-made .config."""
    stamp = obj / ".mtaudit-config.json"
    if stamp.exists() and json.loads(stamp.read_text()).get("digest") == plan.digest:
        return parse_config((obj / ".config").read_text())
    shutil.rmtree(obj, ignore_errors=True)
    obj.mkdir(parents=True)
    try:
        say(f"config: {Path(plan.base).name} + {', '.join(f.name for f in plan.fragments)}")
        if plan.base in kconfig.BASES:
            _quiet(_make_argv(tc, obj, plan.base), wt, log, f"make {plan.base}")
        else:
            shutil.copyfile(plan.base, obj / ".config")
        merge = wt / "scripts" / "kconfig" / "merge_config.sh"
        _quiet(["sh", str(merge), "-m", "-O", str(obj), str(obj / ".config"),
                *[str(f) for f in plan.fragments]], obj, log, "merge_config.sh")
        _quiet(_make_argv(tc, obj, "olddefconfig"), wt, log, "make olddefconfig")
        final = parse_config((obj / ".config").read_text())
        drops = kconfig.dropped(plan.requested(), final)
        if drops:
            raise kconfig.KconfigError(
                f"config: {len(drops)} requested option(s) dropped by kconfig: "
                + kconfig.explain_dropped(wt, tc.karch, drops, final))
    except BaseException:
        shutil.rmtree(obj, ignore_errors=True)
        raise
    with atomic_file(str(stamp), "w") as f:
        json.dump({"digest": plan.digest}, f)
    return final


def _units_file() -> Path:
    return cache_root() / "build" / "units.json"


def _make(wt: Path, obj: Path, tc: Toolchain, final: dict[str, str], say, log: Path,
          plan: kconfig.ConfigPlan, warm: bool) -> None:
    """make the image (and modules), streaming its output into the log and a progress bar."""
    targets = [tc.target] + (["modules"] if any(v == "m" for v in final.values()) else [])
    argv = _make_argv(tc, obj, *targets)
    units = json.loads(_units_file().read_text()) if _units_file().exists() else {}
    ukey = f"{tc.arch}:{plan.digest}"
    total = None if warm else units.get(ukey, DEFAULT_UNITS.get(tc.arch))
    say(f"compile: {' '.join(argv[-len(targets):])} with -j{_jobs()}"
        + (" (ccache)" if tc.ccache else "") + (" (incremental)" if warm else ""))
    bar = getattr(say, "bar", None)
    n = 0
    stage = "compile"
    with open(log, "a") as lf, ((bar("compile", total) if bar else None) or _PlainBar(say, total)) as pb:
        lf.write(f"$ {' '.join(argv)}\n")
        lf.flush()
        # own process group: on Ctrl-C/SIGTERM the whole make tree (cc1, ld) is stopped, not just make
        p = subprocess.Popen(argv, cwd=wt, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             env=_env(), text=True, errors="replace", bufsize=1, start_new_session=True)
        try:
            for line in p.stdout:
                lf.write(line)
                if _UNIT.match(line):
                    n += 1
                    pb.update(n, f"{stage}: {line.split()[-1]}")
                elif stage == "compile" and _LINK.match(line):
                    stage = "link"
                    pb.update(n, "link: vmlinux")
            rc = p.wait()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            raise
    if rc != 0:
        tail = _error_lines(log)
        for line in tail:
            say(f"build: {line}")
        raise BuildError(f"make {' '.join(targets)} failed (exit {rc}): {_first_error(log)} (full log: {log})")
    if not warm:
        units[ukey] = n
        with atomic_file(str(_units_file()), "w") as f:
            json.dump(units, f)


def _modules_install(wt: Path, obj: Path, tc: Toolchain, dest: Path, log: Path) -> None:
    argv = _make_argv(tc, obj, "modules_install") + [f"INSTALL_MOD_PATH={dest}", "INSTALL_MOD_STRIP=1"]
    _quiet(argv, wt, log, "make modules_install")
    for link in dest.glob("lib/modules/*/build") or ():
        link.unlink()
    for link in dest.glob("lib/modules/*/source") or ():
        link.unlink()


def _error_lines(log: Path, n: int = 12) -> list[str]:
    lines = log.read_text(errors="replace").splitlines()
    errs = [x for x in lines if _ERR.search(x)]
    return (errs or lines)[-n:]


def _first_error(log: Path) -> str:
    lines = log.read_text(errors="replace").splitlines()
    for x in lines:
        if re.search(r"\berror\b|undefined reference|No rule to make target", x, re.I) and not x.startswith("$ "):
            return x.strip()[:300]
    return (lines[-1].strip() if lines else "no output")[:300]


def _keep_log(log: Path, key: str) -> None:
    """A failed build's log, kept (atomically) where a user can find it after the next build."""
    dest = cache_root() / "build" / "logs" / f"{key[:32]}-failed.log"
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(str(dest), "wb") as f:
        f.write(log.read_bytes())


class _PlainBar:
    """Progress without a terminal: a line per stage change and per 10% (or 200 units when the
    total is unknown)."""

    def __init__(self, say, total: int | None):
        self.say, self.total, self.last, self.stage = say, total, -1, "compile"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n: int, what: str) -> None:
        stage = what.split(":", 1)[0]
        if stage != self.stage:
            self.stage = stage
            self.say(f"{stage}: after {n} compiled units")
            return
        if stage != "compile":
            return
        step = (n * 10 // self.total) if self.total else n // 200
        if step != self.last:
            self.last = step
            pct = f" ~{min(99, n * 100 // self.total)}%" if self.total else ""
            self.say(f"compile: {n} units{pct}")
