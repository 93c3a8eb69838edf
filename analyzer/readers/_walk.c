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
 *   index(<walk args>, carry) -> (keys i64, type i32, page_nrec, page_first u64, page_last u64, page_lost, carry)
 *   fill(<walk args>, ts_offset, cpu, stream, pos, slot[65536], groups)
 *       -> (flagged off, len, row, type, records consumed)
 *   merge(keys: list[i64 array], types: list[i32 array], [(type, seq column)]) -> pos list[i64]
 *       (writes each record's global seq into its type's seq column at its row)
 *   strings(pids, lo, lut, names) -> (int32 offsets, uint8 data) of the comm column
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

/* One walker for every entry point: calls `rec` per data record and `page` per page. */
typedef int (*rec_fn)(void *ctx, Py_ssize_t pg, Py_ssize_t off, Py_ssize_t len, uint64_t ts, const uint8_t *pl);
typedef void (*page_fn)(void *ctx, Py_ssize_t pg, uint64_t page_ts, int64_t lost, Py_ssize_t nrec,
                        uint64_t first_ts, uint64_t last_ts);

typedef struct { const char *err; Py_ssize_t at; } werr_t;

static int walk_pages(const uint8_t *b, Py_ssize_t n, Py_ssize_t ps, int coff, int csz, int doff, int big,
                      int need, rec_fn rec, page_fn page, void *ctx, werr_t *e)
{
    Py_ssize_t npages = n / ps;
    for (Py_ssize_t pg = 0; pg < npages; pg++) {
        const uint8_t *pb = b + pg * ps;
        uint64_t ts = rd64(pb, big), pts = ts, first = ts, last = ts;
        uint64_t commit = csz == 8 ? rd64(pb + coff, big) : rd32(pb + coff, big);
        Py_ssize_t size = (Py_ssize_t)(commit & COMMIT_MASK), nrec = 0;
        int64_t lost = 0;
        if (size > ps - doff) { e->err = "page commit size beyond the page"; e->at = pg * ps + coff; return -1; }
        if (commit & MISSED_EVENTS) {
            lost = -1;
            if (commit & MISSED_STORED) {
                if (doff + size + csz > ps) { e->err = "missed-events count stored beyond the page"; e->at = pg * ps; return -1; }
                lost = (int64_t)(csz == 8 ? rd64(pb + doff + size, big) : rd32(pb + doff + size, big));
            }
        }
        Py_ssize_t pos = doff, end = doff + size;
        while (pos < end) {
            if ((pos & 3) || pos + 4 > end) { e->err = "misaligned or truncated record header"; e->at = pg * ps + pos; return -1; }
            uint32_t w = rd32(pb + pos, big);
            uint32_t tl = big ? w >> 27 : w & 31;
            uint64_t delta = big ? (w & ((1u << 27) - 1)) : (w >> 5);
            int has_arr = pos + 8 <= ps;
            uint64_t arr = has_arr ? rd32(pb + pos + 4, big) : 0;
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
                if (!has_arr || arr < 4) { e->err = "bad record length"; e->at = pg * ps + pos; return -1; }
                plen = (Py_ssize_t)((arr - 4 + 3) & ~3ULL);
                poffs = pos + 8;
            } else {
                plen = tl * 4;
                poffs = pos + 4;
            }
            if (poffs + plen > end) { e->err = "record overruns the page commit"; e->at = pg * ps + pos; return -1; }
            if (plen < need) { e->err = "record too short for the common header"; e->at = pg * ps + poffs; return -1; }
            ts += delta;
            if (!nrec) first = ts;
            last = ts;
            nrec++;
            if (rec && rec(ctx, pg, pg * ps + poffs, plen, ts, pb + poffs)) {
                e->at = pg * ps + poffs;
                return -1;
            }
            pos = poffs + plen;
        }
        if (page) page(ctx, pg, pts, lost, nrec, first, last);
    }
    return 0;
}

typedef struct {
    Py_ssize_t r; int big, toff, tsz, poff;
    int64_t *off, *len, *nrec, *lost; uint64_t *ts, *pts; int32_t *type, *pid;
    int64_t *keys; int64_t carry; uint64_t *pfirst, *plast;
    werr_t *e;
} wctx_t;

