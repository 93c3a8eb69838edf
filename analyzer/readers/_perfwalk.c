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
 *        ids, types)
 *     -> (s_off i64, s_time u64, s_pid i32, s_tid i32, s_cpu i32, s_id u64, s_raw i64, s_rawlen i64,
 *         o_off i64, o_type i32, o_size i64, o_time u64, o_cpu i32)
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

static inline uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t rd64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

typedef struct {
    uint64_t st;
    const uint64_t *ids, *types;
    Py_ssize_t nids;
    Py_ssize_t read_fixed, read_entry, sid_size, sid_tid, sid_time, sid_cpu;
} cfg_t;

typedef struct {
    int64_t *s_off, *s_raw, *s_rawlen;
    uint64_t *s_time, *s_id;
    int32_t *s_pid, *s_tid, *s_cpu;
    int64_t *o_off, *o_size;
    int32_t *o_type, *o_cpu;
    uint64_t *o_time;
    Py_ssize_t ns, no;
} out_t;

typedef struct { const char *err; Py_ssize_t at; } werr_t;

#define FAIL(msg, where) do { e->err = (msg); e->at = (where); return -1; } while (0)

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
        Py_ssize_t lo = 0, hi = c->nids;
        while (lo < hi) { Py_ssize_t m = lo + (hi - lo) / 2; if (c->ids[m] < id) lo = m + 1; else hi = m; }
        if (lo >= c->nids || c->ids[lo] != id) FAIL("sample with an id no event attr has", r);
        st = c->types[lo];
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
    Py_ssize_t raw = -1, rawlen = 0;
    if (st & S_RAW) {
        NEED(4);
        uint32_t n = rd32(b + p);
        p += 4;
        if ((uint64_t)n > (uint64_t)(end - p)) FAIL("sample raw data runs past its record", r);
        raw = p; rawlen = n;
    }
#undef NEED
    if (o->s_off) {
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
            if (sample(b, r, size, c, o, e)) return -1;
        } else {
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

static PyObject *py_walk(PyObject *self, PyObject *args)
{
    Py_buffer buf, ib, tb;
    Py_ssize_t start, end;
    unsigned long long st;
    cfg_t c;
    if (!PyArg_ParseTuple(args, "y*nnKnnnnnny*y*", &buf, &start, &end, &st, &c.read_fixed, &c.read_entry,
                          &c.sid_size, &c.sid_tid, &c.sid_time, &c.sid_cpu, &ib, &tb))
        return NULL;
    c.st = st;
    c.ids = ib.buf; c.types = tb.buf; c.nids = ib.len / 8;
    PyObject *res = NULL, *a[13] = {0};
    if (ib.len % 8 || ib.len != tb.len) {
        PyErr_SetString(PyExc_ValueError, "ids and types differ in length @0");
        goto done;
    }
    if (start < 0 || end > buf.len || start > end) {
        PyErr_SetString(PyExc_ValueError, "data range outside the buffer @0");
        goto done;
    }
    if (c.sid_size < 0 || c.sid_size > 64 || c.sid_tid >= c.sid_size || c.sid_time > c.sid_size - 8 ||
        c.sid_cpu > c.sid_size - 4 || c.read_fixed < 0 || c.read_fixed > 1 << 20 || c.read_entry > 1 << 16) {
        PyErr_SetString(PyExc_ValueError, "bad sample layout @0");
        goto done;
    }
    out_t o;
    memset(&o, 0, sizeof o);
    werr_t e = {NULL, 0};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = walk(buf.buf, start, end, &c, &o, &e);          /* pass 1: count */
    Py_END_ALLOW_THREADS
    if (rc) { PyErr_Format(PyExc_ValueError, "%s @%zd", e.err, e.at); goto done; }
    npy_intp ns = o.ns, no = o.no;
    int kinds[13] = {NPY_INT64, NPY_UINT64, NPY_INT32, NPY_INT32, NPY_INT32, NPY_UINT64, NPY_INT64, NPY_INT64,
                     NPY_INT64, NPY_INT32, NPY_INT64, NPY_UINT64, NPY_INT32};
    for (int i = 0; i < 13; i++)
        if (!(a[i] = PyArray_SimpleNew(1, i < 8 ? &ns : &no, kinds[i]))) goto done;
#define D(i) PyArray_DATA((PyArrayObject *)a[i])
    o.s_off = D(0); o.s_time = D(1); o.s_pid = D(2); o.s_tid = D(3); o.s_cpu = D(4); o.s_id = D(5);
    o.s_raw = D(6); o.s_rawlen = D(7);
    o.o_off = D(8); o.o_type = D(9); o.o_size = D(10); o.o_time = D(11); o.o_cpu = D(12);
#undef D
    o.ns = o.no = 0;
    Py_BEGIN_ALLOW_THREADS
    rc = walk(buf.buf, start, end, &c, &o, &e);          /* pass 2: fill */
    Py_END_ALLOW_THREADS
    if (rc || o.ns != ns || o.no != no) {
        PyErr_Format(PyExc_ValueError, "%s @%zd", rc ? e.err : "buffer changed during the walk", e.at);
        goto done;
    }
    res = PyTuple_New(13);
    if (!res) goto done;
    for (int i = 0; i < 13; i++) { PyTuple_SET_ITEM(res, i, a[i]); a[i] = NULL; }
done:
    for (int i = 0; i < 13; i++) Py_XDECREF(a[i]);
    PyBuffer_Release(&buf);
    PyBuffer_Release(&ib);
    PyBuffer_Release(&tb);
    return res;
}

static PyMethodDef methods[] = {
    {"walk", py_walk, METH_VARARGS, "walk perf.data records: samples and other records, in file order"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_perfwalk", NULL, -1, methods};

PyMODINIT_FUNC PyInit__perfwalk(void)
{
    import_array();
    return PyModule_Create(&mod);
}
