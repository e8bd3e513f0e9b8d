/* lossctl's optional C kernels: what every file shares (see module.c for the overview). */
#ifndef LOSSCTL_KERNELS_H
#define LOSSCTL_KERNELS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define LANES 8

/* 'f' (float32), 'd' (float64), 'q' (int64), 'i' (int32), or 0 when the buffer is none of these
 * in native byte order. */
static inline char
buffer_kind(const Py_buffer *view)
{
    const char *f = view->format ? view->format : "B";
    const uint16_t one = 1;
    int little = *(const unsigned char *)&one == 1;
    if (*f == '@' || *f == '=' || (*f == '<' && little) || (*f == '>' && !little)) {
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

static inline double
add_lanes(const double *acc)
{
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
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

/* sums.c: one-pass sums of the elementwise, overlap and gather losses */
PyObject *residual_sum(PyObject *self, PyObject *args);
PyObject *residual_stats(PyObject *self, PyObject *args);
PyObject *residual_moments(PyObject *self, PyObject *args);
PyObject *paired_moments(PyObject *self, PyObject *args);
PyObject *float_sum(PyObject *self, PyObject *arg);
PyObject *overlap_hard(PyObject *self, PyObject *args);
PyObject *pick_sum(PyObject *self, PyObject *args);
PyObject *row_sq_dist(PyObject *self, PyObject *args);
extern const char residual_sum_doc[], residual_stats_doc[], residual_moments_doc[], paired_moments_doc[], float_sum_doc[], overlap_hard_doc[], pick_sum_doc[], row_sq_dist_doc[];

/* ctc.c: the CTC forward recursion */
PyObject *ctc_loglik(PyObject *self, PyObject *args);
extern const char ctc_loglik_doc[];

/* csv.c: the plain-numeric CSV parser */
PyObject *csv_parse(PyObject *self, PyObject *args);
PyObject *csv_count_rows(PyObject *self, PyObject *arg);
extern const char csv_parse_doc[], csv_count_rows_doc[];

#endif