static int count_rec(void *c, Py_ssize_t pg, Py_ssize_t off, Py_ssize_t len, uint64_t ts, const uint8_t *pl)
{ ((wctx_t *)c)->r++; return 0; }

static int walk_rec(void *cv, Py_ssize_t pg, Py_ssize_t off, Py_ssize_t len, uint64_t ts, const uint8_t *pl)
{
    wctx_t *c = cv;
    Py_ssize_t r = c->r++;
    c->off[r] = off; c->len[r] = len; c->ts[r] = ts;
    c->type[r] = (int32_t)rdn(pl + c->toff, c->tsz, c->big);
    c->pid[r] = (int32_t)rd32(pl + c->poff, c->big);
    return 0;
}

static void walk_page(void *cv, Py_ssize_t pg, uint64_t pts, int64_t lost, Py_ssize_t nrec, uint64_t f, uint64_t l)
{
    wctx_t *c = cv;
    c->nrec[pg] = nrec; c->pts[pg] = pts; c->lost[pg] = lost;
}

static int parse_walk_args(PyObject *args, Py_buffer *buf, Py_ssize_t *ps, int *coff, int *csz, int *doff, int *big,
                           int *toff, int *tsz, int *poff, long long *extra)
{
    int ok = extra ? PyArg_ParseTuple(args, "y*niiiiiiiL", buf, ps, coff, csz, doff, big, toff, tsz, poff, extra)
                   : PyArg_ParseTuple(args, "y*niiiiiii", buf, ps, coff, csz, doff, big, toff, tsz, poff);
    if (!ok) return -1;
    if (*ps < 64 || (*csz != 4 && *csz != 8) || *coff + *csz > *doff || *doff > *ps || buf->len % *ps
        || (*tsz != 1 && *tsz != 2 && *tsz != 4) || *toff < 0 || *poff < 0) {
        PyBuffer_Release(buf);
        PyErr_SetString(PyExc_ValueError, "bad walk parameters @0");
        return -1;
    }
    return 0;
}

static int need_of(int toff, int tsz, int poff) { return toff + tsz > poff + 4 ? toff + tsz : poff + 4; }

/* walk(...) -> per-record offsets/lengths/ts/type/pid and per-page info (used by tests/writer) */
static PyObject *py_walk(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    Py_ssize_t ps;
    int coff, csz, doff, big, toff, tsz, poff, rc;
    if (parse_walk_args(args, &buf, &ps, &coff, &csz, &doff, &big, &toff, &tsz, &poff, NULL)) return NULL;
    werr_t e = {NULL, 0};
    wctx_t c = {0};
    c.big = big; c.toff = toff; c.tsz = tsz; c.poff = poff;
    int need = need_of(toff, tsz, poff);
    PyObject *res = NULL, *a[8] = {0};
    Py_BEGIN_ALLOW_THREADS
    rc = walk_pages(buf.buf, buf.len, ps, coff, csz, doff, big, need, count_rec, NULL, &c, &e);
    Py_END_ALLOW_THREADS
    if (rc) { PyErr_Format(PyExc_ValueError, "%s @%zd", e.err, e.at); goto done; }
    npy_intp dn = c.r, dp = buf.len / ps;
    int kinds[8] = {NPY_INT64, NPY_INT64, NPY_UINT64, NPY_INT32, NPY_INT32, NPY_INT64, NPY_UINT64, NPY_INT64};
    for (int i = 0; i < 8; i++) if (!(a[i] = PyArray_SimpleNew(1, i < 5 ? &dn : &dp, kinds[i]))) goto done;
#define D(i) PyArray_DATA((PyArrayObject *)a[i])
    c.r = 0; c.off = D(0); c.len = D(1); c.ts = D(2); c.type = D(3); c.pid = D(4); c.nrec = D(5); c.pts = D(6); c.lost = D(7);
#undef D
    Py_BEGIN_ALLOW_THREADS
    rc = walk_pages(buf.buf, buf.len, ps, coff, csz, doff, big, need, walk_rec, walk_page, &c, &e);
    Py_END_ALLOW_THREADS
    if (rc) { PyErr_Format(PyExc_ValueError, "%s @%zd", e.err, e.at); goto done; }
    res = PyTuple_New(8);
    for (int i = 0; i < 8; i++) { PyTuple_SET_ITEM(res, i, a[i]); a[i] = NULL; }
done:
    for (int i = 0; i < 8; i++) Py_XDECREF(a[i]);
    PyBuffer_Release(&buf);
    return res;
}

