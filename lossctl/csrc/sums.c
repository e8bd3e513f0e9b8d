/* One-pass sums for the hottest losses (mse, mae, huber, smooth_l1; the hard-mask Dice/IoU/Tversky
 * statistics; the nll gather), called per cache-sized sub-chunk by lossctl/fast.py.
 *
 * NumPy needs one pass over a sub-chunk per ufunc (subtract, abs, clip, multiply, sum): four or
 * five passes for the Huber loss. These loops read each input element once, form the per-element
 * value in the inputs' own float type exactly as the NumPy fast path does, and accumulate it in
 * float64 (eight independent accumulators, added in a fixed order, so the result depends only on
 * the data). A NaN or infinite result tells the caller to hand the sub-chunk to the generic
 * kernels, which apply the NaN policy and raise the right errors.
 */
#include "kernels.h"

enum { KIND_SQUARE = 0, KIND_ABS = 1, KIND_HUBER = 2 };
#define ONE_BITS 0x3F800000u /* float32 1.0 */

/* One loop body per (float type, kind): VALUE(d) is the per-element value of the residual d. */
#define RESIDUAL_LOOP(T, NAME, VALUE)                                                   \
    static double NAME(const T *a, const T *b, Py_ssize_t n, T knee)                     \
    {                                                                                   \
        double acc[LANES] = {0};                                                        \
        Py_ssize_t i = 0;                                                               \
        (void)knee;                                                                     \
        for (; i + LANES <= n; i += LANES) {                                            \
            for (int k = 0; k < LANES; k++) {                                           \
                T d = a[i + k] - b[i + k];                                              \
                acc[k] += (double)(VALUE);                                              \
            }                                                                           \
        }                                                                               \
        for (; i < n; i++) {                                                            \
            T d = a[i] - b[i];                                                          \
            acc[0] += (double)(VALUE);                                                  \
        }                                                                               \
        return add_lanes(acc);                                                          \
    }

/* Huber with knee k: q (d - q/2), q = clip(d, -k, k): d·(d/2) below the knee, k(|d| - k/2) above
 * (q and d - q/2 share a sign, so nothing cancels). Written as `x < y ? x : y` so that the compiler
 * can use min/max vector instructions; a NaN d gives q = ±k but d - q/2, and so the value, NaN. */
static inline float
huber_value_f(float d, float k)
{
    float hi = d < k ? d : k;
    float q = hi > -k ? hi : -k;
    return q * (d - q * 0.5f);
}

static inline double
huber_value_d(double d, double k)
{
    double hi = d < k ? d : k;
    double q = hi > -k ? hi : -k;
    return q * (d - q * 0.5);
}

RESIDUAL_LOOP(float, square_f, d * d)
RESIDUAL_LOOP(double, square_d, d * d)
RESIDUAL_LOOP(float, abs_f, fabsf(d))
RESIDUAL_LOOP(double, abs_d, fabs(d))
RESIDUAL_LOOP(float, huber_f, huber_value_f(d, knee))
RESIDUAL_LOOP(double, huber_d, huber_value_d(d, knee))

