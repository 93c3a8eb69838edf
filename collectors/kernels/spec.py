"""Kernel SPECs -> a bootable kernel on disk (image, modules, config), cached by content.

SPEC forms:
  debian:6.1/arm64, debian:6.18/arm64, debian:7.2/amd64 ...   newest Debian package of the series
                                                               (bookworm, trixie, trixie-backports, sid)
  deb:FILE.deb                                                 a linux-image .deb you have
  path:IMAGE[,modules=DIR][,config=FILE]                       a kernel you built
  build:SRC[,patch=FILE]...[,config=FRAGMENT][,arch=A][,base=B]  built here from source
                                                               (collectors/build/)
The config is checked before anything boots: a capture without tracepoints or kprobe events
cannot show what mtaudit looks for, so we refuse early and say why.  CONFIG_CMA is needed only by
scenarios that reserve CMA (`cma=` / `hugetlb_cma=` on their command line, or requires=CONFIG_CMA):
memory offline, gigantic pages and highatomic reserves are checked on CMA=n kernels too.
"""
from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from analyzer.atomic import atomic_dir
from analyzer.kernels import boot_kprobe_creates_dir, parse_version

from ..build.cache import cache_root, sha256_file
from .debian import PrivateApt, deb_fields, extract_deb, max_version
from ..errors import KernelConfigError, KernelSpecError

# Debian arch name -> QEMU/uname arch.  One table; machine profiles live in qemu/machines/.
ARCHES = {"arm64": "aarch64", "amd64": "x86_64"}
UNAME_TO_DEB = {v: k for k, v in ARCHES.items()}
# Which suites carry which series (bookworm has 6.1; trixie 6.12; trixie-backports 6.16 ... 7.3;
# sid 7.2).  Other series are looked for in every suite of collectors/debian.py.
SERIES_SUITES = {"6.1": ("bookworm",), "6.12": ("trixie", "bookworm")}

REQUIRED = {
    "TRACEPOINTS": "no kmem/cma tracepoints",
    "FTRACE": "no tracefs ring buffer",
    "EVENT_TRACING": "no trace events",
    "KPROBE_EVENTS": "no ground-truth kprobes (analyzer/probes.py)",
    "NET_9P": "the guest->host 9p transport needs it (y or m)",
    "9P_FS": "the guest->host 9p transport needs it (y or m)",
}
# Recorded in the manifest (contract: "config subset").
RELEVANT = ("CMA", "CMA_DEBUGFS", "CMA_SYSFS", "DMA_CMA", "CMA_SIZE_MBYTES", "CMA_AREAS",
            "TRACEPOINTS", "FTRACE", "EVENT_TRACING", "KPROBES", "KPROBE_EVENTS", "BOOT_CONFIG",
            "MEMORY_ISOLATION", "COMPACTION", "CONTIG_ALLOC", "HUGETLBFS", "ARCH_HAS_GIGANTIC_PAGE",
            "MEMORY_HOTPLUG", "MEMORY_HOTREMOVE", "PAGE_REPORTING", "PAGE_OWNER", "DEBUG_VM",
            "TRANSPARENT_HUGEPAGE", "ARM64_4K_PAGES", "ARM64_64K_PAGES", "PAGE_SIZE_4KB",
            "MAX_ORDER", "ARCH_FORCE_MAX_ORDER", "NUMA", "NET_9P", "NET_9P_VIRTIO", "9P_FS",
            "VIRTIO_MMIO", "VIRTIO_PCI", "LOCALVERSION", "HZ")


@dataclass
class Kernel:
    spec: str
    arch: str                    # Debian name: arm64 | amd64
    release: str                 # uname -r
    version: str                 # Debian package version or sha256 of the image
    image: Path
    config_path: Path | None
    modules: Path | None         # .../lib/modules/<release>
    package: str | None = None
    config: dict[str, str] = field(default_factory=dict)
    build: dict | None = None    # build: specs only - source, patches, fragment (manifest)

    @property
    def qemu_arch(self) -> str:
        return ARCHES[self.arch]

    def config_subset(self) -> dict[str, str]:
        return {k: self.config.get(k, "n") for k in RELEVANT if k in self.config or k in REQUIRED}

    def has(self, opt: str) -> bool:
        return self.config.get(opt.removeprefix("CONFIG_"), "n") in ("y", "m")


