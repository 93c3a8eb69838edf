/*
 * Compiled record walk of the perf.data reader (optional; perfdata_walk.py has the Python
 * fallback with identical output, and the tests check both agree).
 *
 * Why C: perf.data records form a chain (each header gives the next offset) and a sample's
 * RAW payload sits after variable-size parts (callchain, read values), so the walk cannot
 * be vectorised; a Python struct walk costs ~2.5 us per sample.  What the records mean
 * (which attr, which event format, which fields) is decided in Python; this only finds them.
 *
 *   walk(buf, start, end, sample_type, read_fixed, read_group_entry, sid_size, sid_tid, sid_time, sid_cpu,
 *        ids, types[, lean, amap_ids, amap_attr])
 *     -> (s_off i64, s_time u64, s_pid i32, s_tid i32, s_cpu i32, s_id u64, s_raw i64, s_rawlen i64,
 *         o_off i64, o_type i32, o_size i64, o_time u64, o_cpu i32, s_attr i32)
 *   lean: of the sample columns only s_off, s_time and s_attr (the attr index of the sample's
 *   id in amap, -1 = none) are filled, the others are empty; fill() re-reads the rest.
 *   s_* per PERF_RECORD_SAMPLE, o_* per other record, both in file order.
 *   read_fixed: bytes of the READ part (read_group_entry < 0), or the fixed part of a group
 *   read when read_group_entry >= 0 (then u64 nr + nr * entry follow).  sid_*: offsets inside
 *   the trailing sample_id of non-sample records (-1 = absent; sid_size 0 = no sample_id_all).
 *   ids/types: sorted u64 sample ids and the sample_type of each; when non-empty, events have
 *   different sample types and each sample's leading IDENTIFIER picks its own (an unknown id
 *   is an error).  Values missing from a record are 0 (time/id) or -1 (pid/tid/cpu).
 *
 * Errors are ValueError("message @<byte offset in buf>").  Every read is bounds-checked
 * against the record end and the buffer end.
 *
 * Built with libzstd (MTAUDIT_ZSTD, see setup.py) it also has zwalk(): the `perf record -z`
 * stream decoded and walked in one pass (see there), and fill() reads its compact rows.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>
#include <stdint.h>
#include <string.h>

#define S_IP (1ULL << 0)
#define S_TID (1ULL << 1)
#define S_TIME (1ULL << 2)
#define S_ADDR (1ULL << 3)
#define S_READ (1ULL << 4)
#define S_CALLCHAIN (1ULL << 5)
#define S_ID (1ULL << 6)
#define S_CPU (1ULL << 7)
#define S_PERIOD (1ULL << 8)
#define S_STREAM_ID (1ULL << 9)
#define S_RAW (1ULL << 10)
#define S_IDENTIFIER (1ULL << 16)

#define REC_SAMPLE 9
#define REC_TRACING_DATA 66
#define REC_AUXTRACE 71
#define ZROW 12     /* head of a compact sample row (zwalk's compact mode): tid, cpu, raw length */

static inline uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t rd64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

typedef struct {
    uint64_t st;
    const uint64_t *ids, *types;
    Py_ssize_t nids;
    Py_ssize_t read_fixed, read_entry, sid_size, sid_tid, sid_time, sid_cpu;
    const uint64_t *amap_ids;     /* lean walk: sorted sample ids and the attr index of each */
    const int32_t *amap_own;
    Py_ssize_t namap;
    int lean;
    /* sample types without variable parts (no callchain, no group read): their field offsets */
    struct { uint64_t st; Py_ssize_t o_ident, o_tid, o_time, o_id, o_cpu, o_raw; } fx[4];
    int nfx;
} cfg_t;

/* Whether the sample-id trailer and read-format sizes from Python are ones a walk can trust:
 * every offset the walk adds to a record position is checked here once (walk and zwalk). */
static int layout_ok(const cfg_t *c)
{
    return !(c->sid_size < 0 || c->sid_size > 64 || c->sid_tid >= c->sid_size || c->sid_time > c->sid_size - 8 ||
             c->sid_cpu > c->sid_size - 4 || c->read_fixed < 0 || c->read_fixed > 1 << 20 || c->read_entry > 1 << 16);
}

/* Fixed offsets of a sample type whose parts all have fixed sizes (see sample()); -1 = absent. */
static void prep_fixed(cfg_t *c)
{
    c->nfx = 0;
    for (Py_ssize_t k = -1; k < c->nids && c->nfx < 4; k++) {
        uint64_t st = k < 0 ? c->st : c->types[k];
        if (st & S_CALLCHAIN || (st & S_READ && c->read_entry >= 0)) continue;
        int dup = 0;
        for (int j = 0; j < c->nfx; j++) dup |= c->fx[j].st == st;
        if (dup) continue;
        Py_ssize_t p = 8, *f;
        c->fx[c->nfx].st = st;
        f = &c->fx[c->nfx].o_ident;
        for (int j = 0; j < 6; j++) f[j] = -1;
        if (st & S_IDENTIFIER) { c->fx[c->nfx].o_ident = p; p += 8; }
        if (st & S_IP) p += 8;
        if (st & S_TID) { c->fx[c->nfx].o_tid = p; p += 8; }
        if (st & S_TIME) { c->fx[c->nfx].o_time = p; p += 8; }
        if (st & S_ADDR) p += 8;
        if (st & S_ID) { c->fx[c->nfx].o_id = p; p += 8; }
        if (st & S_STREAM_ID) p += 8;
        if (st & S_CPU) { c->fx[c->nfx].o_cpu = p; p += 8; }
        if (st & S_PERIOD) p += 8;
        if (st & S_READ) p += c->read_fixed;
        c->fx[c->nfx].o_raw = p;        /* end of the fixed part: the RAW size follows when S_RAW */
        c->nfx++;
    }
}

typedef struct {
    int64_t *s_off, *s_raw, *s_rawlen;
    uint64_t *s_time, *s_id;
    int32_t *s_pid, *s_tid, *s_cpu, *s_attr;
    int64_t *o_off, *o_size;
    int32_t *o_type, *o_cpu;
    uint64_t *o_time;
    Py_ssize_t ns, no;
    Py_ssize_t cap_s, cap_o;    /* rows the arrays have (the file under an mmap may change between passes) */
} out_t;

typedef struct { const char *err; Py_ssize_t at; } werr_t;

#define FAIL(msg, where) do { e->err = (msg); e->at = (where); return -1; } while (0)

/* Index of id in the sorted ids[0..n), or -1.  perf numbers an event's ids consecutively,
 * so ids[id - ids[0]] is tried first; the binary search is for the rest.  Duplicates: the
 * first one, like numpy's searchsorted. */
static inline Py_ssize_t id_index(const uint64_t *ids, Py_ssize_t n, uint64_t id)
{
    if (n <= 0) return -1;
    uint64_t d = id - ids[0];
    if (d < (uint64_t)n && ids[d] == id && (d == 0 || ids[d - 1] != id)) return (Py_ssize_t)d;
    Py_ssize_t lo = 0, hi = n;
    while (lo < hi) { Py_ssize_t m = lo + (hi - lo) / 2; if (ids[m] < id) lo = m + 1; else hi = m; }
    return (lo < n && ids[lo] == id) ? lo : -1;
}

