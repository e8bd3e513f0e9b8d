#include "kernels.h"

/* ------------------------------------------------------------------------------------- CTC
 * The CTC forward recursion without logarithms: every state's alpha is kept as v · 2^x with v in
 * [0.5, 1) (or v = 0, x = NO_PATH), so nothing underflows however long the sequence, and a
 * log-sum-exp becomes three scalings by powers of two and two additions. A term more than 2^-1022
 * below the largest of its cell is dropped: below rounding. Emissions y_t(k) = exp(log_probs) come
 * from the caller's vectorised exp and are split the same way; where that exp under- or overflows
 * the kernel splits exp(log_probs) itself, exactly.
 */
#define NO_PATH (-((int64_t)1 << 60))
#define LN2_HI 6.93147180369123816490e-01
#define LN2_LO 1.90821492927058770002e-10

/* 2^k for k <= 0 (0 below the normal range, where the term is below rounding anyway) */
static inline double
pow2_nonpositive(int64_t k)
{
    return as_double(k < -1022 ? 0 : (uint64_t)(k + 1023) << 52);
}

/* w (a positive normal double) as v · 2^e with v in [0.5, 1) */
static inline double
split_normal(double w, int64_t *e)
{
    uint64_t bits = as_bits(w);
    *e = (int64_t)((bits >> 52) & 0x7ff) - 1022;
    return as_double((bits & ~((uint64_t)0x7ff << 52)) | ((uint64_t)1022 << 52));
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

const char ctc_loglik_doc[] =
"ctc_loglik(log_probs, probs, targets, input_lengths, target_lengths, blank, out) -> None\n\n"
"CTC log-likelihood of every sequence into out (float64, batch): log_probs float64 (T, batch,\n"
"classes) and probs = exp(log_probs) (the caller's vectorised exp; the kernel redoes the values\n"
"outside 2^-1000 ... 2^1000 from log_probs), targets int64 (batch, width), lengths int64 (batch); labels must be in [0, classes)\n"
"and not the blank (the caller checks them). A NaN in out marks a sequence with NaN or log-probabilities above 700:\n"
"the caller computes those itself.";

PyObject *
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
        /* the labels index the class axis: never read outside it, whatever the caller checked */
        const int64_t *target = (const int64_t *)tg->buf + b * stride;
        for (Py_ssize_t j = 0; ok && j < tlp[b]; j++) {
            ok = target[j] >= 0 && target[j] < classes;
        }
    }
    if (!ok) {
        PyErr_SetString(PyExc_TypeError, "ctc_loglik: float64 log_probs and probs (T, batch, classes), int64 "
                        "targets (batch, width) of classes and lengths (batch), float64 out (batch)");
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