def boot_kprobe_ok(release: str) -> bool:
    """Whether `kprobe_event=` creates the probe's tracefs directory (the one table in analyzer/kernels.py)."""
    return boot_kprobe_creates_dir(parse_version(release)[0])


def parse_config(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"^CONFIG_([A-Za-z0-9_]+)=(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2).strip().strip('"')
        else:
            m = re.match(r"^# CONFIG_([A-Za-z0-9_]+) is not set", line)
            if m:
                out[m.group(1)] = "n"
    return out


CMA_WHY = "pageblock CMA areas (MIGRATE_CMA) do not exist without it"


def scenario_needs_cma(cmdline: list[str] | tuple[str, ...], requires: list[str] | tuple[str, ...]) -> bool:
    """A scenario needs CONFIG_CMA when it reserves CMA on the kernel command line or says so."""
    return any(w.split("=", 1)[0] in ("cma", "hugetlb_cma") for w in cmdline) or \
        any(r.removeprefix("CONFIG_") == "CMA" for r in requires)


def check_config(k: Kernel, extra: tuple[str, ...] = ()) -> None:
    """Refuse kernels that cannot produce a useful capture; name what is missing and why."""
    if not k.config:
        raise KernelConfigError(
            f"{k.spec}: no kernel config found (pass path:IMAGE,config=FILE); mtaudit must check "
            "CMA/TRACEPOINTS/KPROBE_EVENTS before booting")
    missing = [o for o in REQUIRED if not k.has(o)]
    missing += [o.removeprefix("CONFIG_") for o in extra if not k.has(o)]
    if not missing:
        return
    why = "; ".join(f"CONFIG_{o} ({REQUIRED.get(o, CMA_WHY if o == 'CMA' else 'needed by this scenario')})"
                    for o in missing)
    hint = ""
    if "CMA" in missing and k.spec.startswith("debian:") and k.arch == "amd64":
        hint = (" - Debian's amd64 kernels are built with CMA off up to 7.1; use an arm64 series, "
                "debian:7.2/amd64 or later, a scenario without CMA (memory-offline), or a kernel built "
                "from source (build:debian-source:6.1,arch=x86_64)")
    raise KernelConfigError(f"{k.spec} ({k.release}) lacks {why}{hint}")


# -- SPEC parsing --------------------------------------------------------------------------
@dataclass(frozen=True)
class Spec:
    kind: str                     # debian | deb | path | build
    series: str = ""
    arch: str = ""
    file: str = ""                # deb/path: the file; build: SRC
    modules: str = ""
    config: str = ""              # path: the .config; build: the user's fragment
    patches: tuple[str, ...] = ()
    base: str = ""                # build: tinyconfig | defconfig | FILE


BUILD_USAGE = ("build:SRC[,patch=FILE]...[,config=FRAGMENT][,arch=x86_64|arm64]"
               "[,base=tinyconfig|defconfig|FILE] (SRC: a directory, a .tar.xz/.tar.gz, "
               "or debian-source:6.1|6.12|7.2)")


def _parse_build(spec: str, arch: str | None) -> Spec:
    parts = spec[len("build:"):].split(",")
    src = parts[0].strip()
    if not src or "=" in src:
        raise KernelSpecError(f"kernel spec {spec!r}: missing SRC ({BUILD_USAGE})")
    opts: dict[str, str] = {}
    patches: list[str] = []
    for p in parts[1:]:
        key, eq, val = p.partition("=")
        key, val = key.strip(), val.strip()
        if not eq or not val or key not in ("patch", "config", "arch", "base"):
            raise KernelSpecError(f"kernel spec {spec!r}: unknown option {p!r} ({BUILD_USAGE})")
        if key == "patch":
            patches.append(val)
        elif key in opts:
            raise KernelSpecError(f"kernel spec {spec!r}: {key}= given twice")
        else:
            opts[key] = val
    a = normalize_arch(opts["arch"]) if "arch" in opts else None
    if a and arch and a != arch:
        raise KernelSpecError(f"kernel spec {spec!r} is {a} but --arch says {arch}")
    a = a or arch or host_arch()
    if src.startswith("debian-source:") and not re.fullmatch(r"debian-source:\d+\.\d+", src):
        raise KernelSpecError(f"kernel spec {spec!r}: use debian-source:SERIES (debian-source:6.1, debian-source:6.12, debian-source:7.2 ...)")
    return Spec("build", arch=a, file=src, config=opts.get("config", ""), patches=tuple(patches),
                base=opts.get("base", "tinyconfig"))


def host_arch() -> str:
    """Debian name of this machine's architecture (the default build target: no cross compiler)."""
    import platform
    try:
        return normalize_arch(platform.machine())
    except KernelSpecError:
        return "amd64"


def parse_spec(spec: str, arch: str | None = None) -> Spec:
    if arch is not None:
        arch = normalize_arch(arch)
    if spec.startswith("debian:"):
        body = spec[len("debian:"):]
        series, _, a = body.partition("/")
        if not re.fullmatch(r"\d+\.\d+", series):
            raise KernelSpecError(f"kernel spec {spec!r}: series must look like 6.1, 6.18 or 7.2")
        a = normalize_arch(a) if a else (arch or "arm64")
        if arch and arch != a:
            raise KernelSpecError(f"kernel spec {spec!r} is {a} but --arch says {arch}")
        return Spec("debian", series=series, arch=a)
    if spec.startswith("deb:"):
        f = spec[4:]
        if not f.endswith(".deb"):
            raise KernelSpecError(f"kernel spec {spec!r}: expected deb:FILE.deb")
        return Spec("deb", file=f, arch=arch or "")
    if spec.startswith("build:"):
        return _parse_build(spec, arch)
    if spec.startswith("path:"):
        parts = spec[5:].split(",")
        opts: dict[str, str] = {}
        for p in parts[1:]:
            key, eq, val = p.partition("=")
            if not eq or key not in ("modules", "config") or not val:
                raise KernelSpecError(
                    f"kernel spec {spec!r}: unknown option {p!r} (path:IMAGE[,modules=DIR][,config=FILE])")
            opts[key] = val
        if not parts[0]:
            raise KernelSpecError(f"kernel spec {spec!r}: missing IMAGE")
        return Spec("path", file=parts[0], modules=opts.get("modules", ""),
                    config=opts.get("config", ""), arch=arch or "")
    raise KernelSpecError(
        f"kernel spec {spec!r} not understood: use debian:6.1/arm64, deb:FILE.deb, path:IMAGE[,modules=DIR][,config=FILE] or "
        f"{BUILD_USAGE}")


def normalize_arch(a: str) -> str:
    a = a.strip().lower()
    if a in ARCHES:
        return a
    if a in UNAME_TO_DEB:
        return UNAME_TO_DEB[a]
    if a == "aarch64":
        return "arm64"
    raise KernelSpecError(f"unsupported architecture {a!r} (arm64/aarch64 or amd64/x86_64)")


# -- resolution ----------------------------------------------------------------------------
def resolve(spec_text: str, arch: str | None = None, progress=None) -> Kernel:
    """Turn a SPEC into a cached, extracted Kernel (downloading if needed)."""
    spec = parse_spec(spec_text, arch)
    say = progress or (lambda msg: None)
    if spec.kind == "debian":
        apt = PrivateApt.for_arch(spec.arch)
        say(f"apt-get update (private lists, {spec.arch})")
        apt.update()
        suites = SERIES_SUITES.get(spec.series)
        meta = f"linux-image-{spec.arch}"
        found = apt.versions(meta)
        cands = [v for v, s in found
                 if v.startswith(spec.series + ".") and (suites is None or any(s.startswith(x) for x in suites))]
        if cands:
            mv = max_version(cands)
            pkg, ver = image_package(apt, spec_text, meta, mv)
        else:
            # the meta package follows only each suite's newest series (trixie-backports holds
            # 6.16 ... 7.3 as versioned image packages): look for those by name
            named = series_images(apt, spec.series, spec.arch)
            if not named:
                imgs = [n for n in apt.pkgnames("linux-image-") if _IMAGE_RE(spec.arch).fullmatch(n)]
                have = available_series(found + [(v, s) for _, v, s in apt.versions_of(imgs)])
                raise KernelSpecError(f"{spec_text}: no linux-image {spec.series}.x for {spec.arch} in the Debian "
                                      f"archive ({', '.join(SUITES_SEARCHED)}); series available: "
                                      f"{', '.join(have) or 'none'}")
            ver = max_version([v for _, v in named])
            pkg = next(n for n, v in named if v == ver)
        say(f"fetching {pkg} {ver}")
        deb = apt.download(pkg, ver)
        extra = [apt.download(p, v) for p, v in split_packages(apt, pkg, ver)]
        for p in extra:
            say(f"fetched {p.name} (part of {pkg})")
        return _from_deb(deb, spec_text, say, extra)
    if spec.kind == "deb":
        deb = Path(spec.file)
        if not deb.is_file():
            raise KernelSpecError(f"{spec_text}: {deb} does not exist")
        return _from_deb(deb, spec_text, say)
    if spec.kind == "build":   # the build room sits above this one: collect.resolve_kernel dispatches
        raise KernelSpecError(f"{spec_text}: build: specs are built by collectors.build (collect.resolve_kernel)")
    return _from_path(spec, spec_text)


SUITES_SEARCHED = ("bookworm", "trixie", "trixie-backports", "sid")


def _IMAGE_RE(arch: str) -> "re.Pattern[str]":
    """linux-image-<upstream>[-abi|+debNN]-<flavour> of the plain flavour (no -dbg/-unsigned/-16k)."""
    return re.compile(rf"linux-image-(\d+\.\d+)[.\d]*(?:-\d+|\+deb\d+)?-{re.escape(arch)}")


def series_images(apt: PrivateApt, series: str, arch: str) -> list[tuple[str, str]]:
    """(package, version) of every plain-flavour image package of one series."""
    names = [n for n in apt.pkgnames(f"linux-image-{series}.")
             if (m := _IMAGE_RE(arch).fullmatch(n)) and m.group(1) == series]
    return [(n, v) for n, v, _ in apt.versions_of(names)]


def available_series(found: list[tuple[str, str]]) -> list[str]:
    """"6.12 (trixie)"-style list of the series a meta package has, for an error message."""
    by: dict[tuple[int, int], set[str]] = {}
    for v, suite in found:
        m = re.match(r"(\d+)\.(\d+)", v)
        if m:
            by.setdefault((int(m[1]), int(m[2])), set()).add(suite)
    return [f"{a}.{b} ({', '.join(sorted(s))})" for (a, b), s in sorted(by.items())]


def image_package(apt: PrivateApt, spec_text: str, meta: str, version: str) -> tuple[str, str]:
    """The linux-image-<abi>-<flavour> package a meta package version depends on."""
    dep = apt.show_field(meta, version, "Depends")
    m = re.search(r"(linux-image-[^\s,(]+)\s*\(=\s*([^)]+)\)", dep)
    if not m:
        raise KernelSpecError(f"{spec_text}: cannot read the image package from {meta} {version}: {dep!r}")
    return m.group(1), m.group(2).strip()


def split_packages(apt: PrivateApt, pkg: str, ver: str) -> list[tuple[str, str]]:
    """From 6.19 on `linux-image-<abi>-<flavour>` is itself a small package depending on
    `linux-binary-*` (vmlinuz), `linux-modules-*` and `linux-base-*` (config): those, exactly
    versioned.  Older image packages hold everything and depend on none of them."""
    dep = apt.show_field(pkg, ver, "Depends")
    out = []
    for m in re.finditer(r"(linux-(?:binary|modules|base)-[^\s,(|]+)\s*\(=\s*([^)]+)\)", dep):
        name, ver = m.group(1), m.group(2).strip()
        # 6.18's image Depends on a linux-base-<abi> it Provides itself (virtual): nothing to fetch
        if any(v == ver for v, _ in apt.versions(name)):
            out.append((name, ver))
    return out


def _from_deb(deb: Path, spec_text: str, say, extra: list[Path] | None = None) -> Kernel:
    fields = deb_fields(deb)
    arch = normalize_arch(fields.get("Architecture", ""))
    digest = sha256_file(deb)
    if extra:
        import hashlib
        digest = hashlib.sha256((digest + "".join(sha256_file(p) for p in extra)).encode()).hexdigest()
    dest = cache_root() / "kernels" / digest
    if not (dest / "kernel.json").exists():
        say(f"extracting {deb.name}")
        with atomic_dir(str(dest)) as tmp:
            extract_deb(deb, Path(tmp) / "root")
            for p in extra or []:
                extract_deb(p, Path(tmp) / "root")
            info = {"package": fields.get("Package"), "version": fields.get("Version"),
                    "arch": arch, "deb_sha256": digest}
            Path(tmp, "kernel.json").write_text(json.dumps(info, indent=1) + "\n")
    info = json.loads((dest / "kernel.json").read_text())
    root = dest / "root"
    images = sorted(root.glob("boot/vmlinu[xz]-*"))
    if images:
        image = images[0]
        release = image.name.split("-", 1)[1]
        cfg = root / "boot" / f"config-{release}"
    else:
        # 6.19+ / sid split packages: linux-binary-* ships usr/lib/modules/<release>/vmlinuz and
        # linux-base-* the config next to it
        images = sorted(root.glob("usr/lib/modules/*/vmlinu[xz]"))
        if not images:
            raise KernelSpecError(f"{spec_text}: {deb.name} holds no boot/vmlinuz-* nor "
                                  "usr/lib/modules/*/vmlinuz (not a linux-image package?)")
        image = images[0]
        release = image.parent.name
        cfg = image.parent / "config"
    mods: Path | None = root / "lib" / "modules" / release
    if mods is not None and not mods.exists():
        alt = root / "usr" / "lib" / "modules" / release
        mods = alt if alt.exists() else None
    k = Kernel(spec=spec_text, arch=arch, release=release, version=info["version"], image=image,
               config_path=cfg if cfg.exists() else None, modules=mods, package=info["package"])
    if k.config_path:
        k.config = parse_config(k.config_path.read_text(errors="replace"))
    return k


def _guess_arch(image: Path) -> str | None:
    with open(image, "rb") as f:
        head = f.read(0x400)
    if head[:2] == b"\x1f\x8b":
        with gzip.open(image, "rb") as g:
            head = g.read(0x400)
    if head[0x38:0x3c] == b"ARM\x64":
        return "arm64"
    if head[0x202:0x206] == b"HdrS":
        return "amd64"
    return None


def _from_path(spec: Spec, spec_text: str) -> Kernel:
    image = Path(spec.file).expanduser().resolve()
    if not image.is_file():
        raise KernelSpecError(f"{spec_text}: image {image} does not exist")
    arch = spec.arch or _guess_arch(image)
    if not arch:
        raise KernelSpecError(f"{spec_text}: cannot tell the architecture of {image}; pass --arch")
    mods = Path(spec.modules).expanduser().resolve() if spec.modules else None
    if mods and not mods.is_dir():
        raise KernelSpecError(f"{spec_text}: modules dir {mods} does not exist")
    if mods and not (mods / "modules.dep").exists():
        subs = [d for d in mods.glob("lib/modules/*") if (d / "modules.dep").exists()] + \
               [d for d in mods.glob("*") if (d / "modules.dep").exists()]
        if len(subs) != 1:
            raise KernelSpecError(f"{spec_text}: no modules.dep under {mods}")
        mods = subs[0]
    cfg = Path(spec.config).expanduser().resolve() if spec.config else None
    if cfg and not cfg.is_file():
        raise KernelSpecError(f"{spec_text}: config {cfg} does not exist")
    if cfg is None:
        for cand in (image.parent / ".config", image.parent.parent.parent.parent / ".config"):
            if cand.is_file():
                cfg = cand
                break
    release = mods.name if mods else _release_from_image(image) or "unknown"
    k = Kernel(spec=spec_text, arch=arch, release=release, version="sha256:" + sha256_file(image),
               image=image, config_path=cfg, modules=mods)
    if cfg:
        k.config = parse_config(cfg.read_text(errors="replace"))
    return k


def _release_from_image(image: Path) -> str | None:
    """uname -r of an image file: x86 bzImage keeps it uncompressed in the setup header; arm64
    Image (and gzip'd Image.gz / vmlinuz) carries the plain "Linux version" banner."""
    with open(image, "rb") as f:
        head = f.read(0x8000)
    rel = _release_from_setup_header(head)
    if rel:
        return rel
    data = image.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError):
            return None
    m = re.search(rb"Linux version (\d[^\s\x00]*)", data)
    return m.group(1).decode(errors="replace") if m else None


def _release_from_setup_header(head: bytes) -> str | None:
    """x86 boot protocol >= 2.00: u16 at 0x20E is the offset (minus 0x200) of the kernel_version
    string ("6.1.192 (user@host) #1 SMP ..."), which stays outside the compressed payload."""
    if len(head) < 0x210 or head[0x202:0x206] != b"HdrS":
        return None
    off = int.from_bytes(head[0x20E:0x210], "little")
    if not off:
        return None
    start = off + 0x200
    end = head.find(b"\x00", start)
    if start >= len(head) or end < 0:
        return None
    text = head[start:end].decode(errors="replace").split()
    return text[0] if text and re.match(r"\d+\.\d+", text[0]) else None