/* Parse one sample record [r, r+size) into slot i of o (when o has arrays). */
static int sample(const uint8_t *b, Py_ssize_t r, Py_ssize_t size, const cfg_t *c, out_t *o, werr_t *e)
{
    Py_ssize_t p = r + 8, end = r + size;
    uint64_t id = 0, t = 0, st = c->st;
    int32_t pid = -1, tid = -1, cpu = -1;
#define NEED(n) do { if ((Py_ssize_t)(n) < 0 || p + (Py_ssize_t)(n) > end) FAIL("sample record truncated", r); } while (0)
    if (c->nids) {                  /* per-event sample types: the leading IDENTIFIER says which */
        NEED(8);
        id = rd64(b + p);
        Py_ssize_t lo = id_index(c->ids, c->nids, id);
        if (lo < 0) FAIL("sample with an id no event attr has", r);
        st = c->types[lo];
    }
    for (int j = 0; j < c->nfx; j++) {
        if (c->fx[j].st != st) continue;
        /* fixed layout: one size check instead of one per part (same errors as below) */
        Py_ssize_t fend = c->fx[j].o_raw + ((st & S_RAW) ? 4 : 0);
        if (fend > size) FAIL("sample record truncated", r);
        if (c->fx[j].o_ident >= 0) id = rd64(b + r + c->fx[j].o_ident);
        if (c->fx[j].o_tid >= 0) { pid = (int32_t)rd32(b + r + c->fx[j].o_tid); tid = (int32_t)rd32(b + r + c->fx[j].o_tid + 4); }
        if (c->fx[j].o_time >= 0) t = rd64(b + r + c->fx[j].o_time);
        if (c->fx[j].o_id >= 0) id = rd64(b + r + c->fx[j].o_id);
        if (c->fx[j].o_cpu >= 0) cpu = (int32_t)rd32(b + r + c->fx[j].o_cpu);
        p = r + c->fx[j].o_raw;
        goto raw;
    }
    if (st & S_IDENTIFIER) { NEED(8); id = rd64(b + p); p += 8; }
    if (st & S_IP) { NEED(8); p += 8; }
    if (st & S_TID) { NEED(8); pid = (int32_t)rd32(b + p); tid = (int32_t)rd32(b + p + 4); p += 8; }
    if (st & S_TIME) { NEED(8); t = rd64(b + p); p += 8; }
    if (st & S_ADDR) { NEED(8); p += 8; }
    if (st & S_ID) { NEED(8); id = rd64(b + p); p += 8; }
    if (st & S_STREAM_ID) { NEED(8); p += 8; }
    if (st & S_CPU) { NEED(8); cpu = (int32_t)rd32(b + p); p += 8; }
    if (st & S_PERIOD) { NEED(8); p += 8; }
    if (st & S_READ) {
        if (c->read_entry >= 0) {
            NEED(8);
            uint64_t nr = rd64(b + p);
            p += 8;
            if (nr > (uint64_t)(end - p) / (c->read_entry ? (uint64_t)c->read_entry : 1)) FAIL("sample read group truncated", r);
            NEED((Py_ssize_t)nr * c->read_entry + c->read_fixed);
            p += (Py_ssize_t)nr * c->read_entry + c->read_fixed;
        } else { NEED(c->read_fixed); p += c->read_fixed; }
    }
    if (st & S_CALLCHAIN) {
        NEED(8);
        uint64_t nr = rd64(b + p);
        p += 8;
        if (nr > (uint64_t)(end - p) / 8) FAIL("sample callchain truncated", r);
        p += (Py_ssize_t)nr * 8;
    }
raw:;
    Py_ssize_t raw = -1, rawlen = 0;
    if (st & S_RAW) {
        NEED(4);
        uint32_t n = rd32(b + p);
        p += 4;
        if ((uint64_t)n > (uint64_t)(end - p)) FAIL("sample raw data runs past its record", r);
        raw = p; rawlen = n;
    }
#undef NEED
    if (o->s_off && c->lean) {      /* offset, time and attr only: the fill pass re-reads the rest */
        Py_ssize_t i = o->ns, a = 0;
        if (c->namap) {
            Py_ssize_t lo = id_index(c->amap_ids, c->namap, id);
            a = lo >= 0 ? c->amap_own[lo] : -1;
        }
        o->s_off[i] = r; o->s_time[i] = t; o->s_attr[i] = (int32_t)a;
    } else if (o->s_off) {
        Py_ssize_t i = o->ns;
        o->s_off[i] = r; o->s_time[i] = t; o->s_pid[i] = pid; o->s_tid[i] = tid; o->s_cpu[i] = cpu;
        o->s_id[i] = id; o->s_raw[i] = raw; o->s_rawlen[i] = rawlen;
    }
    o->ns++;
    return 0;
}

static void other(const uint8_t *b, Py_ssize_t r, Py_ssize_t size, uint32_t type, const cfg_t *c, out_t *o)
{
    if (o->o_off) {
        Py_ssize_t i = o->no;
        uint64_t t = 0;
        int32_t cpu = -1;
        /* the trailing sample_id is only present when the record has room for it */
        if (c->sid_size > 0 && type < 64 && size >= 8 + c->sid_size) {
            Py_ssize_t s = r + size - c->sid_size;
            if (c->sid_time >= 0) t = rd64(b + s + c->sid_time);
            if (c->sid_cpu >= 0) cpu = (int32_t)rd32(b + s + c->sid_cpu);
        }
        o->o_off[i] = r; o->o_type[i] = (int32_t)type; o->o_size[i] = size; o->o_time[i] = t; o->o_cpu[i] = cpu;
    }
    o->no++;
}

static int walk(const uint8_t *b, Py_ssize_t start, Py_ssize_t end, const cfg_t *c, out_t *o, werr_t *e)
{
    Py_ssize_t r = start;
    while (r < end) {
        if (end - r < 8) FAIL("truncated record header", r);
        uint32_t type = rd32(b + r);
        Py_ssize_t size = (Py_ssize_t)(uint16_t)(b[r + 6] | (b[r + 7] << 8));
        if (size < 8) FAIL("record size smaller than its header", r);
        if (size > end - r) FAIL("record runs past the end of the data", r);
        if (type == REC_SAMPLE) {
            if (!o->s_off) o->ns++;         /* counting pass: the filling pass checks the sample */
            else if (o->ns >= o->cap_s) FAIL("buffer changed during the walk", r);
            else if (sample(b, r, size, c, o, e)) return -1;
        } else {
            if (o->o_off && o->no >= o->cap_o) FAIL("buffer changed during the walk", r);
            other(b, r, size, type, c, o);
        }
        Py_ssize_t extra = 0;
        if (type == REC_TRACING_DATA) {         /* pipe mode: the tracing data follows the record */
            if (size < 12) FAIL("tracing data record too short", r);
            extra = rd32(b + r + 8);
        } else if (type == REC_AUXTRACE) {      /* AUX area data follows the record */
            if (size < 16) FAIL("auxtrace record too short", r);
            uint64_t x = rd64(b + r + 8);
            if (x > (uint64_t)(end - r - size)) FAIL("auxtrace data runs past the end of the data", r);
            extra = (Py_ssize_t)x;
        }
        if (extra > end - r - size) FAIL("record payload runs past the end of the data", r);
        r += size + extra;
    }
    return 0;
}

/* A 1-d array of `type` and length n over arena bytes [at, at + n * itemsize), keeping the
 * arena alive.  Columns carved from one allocation share its transparent huge pages (numpy
 * asks for them from 4 MB up): a few faults instead of one per 4 kB page. */
static PyObject *view_of(PyObject *arena, Py_ssize_t at, npy_intp n, int type)
{
    PyArray_Descr *d = PyArray_DescrFromType(type);
    if (!d) return NULL;
    char *base = (char *)PyArray_DATA((PyArrayObject *)arena) + at;
    PyObject *v = PyArray_NewFromDescr(&PyArray_Type, d, 1, &n, NULL, base, NPY_ARRAY_CARRAY, NULL);
    if (!v) return NULL;
    Py_INCREF(arena);
    if (PyArray_SetBaseObject((PyArrayObject *)v, arena) < 0) { Py_DECREF(v); return NULL; }
    return v;
}

static inline Py_ssize_t up64(Py_ssize_t x) { return (x + 63) & ~(Py_ssize_t)63; }

#define HUGE_PAGE ((Py_ssize_t)2 << 20)

/* A byte arena of at least n bytes; *pad = where its 2 MB aligned part starts.  Large arenas
 * get 2 MB of slack so that all of the used part lies in whole huge pages (an unaligned one
 * has up to two 2 MB edges of 4 kB pages, faulted one by one). */
static PyObject *huge_arena(Py_ssize_t n, Py_ssize_t *pad)
{
    int big = n >= HUGE_PAGE / 2;
    npy_intp len = n + (big ? HUGE_PAGE : 0);
    PyObject *a = PyArray_SimpleNew(1, &len, NPY_UINT8);
    if (!a) return NULL;
    uintptr_t at = (uintptr_t)PyArray_DATA((PyArrayObject *)a);
    *pad = big ? (Py_ssize_t)((HUGE_PAGE - (Py_ssize_t)(at % HUGE_PAGE)) % HUGE_PAGE) : 0;
    return a;
}

