"""Build the guest's initramfs on the host from Debian packages of the guest architecture.

Contents: static busybox, trace-cmd with its shared libraries and loader, the kernel modules the
9p transport needs (decompressed, with a load order), and the guest files from qemu/ (init,
lib.sh, scenarios).  The result is cached under a hash of every input, so a second run with the
same kernel and guest files costs nothing.  A user scenario is appended as a second, tiny cpio
(the kernel unpacks concatenated archives), so editing a scenario never rebuilds the base.
"""
from __future__ import annotations

import gzip
import io
import json
import lzma
import os
import shutil
import stat
import tempfile
from pathlib import Path

from ..build.cache import cache_root, sha256_bytes
from ..kernels.debian import PrivateApt, extract_deb
from .elfdeps import closure, resolve_in_root
from ..errors import CollectError
from ..kernels.spec import Kernel

FORMAT = 3  # bump when the layout below changes (invalidates cached images)
GUEST_SUITES = ("bookworm",)  # userspace: trace-cmd 3.1.6, same as the host's
GUEST_PACKAGES = ("busybox-static", "trace-cmd", "libtraceevent1", "libtracefs1", "libzstd1", "libc6")
TRIPLET = {"arm64": "aarch64-linux-gnu", "amd64": "x86_64-linux-gnu"}
# Transport modules per arch, in the order we ask for them (dependencies are added first).
TRANSPORT_MODULES = {"arm64": ("virtio_mmio", "9pnet_virtio", "9p"),
                     "amd64": ("virtio_pci", "9pnet_virtio", "9p")}
QEMU_DIR = Path(__file__).resolve().parents[2] / "qemu"


