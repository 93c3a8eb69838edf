"""The vectorised interval resolver and lookups against a plain per-row Python oracle."""
from __future__ import annotations

import pytest

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.model.timeline import (CAND, INFERRED, KNOWN, LOST, SET, TOUCH, UNKNOWN, Rows, SortedRows,
                                     ffill_lookup, resolve)

pytestmark = pytest.mark.cext   # run again on the numpy paths (scripts/test)


def oracle_state(rows: Rows, block: int, seq: int):
    """State just before record `seq` in `block`, by walking the rows one by one."""
    items = sorted((int(s), int(u), i) for i, (b, s, u) in enumerate(zip(rows.block, rows.seq, rows.sub))
                   if b == block and s < seq)
    mt = src = conf = None
    for _, _, i in items:
        k = rows.kind[i]
        if k == SET:
            mt, src, conf = int(rows.mt[i]), int(rows.src[i]), int(rows.conf[i])
        elif k == CAND and 0 <= mt <= 2:
            conf = min(conf, UNKNOWN)
        elif k == TOUCH and 0 <= mt <= 2:
            conf = min(conf, INFERRED)
        elif k == LOST:
            conf = min(conf, INFERRED)
    return mt, src, conf


@st.composite
def row_sets(draw):
    nb = draw(st.integers(1, 4))
    n = draw(st.integers(0, 40))
    blocks = list(range(100, 100 + nb))
    rows = [(b, -1, 0, SET, draw(st.integers(0, 5)), 0, draw(st.sampled_from([KNOWN, INFERRED]))) for b in blocks]
    for _ in range(n):
        rows.append((draw(st.sampled_from(blocks)), draw(st.integers(0, 30)), draw(st.integers(0, 3)),
                     draw(st.sampled_from([SET, SET, CAND, TOUCH, LOST])), draw(st.integers(0, 5)),
                     draw(st.integers(0, 8)), draw(st.sampled_from([KNOWN, INFERRED]))))
    b, s, u, k, mt, src, conf = (np.array(c) for c in zip(*rows))
    return Rows.make(b, s, s * 10, k, mt, src, conf, sub=u), blocks


@settings(max_examples=300, deadline=None)
@given(row_sets())
def test_resolve_matches_row_by_row_oracle(data):
    rows, blocks = data
    tl = resolve(rows, np.array(blocks))
    qb = np.repeat(blocks, 33)
    qs = np.tile(np.arange(-1, 32), len(blocks))
    i = tl.at(qb, qs)
    for b, s, ii in zip(qb, qs, i):
        mt, src, conf = oracle_state(rows, int(b), int(s))
        if mt is None:            # nothing before the boot row (query at seq -1)
            assert ii == -1
            continue
        assert (int(tl.guess[ii]), int(tl.src[ii]), int(tl.conf[ii])) == (mt, src, conf), (b, s)
        assert int(tl.mt[ii]) == (-1 if conf == UNKNOWN else mt)
    # intervals change something at every boundary inside a block
    same = tl.block[1:] == tl.block[:-1]
    changed = (tl.guess[1:] != tl.guess[:-1]) | (tl.src[1:] != tl.src[:-1]) | (tl.conf[1:] != tl.conf[:-1])
    assert changed[same].all()
    # the merge of extra rows into pre-sorted base rows gives the same answer
    nbase = len(blocks) + (len(rows) - len(blocks)) // 2      # boot rows stay in the base
    base = rows.take(np.arange(nbase))
    extra = rows.take(np.arange(nbase, len(rows)))
    merged = SortedRows(base).with_extra(extra)
    tl2 = resolve(merged, np.array(blocks), presorted=True)
    i2 = tl2.at(qb, qs)
    assert (np.where(i >= 0, tl.guess[np.maximum(i, 0)], -9) == np.where(i2 >= 0, tl2.guess[np.maximum(i2, 0)], -9)).all()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 50)), max_size=40),
       st.lists(st.tuples(st.integers(0, 6), st.integers(-1, 52)), min_size=1, max_size=40),
       st.booleans())
def test_ffill_lookup_matches_brute_force(keys, queries, strict):
    keys = sorted(keys)
    kb = np.array([k[0] for k in keys], dtype=np.int64)
    kt = np.array([k[1] for k in keys], dtype=np.int64)
    qb = np.array([q[0] for q in queries], dtype=np.int64)
    qt = np.array([q[1] for q in queries], dtype=np.int64)
    got = ffill_lookup(kb, kt, qb, qt, strict)
    for (b, t), g in zip(queries, got):
        cands = [i for i, (x, y) in enumerate(keys) if x == b and (y < t if strict else y <= t)]
        want = cands[-1] if cands else -1
        if want == -1:
            assert g == -1
        else:   # equal keys may tie: any index holding the same key is the same interval start
            assert g >= 0 and keys[g] == keys[want] and all(keys[j] == keys[want] for j in range(g, want + 1))
