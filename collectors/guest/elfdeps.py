"""Just enough ELF reading to copy a foreign-arch program with its libraries into an initramfs.

We cannot run the guest's ldd on the host (different arch), so DT_NEEDED and PT_INTERP are read
from the files themselves.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path

PT_LOAD, PT_DYNAMIC, PT_INTERP = 1, 2, 3
DT_NEEDED, DT_STRTAB = 1, 5


def read_elf(path: Path) -> tuple[str | None, list[str]]:
    """(interpreter path, [DT_NEEDED sonames]) of an ELF file; (None, []) if static / not ELF."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF":
        return None, []
    is64 = data[4] == 2
    end = "<" if data[5] == 1 else ">"
    if is64:
        phoff, = struct.unpack_from(end + "Q", data, 0x20)
        phentsize, phnum = struct.unpack_from(end + "HH", data, 0x36)
    else:
        phoff, = struct.unpack_from(end + "I", data, 0x1C)
        phentsize, phnum = struct.unpack_from(end + "HH", data, 0x2A)
    loads, dyn, interp = [], None, None
    for i in range(phnum):
        o = phoff + i * phentsize
        if is64:
            p_type, _fl, p_offset, p_vaddr, _pa, p_filesz = struct.unpack_from(end + "IIQQQQ", data, o)
        else:
            p_type, p_offset, p_vaddr, _pa, p_filesz = struct.unpack_from(end + "IIIII", data, o)
        if p_type == PT_LOAD:
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == PT_DYNAMIC:
            dyn = (p_offset, p_filesz)
        elif p_type == PT_INTERP:
            interp = data[p_offset:p_offset + p_filesz].rstrip(b"\0").decode()
    if dyn is None:
        return interp, []
    fmt, size = (end + "qQ", 16) if is64 else (end + "iI", 8)
    needed_off, strtab = [], None
    for o in range(dyn[0], dyn[0] + dyn[1], size):
        tag, val = struct.unpack_from(fmt, data, o)
        if tag == 0:
            break
        if tag == DT_NEEDED:
            needed_off.append(val)
        elif tag == DT_STRTAB:
            strtab = val
    if strtab is None:
        return interp, []
    base = None
    for vaddr, off, filesz in loads:
        if vaddr <= strtab < vaddr + filesz:
            base = strtab - vaddr + off
    if base is None:
        return interp, []
    names = []
    for n in needed_off:
        e = data.index(b"\0", base + n)
        names.append(data[base + n:e].decode())
    return interp, names


def resolve_in_root(root: Path, path: str) -> Path:
    """Follow symlinks of `path` inside `root` (absolute link targets are re-rooted)."""
    p = path
    for _ in range(40):
        full = root / p.lstrip("/")
        if full.is_symlink():
            t = os.readlink(full)
            p = t if t.startswith("/") else os.path.normpath(os.path.join(os.path.dirname(p), t))
            continue
        # a parent directory may be a symlink (usrmerge: /lib -> usr/lib)
        parts = Path(p.lstrip("/")).parts
        for i in range(1, len(parts)):
            sub = root.joinpath(*parts[:i])
            if sub.is_symlink():
                t = os.readlink(sub)
                prefix = "/" + "/".join(parts[:i - 1])
                tgt = t if t.startswith("/") else os.path.normpath(os.path.join(prefix, t))
                p = os.path.join(tgt, *parts[i:])
                break
        else:
            return full
    raise FileNotFoundError(path)


def closure(root: Path, program: str, libdirs: list[str]) -> list[str]:
    """Guest paths (program, loader, libraries) needed to run `program` from staging `root`."""
    want = [program]
    seen: list[str] = []
    while want:
        gp = want.pop()
        if gp in seen:
            continue
        seen.append(gp)
        real = resolve_in_root(root, gp)
        interp, needed = read_elf(real)
        if interp and interp not in seen:
            want.append(interp)
        for so in needed:
            for d in libdirs:
                if (root / d.lstrip("/") / so).exists() or (root / d.lstrip("/") / so).is_symlink():
                    want.append(f"{d}/{so}")
                    break
            else:
                raise FileNotFoundError(f"{so} (needed by {gp}) not found in {libdirs}")
    return seen
