/*
 * Compiled hot loops of the trace.dat reader (optional; tracedat_pages has numpy fallbacks).
 *
 * Why C: walking ring-buffer records is a chain (each header gives the next offset), so it
 * cannot be vectorised; the k-way merge that defines `seq` is a chain too.  Everything else
 * (field types, offsets, what to gather) is decided in Python from the trace's format files;
 * these functions only move bytes.
 *
 *   walk(block, page_size, commit_off, commit_size, data_off, big, type_off, type_size, pid_off)
 *       -> (rec_off i64, rec_len i64, ts u64, type i32, pid i32, page_nrec i64, page_ts u64, page_lost i64)
 *   merge(keys: list[i64 array], types: list[i32 array]) -> (seq list[i64], pos list[i64])
 *   scatter(block, rec_off, field_off, size, big, positions, out) -> None
 *
 * Errors are ValueError("message @<byte offset in block>").
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>
#include <stdint.h>
#include <string.h>

#define COMMIT_MASK ((1ULL << 27) - 1)
#define MISSED_EVENTS (1ULL << 31)
#define MISSED_STORED (1ULL << 30)
#define TS_MSB (0xf8ULL << 56)

static inline uint32_t rd32(const uint8_t *p, int big) {
    uint32_t v; memcpy(&v, p, 4);
    return big ? __builtin_bswap32(v) : v;
}
static inline uint64_t rd64(const uint8_t *p, int big) {
    uint64_t v; memcpy(&v, p, 8);
    return big ? __builtin_bswap64(v) : v;
}
static inline uint64_t rdn(const uint8_t *p, int n, int big) {
    switch (n) {
    case 1: return p[0];
    case 2: { uint16_t v; memcpy(&v, p, 2); return big ? __builtin_bswap16(v) : v; }
    case 4: return rd32(p, big);
    default: return rd64(p, big);
    }
}

typedef struct {
    int64_t *off, *len, *nrec, *lost; uint64_t *ts, *pts; int32_t *type, *pid;
} out_t;

/* Walk all pages; with o == NULL only count.  Returns records, or -1 with err and err_at set. */
static Py_ssize_t walk_all(const uint8_t *b, Py_ssize_t n, Py_ssize_t ps, int coff, int csz, int doff,
                           int big, int toff, int tsz, int poff, out_t *o, const char **err, Py_ssize_t *err_at)
{
    Py_ssize_t npages = n / ps, r = 0;
    int need = toff + tsz > poff + 4 ? toff + tsz : poff + 4;
    for (Py_ssize_t pg = 0; pg < npages; pg++) {
        const uint8_t *page = b + pg * ps;
        uint64_t ts = rd64(page, big);
        uint64_t commit = csz == 8 ? rd64(page + coff, big) : rd32(page + coff, big);
        Py_ssize_t size = (Py_ssize_t)(commit & COMMIT_MASK);
        Py_ssize_t first = r;
        if (size > ps - doff) { *err = "page commit size beyond the page"; *err_at = pg * ps + coff; return -1; }
        if (o) {
            int64_t lost = 0;
            if (commit & MISSED_EVENTS) {
                lost = -1;
                if (commit & MISSED_STORED) {
                    if (doff + size + csz > ps) { *err = "missed-events count stored beyond the page"; *err_at = pg * ps; return -1; }
                    lost = (int64_t)(csz == 8 ? rd64(page + doff + size, big) : rd32(page + doff + size, big));
                }
            }
            o->lost[pg] = lost;
            o->pts[pg] = ts;
        }
        Py_ssize_t pos = doff, end = doff + size;
        while (pos < end) {
            if ((pos & 3) || pos + 4 > end) { *err = "misaligned or truncated record header"; *err_at = pg * ps + pos; return -1; }
            uint32_t w = rd32(page + pos, big);
            uint32_t tl = big ? w >> 27 : w & 31;
            uint64_t delta = big ? (w & ((1u << 27) - 1)) : (w >> 5);
            int has_arr = pos + 8 <= ps;
            uint64_t arr = has_arr ? rd32(page + pos + 4, big) : 0;
            Py_ssize_t poffs, plen;
            if (tl == 29) {                       /* padding: skip, keep its delta */
                ts += delta;
                if (!has_arr) break;
                pos = pos + 4 + (Py_ssize_t)arr;
                continue;
            }
            if (tl == 30 || tl == 31) {           /* time extend / absolute time stamp */
                if (!has_arr) break;
                uint64_t ext = (arr << 27) + delta;
                ts = tl == 30 ? ts + ext : (ext | (ts & TS_MSB));
                pos += 8;
                continue;
            }
            if (tl == 0) {
                if (!has_arr || arr < 4) { *err = "bad record length"; *err_at = pg * ps + pos; return -1; }
                plen = (Py_ssize_t)((arr - 4 + 3) & ~3ULL);
                poffs = pos + 8;
            } else {
                plen = tl * 4;
                poffs = pos + 4;
            }
            if (poffs + plen > end) { *err = "record overruns the page commit"; *err_at = pg * ps + pos; return -1; }
            if (plen < need) { *err = "record too short for the common header"; *err_at = pg * ps + poffs; return -1; }
            ts += delta;
            if (o) {
                const uint8_t *pl = page + poffs;
                o->off[r] = pg * ps + poffs;
                o->len[r] = plen;
                o->ts[r] = ts;
                o->type[r] = (int32_t)rdn(pl + toff, tsz, big);
                o->pid[r] = (int32_t)rd32(pl + poff, big);
            }
            r++;
            pos = poffs + plen;
        }
        if (o) o->nrec[pg] = r - first;
    }
    return r;
}