static PyObject *py_walk(PyObject *self, PyObject *args)
{
    Py_buffer buf, ib, tb, mb = {0}, ob = {0};
    Py_ssize_t start, end;
    unsigned long long st;
    cfg_t c;
    memset(&c, 0, sizeof c);
    if (!PyArg_ParseTuple(args, "y*nnKnnnnnny*y*|iy*y*", &buf, &start, &end, &st, &c.read_fixed, &c.read_entry,
                          &c.sid_size, &c.sid_tid, &c.sid_time, &c.sid_cpu, &ib, &tb, &c.lean, &mb, &ob))
        return NULL;
    c.st = st;
    c.ids = ib.buf; c.types = tb.buf; c.nids = ib.len / 8;
    c.amap_ids = mb.buf; c.amap_own = ob.buf; c.namap = mb.buf ? mb.len / 8 : 0;
    if (ib.len % 8 == 0 && ib.len == tb.len) prep_fixed(&c);
    PyObject *res = NULL, *a[14] = {0};
    if (c.lean && (mb.len % 8 || (mb.buf ? mb.len / 8 : 0) * 4 != (ob.buf ? ob.len : 0))) {
        PyErr_SetString(PyExc_ValueError, "attr map ids and owners differ in length @0");
        goto done;
    }
    if (ib.len % 8 || ib.len != tb.len) {
        PyErr_SetString(PyExc_ValueError, "ids and types differ in length @0");
        goto done;
    }
    if (start < 0 || end > buf.len || start > end) {
        PyErr_SetString(PyExc_ValueError, "data range outside the buffer @0");
        goto done;
    }
    if (!layout_ok(&c)) {
        PyErr_SetString(PyExc_ValueError, "bad sample layout @0");
        goto done;
    }
    out_t o;
    memset(&o, 0, sizeof o);
    werr_t e = {NULL, 0};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = walk(buf.buf, start, end, &c, &o, &e);          /* pass 1: count (up to a bad header, if any) */
    Py_END_ALLOW_THREADS
    /* an error is not reported yet: pass 2 meets it again, or an earlier one in a sample */
    npy_intp ns = o.ns, no = o.no, zero = 0;
    int kinds[14] = {NPY_INT64, NPY_UINT64, NPY_INT32, NPY_INT32, NPY_INT32, NPY_UINT64, NPY_INT64, NPY_INT64,
                     NPY_INT64, NPY_INT32, NPY_INT64, NPY_UINT64, NPY_INT32, NPY_INT32};
    {
        /* all columns are views of one arena (lean: of the sample columns only offset, time and attr) */
        npy_intp len[14];
        Py_ssize_t at[14], total = 0;
        for (int i = 0; i < 14; i++) {
            len[i] = i < 2 ? ns : i < 8 ? (c.lean ? zero : ns) : i < 13 ? no : (c.lean ? ns : zero);
            at[i] = total;
            int sz = (kinds[i] == NPY_INT32) ? 4 : 8;
            total += up64((Py_ssize_t)len[i] * sz);
        }
        Py_ssize_t pad;
        PyObject *arena = huge_arena(total, &pad);
        if (!arena) goto done;
        for (int i = 0; i < 14; i++)
            if (!(a[i] = view_of(arena, pad + at[i], len[i], kinds[i]))) { Py_DECREF(arena); goto done; }
        Py_DECREF(arena);
    }
#define D(i) PyArray_DATA((PyArrayObject *)a[i])
    o.s_off = D(0); o.s_time = D(1); o.s_pid = D(2); o.s_tid = D(3); o.s_cpu = D(4); o.s_id = D(5);
    o.s_raw = D(6); o.s_rawlen = D(7);
    o.o_off = D(8); o.o_type = D(9); o.o_size = D(10); o.o_time = D(11); o.o_cpu = D(12); o.s_attr = D(13);
#undef D
    o.ns = o.no = 0;
    o.cap_s = ns; o.cap_o = no;
    Py_BEGIN_ALLOW_THREADS
    rc = walk(buf.buf, start, end, &c, &o, &e);          /* pass 2: check and fill */
    Py_END_ALLOW_THREADS
    if (rc || o.ns != ns || o.no != no) {
        PyErr_Format(PyExc_ValueError, "%s @%zd", rc ? e.err : "buffer changed during the walk", e.at);
        goto done;
    }
    res = PyTuple_New(14);
    if (!res) goto done;
    for (int i = 0; i < 14; i++) { PyTuple_SET_ITEM(res, i, a[i]); a[i] = NULL; }
done:
    for (int i = 0; i < 14; i++) Py_XDECREF(a[i]);
    PyBuffer_Release(&buf);
    PyBuffer_Release(&ib);
    PyBuffer_Release(&tb);
    if (mb.buf) PyBuffer_Release(&mb);
    if (ob.buf) PyBuffer_Release(&ob);
    return res;
}


/* fill(buf, s_off i64, attr i32, order i64, groups, chg_pos i64, chg_tid i32, chg_code i32,
 *      sample_type, read_fixed, read_group_entry, ids, types[, compact])
 *   -> counts i64[len(groups)]
 * Each sample is re-read from its record at s_off (the walk was lean) or, compact = True,
 * from zwalk's compact row there (tid, cpu, raw length, RAW bytes at fixed offsets; the time
 * is times[i], an array then required).
 * One pass over the samples in seq order (`order` = sample indices): sample order[k] of
 * attr a goes to the next row r of groups[a] = (seq i64, ts i64, cpu i32, tid i32, comm i32,
 * idx i64 or None, need, [(field offset, size, out array of that item size)]): seq[r] = k,
 * idx[r] = the sample index (for the fields decoded in Python: strings, arrays), and every
 * numeric field is copied from its RAW payload.  groups[a] None = not a tracepoint: skipped.
 * comm[r] is the thread's comm code: the comm changes (tid, code), sorted by chg_pos = the seq
 * position from which each applies, are replayed into a tid -> code hash table as k passes
 * them (a later change of the same tid wins); -1 = no change seen for that tid yet.
 * Errors: a RAW payload shorter than `need` ("... @<sample index>"). */
typedef struct { int64_t *seq, *ts, *raw, *rawlen; int32_t *cpu, *tid, *comm; Py_ssize_t need, nf, cap, rows;
                 Py_ssize_t *foff, *fsz; char **fout; } grp_t;

static int arr_of(PyObject *o, int type, Py_ssize_t n, void **p)
{
    if (!PyArray_Check(o) || PyArray_TYPE((PyArrayObject *)o) != type || PyArray_NDIM((PyArrayObject *)o) != 1 ||
        !PyArray_ISCARRAY((PyArrayObject *)o) || PyArray_DIM((PyArrayObject *)o, 0) < n) {
        PyErr_SetString(PyExc_ValueError, "fill: bad array argument @0");
        return -1;
    }
    *p = PyArray_DATA((PyArrayObject *)o);
    return 0;
}

/* tid -> comm code, open addressing; capacity a power of two above twice the key count */
typedef struct { int32_t *key, *val; uint8_t *used; size_t mask; } tidmap_t;

static inline size_t tid_slot(const tidmap_t *m, int32_t tid)
{
    size_t h = ((size_t)(uint32_t)tid * 0x9E3779B1u) & m->mask;
    while (m->used[h] && m->key[h] != tid) h = (h + 1) & m->mask;
    return h;
}

