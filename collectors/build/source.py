"""Kernel sources for `build:` specs: identify, extract once, patch a private work tree.

Layout under the cache (collectors/build/cache.py):
  build/src/<id>/tree      pristine source, extracted or copied once per source identity
  build/trees/<key>/src    work tree: a hard-link farm of the pristine tree; patched files are
                           replaced (new inode), never written through, so the pristine copy
                           and the user's own tree are never modified
  build/trees/<key>/obj    the O= build directory reused by every build of that work tree
Patching is computed in a scratch directory first (all patches, in order), so a patch that does
not apply stops everything before the work tree is touched.  Only files whose content changes
are rewritten, so make rebuilds only what the new patch set really changed.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from analyzer.atomic import atomic_dir, atomic_file

from ..kernels.debian import PrivateApt, extract_deb
from ..kernels.spec import host_arch
from .cache import cache_root, locked, sha256_bytes, sha256_file
from ..errors import CollectError, ToolMissingError

STATE = ".mtaudit-patched.json"   # in a work tree: files the current patch set changed


class PatchError(CollectError):
    """A patch file is missing, unreadable, or does not apply to the source."""


class SourceError(CollectError):
    """The SRC of a build: spec cannot be found, read or extracted."""


@dataclass
class Source:
    """A kernel source identified by content: `identity` keys the pristine tree and the cache."""

    spec: str                       # as the user wrote it
    kind: str                       # debian-source | tarball | git | dir
    identity: str                   # e.g. "debian-source:linux-source-6.1=6.1.192-3"
    info: dict = field(default_factory=dict)   # manifest: package/version, sha256, head, dirty
    origin: Path | None = None      # tarball / .deb / directory to extract or copy from
    inner: str = ""                 # debian-source: tarball path inside the .deb

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.identity.encode()).hexdigest()


@dataclass
class Patch:
    path: Path
    name: str
    sha256: str
    files: list[str]                # paths it touches (-p1 stripped)


def _run(argv: list[str], cwd: Path | None = None, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, **kw)


# -- identity ------------------------------------------------------------------------------
def identify(src: str, say) -> Source:
    """Resolve SRC to a Source without extracting anything big."""
    if src.startswith("debian-source:"):
        return _debian_source(src, say)
    p = Path(src).expanduser().resolve()
    if p.is_file():
        if not re.search(r"\.tar(\.(xz|gz|bz2|zst))?$|\.tgz$", p.name):
            raise SourceError(f"build source {src}: not a directory or a .tar.xz/.tar.gz tarball")
        say(f"hashing {p.name}")
        digest = sha256_file(p)
        return Source(src, "tarball", f"tarball:{digest}", {"tarball": str(p), "sha256": digest},
                      origin=p)
    if not p.is_dir():
        raise SourceError(f"build source {src} does not exist")
    if not (p / "Makefile").is_file() or not (p / "Kconfig").is_file():
        raise SourceError(f"build source {p}: no top-level Makefile and Kconfig (not a kernel tree)")
    if (p / ".config").exists():
        raise SourceError(f"build source {p} has a .config in the tree; kbuild refuses O= builds "
                          "from it (run `make mrproper` there)")
    if (p / ".git").exists() and shutil.which("git"):
        head = _run(["git", "rev-parse", "HEAD"], cwd=p)
        if head.returncode == 0:
            diff = subprocess.run(["git", "diff", "HEAD", "--binary"], cwd=p, capture_output=True).stdout
            untracked = _run(["git", "ls-files", "--others", "--exclude-standard", "-z"], cwd=p).stdout
            h = hashlib.sha256(diff)
            for name in sorted(x for x in untracked.split("\0") if x):
                h.update(name.encode() + b"\0" + sha256_file(p / name).encode())
            dirty = bool(diff or untracked)
            ident = f"git:{head.stdout.strip()}" + (f"+{h.hexdigest()}" if dirty else "")
            return Source(src, "git", ident, {"dir": str(p), "head": head.stdout.strip(),
                                              "uncommitted_sha256": h.hexdigest() if dirty else None},
                          origin=p)
    say(f"fingerprinting {p}")
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(p):
        dirnames.sort()
        for fn in sorted(filenames):
            st = os.lstat(os.path.join(dirpath, fn))
            h.update(f"{os.path.relpath(os.path.join(dirpath, fn), p)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return Source(src, "dir", f"dir:{p}:{h.hexdigest()}", {"dir": str(p), "stat_sha256": h.hexdigest()},
                  origin=p)


def _debian_source(src: str, say) -> Source:
    series = src.split(":", 1)[1]
    pkg = f"linux-source-{series}"
    apt = PrivateApt.for_arch(host_arch())
    say(f"fetch: apt-get update (private lists, {apt.arch})")
    apt.update()
    ver = apt.candidate(pkg)
    say(f"fetch: {pkg} {ver}")
    deb = apt.download(pkg, ver)
    return Source(src, "debian-source", f"debian-source:{pkg}={ver}",
                  {"package": pkg, "version": ver, "deb_sha256": deb.name.removesuffix(".deb")},
                  origin=deb, inner=f"usr/src/{pkg}.tar.xz")


# -- pristine tree -------------------------------------------------------------------------
def pristine(s: Source, say) -> Path:
    """The extracted/copied source tree for this identity (created once, atomically)."""
    root = cache_root() / "build" / "src" / s.digest[:24]
    tree = root / "tree"
    if (root / "source.json").exists():
        return tree
    with locked(cache_root() / "build" / "src" / f"{s.digest[:24]}.lock"):
        if (root / "source.json").exists():
            return tree
        with atomic_dir(str(root)) as tmpd:
            tmp = Path(tmpd)
            if s.kind == "debian-source":
                say(f"extract: {s.info['package']} {s.info['version']} (dpkg-deb, tar)")
                _untar_from_deb(s.origin, s.inner, tmp / "tree")
            elif s.kind == "tarball":
                say(f"extract: {s.origin.name}")
                _untar(s.origin, tmp / "tree")
            else:
                say(f"extract: copying {s.origin} (the tree itself is never modified)")
                _copy_tree(s.origin, tmp / "tree")
            if not (tmp / "tree" / "Makefile").is_file():
                raise SourceError(f"build source {s.spec}: no kernel Makefile after extraction")
            (tmp / "source.json").write_text(json.dumps({"identity": s.identity, **s.info}, indent=1) + "\n")
    return tree


def _strip_single_top(d: Path) -> None:
    """Tarballs hold linux-X.Y/...: move that one directory's content up."""
    entries = list(d.iterdir())
    if len(entries) == 1 and entries[0].is_dir():
        top = entries[0]
        tmp = d.parent / (d.name + ".top")
        os.replace(top, tmp)
        d.rmdir()
        os.replace(tmp, d)


