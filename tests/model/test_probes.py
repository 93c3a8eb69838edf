"""The ground-truth probe definition (analyzer/probes.py): Python choice, the guest's generated
shell copy (run by a real shell against kallsyms texts), and the model's reading of both
schemes into one block-type history (analyzer/model/groundtruth.py)."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pyarrow as pa
import pytest

from analyzer.kernels import CMA, ISOLATE, MOVABLE, UNMOVABLE, numbering_from
from analyzer.model.events import Table
from analyzer.model.groundtruth import UNKNOWN_STORED, translate_tracepoints, unify
from analyzer.probes import SCHEME_ISOLATE_BIT, SCHEME_MASK, choose, kallsyms_names, shell_chooser

KS_OLD = "ffff800080123450 T set_pfnblock_flags_mask\nffff800080123400 T set_pageblock_migratetype\n"
# as Debian 6.18.15 lists them (arm64): a __pfx_ padding symbol before each function
KS_NEW = ("ffff800080200000 t __pfx___set_pfnblock_flags_mask.constprop.0\n"
          "ffff800080200010 t __set_pfnblock_flags_mask.constprop.0\n"
          "ffff800080200100 T set_pfnblock_bit\nffff800080200200 T clear_pfnblock_bit\n"
          "ffff800080200300 t clear_pfnblock_bit_helper\t[somemod]\n")
KS_PLAIN = "0 t __set_pfnblock_flags_mask\n0 T set_pfnblock_bit\n0 T clear_pfnblock_bit\n"
KS_NONE = "0 T something_else\n0 T set_pfnblock_bit\n"


def test_choose_old_scheme_is_the_mask_filtered_writer():
    plan = choose(kallsyms_names(KS_OLD))
    assert plan.scheme == SCHEME_MASK
    (p,) = plan.probes
    assert p.filter == "mask == 7"
    assert p.definition("arm64") == "p:pb/setmt set_pfnblock_flags_mask page=%x0:x64 flags=%x1:u64 pfn=%x2:x64 mask=%x3:u64"


def test_choose_new_scheme_uses_the_clone_and_the_isolate_bit():
    plan = choose(kallsyms_names(KS_NEW))
    assert plan.scheme == SCHEME_ISOLATE_BIT
    defs = [p.definition("x86_64") for p in plan.probes]
    assert defs == ["p:pb/setmt __set_pfnblock_flags_mask.constprop.0 pfn=%di:x64 flags=%si:x64",
                    "p:pb/setiso set_pfnblock_bit pfn=%si:x64 bit=%dx:u32",
                    "p:pb/clriso clear_pfnblock_bit pfn=%si:x64 bit=%dx:u32"]
    assert [p.filter for p in plan.probes] == [None, "bit == 4", "bit == 4"]
    plain = choose(kallsyms_names(KS_PLAIN))
    assert plain.probes[0].definition("arm64").endswith("page=%x0:x64 pfn=%x1:x64 flags=%x2:x64 mask=%x3:x64")


def test_choose_without_symbols_says_what_is_missing():
    plan = choose(kallsyms_names(KS_NONE))
    assert not plan and plan.scheme is None
    assert "not in /proc/kallsyms" in plan.reason


@pytest.mark.skipif(shutil.which("sh") is None, reason="sh not found")
@pytest.mark.parametrize("text", [KS_OLD, KS_NEW, KS_PLAIN, KS_NONE])
@pytest.mark.parametrize("arch", ["aarch64", "x86_64"])
def test_shell_copy_chooses_what_python_chooses(tmp_path, text, arch):
    (tmp_path / "probes.sh").write_text(shell_chooser())
    (tmp_path / "kallsyms").write_text(text)
    out = subprocess.run(["sh", "-c", f". {tmp_path}/probes.sh; pb_choose {arch} {tmp_path}/kallsyms"],
                         capture_output=True, text=True, check=True).stdout
    got = [line.split("|") for line in out.splitlines()]
    want = [[p.definition(arch), p.filter or "", p.role] for p in choose(kallsyms_names(text)).probes]
    assert got == want


def _table(name: str, **cols) -> Table:
    n = len(next(iter(cols.values())))
    base = {"cpu": pa.array(np.zeros(n, np.int32)), "pid": np.full(n, 7, np.int64)}
    return Table(name, pa.table({**base, **{k: np.asarray(v, np.int64) for k, v in cols.items()}}))


def test_isolate_bit_scheme_reads_as_one_effective_type_history():
    pbo = 9
    blk = 0x80000
    setmt = _table("pb/setmt", seq=[1, 9], ts=[1, 9], pfn=[blk, blk + 512], flags=[4, 0x11])
    setiso = _table("pb/setiso", seq=[3, 5], ts=[3, 5], pfn=[blk + 17, blk + 512 + 3], bit=[4, 3])
    clriso = _table("pb/clriso", seq=[4, 11, 13], ts=[4, 11, 13], pfn=[blk + 1, blk + 600, 0x90000], bit=[4, 4, 4])
    out = unify({"kprobe:pb/setmt": setmt, "kprobe:pb/setiso": setiso, "kprobe:pb/clriso": clriso},
                numbering_from(None, "y"), pbo)
    (t,) = out.values()
    assert list(t["seq"]) == [1, 3, 4, 9, 11, 13]                 # the bit-3 (compaction skip) call dropped
    assert list(t["pfn"]) == [blk, blk, blk, blk + 512, blk + 512, 0x90000]   # aligned down
    # CMA written, isolated (type kept), unisolated -> CMA again; hot-add MOVABLE|iso -> ISOLATE, clear -> MOVABLE;
    # a clear the stream has no write for stays open for the model
    assert list(t["flags"]) == [CMA, ISOLATE, CMA, ISOLATE, MOVABLE, UNKNOWN_STORED]
    assert set(t["mask"]) == {7}


def test_cma_off_numbering_reads_4_as_isolate():
    nb = numbering_from(["Unmovable", "Movable", "Reclaimable", "HighAtomic", "Isolate"], None)
    assert nb.isolate == 4 and not nb.has_cma and nb.source == "pagetypeinfo column header"
    drain = _table("mm_page_pcpu_drain", seq=[1, 2, 3], ts=[1, 2, 3], pfn=[0, 1, 2], order=[0, 0, 0],
                   migratetype=[0, 4, 1])
    ev = {"mm_page_pcpu_drain": drain}
    translate_tracepoints(ev, nb)
    assert list(ev["mm_page_pcpu_drain"]["migratetype"]) == [UNMOVABLE, ISOLATE, MOVABLE]
    # <= 6.16 probe on a CMA=n kernel: flags 4 is the isolate write
    old = _table("pb/setmt", seq=[1, 2], ts=[1, 2], page=[0, 0], pfn=[512, 512], flags=[4, 1], mask=[7, 7])
    (t,) = unify({"kprobe:pb/setmt": old}, nb, 9).values()
    assert list(t["flags"]) == [ISOLATE, MOVABLE]


def test_numbering_from_config_and_unknown():
    assert numbering_from(None, "n").isolate == 4
    assert numbering_from(None, "y").isolate == 5
    u = numbering_from(None, None)
    assert not u.known and u.isolate == 5
