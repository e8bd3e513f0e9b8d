/* Fused one-pass sums for the hottest losses (optional; lossctl/fast.py falls back to NumPy).
 *
 * NumPy needs one pass over a sub-chunk per ufunc (subtract, abs, clip, multiply, sum): four or
 * five passes for the Huber loss. These loops read each input element once, form the per-element
 * value in the inputs' own float type exactly as the NumPy fast path does, and accumulate it in
 * float64 (eight independent accumulators, added in a fixed order, so the result depends only on
 * the data). The GIL is released while they run, so the engine's worker threads use every core.
 *
 * Every function takes C-contiguous buffers (NumPy arrays or memoryviews) and returns a Python
 * float or tuple; a NaN or infinite result tells the caller to hand the sub-chunk to the generic
 * kernels, which apply the NaN policy and raise the right errors.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { KIND_SQUARE = 0, KIND_ABS = 1, KIND_HUBER = 2 };
#define LANES 8
#define ONE_BITS 0x3F800000u /* float32 1.0 */

/* 'f' (float32), 'd' (float64), 'q' (int64), 'i' (int32), or 0 when the buffer is none of these
 * in native byte order. */
static char
buffer_kind(const Py_buffer *view)
{
    const char *f = view->format ? view->format : "B";
    if (*f == '@' || *f == '=' || *f == '<') {
        f++;
    }
    if (f[0] == 0 || f[1] != 0) {
        return 0;
    }
    switch (f[0]) {
    case 'f': return view->itemsize == 4 ? 'f' : 0;
    case 'd': return view->itemsize == 8 ? 'd' : 0;
    case 'q': case 'l': case 'i':  /* 'l' is 4 or 8 bytes, by platform */
        return view->itemsize == 8 ? 'q' : view->itemsize == 4 ? 'i' : 0;
    default: return 0;
    }
}