def _untar(tarball: Path, dest: Path) -> None:
    dest.mkdir(parents=True)
    if not shutil.which("tar"):
        raise ToolMissingError("tar not found (needed to extract kernel sources)")
    p = _run(["tar", "-xf", str(tarball), "-C", str(dest), "--no-same-owner"], timeout=1800)
    if p.returncode != 0:
        raise SourceError(f"{tarball}: tar failed: {(p.stderr.strip().splitlines() or ['?'])[-1]}")
    _strip_single_top(dest)


def _untar_from_deb(deb: Path, inner: str, dest: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="deb-", dir=dest.parent) as td:
        extract_deb(deb, Path(td))
        tb = Path(td) / inner
        if not tb.is_file():
            raise SourceError(f"{deb.name}: no {inner} inside")
        _untar(tb, dest)


def _copy_tree(src: Path, dest: Path) -> None:
    """Copy a user's tree without .git and build output (O= builds need a clean tree)."""
    def ignore(d: str, names: list[str]) -> list[str]:
        return [n for n in names if n == ".git" or n.endswith((".o", ".cmd", ".ko"))]
    shutil.copytree(src, dest, symlinks=True, ignore=ignore)


# -- patches -------------------------------------------------------------------------------
def load_patches(paths: tuple[str, ...]) -> list[Patch]:
    out = []
    for raw in paths:
        p = Path(raw).expanduser().resolve()
        if not p.is_file():
            raise PatchError(f"patch {raw} does not exist")
        data = p.read_bytes()
        files = _patch_files(data.decode(errors="replace"))
        if not files:
            raise PatchError(f"patch {p}: no file headers (expected a `git diff` / `diff -u` patch)")
        out.append(Patch(p, p.name, sha256_bytes(data), files))
    return out