/* index(..., carry) -> (keys = running-max ts, type, page_nrec, page_first, page_last, page_lost, carry):
   pass 1 of the reader, nothing per record but what the merge needs. */
static int index_rec(void *cv, Py_ssize_t pg, Py_ssize_t off, Py_ssize_t len, uint64_t ts, const uint8_t *pl)
{
    wctx_t *c = cv;
    Py_ssize_t r = c->r++;
    int64_t k = (int64_t)ts;
    if (k > c->carry) c->carry = k;
    c->keys[r] = c->carry;
    c->type[r] = (int32_t)rdn(pl + c->toff, c->tsz, c->big);
    return 0;
}

static void index_page(void *cv, Py_ssize_t pg, uint64_t pts, int64_t lost, Py_ssize_t nrec, uint64_t f, uint64_t l)
{
    wctx_t *c = cv;
    c->nrec[pg] = nrec; c->pfirst[pg] = f; c->plast[pg] = l; c->lost[pg] = lost;
}

static PyObject *py_index(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    Py_ssize_t ps;
    int coff, csz, doff, big, toff, tsz, poff, rc;
    long long carry;
    if (parse_walk_args(args, &buf, &ps, &coff, &csz, &doff, &big, &toff, &tsz, &poff, &carry)) return NULL;
    werr_t e = {NULL, 0};
    wctx_t c = {0};
    c.big = big; c.toff = toff; c.tsz = tsz; c.poff = poff;
    int need = need_of(toff, tsz, poff);
    PyObject *res = NULL, *a[6] = {0};
    /* one pass: size the record arrays for the densest possible block (8-byte records), shrink after */
    npy_intp dn = buf.len / 8 + 1, dp = buf.len / ps;
    int kinds[6] = {NPY_INT64, NPY_INT32, NPY_INT64, NPY_UINT64, NPY_UINT64, NPY_INT64};
    for (int i = 0; i < 6; i++) if (!(a[i] = PyArray_SimpleNew(1, i < 2 ? &dn : &dp, kinds[i]))) goto done;
#define D(i) PyArray_DATA((PyArrayObject *)a[i])
    c.r = 0; c.keys = D(0); c.type = D(1); c.nrec = D(2); c.pfirst = D(3); c.plast = D(4); c.lost = D(5);
#undef D
    c.carry = carry;
    Py_BEGIN_ALLOW_THREADS
    rc = walk_pages(buf.buf, buf.len, ps, coff, csz, doff, big, need, index_rec, index_page, &c, &e);
    Py_END_ALLOW_THREADS
    if (rc) { PyErr_Format(PyExc_ValueError, "%s @%zd", e.err, e.at); goto done; }
    for (int i = 0; i < 2; i++) {
        npy_intp nn = c.r;
        PyArray_Dims d = {&nn, 1};
        PyObject *r = PyArray_Resize((PyArrayObject *)a[i], &d, 0, NPY_CORDER);
        if (!r) goto done;
        Py_DECREF(r);
    }
    res = Py_BuildValue("(NNNNNNL)", a[0], a[1], a[2], a[3], a[4], a[5], (long long)c.carry);
    for (int i = 0; i < 6; i++) a[i] = NULL;
done:
    for (int i = 0; i < 6; i++) Py_XDECREF(a[i]);
    PyBuffer_Release(&buf);
    return res;
}

/* fill(...): pass 2.  Every record goes straight into its event table at the row pass 1
   assigned: seq, ts, cpu, pid and every fixed-size numeric field.  Records of event types
   that also have string/array fields are reported back (offset, length, row, type) so
   Python can decode those few fields. */
#define MAXF 64
typedef struct {
    int64_t *ts; int32_t *cpu, *pid, *stream; int64_t nrows; int need, flagged, nf;
    int foff[MAXF], fsz[MAXF]; uint8_t *fout[MAXF];
} group_t;

typedef struct {
    Py_ssize_t r; int big, poff, toff, tsz; int64_t tsoff; int32_t cpu, stream;
    const int64_t *pos; Py_ssize_t nin; const int32_t *slot; group_t *g; int ng;
    int64_t *fo, *fl, *fr, *ft; Py_ssize_t fn, fcap;
    werr_t *e;
} fctx_t;