static double
add_lanes(const double *acc)
{
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

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

PyDoc_STRVAR(residual_sum_doc,
"residual_sum(kind, a, b, knee) -> float\n\n"
"Σ f(a - b) over two float32 or float64 buffers of one type and length, accumulated in float64:\n"
"kind 0: d², 1: |d|, 2: Huber q (d - q/2) with q = clip(d, -knee, knee).");

static PyObject *
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

PyDoc_STRVAR(overlap_hard_doc,
"overlap_hard(p, t) -> (disagree, false_negatives, intersection) | None\n\n"
"For float32 probabilities p in [0, 1] and a hard float32 mask t (every value +0.0 or 1.0):\n"
"Σ|p - t|, Σ t|p - t| and Σ p·t, accumulated in float64; None when some p is outside [0, 1]\n"
"(or NaN) or some t is not exactly +0.0 or 1.0.");

static PyObject *
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

PyDoc_STRVAR(pick_sum_doc,
"pick_sum(x, y, classes) -> float | None\n\n"
"Σ x[i, y_i] over the rows of x (float32 or float64, rows × classes, flat) with class indices y\n"
"(int64 or int32), accumulated in float64; None when some index is outside [0, classes).");

static PyObject *
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


/* ------------------------------------------------------------------------------------- CTC
 * The CTC forward recursion without logarithms: every state's alpha is kept as v · 2^x with v in
 * [0.5, 1) (or v = 0, x = NO_PATH), so nothing underflows however long the sequence, and a
 * log-sum-exp becomes three scalings by powers of two and two additions. A term more than 2^-1022
 * below the largest of its cell is dropped: below rounding. Emissions y_t(k) = exp(log_probs) are
 * split the same way, one exp per distinct class of the sequence per frame.
 */
#define NO_PATH (-((int64_t)1 << 60))
#define LN2_HI 6.93147180369123816490e-01
#define LN2_LO 1.90821492927058770002e-10

typedef union { double d; uint64_t u; } bits64;

/* 2^k for k <= 0 (0 below the normal range, where the term is below rounding anyway) */
static inline double
pow2_nonpositive(int64_t k)
{
    bits64 c;
    c.u = k < -1022 ? 0 : (uint64_t)(k + 1023) << 52;
    return c.d;
}

/* w (a positive normal double) as v · 2^e with v in [0.5, 1) */
static inline double
split_normal(double w, int64_t *e)
{
    bits64 c = {w};
    *e = (int64_t)((c.u >> 52) & 0x7ff) - 1022;
    c.u = (c.u & ~((uint64_t)0x7ff << 52)) | ((uint64_t)1022 << 52);
    return c.d;
}

/* exp(l) as v · 2^e; returns -1 for NaN or l > 700 (not a log-probability: the NumPy path takes
 * the sequence), 0 otherwise (v = 0 for l = -inf) */
static inline int
split_exp(double l, double *v, int64_t *e)
{
    if (l != l || l > 700.0) {
        return -1;
    }
    if (l == -INFINITY) {
        *v = 0.0;
        *e = NO_PATH;
        return 0;
    }
    if (l >= -700.0) {
        *v = split_normal(exp(l), e);
        return 0;
    }
    double k = floor(l / (LN2_HI + LN2_LO));
    double r = (l - k * LN2_HI) - k * LN2_LO;  /* in [0, ln 2), up to rounding */
    *v = split_normal(exp(r), e);
    *e += (int64_t)k;
    return 0;
}

static inline double
as_double(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

static inline uint64_t
as_bits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

/* One frame of the recursion over states [0, reach): written with 64-bit integer and double
 * operations only, so it vectorises (an AVX2 clone is picked at load time on CPUs that have it).
 * V, X: the previous frame (two padding states before index 0); skip[s]: -1 when state s may come
 * from s - 2, else 0; ev, ee: the emission of each state as ev · 2^ee. */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
static void
ctc_frame(const double *restrict V, const int64_t *restrict X, const int64_t *restrict skip,
          const double *restrict ev, const int64_t *restrict ee, double *restrict nv,
          int64_t *restrict nx, Py_ssize_t reach)
{
    for (Py_ssize_t s = 0; s < reach; s++) {
        int64_t m = skip[s];
        int64_t x0 = X[s], x1 = X[s - 1], x2 = (X[s - 2] & m) | (NO_PATH & ~m);
        double v2 = as_double(as_bits(V[s - 2]) & (uint64_t)m);
        int64_t top = x0 > x1 ? x0 : x1;
        top = top > x2 ? top : x2;
        /* stay, advance, skip: each scaled to the largest (2^k for k <= 0, 0 below 2^-1022) */
        int64_t k0 = x0 - top, k1 = x1 - top, k2 = x2 - top;
        double sum = V[s] * as_double(k0 < -1022 ? 0 : (uint64_t)(k0 + 1023) << 52)
                     + V[s - 1] * as_double(k1 < -1022 ? 0 : (uint64_t)(k1 + 1023) << 52)
                     + v2 * as_double(k2 < -1022 ? 0 : (uint64_t)(k2 + 1023) << 52);
        double w = sum * ev[s];  /* in [0.25, 3), or 0 */
        uint64_t bits = as_bits(w);
        int64_t e = (int64_t)((bits >> 52) & 0x7ff) - 1022;
        double mantissa = as_double((bits & ~((uint64_t)0x7ff << 52)) | ((uint64_t)1022 << 52));
        int zero = w == 0.0;
        nv[s] = zero ? 0.0 : mantissa;
        nx[s] = zero ? NO_PATH : top + ee[s] + e;
    }
}

/* log-likelihood of one sequence, or NaN when the NumPy path must take it. v, x, nv, nx have two
 * leading padding states (v = 0, x = NO_PATH), so states s - 1 and s - 2 always exist. */
static double
ctc_sequence(const double *lp, const double *probs, Py_ssize_t batch, Py_ssize_t classes, Py_ssize_t b,
             Py_ssize_t frames, const int64_t *target, Py_ssize_t length, int64_t blank,
             int64_t *cls_of_state, int64_t *distinct, double *cls_v, int64_t *cls_e,
             double *v, int64_t *x, double *nv, int64_t *nx, int64_t *skip, double *ev, int64_t *ee)
{
    Py_ssize_t states = 2 * length + 1, n_distinct = 0;
    if (frames == 0) {
        return length == 0 ? 0.0 : -INFINITY;
    }
    /* the distinct classes of the extended label sequence, and each state's index among them */
    for (Py_ssize_t s = 0; s < states; s++) {
        int64_t label = s % 2 ? target[s / 2] : blank;
        Py_ssize_t u = 0;
        while (u < n_distinct && distinct[u] != label) {
            u++;
        }
        if (u == n_distinct) {
            distinct[n_distinct++] = label;
        }
        cls_of_state[s] = u;
        skip[s] = s >= 2 && s % 2 && label != target[s / 2 - 1] ? -1 : 0;
    }
    for (Py_ssize_t s = 0; s < states + 2; s++) {
        v[s] = nv[s] = 0.0;
        x[s] = nx[s] = NO_PATH;
    }
    for (Py_ssize_t t = 0; t < frames; t++) {
        const double *row = lp + (t * batch + b) * classes, *prow = probs + (t * batch + b) * classes;
        for (Py_ssize_t u = 0; u < n_distinct; u++) {
            double p = prow[distinct[u]];  /* exp(log_probs), computed by the caller (vectorised) */
            if (p >= 0x1p-1000 && p <= 0x1p1000) {
                cls_v[u] = split_normal(p, &cls_e[u]);
            }
            else if (split_exp(row[distinct[u]], &cls_v[u], &cls_e[u]) < 0) {
                return NAN;
            }
        }
        if (t == 0) {
            for (Py_ssize_t s = 0; s < states && s < 2; s++) {
                v[s + 2] = cls_v[cls_of_state[s]];
                x[s + 2] = v[s + 2] == 0.0 ? NO_PATH : cls_e[cls_of_state[s]];
            }
            continue;
        }
        Py_ssize_t reach = 2 * t + 2 < states ? 2 * t + 2 : states;  /* s <= 2t + 1 */
        for (Py_ssize_t s = 0; s < reach; s++) {
            ev[s] = cls_v[cls_of_state[s]];
            ee[s] = cls_e[cls_of_state[s]];
        }
        ctc_frame(v + 2, x + 2, skip, ev, ee, nv + 2, nx + 2, reach);
        double *tv = v;
        int64_t *tx = x;
        v = nv;
        x = nx;
        nv = tv;
        nx = tx;
    }
    /* end in the last label or the blank after it */
    Py_ssize_t last = states - 1 + 2;
    int64_t top = x[last] > x[last - 1] ? x[last] : x[last - 1];
    double sum = v[last] * pow2_nonpositive(x[last] - top) + v[last - 1] * pow2_nonpositive(x[last - 1] - top);
    if (sum == 0.0) {
        return -INFINITY;
    }
    return log(sum) + (double)top * (LN2_HI + LN2_LO);
}

PyDoc_STRVAR(ctc_loglik_doc,
"ctc_loglik(log_probs, probs, targets, input_lengths, target_lengths, blank, out) -> None\n\n"
"CTC log-likelihood of every sequence into out (float64, batch): log_probs float64 (T, batch,\n"
"classes) and probs = exp(log_probs) (the caller's vectorised exp; the kernel redoes the values\n"
"outside 2^-1000 ... 2^1000 from log_probs), targets int64 (batch, width), lengths int64 (batch); labels must be in [0, classes)\n"
"and not the blank (the caller checks them). A NaN in out marks a sequence with NaN or log-probabilities above 700:\n"
"the caller computes those itself.");

static PyObject *
ctc_loglik(PyObject *self, PyObject *args)
{
    PyObject *objects[7];
    Py_ssize_t blank;
    /* buffers: log_probs, probs, targets, input_lengths, target_lengths, out */
    Py_buffer views[6];
    int flags[6] = {0, 0, 0, 0, 0, PyBUF_WRITABLE}, got = 0;
    char *scratch = NULL;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "OOOOOnO", &objects[0], &objects[1], &objects[2], &objects[3],
                          &objects[4], &blank, &objects[6])) {
        return NULL;
    }
    objects[5] = objects[6];
    for (; got < 6; got++) {
        if (PyObject_GetBuffer(objects[got], &views[got], PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | flags[got]) < 0) {
            goto done;
        }
    }
    Py_buffer *lp = &views[0], *pr = &views[1], *tg = &views[2], *il = &views[3], *tl = &views[4];
    Py_buffer *out = &views[5];
    int ok = buffer_kind(lp) == 'd' && lp->ndim == 3 && buffer_kind(pr) == 'd' && pr->len == lp->len
             && buffer_kind(tg) == 'q' && tg->ndim == 2 && buffer_kind(il) == 'q' && buffer_kind(tl) == 'q'
             && buffer_kind(out) == 'd';
    Py_ssize_t frames_total = ok ? lp->shape[0] : 0, batch = ok ? lp->shape[1] : 0;
    Py_ssize_t classes = ok ? lp->shape[2] : 0, stride = ok ? tg->shape[1] : 0, width = 0;
    ok = ok && tg->shape[0] == batch && il->len == batch * 8 && tl->len == batch * 8
         && out->len == batch * 8 && blank >= 0 && blank < classes;
    const int64_t *ilp = il->buf, *tlp = tl->buf;
    for (Py_ssize_t b = 0; ok && b < batch; b++) {
        ok = ilp[b] >= 0 && tlp[b] >= 0 && tlp[b] <= stride;
        width = tlp[b] > width ? tlp[b] : width;
    }
    if (!ok) {
        PyErr_SetString(PyExc_TypeError, "ctc_loglik: float64 log_probs and probs (T, batch, classes), int64 "
                        "targets (batch, width) and lengths (batch), float64 out (batch)");
        goto done;
    }
    Py_ssize_t states = 2 * width + 1, n = states + 2;
    /* per state: 7 int64 arrays and 4 double arrays (some with 2 padding states) */
    scratch = PyMem_RawMalloc((size_t)n * (7 * sizeof(int64_t) + 4 * sizeof(double)));
    if (scratch == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    int64_t *cls_of_state = (int64_t *)scratch, *distinct = cls_of_state + n;
    int64_t *cls_e = distinct + n, *x = cls_e + n, *nx = x + n, *skip = nx + n, *ee = skip + n;
    double *cls_v = (double *)(ee + n), *v = cls_v + n, *nv = v + n, *ev = nv + n;
    double *res = out->buf;
    for (Py_ssize_t b = 0; b < batch; b++) {
        Py_ssize_t n_frames = ilp[b] < frames_total ? ilp[b] : frames_total;
        res[b] = ctc_sequence(lp->buf, pr->buf, batch, classes, b, n_frames, (const int64_t *)tg->buf + b * stride,
                              tlp[b], blank, cls_of_state, distinct, cls_v, cls_e, v, x, nv, nx, skip, ev, ee);
    }
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    PyMem_RawFree(scratch);
    while (got > 0) {
        PyBuffer_Release(&views[--got]);
    }
    return result;
}

/* ------------------------------------------------------------------------------------- CSV
 * A parser for the plain numeric CSV files that make up nearly all saved predictions: one-byte
 * separator, the same number of fields on every line, fields that are numbers (with spaces
 * around them), empty (NaN) or nan/inf words, LF or CRLF line ends, empty lines skipped. Anything
 * else (quotes, text, true/false, ragged or whitespace-only lines, long integers) makes it answer
 * "unsupported", and lossctl/inputs.py reads the file with pandas instead, which then names the
 * problem. Blocks of lines are independent, so several threads parse one file at once.
 */
static const double POW10[] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
                               1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

static int
is_word(const char *p, const char *end, const char *lower)
{
    size_t n = strlen(lower);
    if ((size_t)(end - p) != n) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c >= 'A' && c <= 'Z') {
            c = (char)(c - 'A' + 'a');
        }
        if (c != lower[i]) {
            return 0;
        }
    }
    return 1;
}