static PyObject *py_fill(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    Py_buffer ib, tb;
    PyObject *osoff, *oattr, *oorder, *groups, *ocpos, *octid, *occode;
    unsigned long long st;
    cfg_t cf;
    memset(&cf, 0, sizeof cf);
    int compact = 0;
    PyObject *otimes = Py_None;
    if (!PyArg_ParseTuple(args, "y*OOOO!OOOKnny*y*|pO", &buf, &osoff, &oattr, &oorder, &PyList_Type, &groups,
                          &ocpos, &octid, &occode, &st, &cf.read_fixed, &cf.read_entry, &ib, &tb, &compact, &otimes))
        return NULL;
    uint64_t *times = NULL;
    cf.st = st; cf.ids = ib.buf; cf.types = tb.buf; cf.nids = ib.len / 8;
    if (ib.len % 8 == 0 && ib.len == tb.len) prep_fixed(&cf);
    PyObject *res = NULL;
    grp_t *g = NULL;
    tidmap_t tm_ = {NULL, NULL, NULL, 0};
    int64_t *cpos; int32_t *ctid, *ccode;
    Py_ssize_t nc = PyArray_Check(ocpos) ? PyArray_SIZE((PyArrayObject *)ocpos) : 0;
    Py_ssize_t ng = PyList_GET_SIZE(groups), n = 0;
    int64_t *soff, *order; int32_t *attr;
    if (ib.len % 8 || ib.len != tb.len || cf.read_fixed < 0 || cf.read_fixed > 1 << 20 || cf.read_entry > 1 << 16) {
        PyErr_SetString(PyExc_ValueError, "fill: bad sample layout @0");
        goto done;
    }
    if (!PyArray_Check(oorder)) { PyErr_SetString(PyExc_ValueError, "fill: order @0"); goto done; }
    n = PyArray_SIZE((PyArrayObject *)oorder);
    Py_ssize_t ns = PyArray_Check(osoff) ? PyArray_SIZE((PyArrayObject *)osoff) : 0;
    if (arr_of(osoff, NPY_INT64, ns, (void **)&soff) || arr_of(oattr, NPY_INT32, ns, (void **)&attr) ||
        arr_of(oorder, NPY_INT64, n, (void **)&order) || arr_of(ocpos, NPY_INT64, nc, (void **)&cpos) ||
        arr_of(octid, NPY_INT32, nc, (void **)&ctid) || arr_of(occode, NPY_INT32, nc, (void **)&ccode) ||
        (compact && arr_of(otimes, NPY_UINT64, ns, (void **)&times)))
        goto done;
    for (Py_ssize_t j = 1; j < nc; j++)
        if (cpos[j] < cpos[j - 1]) { PyErr_SetString(PyExc_ValueError, "fill: comm changes out of order @0"); goto done; }
    {
        size_t cap = 16;
        while (cap < 2 * (size_t)nc + 2) cap <<= 1;
        tm_.mask = cap - 1;
        tm_.key = PyMem_Malloc(cap * sizeof(int32_t));
        tm_.val = PyMem_Malloc(cap * sizeof(int32_t));
        tm_.used = PyMem_Calloc(cap, 1);
        if (!tm_.key || !tm_.val || !tm_.used) { PyErr_NoMemory(); goto done; }
    }
    g = PyMem_Calloc(ng ? ng : 1, sizeof(grp_t));
    if (!g) { PyErr_NoMemory(); goto done; }
    for (Py_ssize_t a = 0; a < ng; a++) {
        PyObject *t = PyList_GET_ITEM(groups, a);
        if (t == Py_None) continue;
        PyObject *s, *ts_, *c, *ti, *cm, *rw, *rl, *fl;
        Py_ssize_t need;
        if (!PyArg_ParseTuple(t, "OOOOOOOnO!", &s, &ts_, &c, &ti, &cm, &rw, &rl, &need, &PyList_Type, &fl)) goto done;
        Py_ssize_t cap = PyArray_Check(s) ? PyArray_SIZE((PyArrayObject *)s) : -1;
        if (cap < 0 || arr_of(s, NPY_INT64, cap, (void **)&g[a].seq) || arr_of(ts_, NPY_INT64, cap, (void **)&g[a].ts) ||
            arr_of(c, NPY_INT32, cap, (void **)&g[a].cpu) || arr_of(ti, NPY_INT32, cap, (void **)&g[a].tid) ||
            arr_of(cm, NPY_INT32, cap, (void **)&g[a].comm))
            goto done;
        if (need < 0) { PyErr_SetString(PyExc_ValueError, "fill: bad field spec @0"); goto done; }
        if ((rw != Py_None) != (rl != Py_None)) { PyErr_SetString(PyExc_ValueError, "fill: raw without rawlen @0"); goto done; }
        if (rw != Py_None && (arr_of(rw, NPY_INT64, cap, (void **)&g[a].raw) ||
                              arr_of(rl, NPY_INT64, cap, (void **)&g[a].rawlen))) goto done;
        g[a].cap = cap; g[a].need = need; g[a].nf = PyList_GET_SIZE(fl);
        g[a].foff = PyMem_Calloc(g[a].nf + 1, sizeof(Py_ssize_t));
        g[a].fsz = PyMem_Calloc(g[a].nf + 1, sizeof(Py_ssize_t));
        g[a].fout = PyMem_Calloc(g[a].nf + 1, sizeof(char *));
        if (!g[a].foff || !g[a].fsz || !g[a].fout) { PyErr_NoMemory(); goto done; }
        for (Py_ssize_t f = 0; f < g[a].nf; f++) {
            PyObject *o;
            if (!PyArg_ParseTuple(PyList_GET_ITEM(fl, f), "nnO", &g[a].foff[f], &g[a].fsz[f], &o)) goto done;
            Py_ssize_t sz = g[a].fsz[f];
            if (!(sz == 1 || sz == 2 || sz == 4 || sz == 8) || g[a].foff[f] < 0 || g[a].foff[f] + sz > need ||
                !PyArray_Check(o) || PyArray_ITEMSIZE((PyArrayObject *)o) != sz || PyArray_NDIM((PyArrayObject *)o) != 1 ||
                !PyArray_ISCARRAY((PyArrayObject *)o) || PyArray_DIM((PyArrayObject *)o, 0) < cap) {
                PyErr_SetString(PyExc_ValueError, "fill: bad field spec @0");
                goto done;
            }
            g[a].fout[f] = PyArray_DATA((PyArrayObject *)o);
        }
    }
    const char *err = NULL;
    Py_ssize_t at = 0;
    const uint8_t *b = buf.buf;
    Py_ssize_t j = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t k = 0; k < n; k++) {
        for (; j < nc && cpos[j] <= k; j++) {        /* comm changes that precede this sample */
            size_t h = tid_slot(&tm_, ctid[j]);
            tm_.used[h] = 1; tm_.key[h] = ctid[j]; tm_.val[h] = ccode[j];
        }
        int64_t i = order[k];
        if (i < 0 || i >= ns) { err = "sample index out of range"; at = k; break; }
        int32_t a = attr[i];
        if (a < 0 || a >= ng) { err = "attr index out of range"; at = i; break; }
        grp_t *G = &g[a];
        if (!G->seq) continue;
        if (G->rows >= G->cap) { err = "more samples than the table has rows"; at = i; break; }
        /* the sample again, from its record (the walk kept only offset, time and attr) */
        int64_t so = soff[i];
        int64_t v_off, v_raw, v_rawlen; uint64_t v_time, v_id; int32_t v_pid, v_tid, v_cpu;
        if (compact) {          /* a compact row: fixed offsets (zwalk) */
            if (so < 0 || so > buf.len - ZROW) { err = "sample offset outside the buffer"; at = i; break; }
            v_time = times[i]; v_tid = (int32_t)rd32(b + so); v_cpu = (int32_t)rd32(b + so + 4);
            v_rawlen = rd32(b + so + 8); v_raw = so + ZROW;
        } else {
            if (so < 0 || so > buf.len - 8) { err = "sample offset outside the buffer"; at = i; break; }
            Py_ssize_t size = (Py_ssize_t)(uint16_t)(b[so + 6] | (b[so + 7] << 8));
            if (size < 8 || size > buf.len - so) { err = "sample record runs past the buffer"; at = i; break; }
            out_t one = {&v_off, &v_raw, &v_rawlen, &v_time, &v_id, &v_pid, &v_tid, &v_cpu, NULL,
                         NULL, NULL, NULL, NULL, NULL, 0, 0, 1, 0};
            werr_t we = {NULL, 0};
            if (sample(b, so, size, &cf, &one, &we)) { err = we.err; at = i; break; }
        }
        int64_t ro = v_raw;
        if (v_rawlen < G->need || ro < 0 || ro + G->need > buf.len) { err = "raw data shorter than its format"; at = i; break; }
        Py_ssize_t r = G->rows++;
        G->seq[r] = k; G->ts[r] = (int64_t)v_time; G->cpu[r] = v_cpu; G->tid[r] = v_tid;
        size_t h = tid_slot(&tm_, v_tid);
        G->comm[r] = tm_.used[h] ? tm_.val[h] : -1;
        if (G->raw) { G->raw[r] = ro; G->rawlen[r] = v_rawlen; }
        const uint8_t *src = b + ro;
        for (Py_ssize_t f = 0; f < G->nf; f++) {
            const uint8_t *p = src + G->foff[f];
            switch (G->fsz[f]) {      /* constant sizes: the compiler emits plain loads/stores */
            case 8: memcpy(G->fout[f] + r * 8, p, 8); break;
            case 4: memcpy(G->fout[f] + r * 4, p, 4); break;
            case 2: memcpy(G->fout[f] + r * 2, p, 2); break;
            default: G->fout[f][r] = (char)*p; break;
            }
        }
    }
    Py_END_ALLOW_THREADS
    if (err) { PyErr_Format(PyExc_ValueError, "%s @%zd", err, at); goto done; }
    npy_intp dn = ng;
    res = PyArray_SimpleNew(1, &dn, NPY_INT64);
    if (res) for (Py_ssize_t a = 0; a < ng; a++) ((int64_t *)PyArray_DATA((PyArrayObject *)res))[a] = g[a].rows;
done:
    if (g) for (Py_ssize_t a = 0; a < ng; a++) { PyMem_Free(g[a].foff); PyMem_Free(g[a].fsz); PyMem_Free(g[a].fout); }
    PyMem_Free(g);
    PyMem_Free(tm_.key); PyMem_Free(tm_.val); PyMem_Free(tm_.used);
    PyBuffer_Release(&buf);
    PyBuffer_Release(&ib);
    PyBuffer_Release(&tb);
    return res;
}

/* take_strings(offsets i32[m+1], data bytes, [codes i32[n], ...]) -> [(offsets i32[n+1], data u8), ...]
 * The Arrow string columns names[codes] built directly (the comm column: one of a few names
 * per row), all in one arena; every code and name offset is checked, a column over 2 GiB is
 * refused. */