static int fill_rec(void *cv, Py_ssize_t pg, Py_ssize_t off, Py_ssize_t len, uint64_t ts, const uint8_t *pl)
{
    fctx_t *c = cv;
    Py_ssize_t r = c->r++;
    if (r >= c->nin) { c->e->err = "more records than pass 1 saw"; return -1; }
    uint32_t t = (uint32_t)rdn(pl + c->toff, c->tsz, c->big);
    int gi = t < 65536 ? c->slot[t] : -1;
    if (gi < 0 || gi >= c->ng) { c->e->err = "record of an event type without a table"; return -1; }
    group_t *g = &c->g[gi];
    int64_t row = c->pos[r];
    if (row < 0 || row >= g->nrows) { c->e->err = "row out of range"; return -1; }
    if (len < g->need) { c->e->err = "record is shorter than its format"; return -1; }
    g->ts[row] = (int64_t)ts + c->tsoff;
    g->cpu[row] = c->cpu;
    g->pid[row] = (int32_t)rd32(pl + c->poff, c->big);
    if (g->stream) g->stream[row] = c->stream;
    for (int i = 0; i < g->nf; i++) {
        const uint8_t *s = pl + g->foff[i];
        uint8_t *d = g->fout[i] + row * g->fsz[i];
        switch (g->fsz[i]) {
        case 1: *d = *s; break;
        case 2: { uint16_t v; memcpy(&v, s, 2); if (c->big) v = __builtin_bswap16(v); memcpy(d, &v, 2); break; }
        case 4: { uint32_t v; memcpy(&v, s, 4); if (c->big) v = __builtin_bswap32(v); memcpy(d, &v, 4); break; }
        default: { uint64_t v; memcpy(&v, s, 8); if (c->big) v = __builtin_bswap64(v); memcpy(d, &v, 8); }
        }
    }
    if (g->flagged) {
        if (c->fn == c->fcap) {
            Py_ssize_t cap = c->fcap ? 2 * c->fcap : 1024;
            int64_t *n[4] = {PyMem_RawRealloc(c->fo, cap * 8), NULL, NULL, NULL};
            if (!n[0]) { c->e->err = "out of memory"; return -1; }
            c->fo = n[0];
            if (!(n[1] = PyMem_RawRealloc(c->fl, cap * 8))) { c->e->err = "out of memory"; return -1; }
            c->fl = n[1];
            if (!(n[2] = PyMem_RawRealloc(c->fr, cap * 8))) { c->e->err = "out of memory"; return -1; }
            c->fr = n[2];
            if (!(n[3] = PyMem_RawRealloc(c->ft, cap * 8))) { c->e->err = "out of memory"; return -1; }
            c->ft = n[3];
            c->fcap = cap;
        }
        c->fo[c->fn] = off; c->fl[c->fn] = len; c->fr[c->fn] = row; c->ft[c->fn] = t; c->fn++;
    }
    return 0;
}

static int arr_ok(PyObject *o, int type, npy_intp n, int allow_none)
{
    if (o == Py_None) return allow_none;
    return PyArray_Check(o) && PyArray_TYPE((PyArrayObject *)o) == type && PyArray_IS_C_CONTIGUOUS((PyArrayObject *)o)
           && PyArray_ISWRITEABLE((PyArrayObject *)o) && (n < 0 || PyArray_SIZE((PyArrayObject *)o) == n);
}

