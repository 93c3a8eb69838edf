/*
 * Compiled "next event on the same pfn" for the pcp pairing (optional; pcp.py keeps the
 * numpy reference, `MTAUDIT_NO_CEXT=1` forces it).
 *
 * Why C: numpy needs a (pfn, seq) sort of all rows (~1-2 M) to find each row's successor
 * on its pfn; a backward walk in seq order with a dense "last row seen per pfn" array
 * (pfns are dense within a zone) is one linear pass.
 *
 *   succ(pfn i64[n], seq i64[n], bounds i64[k+1], n_ent) -> (e i64[n_ent], x i64[n_ent]) or None
 *       rows [bounds[i], bounds[i+1]) are one run sorted by seq; e = rows < n_ent in the
 *       stable merge order of the runs by seq (= np.argsort(seq[:n_ent], kind="stable") when
 *       the first runs cover [0, n_ent)); x[j] = the row after e[j] in (pfn, seq, row) order
 *       when it has e[j]'s pfn, else -1.  The merge runs backwards (ties: highest run first),
 *       so no order array is stored.
 *       None when a run is not seq-sorted, the bounds are not 0 <= ... <= n, or the pfn span
 *       is too large for a dense array (the caller then uses numpy); ValueError for n_ent
 *       outside 0..n.  Every index that comes from Python is checked before it is used.
 *
 *   at(bstart i64[nb+1], sseq i64[m], qpos i64[n], seq i64[n]) -> i64[n]
 *       for a table sorted by (block rank, start seq) whose rank-b rows are
 *       [bstart[b], bstart[b+1]): bstart[qpos] + #(rows of rank qpos with sseq < seq) - 1,
 *       i.e. np.searchsorted(rank * S + sseq, qpos * S + seq, "left") - 1 without the
 *       random binary search over the whole table (a search within one block instead).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>
#include <stdint.h>
#include <stdlib.h>

#define MAX_RUNS 64

static int arr_ok(PyObject *o, int type, npy_intp n) {
    if (!PyArray_Check(o)) return 0;
    PyArrayObject *a = (PyArrayObject *)o;
    return PyArray_TYPE(a) == type && PyArray_NDIM(a) == 1 && PyArray_IS_C_CONTIGUOUS(a)
           && (n < 0 || PyArray_SIZE(a) == n);
}

static PyObject *py_succ(PyObject *self, PyObject *args) {
    PyObject *pfn_o, *seq_o, *b_o;
    Py_ssize_t n_ent;
    if (!PyArg_ParseTuple(args, "OOOn", &pfn_o, &seq_o, &b_o, &n_ent)) return NULL;
    if (!arr_ok(pfn_o, NPY_INT64, -1) || !arr_ok(b_o, NPY_INT64, -1)) {
        PyErr_SetString(PyExc_TypeError, "succ: pfn and bounds must be contiguous int64 arrays");
        return NULL;
    }
    npy_intp n = PyArray_SIZE((PyArrayObject *)pfn_o);
    if (!arr_ok(seq_o, NPY_INT64, n)) {
        PyErr_SetString(PyExc_TypeError, "succ: seq must be a contiguous int64 array like pfn");
        return NULL;
    }
    npy_intp nb = PyArray_SIZE((PyArrayObject *)b_o);
    const int64_t *pfn = PyArray_DATA((PyArrayObject *)pfn_o);
    const int64_t *seq = PyArray_DATA((PyArrayObject *)seq_o);
    const int64_t *bd = PyArray_DATA((PyArrayObject *)b_o);
    if (n_ent < 0 || n_ent > n) {
        PyErr_SetString(PyExc_ValueError, "succ: n_ent outside 0..len(pfn)");
        return NULL;
    }
    /* every bound is checked before it indexes anything: bounds must rise from 0 to n */
    if (nb < 2 || nb - 1 > MAX_RUNS || bd[0] != 0 || bd[nb - 1] != n || n > INT32_MAX) Py_RETURN_NONE;
    int k = (int)(nb - 1);
    for (int i = 0; i < k; i++) {
        if (bd[i + 1] < bd[i] || bd[i + 1] > n) Py_RETURN_NONE;
        for (int64_t r = bd[i] + 1; r < bd[i + 1]; r++)
            if (seq[r] < seq[r - 1]) Py_RETURN_NONE;
    }
    int64_t lo = 0, hi = -1;
    if (n) {
        lo = hi = pfn[0];
        for (npy_intp r = 1; r < n; r++) {
            if (pfn[r] < lo) lo = pfn[r];
            if (pfn[r] > hi) hi = pfn[r];
        }
    }
    /* dense table only when it is not much larger than the rows (or small anyway).
     * hi >= lo, so the unsigned difference is exact (up to 2^64 - 1); checking it against
     * the limit BEFORE adding 1 keeps the span from wrapping to 0 for a full 64-bit range. */
    uint64_t span = 0;
    if (n) {
        uint64_t diff = (uint64_t)hi - (uint64_t)lo;
        uint64_t limit = (uint64_t)1 << 26;
        if (8 * (uint64_t)n > limit) limit = 8 * (uint64_t)n;   /* n <= INT32_MAX: no overflow */
        if (diff >= limit) Py_RETURN_NONE;
        span = diff + 1;
    }
    npy_intp dims[1] = {n_ent};
    PyArrayObject *e_a = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_INT64);
    PyArrayObject *x_a = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_INT64);
    int32_t *last = span ? malloc(span * sizeof(int32_t)) : NULL;
    if (!e_a || !x_a || (span && !last)) {
        Py_XDECREF(e_a); Py_XDECREF(x_a); free(last);
        return PyErr_NoMemory();
    }
    int64_t *e = PyArray_DATA(e_a), *x = PyArray_DATA(x_a);
    Py_BEGIN_ALLOW_THREADS
    int64_t tail[MAX_RUNS];              /* one past the next row to take, per run */
    for (int i = 0; i < k; i++) tail[i] = bd[i + 1];
    for (uint64_t j = 0; j < span; j++) last[j] = -1;
    npy_intp q = n_ent;
    for (npy_intp p = n - 1; p >= 0; p--) {
        /* backward stable merge: the largest seq; ties go to the highest run (last in order) */
        int best = -1;
        for (int i = 0; i < k; i++)
            if (tail[i] > bd[i] && (best < 0 || seq[tail[i] - 1] >= seq[tail[best] - 1])) best = i;
        int64_t r = --tail[best];
        int32_t *slot = &last[(uint64_t)pfn[r] - (uint64_t)lo];
        if (r < n_ent) {
            --q;
            e[q] = r;
            x[q] = *slot;
        }
        *slot = (int32_t)r;
    }
    Py_END_ALLOW_THREADS
    free(last);
    return Py_BuildValue("(NN)", (PyObject *)e_a, (PyObject *)x_a);
}