static PyObject *py_take_strings(PyObject *self, PyObject *args)
{
    PyObject *ooff, *olist, *res = NULL, *arena = NULL;
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "Oy*O!", &ooff, &data, &PyList_Type, &olist)) return NULL;
    int32_t *noff;
    Py_ssize_t m1 = PyArray_Check(ooff) ? PyArray_SIZE((PyArrayObject *)ooff) : 0, ng = PyList_GET_SIZE(olist);
    int64_t *tot = PyMem_Calloc(ng ? ng : 1, sizeof(int64_t));
    if (!tot) { PyErr_NoMemory(); goto done; }
    if (m1 < 1 || arr_of(ooff, NPY_INT32, m1, (void **)&noff)) {
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError, "take_strings: bad array argument @0");
        goto done;
    }
    for (Py_ssize_t i = 0; i + 1 < m1; i++)
        if (noff[i] < 0 || noff[i] > noff[i + 1] || noff[i + 1] > data.len) {
            PyErr_SetString(PyExc_ValueError, "take_strings: bad name offsets @0");
            goto done;
        }
    if (noff[0] < 0 || noff[0] > data.len) { PyErr_SetString(PyExc_ValueError, "take_strings: bad name offsets @0"); goto done; }
    /* pass 1: check every code, size every column; one arena holds them all (huge pages) */
    Py_ssize_t need = 0;
    for (Py_ssize_t g = 0; g < ng; g++) {
        PyObject *oc = PyList_GET_ITEM(olist, g);
        int32_t *codes;
        Py_ssize_t n = PyArray_Check(oc) ? PyArray_SIZE((PyArrayObject *)oc) : 0;
        if (arr_of(oc, NPY_INT32, n, (void **)&codes)) goto done;
        int64_t total = 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            if (codes[i] < 0 || codes[i] >= m1 - 1) { PyErr_Format(PyExc_ValueError, "take_strings: bad code @%zd", i); goto done; }
            total += noff[codes[i] + 1] - noff[codes[i]];
        }
        if (total > INT32_MAX) { PyErr_SetString(PyExc_ValueError, "take_strings: column too large @0"); goto done; }
        tot[g] = total;
        need += up64((n + 1) * 4) + up64((Py_ssize_t)total);
    }
    Py_ssize_t pad, at = 0;
    if (!(arena = huge_arena(need, &pad))) goto done;
    if (!(res = PyList_New(ng))) goto done;
    const uint8_t *src = data.buf;
    for (Py_ssize_t g = 0; g < ng; g++) {
        PyObject *oc = PyList_GET_ITEM(olist, g);
        int32_t *codes = PyArray_DATA((PyArrayObject *)oc);
        Py_ssize_t n = PyArray_SIZE((PyArrayObject *)oc);
        PyObject *roff = view_of(arena, pad + at, n + 1, NPY_INT32);
        at += up64((n + 1) * 4);
        PyObject *rdat = roff ? view_of(arena, pad + at, (npy_intp)tot[g], NPY_UINT8) : NULL;
        at += up64((Py_ssize_t)tot[g]);
        PyObject *pair = rdat ? PyTuple_Pack(2, roff, rdat) : NULL;
        Py_XDECREF(roff);
        Py_XDECREF(rdat);
        if (!pair) { Py_CLEAR(res); goto done; }
        PyList_SET_ITEM(res, g, pair);
        int32_t *o = PyArray_DATA((PyArrayObject *)roff);
        uint8_t *d = PyArray_DATA((PyArrayObject *)rdat);
        int32_t w = 0;
        o[0] = 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            int32_t a = noff[codes[i]], len = noff[codes[i] + 1] - a;
            memcpy(d + w, src + a, (size_t)len);
            w += len;
            o[i + 1] = w;
        }
    }
done:
    Py_XDECREF(arena);
    PyMem_Free(tot);
    PyBuffer_Release(&data);
    return res;
}

/* attr_of(s_id u64[n], ids u64[m] sorted, owner i32[m]) -> i32[n]: the attr index of every
 * sample by its id (binary search); an id no attr has is ValueError("... @<sample index>"). */
static PyObject *py_attr_of(PyObject *self, PyObject *args)
{
    PyObject *osid, *oids, *oown, *res = NULL;
    if (!PyArg_ParseTuple(args, "OOO", &osid, &oids, &oown)) return NULL;
    uint64_t *sid, *ids; int32_t *own;
    Py_ssize_t n = PyArray_Check(osid) ? PyArray_SIZE((PyArrayObject *)osid) : 0;
    Py_ssize_t m = PyArray_Check(oids) ? PyArray_SIZE((PyArrayObject *)oids) : 0;
    if (arr_of(osid, NPY_UINT64, n, (void **)&sid) || arr_of(oids, NPY_UINT64, m, (void **)&ids) ||
        arr_of(oown, NPY_INT32, m, (void **)&own))
        return NULL;
    for (Py_ssize_t j = 1; j < m; j++)
        if (ids[j] <= ids[j - 1]) { PyErr_SetString(PyExc_ValueError, "attr_of: ids not sorted @0"); return NULL; }
    npy_intp dn = n;
    if (!(res = PyArray_SimpleNew(1, &dn, NPY_INT32))) return NULL;
    int32_t *out = PyArray_DATA((PyArrayObject *)res);
    Py_ssize_t bad = -1;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t id = sid[i];
        Py_ssize_t lo = 0, hi = m;
        while (lo < hi) { Py_ssize_t k = lo + (hi - lo) / 2; if (ids[k] < id) lo = k + 1; else hi = k; }
        if (lo >= m || ids[lo] != id) { bad = i; break; }
        out[i] = own[lo];
    }
    Py_END_ALLOW_THREADS
    if (bad >= 0) { Py_DECREF(res); PyErr_Format(PyExc_ValueError, "sample id no event attr has @%zd", bad); return NULL; }
    return res;
}

/* time_order(t u64[n]) -> i64[n]: the stable argsort of t read as int64, like the numpy path
 * (ties keep their index order).
 * perf writes each CPU's records in time order, chunk by chunk, so t is a few ascending
 * runs: they are found and merged pairwise (bottom-up, the left run first on ties), which
 * costs n * log2(runs) instead of a full sort. */
static PyObject *py_time_order(PyObject *self, PyObject *args)
{
    PyObject *ot, *res = NULL;
    if (!PyArg_ParseTuple(args, "O", &ot)) return NULL;
    uint64_t *tu;
    Py_ssize_t n = PyArray_Check(ot) ? PyArray_SIZE((PyArrayObject *)ot) : 0;
    if (arr_of(ot, NPY_UINT64, n, (void **)&tu)) return NULL;
    const int64_t *t = (const int64_t *)tu;
    Py_ssize_t *run = NULL, nr = 0;
    for (Py_ssize_t i = 1; i < n; i++) nr += t[i] < t[i - 1];
    /* unsorted: the result and the merge buffer in one arena (huge pages, see view_of) */
    Py_ssize_t pad;
    PyObject *arena = huge_arena((nr ? 2 : 1) * n * (Py_ssize_t)sizeof(int64_t), &pad);
    if (!arena) return NULL;
    int64_t *a = (int64_t *)((char *)PyArray_DATA((PyArrayObject *)arena) + pad), *b = a + n;
    for (Py_ssize_t i = 0; i < n; i++) a[i] = i;
    if (nr == 0) {
        res = view_of(arena, pad, n, NPY_INT64);
        Py_DECREF(arena);
        return res;
    }
    nr += 1;
    run = PyMem_Malloc((size_t)(nr + 1) * sizeof(Py_ssize_t));     /* run k = [run[k], run[k+1]) */
    if (!run) { Py_DECREF(arena); return PyErr_NoMemory(); }
    int64_t *src = a, *dst = b;
    Py_BEGIN_ALLOW_THREADS
    Py_ssize_t k = 0;
    run[k++] = 0;
    for (Py_ssize_t i = 1; i < n; i++) if (t[i] < t[i - 1]) run[k++] = i;
    run[k] = n;
    while (nr > 1) {
        Py_ssize_t w = 0;
        for (Py_ssize_t r = 0; r < nr; r += 2) {
            Py_ssize_t lo = run[r], mid = run[r + 1], hi = r + 2 <= nr ? run[r + 2] : mid;
            Py_ssize_t i = lo, j = mid, o = lo;
            if (r + 1 >= nr) { hi = mid; }
            while (i < mid && j < hi) dst[o++] = (t[src[j]] < t[src[i]]) ? src[j++] : src[i++];
            while (i < mid) dst[o++] = src[i++];
            while (j < hi) dst[o++] = src[j++];
            run[w++] = lo;
        }
        run[w] = n;
        nr = w;
        int64_t *x = src; src = dst; dst = x;
    }
    Py_END_ALLOW_THREADS
    PyMem_Free(run);
    res = view_of(arena, pad + ((char *)src - (char *)a), n, NPY_INT64);     /* the half holding the result */
    Py_DECREF(arena);
    return res;
}

/* huge_empty(n) -> u8[n] (uninitialised), 2 MB aligned when large: see huge_arena. */
static PyObject *py_huge_empty(PyObject *self, PyObject *args)
{
    Py_ssize_t n, pad;
    if (!PyArg_ParseTuple(args, "n", &n)) return NULL;
    if (n < 0) { PyErr_SetString(PyExc_ValueError, "huge_empty: negative size @0"); return NULL; }
    PyObject *arena = huge_arena(n, &pad);
    if (!arena) return NULL;
    PyObject *res = view_of(arena, pad, n, NPY_UINT8);
    Py_DECREF(arena);
    return res;
}

/* change_pos(t u64[n], s_off i64[n], ord_base, order i64[n], c_time i64[m], c_ord i64[m]) -> i64[m]
 * For every comm change (sorted by time read as int64, then ord): how many samples precede
 * it in perf's order (sample key = (time, ord_base | s_off)), by one merge walk along
 * `order` instead of a gathered copy of the sorted times.  Changes out of order:
 * ValueError (the caller then uses its searchsorted path). */