static PyObject *py_fill(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    Py_ssize_t ps;
    int coff, csz, doff, big, toff, tsz, poff, cpu, stream, rc = -1;
    long long tsoff;
    PyArrayObject *pos, *slot;
    PyObject *groups, *res = NULL;
    if (!PyArg_ParseTuple(args, "y*niiiiiiiLiiO!O!O!", &buf, &ps, &coff, &csz, &doff, &big, &toff, &tsz, &poff,
                          &tsoff, &cpu, &stream, &PyArray_Type, &pos, &PyArray_Type, &slot, &PyList_Type, &groups))
        return NULL;
    fctx_t c = {0};
    werr_t e = {NULL, 0};
    c.e = &e;
    group_t *g = NULL;
    Py_ssize_t ng = PyList_GET_SIZE(groups);
    if (ps < 64 || (csz != 4 && csz != 8) || coff + csz > doff || doff > ps || buf.len % ps
        || (tsz != 1 && tsz != 2 && tsz != 4) || toff < 0 || poff < 0
        || !PyArray_Check(pos) || PyArray_TYPE(pos) != NPY_INT64 || !PyArray_IS_C_CONTIGUOUS(pos)
        || !arr_ok((PyObject *)slot, NPY_INT32, 65536, 0)) {
        PyErr_SetString(PyExc_ValueError, "bad fill parameters @0");
        goto done;
    }
    g = PyMem_Calloc(ng + 1, sizeof(group_t));
    if (!g) { PyErr_NoMemory(); goto done; }
    for (Py_ssize_t i = 0; i < ng; i++) {
        PyObject *ts_o, *cpu_o, *pid_o, *st_o, *fields;
        int need, flagged;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(groups, i), "OOOOiiO!", &ts_o, &cpu_o, &pid_o, &st_o, &need,
                              &flagged, &PyList_Type, &fields))
            goto done;
        npy_intp n = arr_ok(ts_o, NPY_INT64, -1, 0) ? PyArray_SIZE((PyArrayObject *)ts_o) : -1;
        if (n < 0 || !arr_ok(cpu_o, NPY_INT32, n, 0) || !arr_ok(pid_o, NPY_INT32, n, 0)
            || !arr_ok(st_o, NPY_INT32, n, 1) || PyList_GET_SIZE(fields) > MAXF) {
            PyErr_SetString(PyExc_ValueError, "bad fill group @0");
            goto done;
        }
        g[i].ts = PyArray_DATA((PyArrayObject *)ts_o);
        g[i].cpu = PyArray_DATA((PyArrayObject *)cpu_o); g[i].pid = PyArray_DATA((PyArrayObject *)pid_o);
        g[i].stream = st_o == Py_None ? NULL : PyArray_DATA((PyArrayObject *)st_o);
        g[i].nrows = n; g[i].need = need; g[i].flagged = flagged; g[i].nf = (int)PyList_GET_SIZE(fields);
        for (int k = 0; k < g[i].nf; k++) {
            PyObject *out;
            int fo, fs;
            if (!PyArg_ParseTuple(PyList_GET_ITEM(fields, k), "iiO", &fo, &fs, &out)) goto done;
            if (!PyArray_Check(out) || !arr_ok(out, PyArray_TYPE((PyArrayObject *)out), n, 0)
                || PyArray_ITEMSIZE((PyArrayObject *)out) != fs || (fs != 1 && fs != 2 && fs != 4 && fs != 8)
                || fo < 0 || fo + fs > need) {
                PyErr_SetString(PyExc_ValueError, "bad fill field @0");
                goto done;
            }
            g[i].foff[k] = fo; g[i].fsz[k] = fs; g[i].fout[k] = PyArray_DATA((PyArrayObject *)out);
        }
    }
    c.big = big; c.poff = poff; c.toff = toff; c.tsz = tsz; c.tsoff = tsoff; c.cpu = cpu; c.stream = stream;
    c.pos = PyArray_DATA(pos); c.nin = PyArray_SIZE(pos);
    c.slot = PyArray_DATA(slot); c.g = g; c.ng = (int)ng;
    Py_BEGIN_ALLOW_THREADS
    rc = walk_pages(buf.buf, buf.len, ps, coff, csz, doff, big, need_of(toff, tsz, poff), fill_rec, NULL, &c, &e);
    Py_END_ALLOW_THREADS
    if (rc) { PyErr_Format(PyExc_ValueError, "%s @%zd", e.err, e.at); goto done; }
    npy_intp fn = c.fn;
    PyObject *a[4];
    int64_t *src[4] = {c.fo, c.fl, c.fr, c.ft};
    for (int i = 0; i < 4; i++) {
        a[i] = PyArray_SimpleNew(1, &fn, NPY_INT64);
        if (!a[i]) { for (int k = 0; k < i; k++) Py_DECREF(a[k]); goto done; }
        if (fn) memcpy(PyArray_DATA((PyArrayObject *)a[i]), src[i], fn * 8);
    }
    res = Py_BuildValue("(NNNNn)", a[0], a[1], a[2], a[3], c.r);