static PyObject *py_walk(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    Py_ssize_t ps;
    int coff, csz, doff, big, toff, tsz, poff;
    if (!PyArg_ParseTuple(args, "y*niiiiiii", &buf, &ps, &coff, &csz, &doff, &big, &toff, &tsz, &poff))
        return NULL;
    const uint8_t *b = buf.buf;
    Py_ssize_t n = buf.len, at = 0;
    const char *err = NULL;
    PyObject *res = NULL;
    if (ps < 64 || (csz != 4 && csz != 8) || coff + csz > doff || doff > ps || n % ps
        || (tsz != 1 && tsz != 2 && tsz != 4) || toff < 0 || poff < 0) {
        PyBuffer_Release(&buf);
        PyErr_SetString(PyExc_ValueError, "bad walk parameters @0");
        return NULL;
    }
    Py_ssize_t nrec, npages = n / ps;
    Py_BEGIN_ALLOW_THREADS
    nrec = walk_all(b, n, ps, coff, csz, doff, big, toff, tsz, poff, NULL, &err, &at);
    Py_END_ALLOW_THREADS
    if (nrec < 0) {
        PyErr_Format(PyExc_ValueError, "%s @%zd", err, at);
        PyBuffer_Release(&buf);
        return NULL;
    }
    npy_intp dn = nrec, dp = npages;
    PyObject *a[8] = {
        PyArray_SimpleNew(1, &dn, NPY_INT64), PyArray_SimpleNew(1, &dn, NPY_INT64),
        PyArray_SimpleNew(1, &dn, NPY_UINT64), PyArray_SimpleNew(1, &dn, NPY_INT32),
        PyArray_SimpleNew(1, &dn, NPY_INT32), PyArray_SimpleNew(1, &dp, NPY_INT64),
        PyArray_SimpleNew(1, &dp, NPY_UINT64), PyArray_SimpleNew(1, &dp, NPY_INT64)};
    for (int i = 0; i < 8; i++) if (!a[i]) goto done;
    out_t o = {PyArray_DATA((PyArrayObject *)a[0]), PyArray_DATA((PyArrayObject *)a[1]),
               PyArray_DATA((PyArrayObject *)a[5]), PyArray_DATA((PyArrayObject *)a[7]),
               PyArray_DATA((PyArrayObject *)a[2]), PyArray_DATA((PyArrayObject *)a[6]),
               PyArray_DATA((PyArrayObject *)a[3]), PyArray_DATA((PyArrayObject *)a[4])};
    Py_BEGIN_ALLOW_THREADS
    nrec = walk_all(b, n, ps, coff, csz, doff, big, toff, tsz, poff, &o, &err, &at);
    Py_END_ALLOW_THREADS
    if (nrec < 0) { PyErr_Format(PyExc_ValueError, "%s @%zd", err, at); goto done; }
    res = PyTuple_New(8);
    for (int i = 0; i < 8; i++) { PyTuple_SET_ITEM(res, i, a[i]); a[i] = NULL; }
done:
    for (int i = 0; i < 8; i++) Py_XDECREF(a[i]);
    PyBuffer_Release(&buf);
    return res;
}