static PyObject *py_change_pos(PyObject *self, PyObject *args)
{
    PyObject *ot, *osoff, *oorder, *oct, *oco, *res = NULL;
    long long base;
    if (!PyArg_ParseTuple(args, "OOLOOO", &ot, &osoff, &base, &oorder, &oct, &oco)) return NULL;
    uint64_t *tu; int64_t *soff, *order, *ct, *co;
    Py_ssize_t n = PyArray_Check(ot) ? PyArray_SIZE((PyArrayObject *)ot) : 0;
    Py_ssize_t m = PyArray_Check(oct) ? PyArray_SIZE((PyArrayObject *)oct) : 0;
    if (arr_of(ot, NPY_UINT64, n, (void **)&tu) || arr_of(osoff, NPY_INT64, n, (void **)&soff) ||
        arr_of(oorder, NPY_INT64, n, (void **)&order) || arr_of(oct, NPY_INT64, m, (void **)&ct) ||
        arr_of(oco, NPY_INT64, m, (void **)&co))
        return NULL;
    if (PyArray_SIZE((PyArrayObject *)oorder) != n) { PyErr_SetString(PyExc_ValueError, "change_pos: order @0"); return NULL; }
    for (Py_ssize_t j = 1; j < m; j++)
        if (ct[j] < ct[j - 1] || (ct[j] == ct[j - 1] && co[j] < co[j - 1])) {
            PyErr_SetString(PyExc_ValueError, "change_pos: changes out of order @0");
            return NULL;
        }
    const int64_t *t = (const int64_t *)tu;
    npy_intp dm = m;
    if (!(res = PyArray_SimpleNew(1, &dm, NPY_INT64))) return NULL;
    int64_t *pos = PyArray_DATA((PyArrayObject *)res);
    Py_ssize_t bad = -1, j = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t k = 0; k < n && j < m; k++) {
        int64_t i = order[k];
        if (i < 0 || i >= n) { bad = k; break; }
        int64_t st = t[i], so = (int64_t)base | soff[i];
        while (j < m && (ct[j] < st || (ct[j] == st && co[j] < so))) pos[j++] = k;
    }
    for (; j < m; j++) pos[j] = n;
    Py_END_ALLOW_THREADS
    if (bad >= 0) { Py_DECREF(res); PyErr_Format(PyExc_ValueError, "change_pos: order index out of range @%zd", bad); return NULL; }
    return res;
}

/* counts(a i32[n], m) -> i64[m]: how often each of 0..m-1 occurs (np.bincount without its
 * int64 copy of a); a value outside is ValueError("... @<index>"). */
static PyObject *py_counts(PyObject *self, PyObject *args)
{
    PyObject *oa, *res;
    Py_ssize_t m;
    if (!PyArg_ParseTuple(args, "On", &oa, &m)) return NULL;
    int32_t *a;
    Py_ssize_t n = PyArray_Check(oa) ? PyArray_SIZE((PyArrayObject *)oa) : 0;
    if (m < 0 || arr_of(oa, NPY_INT32, n, (void **)&a)) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "counts: bad arguments @0");
        return NULL;
    }
    npy_intp dm = m;
    if (!(res = PyArray_ZEROS(1, &dm, NPY_INT64, 0))) return NULL;
    int64_t *c = PyArray_DATA((PyArrayObject *)res);
    Py_ssize_t bad = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (a[i] < 0 || a[i] >= m) { bad = i; break; }
        c[a[i]]++;
    }
    if (bad >= 0) { Py_DECREF(res); PyErr_Format(PyExc_ValueError, "counts: value out of range @%zd", bad); return NULL; }
    return res;
}

#ifdef MTAUDIT_ZSTD
/*
 * zwalk(buf, parts i64[2m], cap, sample_type, read_fixed, read_group_entry, sid_size, sid_tid, sid_time,
 *       sid_cpu, ids, types, amap_ids, amap_attr)
 *   -> (data u8, s_off i64, s_time u64, s_attr i32, o_off i64, o_type i32, o_size i64, o_time u64, o_cpu i32)
 * The -z path: parts = (offset, length) in buf of every COMPRESSED(2) payload, in file order,
 * together ONE zstd stream.  libzstd decodes it straight into `data` (no window copy: the
 * output buffer is stable, a reservation of `cap` bytes of which only the used part is ever
 * touched), and the records are walked part by part as soon as they are complete, while they
 * are still in cache: a lean walk (like walk() with lean=1, same checks and errors) instead of
 * a count pass and a fill pass over the whole decompressed stream afterwards.
 * More than `cap` decompressed bytes, corrupt zstd data or a malformed record: ValueError
 * ("message @<byte offset in the decompressed stream>").
 */
#include <sys/mman.h>
#define ZSTD_STATIC_LINKING_ONLY        /* for ZSTD_d_stableOutBuffer (a parameter value only) */
#include <zstd.h>
#include <zstd_errors.h>

/* A growable anonymous mapping: grows by mremap (no copy), asks for huge pages when large,
 * and is handed to numpy without a copy (a capsule unmaps it). */
typedef struct { uint8_t *p; size_t len, cap; } vbuf_t;

static int vb_grow(vbuf_t *v, size_t more, int noreserve)
{
    size_t nc = v->cap ? v->cap : ((size_t)1 << 16);
    while (nc - v->len < more) { if (nc > ((size_t)1 << 46)) return -1; nc *= 2; }
    void *q = v->p ? mremap(v->p, v->cap, nc, MREMAP_MAYMOVE)
                   : mmap(NULL, nc, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS | (noreserve ? MAP_NORESERVE : 0), -1, 0);
    if (q == MAP_FAILED) return -1;
    /* huge pages from 4 MB up, like numpy: a 2 MB page is cleared whole however little of it
     * a small array uses */
    if (nc >= ((size_t)4 << 20)) (void)madvise(q, nc, MADV_HUGEPAGE);
    v->p = q; v->cap = nc;
    return 0;
}

static inline int vb_reserve(vbuf_t *v, size_t more) { return more <= v->cap - v->len ? 0 : vb_grow(v, more, 0); }

static void vb_free(vbuf_t *v) { if (v->p) munmap(v->p, v->cap); v->p = NULL; v->len = v->cap = 0; }

static void vb_capsule_free(PyObject *cap)
{
    vbuf_t *v = PyCapsule_GetPointer(cap, "mtaudit.vbuf");
    if (v) { vb_free(v); PyMem_Free(v); }
}

/* numpy array of the first n items of v, owning the mapping (v is emptied). */
static PyObject *vb_array(vbuf_t *v, npy_intp n, int type)
{
    if (!v->p) return PyArray_ZEROS(1, &n, type, 0);     /* n is 0 then */
    vbuf_t *own = PyMem_Malloc(sizeof *own);
    if (!own) return PyErr_NoMemory();
    *own = *v;
    memset(v, 0, sizeof *v);
    PyObject *cap = PyCapsule_New(own, "mtaudit.vbuf", vb_capsule_free);
    if (!cap) { vb_free(own); PyMem_Free(own); return NULL; }
    PyObject *a = PyArray_SimpleNewFromData(1, &n, type, own->p);
    if (!a) { Py_DECREF(cap); return NULL; }
    if (PyArray_SetBaseObject((PyArrayObject *)a, cap) < 0) { Py_DECREF(a); return NULL; }
    return a;
}

enum { ZV_DATA, ZV_SOFF, ZV_STIME, ZV_SATTR, ZV_OOFF, ZV_OTYPE, ZV_OSIZE, ZV_OTIME, ZV_OCPU, ZV_N };

/* The zwalk result tuple: the data buffer (its first ndata bytes), the sample columns and the
 * other-record columns, each a numpy array owning its mapping (z[] is emptied; on failure the
 * caller still frees what is left in z[]). */
static PyObject *zv_result(vbuf_t *z, npy_intp ndata)
{
    static const int kinds[ZV_N] = {NPY_UINT8, NPY_INT64, NPY_UINT64, NPY_INT32, NPY_INT64, NPY_INT32,
                                    NPY_INT64, NPY_UINT64, NPY_INT32};
    npy_intp ns = (npy_intp)(z[ZV_SOFF].len / 8), no = (npy_intp)(z[ZV_OOFF].len / 8);
    PyObject *res = PyTuple_New(ZV_N);
    if (!res) return NULL;
    for (int i = 0; i < ZV_N; i++) {
        PyObject *a = vb_array(&z[i], i == 0 ? ndata : i < ZV_OOFF ? ns : no, kinds[i]);
        if (!a) { Py_DECREF(res); return NULL; }
        PyTuple_SET_ITEM(res, i, a);
    }
    return res;
}

#define PUT(k, T, val) do { T v_ = (val); if (vb_reserve(&z[k], sizeof v_)) goto oom; \
                            memcpy(z[k].p + z[k].len, &v_, sizeof v_); z[k].len += sizeof v_; } while (0)