done:
    PyMem_RawFree(c.fo); PyMem_RawFree(c.fl); PyMem_RawFree(c.fr); PyMem_RawFree(c.ft);
    PyMem_Free(g);
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
    PyObject *keys, *types, *seqcols;
    if (!PyArg_ParseTuple(args, "O!O!O!", &PyList_Type, &keys, &PyList_Type, &types, &PyList_Type, &seqcols))
        return NULL;
    Py_ssize_t k = PyList_GET_SIZE(keys);
    if (PyList_GET_SIZE(types) != k) { PyErr_SetString(PyExc_ValueError, "keys/types length @0"); return NULL; }
    PyObject *poss = PyList_New(k);
    int64_t **scol = PyMem_Calloc(65536, sizeof(int64_t *)), *slen = PyMem_Calloc(65536, sizeof(int64_t));
    const int64_t **kp = PyMem_Calloc(k + 1, sizeof(*kp));
    const int32_t **tp = PyMem_Calloc(k + 1, sizeof(*tp));
    int64_t **pp = PyMem_Calloc(k + 1, sizeof(*pp));
    Py_ssize_t *len = PyMem_Calloc(k + 1, sizeof(*len)), *idx = PyMem_Calloc(k + 1, sizeof(*idx));
    head_t *heap = PyMem_Calloc(k + 1, sizeof(*heap));
    int64_t *count = PyMem_Calloc(65536, sizeof(int64_t));
    if (!poss || !scol || !slen || !kp || !tp || !pp || !len || !idx || !heap || !count) { PyErr_NoMemory(); goto fail; }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(seqcols); i++) {
        int tid;
        PyObject *col;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(seqcols, i), "iO", &tid, &col)) goto fail;
        if (tid < 0 || tid > 65535 || !arr_ok(col, NPY_INT64, -1, 0)) {
            PyErr_SetString(PyExc_ValueError, "bad seq column @0");
            goto fail;
        }
        scol[tid] = PyArray_DATA((PyArrayObject *)col);
        slen[tid] = PyArray_SIZE((PyArrayObject *)col);
    }
    for (Py_ssize_t i = 0; i < k; i++) {
        PyArrayObject *ka = (PyArrayObject *)PyList_GET_ITEM(keys, i), *ta = (PyArrayObject *)PyList_GET_ITEM(types, i);
        if (!PyArray_Check(ka) || !PyArray_Check(ta) || PyArray_TYPE(ka) != NPY_INT64 || PyArray_TYPE(ta) != NPY_INT32
            || !PyArray_IS_C_CONTIGUOUS(ka) || !PyArray_IS_C_CONTIGUOUS(ta) || PyArray_SIZE(ka) != PyArray_SIZE(ta)) {
            PyErr_SetString(PyExc_ValueError, "merge wants contiguous int64 keys and int32 types of equal length @0");
            goto fail;
        }
        npy_intp d = PyArray_SIZE(ka);
        len[i] = d; kp[i] = PyArray_DATA(ka); tp[i] = PyArray_DATA(ta);
        PyObject *p = PyArray_SimpleNew(1, &d, NPY_INT64);
        if (!p) goto fail;
        PyList_SET_ITEM(poss, i, p);
        pp[i] = PyArray_DATA((PyArrayObject *)p);
    }
    int bad = 0;
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
            int64_t row = count[t]++;
            if (row >= slen[t]) { bad = 1; break; }
            scol[t][row] = seq++;
            pp[s][j] = row;
            j++;
        } while (j < len[s] && (kp[s][j] < lim_key || (kp[s][j] == lim_key && s < lim_s)));
        if (bad) break;
        idx[s] = j;
        if (j < len[s]) heap[0].key = kp[s][j];
        else heap[0] = heap[--hn];
        sift_down(heap, hn, 0);
    }
    Py_END_ALLOW_THREADS
    if (bad) { PyErr_SetString(PyExc_ValueError, "more records of a type than its seq column holds @0"); goto fail; }
    PyMem_Free(kp); PyMem_Free(tp); PyMem_Free(pp); PyMem_Free(len); PyMem_Free(idx);
    PyMem_Free(heap); PyMem_Free(count); PyMem_Free(scol); PyMem_Free(slen);
    return poss;