static PyObject *py_at(PyObject *self, PyObject *args) {
    PyObject *b_o, *s_o, *q_o, *t_o;
    if (!PyArg_ParseTuple(args, "OOOO", &b_o, &s_o, &q_o, &t_o)) return NULL;
    if (!arr_ok(b_o, NPY_INT64, -1) || !arr_ok(s_o, NPY_INT64, -1) || !arr_ok(q_o, NPY_INT64, -1)) {
        PyErr_SetString(PyExc_TypeError, "at: arguments must be contiguous int64 arrays");
        return NULL;
    }
    npy_intp nb = PyArray_SIZE((PyArrayObject *)b_o) - 1, m = PyArray_SIZE((PyArrayObject *)s_o);
    npy_intp n = PyArray_SIZE((PyArrayObject *)q_o);
    if (!arr_ok(t_o, NPY_INT64, n) || nb < 0) {
        PyErr_SetString(PyExc_TypeError, "at: seq must be a contiguous int64 array like qpos");
        return NULL;
    }
    const int64_t *bs = PyArray_DATA((PyArrayObject *)b_o), *ss = PyArray_DATA((PyArrayObject *)s_o);
    const int64_t *qp = PyArray_DATA((PyArrayObject *)q_o), *qs = PyArray_DATA((PyArrayObject *)t_o);
    for (npy_intp b = 0; b < nb; b++)
        if (bs[b] < 0 || bs[b] > bs[b + 1] || bs[b + 1] > m) {
            PyErr_SetString(PyExc_ValueError, "at: bad block starts");
            return NULL;
        }
    npy_intp dims[1] = {n};
    PyArrayObject *out_a = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_INT64);
    if (!out_a) return NULL;
    int64_t *out = PyArray_DATA(out_a);
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS
    for (npy_intp j = 0; j < n; j++) {
        int64_t p = qp[j];
        if (p < 0 || p >= nb) { bad = 1; break; }
        int64_t lo = bs[p], hi = bs[p + 1], v = qs[j];
        while (lo < hi) {                  /* first row of the block with sseq >= v */
            int64_t mid = lo + ((hi - lo) >> 1);
            if (ss[mid] < v) lo = mid + 1; else hi = mid;
        }
        out[j] = lo - 1;
    }
    Py_END_ALLOW_THREADS
    if (bad) {
        Py_DECREF(out_a);
        PyErr_SetString(PyExc_ValueError, "at: block rank out of range");
        return NULL;
    }
    return (PyObject *)out_a;
}

static PyMethodDef methods[] = {
    {"succ", py_succ, METH_VARARGS, "next row on the same pfn in seq order, and the seq merge order"},
    {"at", py_at, METH_VARARGS, "interval in force: a search within each query's block"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_pair", NULL, -1, methods};

PyMODINIT_FUNC PyInit__pair(void) {
    import_array();
    return PyModule_Create(&mod);
}