/* Walk the complete records of b[*rd, have) into z (lean: offset, time and attr of samples).
 * Returns 0 with *rd at the first incomplete record, or -1 with e set (e->err NULL: no memory).
 * A record is only looked at once all of it is there; the checks are walk()'s.
 * keep (compact mode, b is a window): samples go to z[ZV_DATA] as compact rows (tid i32, cpu
 * i32, raw length u32, then the first keep[attr] bytes of the RAW payload, all of it for
 * keep < 0; padded to 4 bytes; the time is in s_time), other records verbatim; offsets are
 * in z[ZV_DATA].  An id
 * no attr has is an error there.  Without keep the offsets are in b. */
static int zconsume(const uint8_t *b, Py_ssize_t *rd, Py_ssize_t have, const cfg_t *c, vbuf_t *z, werr_t *e,
                    const int64_t *keep, Py_ssize_t nkeep)
{
    Py_ssize_t r = *rd;
    while (have - r >= 8) {
        uint32_t type = rd32(b + r);
        Py_ssize_t size = (Py_ssize_t)(uint16_t)(b[r + 6] | (b[r + 7] << 8));
        if (size < 8) FAIL("record size smaller than its header", r);
        if (size > have - r) break;
        Py_ssize_t extra = 0;
        if (type == REC_TRACING_DATA) {
            if (size < 12) FAIL("tracing data record too short", r);
            extra = rd32(b + r + 8);
        } else if (type == REC_AUXTRACE) {
            if (size < 16) FAIL("auxtrace record too short", r);
            uint64_t x = rd64(b + r + 8);
            if (x > (uint64_t)PY_SSIZE_T_MAX / 2) FAIL("auxtrace data runs past the end of the data", r);
            extra = (Py_ssize_t)x;
        }
        if (extra > have - r - size) break;
        if (type == REC_SAMPLE) {
            int64_t v_off, v_raw, v_rawlen; uint64_t v_time, v_id; int32_t v_pid, v_tid, v_cpu;
            out_t one = {&v_off, &v_raw, &v_rawlen, &v_time, &v_id, &v_pid, &v_tid, &v_cpu, NULL,
                         NULL, NULL, NULL, NULL, NULL, 0, 0, 1, 0};
            if (sample(b, r, size, c, &one, e)) return -1;
            int32_t a = 0;
            if (c->namap) {
                Py_ssize_t lo = id_index(c->amap_ids, c->namap, v_id);
                a = lo >= 0 ? c->amap_own[lo] : -1;
            }
            if (keep) {
                if (a < 0 || a >= nkeep) FAIL("sample with an id no event attr has", r);
                Py_ssize_t rl = v_raw >= 0 ? (Py_ssize_t)v_rawlen : 0, k = keep[a] < 0 || keep[a] > rl ? rl : keep[a];
                Py_ssize_t rs = (ZROW + k + 3) & ~(Py_ssize_t)3;
                PUT(ZV_SOFF, int64_t, (int64_t)z[ZV_DATA].len);
                if (vb_reserve(&z[ZV_DATA], (size_t)rs)) goto oom;
                uint8_t *d = z[ZV_DATA].p + z[ZV_DATA].len;
                uint32_t n32 = (uint32_t)rl;
                memcpy(d, &v_tid, 4); memcpy(d + 4, &v_cpu, 4); memcpy(d + 8, &n32, 4);
                if (k) memcpy(d + ZROW, b + v_raw, (size_t)k);
                memset(d + ZROW + k, 0, (size_t)(rs - ZROW - k));
                z[ZV_DATA].len += (size_t)rs;
            } else {
                PUT(ZV_SOFF, int64_t, (int64_t)r);
            }
            PUT(ZV_STIME, uint64_t, v_time);
            PUT(ZV_SATTR, int32_t, a);
        } else {
            uint64_t t = 0;
            int32_t cpu = -1;
            if (c->sid_size > 0 && type < 64 && size >= 8 + c->sid_size) {
                Py_ssize_t s = r + size - c->sid_size;
                if (c->sid_time >= 0) t = rd64(b + s + c->sid_time);
                if (c->sid_cpu >= 0) cpu = (int32_t)rd32(b + s + c->sid_cpu);
            }
            if (keep) {
                PUT(ZV_OOFF, int64_t, (int64_t)z[ZV_DATA].len);
                if (vb_reserve(&z[ZV_DATA], (size_t)(size + extra))) goto oom;
                memcpy(z[ZV_DATA].p + z[ZV_DATA].len, b + r, (size_t)(size + extra));
                z[ZV_DATA].len += (size_t)(size + extra);
            } else {
                PUT(ZV_OOFF, int64_t, (int64_t)r);
            }
            PUT(ZV_OTYPE, int32_t, (int32_t)type);
            PUT(ZV_OSIZE, int64_t, (int64_t)size);
            PUT(ZV_OTIME, uint64_t, t);
            PUT(ZV_OCPU, int32_t, cpu);
        }
        r += size + extra;
    }
    *rd = r;
    return 0;
oom:
    e->err = NULL;
    return -1;
}
#undef PUT

#define ZSTEP ((size_t)1 << 15)     /* compressed bytes per decode call: ~400 kB out, walked in cache */

/* zwalk's compact mode: the stream decoded through a window, samples kept as compact rows
 * (see zconsume); same errors as the in-place mode. */
static PyObject *zwalk_compact(Py_buffer *buf, const int64_t *parts, Py_ssize_t np2, Py_ssize_t cap, const cfg_t *c,
                               const int64_t *keep, Py_ssize_t nkeep)
{
    vbuf_t z[ZV_N];
    memset(z, 0, sizeof z);
    PyObject *res = NULL;
    ZSTD_DCtx *dc = NULL;
    Py_ssize_t W = (Py_ssize_t)1 << 17, have = 0, rd = 0;     /* with zstd's own buffer (its window, 512 kB at
                                                               * perf's level) about what an L2 holds */
    uint8_t *win = PyMem_RawMalloc((size_t)W);
    {   /* first sizes from the expected size: perf's records compress ~12x, rows are ~half a record */
        size_t est = 0;
        for (Py_ssize_t k = 0; k < np2; k += 2) est += (size_t)parts[k + 1];
        est = est * 12 < (size_t)cap ? est * 12 : (size_t)cap;
        size_t nrec = est / 64;
        if (!win || vb_reserve(&z[ZV_DATA], est / 2 + 1) || vb_reserve(&z[ZV_SOFF], nrec * 8) ||
            vb_reserve(&z[ZV_STIME], nrec * 8) || vb_reserve(&z[ZV_SATTR], nrec * 4)) { PyErr_NoMemory(); goto done; }
        for (int i = ZV_OOFF; i < ZV_N; i++) if (vb_reserve(&z[i], 1 << 12)) { PyErr_NoMemory(); goto done; }
    }
    if (!(dc = ZSTD_createDCtx())) { PyErr_NoMemory(); goto done; }
    const char *err = NULL, *zerr = NULL;
    int64_t at = 0, base = 0, total = 0;     /* stream offset of win[0]; bytes decoded */
    int oom = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t k = 0; k < np2 && !err && !zerr && !oom; k += 2) {
        ZSTD_inBuffer in = {(const uint8_t *)buf->buf + parts[k], (size_t)parts[k + 1], 0};
        for (;;) {
            if (rd > 0 && W - have < W / 2) {      /* drop what was walked; a record's head stays */
                memmove(win, win + rd, (size_t)(have - rd));
                have -= rd; base += rd; rd = 0;
            }
            if (have == W) {                        /* one record longer than the window */
                if (W > cap) { err = "record payload runs past the end of the data"; at = base; break; }
                uint8_t *q = PyMem_RawRealloc(win, (size_t)W * 2);
                if (!q) { oom = 1; break; }
                win = q; W *= 2;
            }
            ZSTD_outBuffer out = {win, (size_t)W, (size_t)have};
            size_t zr = ZSTD_decompressStream(dc, &out, &in);
            if (ZSTD_isError(zr)) { zerr = ZSTD_getErrorName(zr); at = base + have; break; }
            total += (int64_t)out.pos - have;
            have = (Py_ssize_t)out.pos;
            if (total > cap) { err = "decompresses to more than the limit"; at = total; break; }
            werr_t e = {NULL, 0};
            if (zconsume(win, &rd, have, c, z, &e, keep, nkeep)) {
                if (!e.err) oom = 1; else { err = e.err; at = base + e.at; }
                break;
            }
            if (in.pos == in.size && out.pos < out.size) break;      /* part used up, nothing pending */
        }
    }
    if (!err && !zerr && !oom && rd < have)        /* the stream ends inside a record */
        { err = have - rd < 8 ? "truncated record header" : "record runs past the end of the data"; at = base + rd; }
    Py_END_ALLOW_THREADS
    if (oom) { PyErr_NoMemory(); goto done; }
    if (zerr) { PyErr_Format(PyExc_ValueError, "corrupt zstd data: %s @%lld", zerr, (long long)at); goto done; }
    if (err) { PyErr_Format(PyExc_ValueError, "%s @%lld", err, (long long)at); goto done; }
    res = zv_result(z, (npy_intp)z[0].len);