fail:
    Py_XDECREF(poss);
    PyMem_Free(kp); PyMem_Free(tp); PyMem_Free(pp); PyMem_Free(len); PyMem_Free(idx);
    PyMem_Free(heap); PyMem_Free(count); PyMem_Free(scol); PyMem_Free(slen);
    return NULL;
}

/* ---- strings(pids, lut_lo, lut[int32], names list[bytes]) -> (int32 offsets, uint8 data) --------
   The comm column: per row the name of its pid, written as an Arrow string column's buffers. */
static PyObject *py_strings(PyObject *self, PyObject *args)
{
    PyArrayObject *pids, *lut;
    PyObject *names;
    long long lo;
    if (!PyArg_ParseTuple(args, "O!LO!O!", &PyArray_Type, &pids, &lo, &PyArray_Type, &lut, &PyList_Type, &names))
        return NULL;
    if (PyArray_TYPE(pids) != NPY_INT32 || PyArray_TYPE(lut) != NPY_INT32 || !PyArray_IS_C_CONTIGUOUS(pids)
        || !PyArray_IS_C_CONTIGUOUS(lut)) {
        PyErr_SetString(PyExc_ValueError, "strings wants contiguous int32 arrays @0");
        return NULL;
    }
    Py_ssize_t nn = PyList_GET_SIZE(names), n = PyArray_SIZE(pids), nl = PyArray_SIZE(lut);
    const char **np_ = PyMem_Calloc(nn + 1, sizeof(char *));
    Py_ssize_t *nlen = PyMem_Calloc(nn + 1, sizeof(Py_ssize_t));
    PyObject *offs = NULL, *data = NULL, *res = NULL;
    if (!np_ || !nlen) { PyErr_NoMemory(); goto done; }
    for (Py_ssize_t i = 0; i < nn; i++) {
        PyObject *b = PyList_GET_ITEM(names, i);
        if (!PyBytes_Check(b)) { PyErr_SetString(PyExc_TypeError, "names must be bytes @0"); goto done; }
        np_[i] = PyBytes_AS_STRING(b); nlen[i] = PyBytes_GET_SIZE(b);
    }
    const int32_t *pp = PyArray_DATA(pids), *lp = PyArray_DATA(lut);
    int64_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t k = (int64_t)pp[i] - lo;
        int32_t j = (k >= 0 && k < nl) ? lp[k] : -1;
        if (j < 0 || j >= nn) { PyErr_SetString(PyExc_ValueError, "pid outside the name table @0"); goto done; }
        total += nlen[j];
    }
    if (total > INT32_MAX) { PyErr_SetString(PyExc_OverflowError, "comm column over 2 GB @0"); goto done; }
    npy_intp d1 = n + 1, d2 = total;
    offs = PyArray_SimpleNew(1, &d1, NPY_INT32);
    data = PyArray_SimpleNew(1, &d2, NPY_UINT8);
    if (!offs || !data) goto done;
    int32_t *o = PyArray_DATA((PyArrayObject *)offs);
    char *dst = PyArray_DATA((PyArrayObject *)data);
    Py_BEGIN_ALLOW_THREADS
    int32_t at = 0;
    o[0] = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        int32_t j = lp[(int64_t)pp[i] - lo];
        memcpy(dst + at, np_[j], nlen[j]);
        at += (int32_t)nlen[j];
        o[i + 1] = at;
    }
    Py_END_ALLOW_THREADS
    res = Py_BuildValue("(OO)", offs, data);
done:
    Py_XDECREF(offs); Py_XDECREF(data);
    PyMem_Free(np_); PyMem_Free(nlen);
    return res;
}

static PyMethodDef methods[] = {
    {"strings", py_strings, METH_VARARGS, "comm column buffers from pids and a name table"},
    {"walk", py_walk, METH_VARARGS, "walk ring-buffer pages of a block"},
    {"index", py_index, METH_VARARGS, "pass 1: merge keys, types, per-page info"},
    {"fill", py_fill, METH_VARARGS, "pass 2: records into preallocated event columns"},
    {"merge", py_merge, METH_VARARGS, "k-way merge of per-stream keys -> per-type rows; fills seq columns"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_walk", NULL, -1, methods};

PyMODINIT_FUNC PyInit__walk(void)
{
    import_array();
    return PyModule_Create(&mod);
}