static int
get_pair(PyObject *oa, PyObject *ob, Py_buffer *a, Py_buffer *b)
{
    if (PyObject_GetBuffer(oa, a, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        return -1;
    }
    if (PyObject_GetBuffer(ob, b, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(a);
        return -1;
    }
    return 0;
}

const char residual_sum_doc[] =
"residual_sum(kind, a, b, knee) -> float\n\n"
"Σ f(a - b) over two float32 or float64 buffers of one type and length, accumulated in float64:\n"
"kind 0: d², 1: |d|, 2: Huber q (d - q/2) with q = clip(d, -knee, knee).";

PyObject *
residual_sum(PyObject *self, PyObject *args)
{
    int kind;
    PyObject *oa, *ob;
    double knee;
    Py_buffer a, b;
    double total = 0.0;
    if (!PyArg_ParseTuple(args, "iOOd", &kind, &oa, &ob, &knee)) {
        return NULL;
    }
    if (kind < KIND_SQUARE || kind > KIND_HUBER) {
        PyErr_SetString(PyExc_ValueError, "residual_sum: unknown kind");
        return NULL;
    }
    if (get_pair(oa, ob, &a, &b) < 0) {
        return NULL;
    }
    char ka = buffer_kind(&a), kb = buffer_kind(&b);
    if (ka != kb || (ka != 'f' && ka != 'd') || a.len != b.len) {
        PyBuffer_Release(&a);
        PyBuffer_Release(&b);
        PyErr_SetString(PyExc_TypeError, "residual_sum: two float32 or float64 buffers of one length");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    if (ka == 'f') {
        const float *pa = a.buf, *pb = b.buf;
        Py_ssize_t n = a.len / 4;
        float k = (float)knee;
        total = kind == KIND_SQUARE ? square_f(pa, pb, n, k)
              : kind == KIND_ABS ? abs_f(pa, pb, n, k) : huber_f(pa, pb, n, k);
    }
    else {
        const double *pa = a.buf, *pb = b.buf;
        Py_ssize_t n = a.len / 8;
        total = kind == KIND_SQUARE ? square_d(pa, pb, n, knee)
              : kind == KIND_ABS ? abs_d(pa, pb, n, knee) : huber_d(pa, pb, n, knee);
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&a);
    PyBuffer_Release(&b);
    return PyFloat_FromDouble(total);
}

const char float_sum_doc[] =
"float_sum(a) -> float\n\n"
"Σ a over a float32 or float64 buffer, accumulated in float64 in eight lanes (what NumPy's\n"
"add.reduce(a, dtype=float64) computes, without its buffered casts: at memory speed).";

#define FLOAT_SUM_LOOP(T, NAME)                                                         \
    static double NAME(const T *a, Py_ssize_t n)                                        \
    {                                                                                   \
        double acc[LANES] = {0};                                                        \
        Py_ssize_t i = 0;                                                               \
        for (; i + LANES <= n; i += LANES) {                                            \
            for (int k = 0; k < LANES; k++) {                                           \
                acc[k] += (double)a[i + k];                                             \
            }                                                                           \
        }                                                                               \
        for (; i < n; i++) {                                                            \
            acc[0] += (double)a[i];                                                     \
        }                                                                               \
        return add_lanes(acc);                                                          \
    }

FLOAT_SUM_LOOP(float, float_sum_f)
FLOAT_SUM_LOOP(double, float_sum_d)

PyObject *
float_sum(PyObject *self, PyObject *arg)
{
    Py_buffer a;
    double total;
    if (PyObject_GetBuffer(arg, &a, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        return NULL;
    }
    char ka = buffer_kind(&a);
    if (ka != 'f' && ka != 'd') {
        PyBuffer_Release(&a);
        PyErr_SetString(PyExc_TypeError, "float_sum: a float32 or float64 buffer");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    total = ka == 'f' ? float_sum_f(a.buf, a.len / 4) : float_sum_d(a.buf, a.len / 8);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&a);
    return PyFloat_FromDouble(total);
}

/* Whether some p is outside [0, 1] (or NaN) or some mask value is not exactly +0.0 or 1.0. */
static uint32_t
overlap_bad(const float *p, const uint32_t *t, Py_ssize_t n)
{
    uint32_t bad = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        float x = p[i];
        uint32_t bits = t[i];
        bad |= (uint32_t)((bits != 0) & (bits != ONE_BITS));
        bad |= (uint32_t)(!(x >= 0.0f)) | (uint32_t)(x > 1.0f);
    }
    return bad;
}

/* One loop per sum (each vectorises; the sub-chunk is in cache after the first):
 * VALUE(x, y) with x the probability and y the mask value. */
#define MASK_LOOP(NAME, VALUE)                                                          \
    static double NAME(const float *p, const uint32_t *t, Py_ssize_t n)                 \
    {                                                                                   \
        double acc[LANES] = {0};                                                        \
        Py_ssize_t i = 0;                                                               \
        for (; i + LANES <= n; i += LANES) {                                            \
            for (int k = 0; k < LANES; k++) {                                           \
                float x = p[i + k], y = t[i + k] == ONE_BITS ? 1.0f : 0.0f;             \
                acc[k] += (double)(VALUE);                                              \
            }                                                                           \
        }                                                                               \
        for (; i < n; i++) {                                                            \
            float x = p[i], y = t[i] == ONE_BITS ? 1.0f : 0.0f;                         \
            acc[0] += (double)(VALUE);                                                  \
        }                                                                               \
        return add_lanes(acc);                                                          \
    }

MASK_LOOP(disagreement_f, fabsf(x - y))  /* p (t = 0) or 1 - p (t = 1): exact for p >= 0.5 */
MASK_LOOP(false_negatives_f, y * fabsf(x - y))
MASK_LOOP(intersection_f, x * y)

const char overlap_hard_doc[] =
"overlap_hard(p, t) -> (disagree, false_negatives, intersection) | None\n\n"
"For float32 probabilities p in [0, 1] and a hard float32 mask t (every value +0.0 or 1.0):\n"
"Σ|p - t|, Σ t|p - t| and Σ p·t, accumulated in float64; None when some p is outside [0, 1]\n"
"(or NaN) or some t is not exactly +0.0 or 1.0.";

PyObject *
overlap_hard(PyObject *self, PyObject *args)
{
    PyObject *op, *ot;
    Py_buffer p, t;
    double dis = 0.0, fn = 0.0, inter = 0.0;
    uint32_t bad = 0;
    if (!PyArg_ParseTuple(args, "OO", &op, &ot)) {
        return NULL;
    }
    if (get_pair(op, ot, &p, &t) < 0) {
        return NULL;
    }
    if (buffer_kind(&p) != 'f' || buffer_kind(&t) != 'f' || p.len != t.len) {
        PyBuffer_Release(&p);
        PyBuffer_Release(&t);
        PyErr_SetString(PyExc_TypeError, "overlap_hard: two float32 buffers of one length");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    const float *pp = p.buf;
    const uint32_t *tb = t.buf;
    Py_ssize_t n = p.len / 4;
    bad = overlap_bad(pp, tb, n);
    if (!bad) {
        dis = disagreement_f(pp, tb, n);
        fn = false_negatives_f(pp, tb, n);
        inter = intersection_f(pp, tb, n);
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&p);
    PyBuffer_Release(&t);
    if (bad) {
        Py_RETURN_NONE;
    }
    return Py_BuildValue("(ddd)", dis, fn, inter);
}

#define PICK_LOOP(T, I, NAME)                                                          \
    static int NAME(const T *x, const I *y, Py_ssize_t rows, Py_ssize_t classes,          \
                    double *out)                                                        \
    {                                                                                   \
        double acc[LANES] = {0};                                                        \
        int bad = 0;                                                                    \
        for (Py_ssize_t i = 0; i < rows; i++) {                                         \
            I c = y[i];                                                                 \
            int ok = c >= 0 && (Py_ssize_t)c < classes;                                 \
            bad |= !ok;                                                                 \
            acc[i % LANES] += ok ? (double)x[i * classes + (Py_ssize_t)c] : 0.0;        \
        }                                                                               \
        *out = add_lanes(acc);                                                          \
        return bad;                                                                     \
    }

PICK_LOOP(float, int64_t, pick_f_q)
PICK_LOOP(double, int64_t, pick_d_q)
PICK_LOOP(float, int32_t, pick_f_i)
PICK_LOOP(double, int32_t, pick_d_i)

const char pick_sum_doc[] =
"pick_sum(x, y, classes) -> float | None\n\n"
"Σ x[i, y_i] over the rows of x (float32 or float64, rows × classes, flat) with class indices y\n"
"(int64 or int32), accumulated in float64; None when some index is outside [0, classes).";

PyObject *
pick_sum(PyObject *self, PyObject *args)
{
    PyObject *ox, *oy;
    Py_ssize_t classes;
    Py_buffer x, y;
    double total = 0.0;
    int bad = 0;
    if (!PyArg_ParseTuple(args, "OOn", &ox, &oy, &classes)) {
        return NULL;
    }
    if (get_pair(ox, oy, &x, &y) < 0) {
        return NULL;
    }
    char kx = buffer_kind(&x), ky = buffer_kind(&y);
    Py_ssize_t rows = ky ? y.len / y.itemsize : 0;
    if ((kx != 'f' && kx != 'd') || (ky != 'q' && ky != 'i') || classes < 1
            || x.len != rows * classes * x.itemsize) {
        PyBuffer_Release(&x);
        PyBuffer_Release(&y);
        PyErr_SetString(PyExc_TypeError, "pick_sum: float rows x classes and int64/int32 indices");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    if (kx == 'f') {
        bad = ky == 'q' ? pick_f_q(x.buf, y.buf, rows, classes, &total)
                        : pick_f_i(x.buf, y.buf, rows, classes, &total);
    }
    else {
        bad = ky == 'q' ? pick_d_q(x.buf, y.buf, rows, classes, &total)
                        : pick_d_i(x.buf, y.buf, rows, classes, &total);
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&x);
    PyBuffer_Release(&y);
    if (bad) {
        Py_RETURN_NONE;
    }
    return PyFloat_FromDouble(total);
}

/* Σ_j (a[r, j] - b[r, j])² per row r, the difference and its square in the inputs' type (as the
 * NumPy code), the row sum in float64 */
#define ROW_LOOP(T, NAME)                                                                  \
    static void NAME(const T *a, const T *b, Py_ssize_t rows, Py_ssize_t dim, double *out) \
    {                                                                                   \
        for (Py_ssize_t r = 0; r < rows; r++) {                                         \
            const T *x = a + r * dim, *y = b + r * dim;                                 \
            double acc[LANES] = {0};                                                    \
            Py_ssize_t j = 0;                                                           \
            for (; j + LANES <= dim; j += LANES) {                                      \
                for (int k = 0; k < LANES; k++) {                                       \
                    T d = x[j + k] - y[j + k];                                          \
                    acc[k] += (double)(d * d);                                          \
                }                                                                       \
            }                                                                           \
            for (; j < dim; j++) {                                                      \
                T d = x[j] - y[j];                                                      \
                acc[0] += (double)(d * d);                                              \
            }                                                                           \
            out[r] = add_lanes(acc);                                                    \
        }                                                                               \
    }

ROW_LOOP(float, row_sq_dist_f)
ROW_LOOP(double, row_sq_dist_d)

const char row_sq_dist_doc[] =
"row_sq_dist(a, b, out) -> None\n\n"
"Squared Euclidean distance of each row pair into out (float64, rows): a and b float32 or\n"
"float64 of one type, rows x dim flat; differences and squares in that type, row sums in float64.";

PyObject *
row_sq_dist(PyObject *self, PyObject *args)
{
    PyObject *oa, *ob, *oout;
    Py_buffer a, b, out;
    if (!PyArg_ParseTuple(args, "OOO", &oa, &ob, &oout)) {
        return NULL;
    }
    if (get_pair(oa, ob, &a, &b) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(oout, &out, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&a);
        PyBuffer_Release(&b);
        return NULL;
    }
    char ka = buffer_kind(&a);
    Py_ssize_t rows = out.len / 8, items = ka ? a.len / a.itemsize : 0;
    if (ka != buffer_kind(&b) || (ka != 'f' && ka != 'd') || a.len != b.len || buffer_kind(&out) != 'd'
            || rows == 0 || items % rows != 0) {
        PyBuffer_Release(&a);
        PyBuffer_Release(&b);
        PyBuffer_Release(&out);
        PyErr_SetString(PyExc_TypeError, "row_sq_dist: two float32 or float64 buffers of rows x dim "
                        "and a float64 out of rows");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    if (ka == 'f') {
        row_sq_dist_f(a.buf, b.buf, rows, items / rows, out.buf);
    }
    else {
        row_sq_dist_d(a.buf, b.buf, rows, items / rows, out.buf);
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&a);
    PyBuffer_Release(&b);
    PyBuffer_Release(&out);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ per-sample statistics
 * residual_stats: the same sum as residual_sum (same lanes, same order: the loss value does not
 * change when statistics are asked for) and, in the same pass, the statistics of the per-element
 * values that --worst and the summary need (lossctl/accumulators.py SampleStats): min, max, a
 * count per sketch bucket (the top 18 bits of the float64 value), and the K largest values with
 * their indices in a heap. A second pass over the sub-chunk (in cache) gives Σ(v - mean)².
 * Any non-finite value: None (the caller hands the sub-chunk to the generic kernels). */

#define SKETCH_SHIFT 46
#define SKETCH_HALF ((int64_t)1 << (63 - SKETCH_SHIFT))

typedef struct {
    double *v;
    int64_t *i;
    Py_ssize_t n, k;
} WorstHeap;

/* a is worse than b: larger value, or the same value at a lower index */
static inline int
worse(double va, int64_t ia, double vb, int64_t ib)
{
    return va > vb || (va == vb && ia < ib);
}

/* The heap's root is its least bad entry; a new value enters when it is worse than the root. */
static void
heap_offer(WorstHeap *h, double v, int64_t idx)
{
    Py_ssize_t pos;
    if (h->n < h->k) {
        pos = h->n++;
        while (pos > 0) {  /* sift up: the parent must be less bad */
            Py_ssize_t parent = (pos - 1) / 2;
            if (!worse(h->v[parent], h->i[parent], v, idx)) {
                break;
            }
            h->v[pos] = h->v[parent];
            h->i[pos] = h->i[parent];
            pos = parent;
        }
        h->v[pos] = v;
        h->i[pos] = idx;
        return;
    }
    if (!worse(v, idx, h->v[0], h->i[0])) {
        return;
    }
    pos = 0;
    for (;;) {  /* sift down from the root */
        Py_ssize_t c = 2 * pos + 1;
        if (c >= h->n) {
            break;
        }
        if (c + 1 < h->n && worse(h->v[c], h->i[c], h->v[c + 1], h->i[c + 1])) {
            c++;
        }
        if (!worse(v, idx, h->v[c], h->i[c])) {
            break;
        }
        h->v[pos] = h->v[c];
        h->i[pos] = h->i[c];
        pos = c;
    }
    h->v[pos] = v;
    h->i[pos] = idx;
}

typedef struct {
    double total, min, max;
    int bad;
} StatsPass;

/* Blocks of STATS_BLOCK values (a multiple of LANES, so the sum's lanes and order are those of
 * residual_sum): the loop of residual_sum forms the values and their sum, and keeps the values in a
 * small buffer; a scalar loop then feeds the sketch and the heap, and takes min and max on the
 * values' bit patterns (ordered as the values for x >= 0, and integer compares have no latency to
 * speak of). A bit pattern at or above +inf's is NaN or infinite. A value enters the heap only when
 * it is at least the heap's root: rarely, after the first blocks. */
#define STATS_BLOCK 2048
#define INF_BITS UINT64_C(0x7FF0000000000000)

#define STATS_LOOP(T, NAME, VALUE)                                                      \
    static StatsPass NAME(const T *a, const T *b, Py_ssize_t n, T knee, int64_t first,   \
                          int64_t *hist, WorstHeap *heap)                              \
    {                                                                                   \
        double acc[LANES] = {0};                                                        \
        double vals[STATS_BLOCK];                                                       \
        uint64_t lo = UINT64_MAX, hi = 0;                                               \
        StatsPass out = {0.0, INFINITY, -INFINITY, 0};                                  \
        (void)knee;                                                                     \
        for (Py_ssize_t start = 0; start < n; start += STATS_BLOCK) {                   \
            Py_ssize_t stop = n - start > STATS_BLOCK ? start + STATS_BLOCK : n;        \
            Py_ssize_t m = stop - start, i = start;                                     \
            for (; i + LANES <= stop; i += LANES) {                                     \
                for (int k = 0; k < LANES; k++) {                                       \
                    T d = a[i + k] - b[i + k];                                          \
                    double x = (double)(VALUE);                                         \
                    acc[k] += x;                                                        \
                    vals[i - start + k] = x;                                            \
                }                                                                       \
            }                                                                           \
            for (; i < stop; i++) {  /* the last few values of all: lane 0 */           \
                T d = a[i] - b[i];                                                      \
                double x = (double)(VALUE);                                             \
                acc[0] += x;                                                            \
                vals[i - start] = x;                                                    \
            }                                                                           \
            double root = heap->n < heap->k ? -INFINITY : heap->v[0];                   \
            for (Py_ssize_t j = 0; j < m; j++) {                                        \
                double x = vals[j];                                                     \
                uint64_t bits = as_bits(fabs(x));                                       \
                hist[(int64_t)(bits >> SKETCH_SHIFT) + SKETCH_HALF]++;                  \
                lo = bits < lo ? bits : lo;                                             \
                hi = bits > hi ? bits : hi;                                             \
                if (x >= root) {                                                        \
                    heap_offer(heap, x, first + start + j);                             \
                    root = heap->n < heap->k ? -INFINITY : heap->v[0];                  \
                }                                                                       \
            }                                                                           \
            if (hi >= INF_BITS) {                                                       \
                out.bad = 1;                                                            \
                return out;                                                             \
            }                                                                           \
        }                                                                               \
        out.total = add_lanes(acc);                                                     \
        if (n) {                                                                        \
            out.min = as_double(lo);                                                    \
            out.max = as_double(hi);                                                    \
        }                                                                               \
        return out;                                                                     \
    }                                                                                   \
    static double NAME##_m2(const T *a, const T *b, Py_ssize_t n, T knee, double mean)  \
    {                                                                                   \
        double acc[LANES] = {0};                                                        \
        Py_ssize_t i = 0;                                                               \
        (void)knee;                                                                     \
        for (; i + LANES <= n; i += LANES) {                                            \
            for (int k = 0; k < LANES; k++) {                                           \
                T d = a[i + k] - b[i + k];                                              \
                double e = (double)(VALUE) - mean;                                      \
                acc[k] += e * e;                                                        \
            }                                                                           \
        }                                                                               \
        for (; i < n; i++) {                                                            \
            T d = a[i] - b[i];                                                          \
            double e = (double)(VALUE) - mean;                                          \
            acc[0] += e * e;                                                            \
        }                                                                               \
        return add_lanes(acc);                                                          \
    }

STATS_LOOP(float, square_stats_f, d * d)
STATS_LOOP(double, square_stats_d, d * d)
STATS_LOOP(float, abs_stats_f, fabsf(d))
STATS_LOOP(double, abs_stats_d, fabs(d))
STATS_LOOP(float, huber_stats_f, huber_value_f(d, knee))
STATS_LOOP(double, huber_stats_d, huber_value_d(d, knee))

/* residual_moments: Σ f(a - b) (residual_sum's lanes and order) and Σ(v - mean)² alone, for the CLT
 * interval of --ci when no per-sample summary is asked for: no sketch, no heap (SPEC §9). */
#define MOMENTS_LOOP(T, NAME, VALUE)                                                     \
    static double NAME(const T *a, const T *b, Py_ssize_t n, T knee)                    \
    {                                                                                   \
        double acc[LANES] = {0};                                                        \
        Py_ssize_t i = 0;                                                               \
        (void)knee;                                                                     \
        for (; i + LANES <= n; i += LANES) {                                            \
            for (int k = 0; k < LANES; k++) {                                           \
                T d = a[i + k] - b[i + k];                                              \
                acc[k] += (double)(VALUE);                                              \
            }                                                                           \
        }                                                                               \
        for (; i < n; i++) {                                                            \
            T d = a[i] - b[i];                                                          \
            acc[0] += (double)(VALUE);                                                  \
        }                                                                               \
        return add_lanes(acc);                                                          \
    }

MOMENTS_LOOP(float, square_total_f, d * d)
MOMENTS_LOOP(double, square_total_d, d * d)
MOMENTS_LOOP(float, abs_total_f, fabsf(d))
MOMENTS_LOOP(double, abs_total_d, fabs(d))
MOMENTS_LOOP(float, huber_total_f, huber_value_f(d, knee))
MOMENTS_LOOP(double, huber_total_d, huber_value_d(d, knee))

const char residual_moments_doc[] =
"residual_moments(kind, a, b, knee) -> (total, m2) or None\n\n"
"residual_sum's Σ f(a - b) and Σ(v - mean)² of the values f(a - b) (two passes over the sub-chunk,\n"
"which is in cache), without residual_stats' sketch and heap. None for a non-finite sum.";

PyObject *
residual_moments(PyObject *self, PyObject *args)
{
    int kind;
    PyObject *oa, *ob;
    double knee, total = 0.0, m2 = 0.0;
    Py_buffer a, b;
    if (!PyArg_ParseTuple(args, "iOOd", &kind, &oa, &ob, &knee)) {
        return NULL;
    }
    if (kind < KIND_SQUARE || kind > KIND_HUBER) {
        PyErr_SetString(PyExc_ValueError, "residual_moments: unknown kind");
        return NULL;
    }
    if (get_pair(oa, ob, &a, &b) < 0) {
        return NULL;
    }
    char ka = buffer_kind(&a);
    if (ka != buffer_kind(&b) || (ka != 'f' && ka != 'd') || a.len != b.len) {
        PyBuffer_Release(&a);
        PyBuffer_Release(&b);
        PyErr_SetString(PyExc_TypeError, "residual_moments: a float32/float64 pair of one length");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    if (ka == 'f') {
        const float *pa = a.buf, *pb = b.buf;
        Py_ssize_t n = a.len / 4;
        float k = (float)knee;
        total = kind == KIND_SQUARE ? square_total_f(pa, pb, n, k)
              : kind == KIND_ABS ? abs_total_f(pa, pb, n, k) : huber_total_f(pa, pb, n, k);
        if (isfinite(total) && n) {
            double mean = total / (double)n;
            m2 = kind == KIND_SQUARE ? square_stats_f_m2(pa, pb, n, k, mean)
               : kind == KIND_ABS ? abs_stats_f_m2(pa, pb, n, k, mean) : huber_stats_f_m2(pa, pb, n, k, mean);
        }
    }
    else {
        const double *pa = a.buf, *pb = b.buf;
        Py_ssize_t n = a.len / 8;
        total = kind == KIND_SQUARE ? square_total_d(pa, pb, n, knee)
              : kind == KIND_ABS ? abs_total_d(pa, pb, n, knee) : huber_total_d(pa, pb, n, knee);
        if (isfinite(total) && n) {
            double mean = total / (double)n;
            m2 = kind == KIND_SQUARE ? square_stats_d_m2(pa, pb, n, knee, mean)
               : kind == KIND_ABS ? abs_stats_d_m2(pa, pb, n, knee, mean) : huber_stats_d_m2(pa, pb, n, knee, mean);
        }
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&a);
    PyBuffer_Release(&b);
    if (!isfinite(total) || !isfinite(m2)) {
        Py_RETURN_NONE;
    }
    return Py_BuildValue("dd", total, m2);
}

/* paired_moments: the moments of the per-row differences d = f(p - t) - f(q - t) of two models p, q
 * scored on the same targets t (--against --ci, SPEC §9): Σd, then Σ(d - mean)² in cache. */
#define PAIRED_LOOP(T, NAME, VALUE)                                                      \
    static double NAME(const T *p, const T *q, const T *t, Py_ssize_t n, T knee, double mean, int second) \
    {                                                                                   \
        double acc[LANES] = {0};                                                        \
        Py_ssize_t i = 0;                                                               \
        (void)knee;                                                                     \
        for (; i + LANES <= n; i += LANES) {                                            \
            for (int k = 0; k < LANES; k++) {                                           \
                T d = p[i + k] - t[i + k];                                              \
                double x = (double)(VALUE);                                             \
                d = q[i + k] - t[i + k];                                                \
                x -= (double)(VALUE);                                                   \
                if (second) { x -= mean; x *= x; }                                      \
                acc[k] += x;                                                            \
            }                                                                           \
        }                                                                               \
        for (; i < n; i++) {                                                            \
            T d = p[i] - t[i];                                                          \
            double x = (double)(VALUE);                                                 \
            d = q[i] - t[i];                                                            \
            x -= (double)(VALUE);                                                       \
            if (second) { x -= mean; x *= x; }                                          \
            acc[0] += x;                                                                \
        }                                                                               \
        return add_lanes(acc);                                                          \
    }

PAIRED_LOOP(float, square_paired_f, d * d)
PAIRED_LOOP(double, square_paired_d, d * d)
PAIRED_LOOP(float, abs_paired_f, fabsf(d))
PAIRED_LOOP(double, abs_paired_d, fabs(d))
PAIRED_LOOP(float, huber_paired_f, huber_value_f(d, knee))
PAIRED_LOOP(double, huber_paired_d, huber_value_d(d, knee))

const char paired_moments_doc[] =
"paired_moments(kind, p, q, t, knee) -> (sum, m2) or None\n\n"
"Σ d and Σ(d - mean)² of d = f(p - t) - f(q - t) (one dtype, one length). None when not finite.";

PyObject *
paired_moments(PyObject *self, PyObject *args)
{
    int kind;
    PyObject *op, *oq, *ot;
    double knee, total = 0.0, m2 = 0.0;
    Py_buffer p, q, t;
    if (!PyArg_ParseTuple(args, "iOOOd", &kind, &op, &oq, &ot, &knee)) {
        return NULL;
    }
    if (kind < KIND_SQUARE || kind > KIND_HUBER) {
        PyErr_SetString(PyExc_ValueError, "paired_moments: unknown kind");
        return NULL;
    }
    if (get_pair(op, ot, &p, &t) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(oq, &q, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&p);
        PyBuffer_Release(&t);
        return NULL;
    }
    char kp = buffer_kind(&p);
    if (kp != buffer_kind(&t) || kp != buffer_kind(&q) || (kp != 'f' && kp != 'd') || p.len != t.len
        || q.len != t.len) {
        PyBuffer_Release(&p);
        PyBuffer_Release(&q);
        PyBuffer_Release(&t);
        PyErr_SetString(PyExc_TypeError, "paired_moments: three float32/float64 arrays of one type and length");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    if (kp == 'f') {
        const float *pp = p.buf, *pq = q.buf, *pt = t.buf;
        Py_ssize_t n = p.len / 4;
        float k = (float)knee;
        total = kind == KIND_SQUARE ? square_paired_f(pp, pq, pt, n, k, 0.0, 0)
              : kind == KIND_ABS ? abs_paired_f(pp, pq, pt, n, k, 0.0, 0) : huber_paired_f(pp, pq, pt, n, k, 0.0, 0);
        if (isfinite(total) && n) {
            double mean = total / (double)n;
            m2 = kind == KIND_SQUARE ? square_paired_f(pp, pq, pt, n, k, mean, 1)
               : kind == KIND_ABS ? abs_paired_f(pp, pq, pt, n, k, mean, 1) : huber_paired_f(pp, pq, pt, n, k, mean, 1);
        }
    }
    else {
        const double *pp = p.buf, *pq = q.buf, *pt = t.buf;
        Py_ssize_t n = p.len / 8;
        total = kind == KIND_SQUARE ? square_paired_d(pp, pq, pt, n, knee, 0.0, 0)
              : kind == KIND_ABS ? abs_paired_d(pp, pq, pt, n, knee, 0.0, 0)
              : huber_paired_d(pp, pq, pt, n, knee, 0.0, 0);
        if (isfinite(total) && n) {
            double mean = total / (double)n;
            m2 = kind == KIND_SQUARE ? square_paired_d(pp, pq, pt, n, knee, mean, 1)
               : kind == KIND_ABS ? abs_paired_d(pp, pq, pt, n, knee, mean, 1)
               : huber_paired_d(pp, pq, pt, n, knee, mean, 1);
        }
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&p);
    PyBuffer_Release(&q);
    PyBuffer_Release(&t);
    if (!isfinite(total) || !isfinite(m2)) {
        Py_RETURN_NONE;
    }
    return Py_BuildValue("dd", total, m2);
}

const char residual_stats_doc[] =
"residual_stats(kind, a, b, knee, first, hist, heap_values, heap_index, heap_n)\n"
"    -> (total, min, max, m2, heap_n) or None\n\n"
"residual_sum's Σ f(a - b) and the statistics of the values f(a - b): min, max, Σ(v - mean)²,\n"
"counts added to hist (int64, 2**18 sketch buckets), and the K = len(heap_values) largest values\n"
"with their indices (first + position) kept in a heap of heap_n entries. None for a non-finite value.";

PyObject *
residual_stats(PyObject *self, PyObject *args)
{
    int kind;
    PyObject *oa, *ob, *ohist, *ohv, *ohi;
    double knee;
    long long first;
    Py_ssize_t heap_n;
    Py_buffer a, b, hist, hv, hi;
    StatsPass pass;
    double m2 = 0.0;
    if (!PyArg_ParseTuple(args, "iOOdLOOOn", &kind, &oa, &ob, &knee, &first, &ohist, &ohv, &ohi, &heap_n)) {
        return NULL;
    }
    if (kind < KIND_SQUARE || kind > KIND_HUBER) {
        PyErr_SetString(PyExc_ValueError, "residual_stats: unknown kind");
        return NULL;
    }
    if (get_pair(oa, ob, &a, &b) < 0) {
        return NULL;
    }
    /* every later failure releases what was taken, in one place */
    Py_buffer *taken[5] = {&a, &b, NULL, NULL, NULL};
    int ntaken = 2;
    if (PyObject_GetBuffer(ohist, &hist, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE) < 0) {
        goto fail;
    }
    taken[ntaken++] = &hist;
    if (get_pair(ohv, ohi, &hv, &hi) < 0) {
        goto fail;
    }
    taken[ntaken++] = &hv;
    taken[ntaken++] = &hi;
    char ka = buffer_kind(&a);
    int ok = ka == buffer_kind(&b) && (ka == 'f' || ka == 'd') && a.len == b.len
             && buffer_kind(&hist) == 'q' && hist.len == (Py_ssize_t)(2 * SKETCH_HALF * 8)
             && buffer_kind(&hv) == 'd' && buffer_kind(&hi) == 'q' && hv.len == hi.len
             && !hv.readonly && !hi.readonly && heap_n >= 0 && heap_n <= hv.len / 8;
    if (!ok) {
        PyErr_SetString(PyExc_TypeError, "residual_stats: float32/float64 pair of one length, int64 hist of "
                                         "2**18, float64 and int64 heap buffers of one length");
        goto fail;
    }
    WorstHeap heap = {hv.buf, hi.buf, heap_n, hv.len / 8};
    Py_BEGIN_ALLOW_THREADS
    if (ka == 'f') {
        const float *pa = a.buf, *pb = b.buf;
        Py_ssize_t n = a.len / 4;
        float k = (float)knee;
        pass = kind == KIND_SQUARE ? square_stats_f(pa, pb, n, k, first, hist.buf, &heap)
             : kind == KIND_ABS ? abs_stats_f(pa, pb, n, k, first, hist.buf, &heap)
             : huber_stats_f(pa, pb, n, k, first, hist.buf, &heap);
        if (!pass.bad && n) {
            double mean = pass.total / (double)n;
            m2 = kind == KIND_SQUARE ? square_stats_f_m2(pa, pb, n, k, mean)
               : kind == KIND_ABS ? abs_stats_f_m2(pa, pb, n, k, mean) : huber_stats_f_m2(pa, pb, n, k, mean);
        }
    }
    else {
        const double *pa = a.buf, *pb = b.buf;
        Py_ssize_t n = a.len / 8;
        pass = kind == KIND_SQUARE ? square_stats_d(pa, pb, n, knee, first, hist.buf, &heap)
             : kind == KIND_ABS ? abs_stats_d(pa, pb, n, knee, first, hist.buf, &heap)
             : huber_stats_d(pa, pb, n, knee, first, hist.buf, &heap);
        if (!pass.bad && n) {
            double mean = pass.total / (double)n;
            m2 = kind == KIND_SQUARE ? square_stats_d_m2(pa, pb, n, knee, mean)
               : kind == KIND_ABS ? abs_stats_d_m2(pa, pb, n, knee, mean) : huber_stats_d_m2(pa, pb, n, knee, mean);
        }
    }
    Py_END_ALLOW_THREADS
    for (int i = 0; i < ntaken; i++) {
        PyBuffer_Release(taken[i]);
    }
    if (pass.bad) {
        Py_RETURN_NONE;
    }
    return Py_BuildValue("ddddn", pass.total, pass.min, pass.max, m2, heap.n);
fail:
    for (int i = 0; i < ntaken; i++) {
        PyBuffer_Release(taken[i]);
    }
    return NULL;
}