done:
    for (int i = 0; i < ZV_N; i++) vb_free(&z[i]);
    if (dc) ZSTD_freeDCtx(dc);
    PyMem_RawFree(win);
    return res;
}

static PyObject *py_zwalk(PyObject *self, PyObject *args)
{
    Py_buffer buf, ib, tb, mb = {0}, ob = {0};
    PyObject *oparts, *okeep = Py_None, *res = NULL;
    Py_ssize_t cap;
    unsigned long long st;
    cfg_t c;
    memset(&c, 0, sizeof c);
    if (!PyArg_ParseTuple(args, "y*OnKnnnnnny*y*y*y*|O", &buf, &oparts, &cap, &st, &c.read_fixed, &c.read_entry,
                          &c.sid_size, &c.sid_tid, &c.sid_time, &c.sid_cpu, &ib, &tb, &mb, &ob, &okeep))
        return NULL;
    int64_t *keep = NULL;
    Py_ssize_t nkeep = 0;
    c.st = st;      /* c.lean stays 0: sample() fills one full slot, the attr lookup is zconsume's */
    c.ids = ib.buf; c.types = tb.buf; c.nids = ib.len / 8;
    c.amap_ids = mb.buf; c.amap_own = ob.buf; c.namap = mb.len / 8;
    vbuf_t z[ZV_N];
    memset(z, 0, sizeof z);
    ZSTD_DCtx *dc = NULL;
    int64_t *parts;
    Py_ssize_t np2 = PyArray_Check(oparts) ? PyArray_SIZE((PyArrayObject *)oparts) : -1;
    if (np2 < 0 || np2 % 2 || arr_of(oparts, NPY_INT64, np2, (void **)&parts)) {
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError, "zwalk: bad parts @0");
        goto done;
    }
    if (ib.len % 8 || ib.len != tb.len || mb.len % 8 || mb.len / 2 != ob.len || cap < 0) {
        PyErr_SetString(PyExc_ValueError, "zwalk: bad arguments @0");
        goto done;
    }
    if (!layout_ok(&c)) {
        PyErr_SetString(PyExc_ValueError, "bad sample layout @0");
        goto done;
    }
    for (Py_ssize_t k = 0; k < np2; k += 2)
        if (parts[k] < 0 || parts[k + 1] < 0 || parts[k] > buf.len || parts[k + 1] > buf.len - parts[k]) {
            PyErr_SetString(PyExc_ValueError, "zwalk: part outside the buffer @0");
            goto done;
        }
    if (okeep != Py_None) {
        nkeep = PyArray_Check(okeep) ? PyArray_SIZE((PyArrayObject *)okeep) : 0;
        if (nkeep < 1 || arr_of(okeep, NPY_INT64, nkeep, (void **)&keep)) {
            PyErr_Clear();
            PyErr_SetString(PyExc_ValueError, "zwalk: bad keep @0");
            goto done;
        }
    }
    prep_fixed(&c);
    if (keep) {
        res = zwalk_compact(&buf, parts, np2, cap, &c, keep, nkeep);
        goto done;
    }
    {   /* the output: a reservation of cap bytes (address space only until written); the walk's
         * arrays sized from the expected decompressed size (perf's records compress ~12x) */
        size_t est = 0;
        for (Py_ssize_t k = 0; k < np2; k += 2) est += (size_t)parts[k + 1];
        est = est * 12 < (size_t)cap ? est * 12 : (size_t)cap;
        size_t nrec = est / 64;
        if (vb_grow(&z[ZV_DATA], cap ? (size_t)cap : 1, 1) || vb_reserve(&z[ZV_SOFF], nrec * 8) ||
            vb_reserve(&z[ZV_STIME], nrec * 8) || vb_reserve(&z[ZV_SATTR], nrec * 4)) { PyErr_NoMemory(); goto done; }
        for (int i = ZV_OOFF; i < ZV_N; i++) if (vb_reserve(&z[i], 1 << 12)) { PyErr_NoMemory(); goto done; }
    }
    if (!(dc = ZSTD_createDCtx())) { PyErr_NoMemory(); goto done; }
    if (ZSTD_isError(ZSTD_DCtx_setParameter(dc, ZSTD_d_stableOutBuffer, 1))) {
        PyErr_SetString(PyExc_ValueError, "zwalk: libzstd without a stable output buffer @0");
        goto done;
    }
    uint8_t *out_p = z[ZV_DATA].p;
    Py_ssize_t rd = 0;
    const char *err = NULL, *zerr = NULL;
    int64_t at = 0;
    int oom = 0;
    ZSTD_outBuffer out = {out_p, (size_t)cap, 0};
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t k = 0; k < np2 && !err && !zerr && !oom; k += 2) {
        const uint8_t *src = (const uint8_t *)buf.buf + parts[k];
        size_t left = (size_t)parts[k + 1];
        while (left > 0 || out.pos == out.size) {
            size_t step = left < ZSTEP ? left : ZSTEP, before = out.pos;
            ZSTD_inBuffer in = {src, step, 0};
            size_t zr = ZSTD_decompressStream(dc, &out, &in);
            if (ZSTD_isError(zr)) {
                /* a stable output buffer: a block that does not fit is this error, before it is full */
                if (ZSTD_getErrorCode(zr) == ZSTD_error_dstSize_tooSmall) err = "decompresses to more than the limit";
                else zerr = ZSTD_getErrorName(zr);
                at = (int64_t)out.pos;
                break;
            }
            if (out.pos >= out.size && (in.pos < in.size || zr)) { err = "decompresses to more than the limit"; at = (int64_t)out.pos; break; }
            src += in.pos; left -= in.pos;
            werr_t e = {NULL, 0};
            if (zconsume(out_p, &rd, (Py_ssize_t)out.pos, &c, z, &e, NULL, 0)) {
                if (!e.err) oom = 1; else { err = e.err; at = e.at; }
                break;
            }
            if (in.pos == 0 && out.pos == before && out.pos < out.size) { zerr = "no progress"; at = (int64_t)out.pos; break; }
            if (out.pos == out.size) break;
        }
    }
    if (!err && !zerr && !oom && rd < (Py_ssize_t)out.pos)      /* the stream ends inside a record */
        { err = (Py_ssize_t)out.pos - rd < 8 ? "truncated record header" : "record runs past the end of the data"; at = rd; }
    Py_END_ALLOW_THREADS
    if (oom) { PyErr_NoMemory(); goto done; }
    if (zerr) { PyErr_Format(PyExc_ValueError, "corrupt zstd data: %s @%lld", zerr, (long long)at); goto done; }
    if (err) { PyErr_Format(PyExc_ValueError, "%s @%lld", err, (long long)at); goto done; }
    {   /* give back the reservation's untouched tail */
        size_t keep = (out.pos + ((size_t)2 << 20) - 1) & ~(((size_t)2 << 20) - 1);
        if (keep < z[ZV_DATA].cap && munmap(z[ZV_DATA].p + keep, z[ZV_DATA].cap - keep) == 0) z[ZV_DATA].cap = keep;
        if (z[ZV_DATA].cap == 0) { z[ZV_DATA].p = NULL; }
    }
    res = zv_result(z, (npy_intp)out.pos);
done:
    for (int i = 0; i < ZV_N; i++) vb_free(&z[i]);
    if (dc) ZSTD_freeDCtx(dc);
    PyBuffer_Release(&buf);
    PyBuffer_Release(&ib);
    PyBuffer_Release(&tb);
    PyBuffer_Release(&mb);
    PyBuffer_Release(&ob);
    return res;
}
#endif

static PyMethodDef methods[] = {
    {"walk", py_walk, METH_VARARGS, "walk perf.data records: samples and other records, in file order"},
    {"fill", py_fill, METH_VARARGS, "samples in seq order into preallocated per-event columns"},
    {"attr_of", py_attr_of, METH_VARARGS, "attr index of every sample by its id"},
    {"time_order", py_time_order, METH_VARARGS, "stable argsort of sample times (merge of ascending runs)"},
    {"huge_empty", py_huge_empty, METH_VARARGS, "an uninitialised byte array on huge-page boundaries"},
    {"change_pos", py_change_pos, METH_VARARGS, "seq position of every comm change"},
    {"counts", py_counts, METH_VARARGS, "bincount of an int32 array"},
    {"take_strings", py_take_strings, METH_VARARGS, "an Arrow string column names[codes]"},
#ifdef MTAUDIT_ZSTD
    {"zwalk", py_zwalk, METH_VARARGS, "decompress the -z zstd stream and walk its records in one pass"},
#endif
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_perfwalk", NULL, -1, methods};

PyMODINIT_FUNC PyInit__perfwalk(void)
{
    import_array();
    return PyModule_Create(&mod);
}