/* One trimmed field [p, end): 0 and *out (and *is_int: an integer literal), or -1 unsupported.
 * Up to 15 significant digits and a power of ten within 1e±22 the value is (double)m * or / 10^k,
 * correctly rounded (both exact before one rounding); longer numbers go through strtod. */
static int
parse_field(const char *p, const char *end, double *out, int *is_int)
{
    const char *start = p;
    int negative = 0;
    *is_int = 0;
    if (p == end) {
        *out = NAN;
        return 0;
    }
    if (*p == '+' || *p == '-') {
        negative = *p == '-';
        p++;
    }
    if (p < end && ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z'))) {
        if (is_word(p, end, "nan")) {
            *out = NAN;
        }
        else if (is_word(p, end, "inf") || is_word(p, end, "infinity")) {
            *out = negative ? -INFINITY : INFINITY;
        }
        else {
            return -1;
        }
        return 0;
    }
    uint64_t m = 0;
    int digits = 0, significant = 0, point = 0, after_point = 0;
    for (; p < end; p++) {
        char c = *p;
        if (c >= '0' && c <= '9') {
            digits++;
            if (significant || c != '0') {
                significant++;
                if (significant <= 19) {
                    m = m * 10 + (uint64_t)(c - '0');
                }
            }
            after_point += point;
        }
        else if (c == '.' && !point) {
            point = 1;
        }
        else {
            break;
        }
    }
    if (digits == 0) {
        return -1;
    }
    long exponent = 0;
    int has_exponent = 0;
    if (p < end && (*p == 'e' || *p == 'E')) {
        int exp_negative = 0, exp_digits = 0;
        p++;
        if (p < end && (*p == '+' || *p == '-')) {
            exp_negative = *p == '-';
            p++;
        }
        for (; p < end && *p >= '0' && *p <= '9'; p++) {
            if (exponent < 100000) {
                exponent = exponent * 10 + (*p - '0');
            }
            exp_digits++;
        }
        if (exp_digits == 0) {
            return -1;
        }
        exponent = exp_negative ? -exponent : exponent;
        has_exponent = 1;
    }
    if (p != end) {
        return -1;
    }
    *is_int = !point && !has_exponent;
    if (*is_int && significant > 15) {
        return -1;  /* beyond 2^53: pandas keeps such integers exact; leave them to it */
    }
    long power = exponent - after_point;
    if (significant <= 15 && power >= -22 && power <= 22) {
        double v = (double)m;
        v = power < 0 ? v / POW10[-power] : v * POW10[power];
        *out = negative ? -v : v;
        return 0;
    }
    char text[1024];
    if (end - start >= (long)sizeof(text)) {
        return -1;
    }
    memcpy(text, start, (size_t)(end - start));
    text[end - start] = 0;
    *out = strtod(text, NULL);  /* the "C" numeric locale: Python never changes LC_NUMERIC */
    return 0;
}