def _patch_files(text: str) -> list[str]:
    files: list[str] = []
    for line in text.splitlines():
        m = re.match(r"^(?:---|\+\+\+) (\S+)", line) or re.match(r"^rename (?:from|to) (\S+)", line)
        if not m or m.group(1) == "/dev/null":
            continue
        name = m.group(1)
        if line.startswith(("---", "+++")):
            name = name.split("/", 1)[1] if "/" in name else name
        if name not in files:
            files.append(name)
    return files


def apply_patches(patches: list[Patch], pristine_tree: Path, scratch: Path) -> dict[str, bytes | None]:
    """Apply every patch (in order) to copies of the files they touch; return
    {relpath: new content or None if deleted}.  A failing patch raises with its first bad hunk."""
    touched = sorted({f for p in patches for f in p.files})
    for rel in touched:
        src = pristine_tree / rel
        if src.is_file():
            (scratch / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, scratch / rel)
    if not shutil.which("patch"):
        raise ToolMissingError("patch not found (apt-get install patch)")
    for p in patches:
        r = _run(["patch", "-p1", "--batch", "--forward", "--fuzz=0", "--no-backup-if-mismatch", "-r", "-",
                  "-d", str(scratch), "-i", str(p.path)])
        if r.returncode != 0:
            raise PatchError(f"patch {p.path} does not apply: {_first_failure(r.stdout + r.stderr)}")
    out: dict[str, bytes | None] = {}
    for rel in touched:
        f = scratch / rel
        out[rel] = f.read_bytes() if f.is_file() else None
    return out


def _first_failure(out: str) -> str:
    cur = "?"
    for line in out.splitlines():
        m = re.match(r"^(?:patching|checking) file (.+)$", line)
        if m:
            cur = m.group(1).strip()
            continue
        m = re.match(r"^Hunk #(\d+) FAILED at (\d+)", line)
        if m:
            return f"{cur}: hunk #{m.group(1)} FAILED at line {m.group(2)}"
        if "Reversed (or previously applied) patch detected" in line:
            return f"{cur}: already applied (reversed patch detected)"
        if "can't find file to patch" in line or "No file to patch" in line:
            return f"{cur}: file not found in the source"
        if "malformed patch" in line or "Only garbage" in line:
            return line.strip()
    lines = [x for x in out.splitlines() if x.strip()]
    return lines[-1].strip() if lines else "patch failed"


# -- work tree -----------------------------------------------------------------------------
def work_tree(pristine_tree: Path, base: Path, say) -> Path:
    """base/src: a hard-link farm of the pristine tree, made once (atomically)."""
    dest = base / "src"
    if dest.is_dir():
        return dest
    say("extract: linking a private work tree")
    tmp = base / f".src.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    base.mkdir(parents=True, exist_ok=True)
    r = _run(["cp", "-al", str(pristine_tree), str(tmp)], timeout=1800)
    if r.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(pristine_tree, tmp, symlinks=True)
    os.replace(tmp, dest)
    return dest


def sync_patched(tree: Path, pristine_tree: Path, new: dict[str, bytes | None]) -> list[str]:
    """Bring the work tree to pristine + `new`; return the files actually rewritten.

    Files the previous patch set changed and the new one does not are restored from the
    pristine tree (copied, so they get a fresh mtime and make rebuilds them); files whose
    content is already right are left alone (no rebuild)."""
    state_f = tree / STATE
    old = json.loads(state_f.read_text())["files"] if state_f.exists() else []
    want: dict[str, bytes | None] = {}
    for rel in old:
        if rel not in new:
            p = pristine_tree / rel
            want[rel] = p.read_bytes() if p.is_file() else None
    want.update(new)
    with atomic_file(str(state_f), "w") as f:   # a crash mid-way still knows every file touched
        json.dump({"files": sorted(set(old) | set(new))}, f)
    changed = []
    for rel, content in sorted(want.items()):
        dst = tree / rel
        cur = dst.read_bytes() if dst.is_file() else None
        if cur == content:
            continue
        if content is None:
            dst.unlink(missing_ok=True)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            mode = (pristine_tree / rel).stat().st_mode & 0o777 if (pristine_tree / rel).exists() else 0o644
            with atomic_file(str(dst), "wb") as f:   # new inode: never writes through a hard link
                f.write(content)
            os.chmod(dst, mode)
        changed.append(rel)
    with atomic_file(str(state_f), "w") as f:
        json.dump({"files": sorted(new)}, f)
    return changed