/* ---- k-way merge: greedy smallest key, ties to the lower stream index ---------------------- */

typedef struct { int64_t key; Py_ssize_t s; } head_t;

static inline int less(const head_t *a, const head_t *b) {
    return a->key < b->key || (a->key == b->key && a->s < b->s);
}

static void sift_down(head_t *h, Py_ssize_t n, Py_ssize_t i) {
    for (;;) {
        Py_ssize_t l = 2 * i + 1, m = i;
        if (l < n && less(&h[l], &h[m])) m = l;
        if (l + 1 < n && less(&h[l + 1], &h[m])) m = l + 1;
        if (m == i) return;
        head_t t = h[i]; h[i] = h[m]; h[m] = t; i = m;
    }
}

static PyObject *py_merge(PyObject *self, PyObject *args)
{
    PyObject *keys, *types;
    if (!PyArg_ParseTuple(args, "O!O!", &PyList_Type, &keys, &PyList_Type, &types)) return NULL;
    Py_ssize_t k = PyList_GET_SIZE(keys);
    if (PyList_GET_SIZE(types) != k) { PyErr_SetString(PyExc_ValueError, "keys/types length @0"); return NULL; }
    PyObject *seqs = PyList_New(k), *poss = PyList_New(k);
    const int64_t **kp = PyMem_Calloc(k + 1, sizeof(*kp));
    const int32_t **tp = PyMem_Calloc(k + 1, sizeof(*tp));
    int64_t **sp = PyMem_Calloc(k + 1, sizeof(*sp)), **pp = PyMem_Calloc(k + 1, sizeof(*pp));
    Py_ssize_t *len = PyMem_Calloc(k + 1, sizeof(*len)), *idx = PyMem_Calloc(k + 1, sizeof(*idx));
    head_t *heap = PyMem_Calloc(k + 1, sizeof(*heap));
    int64_t *count = PyMem_Calloc(65536, sizeof(int64_t));
    if (!seqs || !poss || !kp || !tp || !sp || !pp || !len || !idx || !heap || !count) { PyErr_NoMemory(); goto fail; }
    for (Py_ssize_t i = 0; i < k; i++) {
        PyArrayObject *ka = (PyArrayObject *)PyList_GET_ITEM(keys, i), *ta = (PyArrayObject *)PyList_GET_ITEM(types, i);
        if (!PyArray_Check(ka) || !PyArray_Check(ta) || PyArray_TYPE(ka) != NPY_INT64 || PyArray_TYPE(ta) != NPY_INT32
            || !PyArray_IS_C_CONTIGUOUS(ka) || !PyArray_IS_C_CONTIGUOUS(ta) || PyArray_SIZE(ka) != PyArray_SIZE(ta)) {
            PyErr_SetString(PyExc_ValueError, "merge wants contiguous int64 keys and int32 types of equal length @0");
            goto fail;
        }
        npy_intp d = PyArray_SIZE(ka);
        len[i] = d; kp[i] = PyArray_DATA(ka); tp[i] = PyArray_DATA(ta);
        PyObject *s = PyArray_SimpleNew(1, &d, NPY_INT64), *p = PyArray_SimpleNew(1, &d, NPY_INT64);
        if (!s || !p) { Py_XDECREF(s); Py_XDECREF(p); goto fail; }
        PyList_SET_ITEM(seqs, i, s); PyList_SET_ITEM(poss, i, p);
        sp[i] = PyArray_DATA((PyArrayObject *)s); pp[i] = PyArray_DATA((PyArrayObject *)p);
    }
    Py_BEGIN_ALLOW_THREADS
    Py_ssize_t hn = 0;
    for (Py_ssize_t i = 0; i < k; i++) if (len[i]) { heap[hn].key = kp[i][0]; heap[hn].s = i; hn++; }
    for (Py_ssize_t i = hn / 2; i-- > 0;) sift_down(heap, hn, i);
    int64_t seq = 0;
    while (hn) {
        Py_ssize_t s = heap[0].s, j = idx[s];
        /* emit the run of this stream that stays below the next-best head */
        int64_t lim_key = INT64_MAX; Py_ssize_t lim_s = PY_SSIZE_T_MAX;
        if (hn > 1) {
            head_t *b = &heap[1];
            if (hn > 2 && less(&heap[2], b)) b = &heap[2];
            lim_key = b->key; lim_s = b->s;
        }
        do {
            uint16_t t = (uint16_t)tp[s][j];
            sp[s][j] = seq++;
            pp[s][j] = count[t]++;
            j++;
        } while (j < len[s] && (kp[s][j] < lim_key || (kp[s][j] == lim_key && s < lim_s)));
        idx[s] = j;
        if (j < len[s]) heap[0].key = kp[s][j];
        else heap[0] = heap[--hn];
        sift_down(heap, hn, 0);
    }
    Py_END_ALLOW_THREADS
    PyMem_Free(kp); PyMem_Free(tp); PyMem_Free(sp); PyMem_Free(pp); PyMem_Free(len); PyMem_Free(idx);
    PyMem_Free(heap); PyMem_Free(count);
    return Py_BuildValue("(NN)", seqs, poss);
fail:
    Py_XDECREF(seqs); Py_XDECREF(poss);
    PyMem_Free(kp); PyMem_Free(tp); PyMem_Free(sp); PyMem_Free(pp); PyMem_Free(len); PyMem_Free(idx);
    PyMem_Free(heap); PyMem_Free(count);
    return NULL;
}

