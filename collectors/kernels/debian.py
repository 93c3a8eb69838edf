"""Debian packages of any architecture through a private apt configuration.

Why private: the host's apt state must never change (other users, other arches), and we need
arm64 lists on an amd64 host.  Everything (lists, archives, status) lives under the mtaudit
cache; the mirror URIs are taken from the host's own sources (so proxies/mirrors configured for
the machine are honoured) unless $MTAUDIT_DEBIAN_MIRROR / $MTAUDIT_DEBIAN_SECURITY_MIRROR say
otherwise.
"""
from __future__ import annotations

import glob
import hashlib
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ..build.cache import cache_root, locked, sha256_file
from ..errors import FetchError, ToolMissingError

SUITES = ("bookworm", "bookworm-updates", "bookworm-security", "trixie", "trixie-updates",
          "trixie-security", "trixie-backports", "sid")
LISTS_MAX_AGE_S = 24 * 3600
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


def _host_mirrors() -> tuple[str, str]:
    """(main, security) archive URIs from the host's apt sources, or the environment."""
    main = os.environ.get("MTAUDIT_DEBIAN_MIRROR")
    sec = os.environ.get("MTAUDIT_DEBIAN_SECURITY_MIRROR")
    found: list[str] = []
    files = ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")) \
        + sorted(glob.glob("/etc/apt/sources.list.d/*.sources"))
    for fn in files:
        try:
            text = open(fn, encoding="utf-8", errors="replace").read()
        except OSError:
            continue
        found += re.findall(r"^\s*URIs:\s*(\S+)", text, re.M)
        found += re.findall(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)", text, re.M)
    for uri in found:
        u = uri.rstrip("/")
        if sec is None and u.endswith("debian-security"):
            sec = u
        elif main is None and u.endswith("/debian"):
            main = u
    if not main:
        raise FetchError("no Debian mirror found in /etc/apt/sources.list*; "
                         "set MTAUDIT_DEBIAN_MIRROR=<uri of a Debian archive>")
    if not sec:
        sec = main + "-security"
    return main.rstrip("/"), sec.rstrip("/")


@dataclass
class PrivateApt:
    """One apt root per architecture, holding bookworm and trixie lists."""

    arch: str
    root: Path

    @classmethod
    def for_arch(cls, arch: str) -> "PrivateApt":
        for tool in ("apt-get", "apt-cache", "dpkg-deb", "dpkg"):
            if not shutil.which(tool):
                raise ToolMissingError(f"{tool} not found: mtaudit fetches Debian kernels with apt")
        # one root per suite set: roots of other suite sets (other mtaudit versions sharing the
        # cache) keep their own sources.list and lists instead of rewriting each other's
        tag = hashlib.sha256(" ".join(SUITES).encode()).hexdigest()[:8]
        self = cls(arch, cache_root() / "apt" / f"{arch}-{tag}")
        self._layout()
        return self

    # -- configuration -------------------------------------------------------------------
    def _layout(self) -> None:
        r = self.root
        for d in ("lists/partial", "archives/partial", "etc/sources.list.d",
                  "etc/preferences.d", "etc/apt.conf.d", "state"):
            (r / d).mkdir(parents=True, exist_ok=True)
        (r / "state" / "status").touch()
        main, sec = _host_mirrors()
        signed = f" [signed-by={KEYRING}]" if os.path.exists(KEYRING) else ""
        lines = []
        for s in SUITES:
            uri = sec if s.endswith("-security") else main
            lines.append(f"deb{signed} {uri} {s} main")
        src = "\n".join(lines) + "\n"
        p = r / "etc" / "sources.list"
        if not p.exists() or p.read_text() != src:
            p.write_text(src)
            (r / "state" / "updated").unlink(missing_ok=True)   # new suites: lists are stale
        conf = "\n".join([
            f'Dir::State "{r}/state";',
            f'Dir::State::Lists "{r}/lists";',
            f'Dir::State::status "{r}/state/status";',
            f'Dir::Cache "{r}/cache";',
            f'Dir::Cache::Archives "{r}/archives";',
            f'Dir::Etc::SourceList "{r}/etc/sources.list";',
            f'Dir::Etc::SourceParts "{r}/etc/sources.list.d";',
            f'Dir::Etc::Preferences "{r}/etc/preferences";',
            f'Dir::Etc::PreferencesParts "{r}/etc/preferences.d";',
            f'Dir::Etc::Parts "{r}/etc/apt.conf.d";',
            f'APT::Architecture "{self.arch}";',
            f'APT::Architectures {{ "{self.arch}"; }};',
            'APT::Get::List-Cleanup "false";',
            'Acquire::Languages "none";',
            # sid's Release is short-lived and a mirror may lag: the packages are still signed
            'Acquire::Check-Valid-Until "false";',
            'Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled "false";',
            'Debug::NoLocking "true";',
        ]) + "\n"
        c = r / "etc" / "apt.conf"
        if not c.exists() or c.read_text() != conf:
            c.write_text(conf)

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["APT_CONFIG"] = str(self.root / "etc" / "apt.conf")
        env["LC_ALL"] = "C"
        env.pop("DEBIAN_FRONTEND", None)
        return env

    def _run(self, argv: list[str], cwd: str | None = None, timeout: float = 900) -> str:
        try:
            p = subprocess.run(argv, env=self._env(), cwd=cwd, capture_output=True, text=True,
                               timeout=timeout)
        except subprocess.TimeoutExpired:
            raise FetchError(f"{' '.join(argv)} timed out after {timeout:.0f}s") from None
        if p.returncode != 0:
            err = (p.stderr or p.stdout).strip().splitlines()
            last = err[-1] if err else f"exit {p.returncode}"
            raise FetchError(f"{' '.join(argv[:3])}... failed for {self.arch}: {last}")
        return p.stdout

    # -- operations ----------------------------------------------------------------------
    def update(self, force: bool = False) -> None:
        """apt-get update into the private lists, at most once a day."""
        stamp = self.root / "state" / "updated"
        with locked(self.root / "lock"):
            if not force and stamp.exists() and time.time() - stamp.stat().st_mtime < LISTS_MAX_AGE_S:
                return
            self._run(["apt-get", "-q", "update"], timeout=900)
            stamp.touch()

    def versions(self, package: str) -> list[tuple[str, str]]:
        """[(version, suite)] of `package` across the configured suites (apt-cache madison)."""
        return [(v, s) for _, v, s in self.versions_of([package])]

    def versions_of(self, packages: list[str]) -> list[tuple[str, str, str]]:
        """[(package, version, suite)] of several packages in ONE apt-cache call (each call reads
        every list: seconds on a busy machine)."""
        if not packages:
            return []
        out = self._run(["apt-cache", "madison", *packages])
        want = set(packages)
        res = []
        for line in out.splitlines():
            parts = [x.strip() for x in line.split("|")]
            if len(parts) >= 3 and parts[0] in want and "Packages" in parts[2]:
                suite = parts[2].split()[1].split("/")[0]
                res.append((parts[0], parts[1], suite))
        return res

    def pkgnames(self, prefix: str) -> list[str]:
        """Package names starting with `prefix` in the private lists (apt-cache pkgnames)."""
        return sorted(set(self._run(["apt-cache", "pkgnames", prefix]).split()))

    def show_field(self, package: str, version: str, field: str) -> str:
        out = self._run(["apt-cache", "show", f"{package}={version}"])
        m = re.search(rf"^{re.escape(field)}:\s*(.*)$", out, re.M)
        return m.group(1).strip() if m else ""

    def candidate(self, package: str, suites: tuple[str, ...] | None = None) -> str:
        """Highest version of `package` (optionally restricted to suite prefixes)."""
        vs = [v for v, s in self.versions(package)
              if suites is None or any(s == x or s.startswith(x + "-") for x in suites)]
        if not vs:
            raise FetchError(f"package {package} ({self.arch}) not found in {suites or SUITES}")
        return max_version(vs)

    def download(self, package: str, version: str) -> Path:
        """Fetch one exact package into the content-addressed store; return its path."""
        store = cache_root() / "debs"
        store.mkdir(parents=True, exist_ok=True)
        index = store / "index" / f"{package}_{version.replace(':', '%3a')}_{self.arch}"
        if index.exists():
            target = store / index.read_text().strip()
            if target.exists():
                return target
        with locked(self.root / "lock"):
            work = self.root / "dl"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            self._run(["apt-get", "-q", "download", f"{package}={version}"], cwd=str(work))
            debs = list(work.glob("*.deb"))
            if len(debs) != 1:
                raise FetchError(f"apt-get download {package}={version} gave {len(debs)} files")
            digest = sha256_file(debs[0])
            target = store / f"{digest}.deb"
            os.replace(debs[0], target)
            index.parent.mkdir(parents=True, exist_ok=True)
            tmp = index.with_suffix(".tmp")
            tmp.write_text(target.name + "\n")
            os.replace(tmp, index)
            shutil.rmtree(work, ignore_errors=True)
        return target


def max_version(versions: list[str]) -> str:
    """Highest Debian version, compared by dpkg itself (no reimplementation of the rules)."""
    best = versions[0]
    for v in versions[1:]:
        if subprocess.run(["dpkg", "--compare-versions", v, "gt", best]).returncode == 0:
            best = v
    return best


def extract_deb(deb: Path, dest: Path) -> None:
    """dpkg-deb -x into dest (no maintainer scripts run, no dpkg database touched)."""
    dest.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], capture_output=True, text=True)
    if p.returncode != 0:
        raise FetchError(f"dpkg-deb -x {deb}: {p.stderr.strip()}")


def deb_fields(deb: Path) -> dict[str, str]:
    p = subprocess.run(["dpkg-deb", "-f", str(deb)], capture_output=True, text=True)
    if p.returncode != 0:
        raise FetchError(f"{deb}: not a Debian package ({p.stderr.strip()})")
    out: dict[str, str] = {}
    for line in p.stdout.splitlines():
        if ":" in line and not line.startswith(" "):
            k, v = line.split(":", 1)
            out[k.strip()] = v.strip()
    return out