/* eight ASCII digits at p (little-endian load), and their value: the SWAR routines of fast_float */
static inline int
eight_digits(uint64_t v)
{
    return ((v & 0xF0F0F0F0F0F0F0F0ULL) | (((v + 0x0606060606060606ULL) & 0xF0F0F0F0F0F0F0F0ULL) >> 4))
           == 0x3333333333333333ULL;
}

static inline uint64_t
eight_digits_value(uint64_t v)
{
    v -= 0x3030303030303030ULL;
    v = (v * 10) + (v >> 8);
    return (((v & 0x000000FF000000FFULL) * (100 + (1000000ULL << 32)))
            + (((v >> 16) & 0x000000FF000000FFULL) * (1 + (10000ULL << 32)))) >> 32;
}

static inline int
little_endian(void)
{
    const uint16_t one = 1;
    return *(const unsigned char *)&one == 1;
}

/* The common field, in one pass: [sign] digits [. digits] [e [sign] digits], at most 19 digits,
 * the value (double)m * or / 10^k exact before one rounding. Returns the end of the number, or
 * NULL for anything else (parse_field then takes the whole field). */
static inline const char *
scan_number(const char *p, const char *end, double *out, int *is_int)
{
    int negative = 0;
    if (p < end && (*p == '-' || *p == '+')) {
        negative = *p == '-';
        p++;
    }
    uint64_t m = 0;
    int digits = 0, after_point = 0;
    const char *run = p;
    if (little_endian()) {
        while (end - p >= 8) {
            uint64_t v;
            memcpy(&v, p, 8);
            if (!eight_digits(v)) {
                break;
            }
            m = m * 100000000 + eight_digits_value(v);
            p += 8;
        }
    }
    while (p < end && *p >= '0' && *p <= '9') {
        m = m * 10 + (uint64_t)(*p - '0');
        p++;
    }
    digits = (int)(p - run);
    int point = p < end && *p == '.';
    if (point) {
        p++;
        run = p;
        if (little_endian()) {
            while (end - p >= 8 && digits + (p - run) + 8 <= 19) {
                uint64_t v;
                memcpy(&v, p, 8);
                if (!eight_digits(v)) {
                    break;
                }
                m = m * 100000000 + eight_digits_value(v);
                p += 8;
            }
        }
        while (p < end && *p >= '0' && *p <= '9') {
            m = m * 10 + (uint64_t)(*p - '0');
            p++;
        }
        after_point = (int)(p - run);
        digits += after_point;
    }
    if (digits == 0 || digits > 19) {
        return NULL;
    }
    int power = -after_point;
    int has_exponent = p < end && (*p == 'e' || *p == 'E');
    if (has_exponent) {
        int exp_negative = 0, exponent = 0;
        p++;
        if (p < end && (*p == '+' || *p == '-')) {
            exp_negative = *p == '-';
            p++;
        }
        const char *exp_start = p;
        while (p < end && *p >= '0' && *p <= '9' && p - exp_start < 4) {
            exponent = exponent * 10 + (*p - '0');
            p++;
        }
        if (p == exp_start || (p < end && *p >= '0' && *p <= '9')) {
            return NULL;
        }
        power += exp_negative ? -exponent : exponent;
    }
    if (m > ((uint64_t)1 << 53) || power < -22 || power > 22) {
        return NULL;
    }
    double v = (double)m;
    v = power < 0 ? v / POW10[-power] : v * POW10[power];
    *out = negative ? -v : v;
    *is_int = !point && !has_exponent;
    return p;
}