/* ---- scatter one fixed-size field of selected records into its final rows ----------------- */

static PyObject *py_scatter(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    PyArrayObject *off, *posn, *out;
    Py_ssize_t foff;
    int size, big;
    if (!PyArg_ParseTuple(args, "y*O!niiO!O!", &buf, &PyArray_Type, &off, &foff, &size, &big,
                          &PyArray_Type, &posn, &PyArray_Type, &out))
        return NULL;
    PyObject *ret = NULL;
    if (PyArray_TYPE(off) != NPY_INT64 || PyArray_TYPE(posn) != NPY_INT64 || !PyArray_IS_C_CONTIGUOUS(off)
        || !PyArray_IS_C_CONTIGUOUS(posn) || !PyArray_IS_C_CONTIGUOUS(out) || !PyArray_ISWRITEABLE(out)
        || PyArray_ITEMSIZE(out) != size || PyArray_SIZE(off) != PyArray_SIZE(posn)
        || (size != 1 && size != 2 && size != 4 && size != 8)) {
        PyErr_SetString(PyExc_ValueError, "bad scatter arguments @0");
        goto done;
    }
    const uint8_t *b = buf.buf;
    const int64_t *o = PyArray_DATA(off), *p = PyArray_DATA(posn);
    uint8_t *dst = PyArray_DATA(out);
    Py_ssize_t n = PyArray_SIZE(off), nout = PyArray_SIZE(out), bad = -1;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t at = o[i] + foff;
        if (at < 0 || at + size > buf.len || p[i] < 0 || p[i] >= nout) { bad = i; break; }
        const uint8_t *s = b + at;
        uint8_t *d = dst + p[i] * size;
        switch (size) {
        case 1: *d = *s; break;
        case 2: { uint16_t v; memcpy(&v, s, 2); if (big) v = __builtin_bswap16(v); memcpy(d, &v, 2); break; }
        case 4: { uint32_t v; memcpy(&v, s, 4); if (big) v = __builtin_bswap32(v); memcpy(d, &v, 4); break; }
        default: { uint64_t v; memcpy(&v, s, 8); if (big) v = __builtin_bswap64(v); memcpy(d, &v, 8); }
        }
    }
    Py_END_ALLOW_THREADS
    if (bad >= 0) {
        PyErr_Format(PyExc_ValueError, "field outside the block @%lld", (long long)(o[bad] + foff));
        goto done;
    }
    ret = Py_None; Py_INCREF(ret);
done:
    PyBuffer_Release(&buf);
    return ret;
}

static PyMethodDef methods[] = {
    {"walk", py_walk, METH_VARARGS, "walk ring-buffer pages of a block"},
    {"merge", py_merge, METH_VARARGS, "k-way merge of per-stream keys -> (seq, per-type position)"},
    {"scatter", py_scatter, METH_VARARGS, "copy a fixed-size field of records into rows of an array"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_walk", NULL, -1, methods};

PyMODINIT_FUNC PyInit__walk(void)
{
    import_array();
    return PyModule_Create(&mod);
}