# -- cpio (newc) ---------------------------------------------------------------------------
class Cpio:
    """Deterministic newc writer (mtime 0, root-owned)."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1
        self.dirs: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"") -> None:
        nb = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nb), 0))
        self.ino += 1
        self.buf.write(hdr.encode() + nb)
        self.buf.write(b"\0" * ((4 - (110 + len(nb)) % 4) % 4))
        self.buf.write(data)
        self.buf.write(b"\0" * ((4 - len(data) % 4) % 4))

    def mkdir(self, path: str) -> None:
        path = path.strip("/")
        if not path or path in self.dirs:
            return
        self.mkdir(os.path.dirname(path))
        self.dirs.add(path)
        self._entry(path, stat.S_IFDIR | 0o755)

    def file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        path = path.strip("/")
        self.mkdir(os.path.dirname(path))
        self._entry(path, stat.S_IFREG | mode, data)

    def symlink(self, path: str, target: str) -> None:
        path = path.strip("/")
        self.mkdir(os.path.dirname(path))
        self._entry(path, stat.S_IFLNK | 0o777, target.encode())

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        data = self.buf.getvalue()
        return data + b"\0" * ((512 - len(data) % 512) % 512)


def _gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


# -- modules -------------------------------------------------------------------------------
def module_load_order(modules: Path, wanted: tuple[str, ...]) -> list[str]:
    """Relative .ko paths to insmod, dependencies first; builtin modules are skipped.

    Debian packages ship no modules.dep (depmod runs in postinst), so without it the
    dependencies come from each module's own `.modinfo` `depends=` field.
    """
    by_name: dict[str, str] = {}
    for f in modules.rglob("*.ko*"):
        by_name.setdefault(_modname(f.name), str(f.relative_to(modules)))
    dep_file = modules / "modules.dep"
    deps_txt: dict[str, list[str]] | None = None
    if dep_file.exists():
        deps_txt = {}
        for line in dep_file.read_text().splitlines():
            if ":" in line:
                k, v = line.split(":", 1)
                deps_txt[_modname(k.strip())] = [_modname(x) for x in v.split()]
    builtin = set()
    if (modules / "modules.builtin").exists():
        builtin = {_modname(p) for p in (modules / "modules.builtin").read_text().split()}
    order: list[str] = []

    def deps_of(name: str) -> list[str]:
        if deps_txt is not None:
            return deps_txt.get(name, [])
        data = _read_module(modules / by_name[name])
        i = data.find(b"depends=")
        while i > 0 and data[i - 1] != 0:
            i = data.find(b"depends=", i + 1)
        if i < 0:
            return []
        val = data[i + 8:data.index(b"\0", i)].decode()
        return [x.replace("-", "_") for x in val.split(",") if x]

    def visit(name: str, chain: tuple[str, ...] = ()) -> None:
        if name in builtin or by_name.get(name) in order or name in chain:
            return
        if name not in by_name:
            raise CollectError(f"kernel module {name} (needed by {chain[-1] if chain else 'the 9p transport'}) "
                               f"neither built in nor under {modules}")
        for d in deps_of(name):
            visit(d, chain + (name,))
        order.append(by_name[name])

    for name in wanted:
        visit(name.replace("-", "_"))
    return order


def _modname(path: str) -> str:
    base = os.path.basename(path)
    for ext in (".ko.xz", ".ko.zst", ".ko.gz", ".ko"):
        if base.endswith(ext):
            base = base[: -len(ext)]
    return base.replace("-", "_")


def _read_module(path: Path) -> bytes:
    raw = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(raw)
    if path.name.endswith(".gz"):
        return gzip.decompress(raw)
    if path.name.endswith(".zst"):
        import zstandard
        return zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    return raw


# -- guest files ---------------------------------------------------------------------------
def guest_files() -> dict[str, bytes]:
    """qemu/init, qemu/lib.sh, qemu/scenarios/*.sh (what a developer edits)."""
    from analyzer.probes import shell_chooser
    out = {"init": (QEMU_DIR / "init").read_bytes(), "mtaudit/lib.sh": (QEMU_DIR / "lib.sh").read_bytes(),
           # the ground-truth probe choice, generated from the one definition (analyzer/probes.py)
           "mtaudit/probes.sh": shell_chooser().encode()}
    for p in sorted((QEMU_DIR / "scenarios").glob("*.sh")):
        out[f"mtaudit/scenarios/{p.name}"] = p.read_bytes()
    return out


def _transport_modules(kernel: Kernel) -> tuple[list[str], dict[str, str]]:
    """Load order + content hashes; memoised next to a cached (content-addressed) kernel,
    because walking ~4000 modules and decompressing them costs seconds on every run."""
    memo = None
    kroot = cache_root() / "kernels"
    if kernel.modules is not None and kroot in kernel.modules.parents:
        digest = kernel.modules.relative_to(kroot).parts[0]
        memo = kroot / digest / f"transport-{kernel.arch}-v{FORMAT}.json"
        if memo.exists():
            d = json.loads(memo.read_text())
            return d["order"], d["hashes"]
    order = module_load_order(kernel.modules, TRANSPORT_MODULES[kernel.arch])
    hashes = {m: sha256_bytes(_read_module(kernel.modules / m)) for m in order}
    if memo is not None:
        tmp = memo.with_name(memo.name + f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"order": order, "hashes": hashes}))
        os.replace(tmp, memo)
    return order, hashes


def build(kernel: Kernel, progress=None) -> Path:
    """Return the path of the (cached) base initramfs for this kernel + guest files."""
    say = progress or (lambda m: None)
    arch = kernel.arch
    if kernel.modules is None:
        if not (kernel.has("NET_9P") and kernel.config.get("9P_FS") == "y"
                and kernel.config.get("NET_9P_VIRTIO") == "y"):
            raise CollectError(f"{kernel.spec}: no modules directory and 9p is not built in; "
                               "pass path:IMAGE,modules=DIR")
        mod_order: list[str] = []
    else:
        mod_order, mod_hashes = _transport_modules(kernel)
    apt = PrivateApt.for_arch(arch)
    say(f"apt-get update (private lists, {arch})")
    apt.update()
    pkgs = {}
    for name in GUEST_PACKAGES:
        ver = apt.candidate(name, GUEST_SUITES)
        pkgs[name] = (ver, apt.download(name, ver))
    gfiles = guest_files()
    key_parts = {
        "format": FORMAT, "arch": arch,
        "packages": {n: p.name for n, (v, p) in pkgs.items()},
        "modules": mod_hashes if mod_order else {},
        "guest": {n: sha256_bytes(d) for n, d in gfiles.items()},
    }
    key = sha256_bytes(json.dumps(key_parts, sort_keys=True).encode())[:32]
    out = cache_root() / "initramfs" / f"{key}.cpio.gz"
    if out.exists():
        return out
    say("building initramfs")
    trip = TRIPLET[arch]
    cp = Cpio()
    for d in ("dev", "proc", "sys", "tmp", "out", "run", "mnt", "sbin", "usr/bin", "usr/sbin",
              "lib", f"lib/{trip}", "mtaudit/modules"):
        cp.mkdir(d)
    with tempfile.TemporaryDirectory(prefix="mtaudit-initramfs-") as td:
        stage = Path(td)
        for _n, (_v, deb) in pkgs.items():
            extract_deb(deb, stage)
        cp.file("bin/busybox", resolve_in_root(stage, "/bin/busybox").read_bytes(), 0o755)
        libdirs = [f"/lib/{trip}", f"/usr/lib/{trip}", "/lib", "/usr/lib"]
        for gp in closure(stage, "/usr/bin/trace-cmd", libdirs):
            real = resolve_in_root(stage, gp)
            cp.file(gp, real.read_bytes(), 0o755)
        if arch == "amd64":
            cp.symlink("lib64/ld-linux-x86-64.so.2", f"/lib/{trip}/ld-linux-x86-64.so.2")
    for i, m in enumerate(mod_order):
        cp.file(f"mtaudit/modules/{i:02d}-{_modname(m)}.ko", _read_module(kernel.modules / m))
    for name, data in gfiles.items():
        cp.file(name, data, 0o755 if name == "init" or name.endswith(".sh") else 0o644)
    cp.file("mtaudit/manifest.json", json.dumps(
        {**key_parts, "versions": {n: v for n, (v, p) in pkgs.items()}}, indent=1, sort_keys=True).encode())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tmp.write_bytes(_gz(cp.finish()))
    os.replace(tmp, out)
    return out


def package_versions(image: Path) -> dict[str, str]:
    """Guest package versions recorded inside an initramfs we built (for the manifest)."""
    data = gzip.decompress(image.read_bytes())
    i = data.find(b"mtaudit/manifest.json\0")
    if i < 0:
        return {}
    start = data.index(b"{", i)
    depth = 0
    for j in range(start, len(data)):
        if data[j:j + 1] == b"{":
            depth += 1
        elif data[j:j + 1] == b"}":
            depth -= 1
            if depth == 0:
                return json.loads(data[start:j + 1]).get("versions", {})
    return {}


def scenario_cpio(name: str, script: bytes, extra: dict[str, bytes] | None = None) -> bytes:
    """A small gzip'd cpio adding/overriding one scenario (appended after the base image)."""
    cp = Cpio()
    cp.file(f"mtaudit/scenarios/{name}.sh", script, 0o755)
    for n, d in (extra or {}).items():
        cp.file(n, d, 0o644)
    return _gz(cp.finish())


def copy_with(base: Path, extra_cpio: bytes, dest: Path) -> None:
    with open(dest, "wb") as f, open(base, "rb") as b:
        shutil.copyfileobj(b, f)
        f.write(extra_cpio)