/* newlines in [p, end) */
static Py_ssize_t
count_lines(const char *p, const char *end)
{
    Py_ssize_t n = 0;
    while (p < end) {
        const char *q = memchr(p, '\n', (size_t)(end - p));
        if (q == NULL) {
            break;
        }
        n++;
        p = q + 1;
    }
    return n;
}

/* Parse the lines of [p, end) into columns of out (column c of row r at out[c * capacity + r]);
 * returns the rows, or -1 unsupported. first_float[c]: the first row whose field is not an
 * integer literal (-1 if none). */
static Py_ssize_t
parse_lines(const char *p, const char *end, char sep, Py_ssize_t ncols, double *out,
            Py_ssize_t capacity, Py_ssize_t *first_float)
{
    int trim_tabs = sep != '\t';
    Py_ssize_t row = 0;
    while (p < end) {
        if (*p == '\n') {  /* an empty line: skipped, as pandas does */
            p++;
            continue;
        }
        if (*p == '\r' && (p + 1 == end || p[1] == '\n')) {
            p += p + 1 == end ? 1 : 2;
            continue;
        }
        const char *line = p;
        if (row >= capacity) {
            return -1;
        }
        for (Py_ssize_t c = 0; c < ncols; c++) {
            double *slot = &out[c * capacity + row];
            int is_int;
            /* the common case first: a plain number, then the separator or the line end */
            const char *a = p;
            while (a < end && (*a == ' ' || (trim_tabs && *a == '\t'))) {
                a++;
            }
            const char *q = scan_number(a, end, slot, &is_int);
            if (q != NULL) {
                while (q < end && (*q == ' ' || (trim_tabs && *q == '\t'))) {
                    q++;
                }
                if (c < ncols - 1 ? q < end && *q == sep
                                  : q == end || *q == '\n' || (*q == '\r' && (q + 1 == end || q[1] == '\n'))) {
                    if (!is_int && first_float[c] < 0) {
                        first_float[c] = row;
                    }
                    p = q == end ? q : *q == '\r' ? q + 1 + (q + 1 < end) : q + 1;
                    continue;
                }
            }
            /* anything else: find the field's end, trim it, parse it in full */
            q = p;
            while (q < end && *q != sep && *q != '\n') {
                q++;
            }
            int at_line_end = q == end || *q == '\n';
            if (at_line_end != (c == ncols - 1)) {
                return -1;  /* too few or too many fields */
            }
            const char *b = q;
            a = p;
            if (at_line_end && b > a && b[-1] == '\r') {
                b--;
            }
            while (a < b && (*a == ' ' || (trim_tabs && *a == '\t'))) {
                a++;
            }
            while (b > a && (b[-1] == ' ' || (trim_tabs && b[-1] == '\t'))) {
                b--;
            }
            if (ncols == 1 && a == b && q > line) {
                return -1;  /* a line of only spaces: let pandas decide what it is */
            }
            if (parse_field(a, b, slot, &is_int) < 0) {
                return -1;
            }
            if (!is_int && first_float[c] < 0) {
                first_float[c] = row;
            }
            p = q < end ? q + 1 : q;
        }
        row++;
    }
    return row;
}

PyDoc_STRVAR(csv_count_rows_doc,
"csv_count_rows(buffer) -> int\n\n"
"The lines of buffer (whole lines; the last may lack its newline) that are not blank: blank is\n"
"empty or a lone carriage return, the lines both parsers skip.");

static PyObject *
csv_count_rows(PyObject *self, PyObject *arg)
{
    Py_buffer buf;
    Py_ssize_t rows = 0;
    if (PyObject_GetBuffer(arg, &buf, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    /* rows = line ends - blank lines (+ a last line without its newline); one vectorisable pass:
     * a newline ends a blank line when the byte before it is a newline (or the start), or is a
     * carriage return that itself follows a newline (or the start) */
    const unsigned char *p = buf.buf;
    Py_ssize_t n = buf.len, ends = 0, blank = 0;
    if (n > 0) {
        ends = p[0] == '\n';
        blank = p[0] == '\n';
    }
    if (n > 1) {
        ends += p[1] == '\n';
        blank += p[1] == '\n' && (p[0] == '\n' || p[0] == '\r');
    }
    for (Py_ssize_t s = 2; s < n; s += 4096) {  /* 32-bit counts per 4 KB: the loop vectorises */
        Py_ssize_t stop = s + 4096 < n ? s + 4096 : n;
        uint32_t e = 0, b = 0;
        for (Py_ssize_t i = s; i < stop; i++) {
            uint32_t nl = p[i] == '\n';
            e += nl;
            b += nl & ((p[i - 1] == '\n') | ((p[i - 1] == '\r') & (p[i - 2] == '\n')));
        }
        ends += e;
        blank += b;
    }
    rows = ends - blank + (n > 0 && p[n - 1] != '\n');
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&buf);
    return PyLong_FromSsize_t(rows);
}

PyDoc_STRVAR(csv_parse_doc,
"csv_parse(buffer, start, stop, sep, ncols) -> (data, capacity, rows, first_float) | None\n\n"
"Parse the lines of buffer[start:stop] (whole lines) into float64 columns: data is a bytearray\n"
"of ncols x capacity doubles, column-major (column c, row r at c * capacity + r); first_float\n"
"holds per column the first row that is not an integer literal (-1: none). None when the block\n"
"has something only pandas reads (see the comment above).");

static PyObject *
csv_parse(PyObject *self, PyObject *args)
{
    PyObject *obuf;
    Py_ssize_t start, stop, ncols;
    int sep;
    Py_buffer buf;
    if (!PyArg_ParseTuple(args, "OnnCn", &obuf, &start, &stop, &sep, &ncols)) {
        return NULL;
    }
    if (PyObject_GetBuffer(obuf, &buf, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (start < 0 || stop < start || stop > buf.len || ncols < 1 || sep < 1 || sep > 127
            || sep == '\n' || sep == '\r' || sep == '"') {
        PyBuffer_Release(&buf);
        PyErr_SetString(PyExc_ValueError, "csv_parse: bad range, column count or separator");
        return NULL;
    }
    const char *p = (const char *)buf.buf + start, *end = (const char *)buf.buf + stop;
    Py_ssize_t capacity;
    Py_BEGIN_ALLOW_THREADS
    capacity = count_lines(p, end) + 1;
    Py_END_ALLOW_THREADS
    PyObject *data = PyByteArray_FromStringAndSize(NULL, ncols * capacity * (Py_ssize_t)sizeof(double));
    Py_ssize_t *first_float = PyMem_RawMalloc((size_t)ncols * sizeof(Py_ssize_t));
    if (data == NULL || first_float == NULL) {
        Py_XDECREF(data);
        PyMem_RawFree(first_float);
        PyBuffer_Release(&buf);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t c = 0; c < ncols; c++) {
        first_float[c] = -1;
    }
    double *out = (double *)PyByteArray_AS_STRING(data);
    Py_ssize_t rows;
    Py_BEGIN_ALLOW_THREADS
    rows = parse_lines(p, end, (char)sep, ncols, out, capacity, first_float);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&buf);
    if (rows < 0) {
        Py_DECREF(data);
        PyMem_RawFree(first_float);
        Py_RETURN_NONE;
    }
    PyObject *firsts = PyTuple_New(ncols);
    if (firsts == NULL) {
        Py_DECREF(data);
        PyMem_RawFree(first_float);
        return NULL;
    }
    for (Py_ssize_t c = 0; c < ncols; c++) {
        PyTuple_SET_ITEM(firsts, c, PyLong_FromSsize_t(first_float[c]));
    }
    PyMem_RawFree(first_float);
    return Py_BuildValue("(NnnN)", data, capacity, rows, firsts);
}

static PyMethodDef methods[] = {
    {"residual_sum", residual_sum, METH_VARARGS, residual_sum_doc},
    {"overlap_hard", overlap_hard, METH_VARARGS, overlap_hard_doc},
    {"pick_sum", pick_sum, METH_VARARGS, pick_sum_doc},
    {"ctc_loglik", ctc_loglik, METH_VARARGS, ctc_loglik_doc},
    {"csv_parse", csv_parse, METH_VARARGS, csv_parse_doc},
    {"csv_count_rows", csv_count_rows, METH_O, csv_count_rows_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "lossctl._kernels",
    "Fused one-pass sums for the hottest losses (see lossctl/fast.py).", -1, methods,
};

PyMODINIT_FUNC
PyInit__kernels(void)
{
    return PyModule_Create(&module);
}
