/* lossctl._kernels: optional C kernels for the work NumPy does in too many passes.
 *
 *   sums.c  one-pass sums of mse, mae, huber/smooth_l1, the hard-mask overlap statistics, the
 *           nll gather and row distances (lossctl/fast.py calls them per sub-chunk);
 *   ctc.c   the CTC forward recursion, without logarithms (lossctl/losses/sequence.py);
 *   csv.c   the parser for plain numeric CSV files (lossctl/readers/csv.py; anything else: pandas).
 *
 * Every function takes C-contiguous buffers (NumPy arrays, bytes, memoryviews), releases the GIL
 * while it works (so the engine's worker threads use every core) and never raises for data: it
 * returns a value the caller can check (NaN, None) and hand to the Python code that names the
 * problem. setup.py builds this optionally; lossctl/ckernels.py is where Python looks for it.
 */
#include "kernels.h"

static PyMethodDef methods[] = {
    {"residual_sum", residual_sum, METH_VARARGS, residual_sum_doc},
    {"residual_stats", residual_stats, METH_VARARGS, residual_stats_doc},
    {"residual_moments", residual_moments, METH_VARARGS, residual_moments_doc},
    {"paired_moments", paired_moments, METH_VARARGS, paired_moments_doc},
    {"float_sum", float_sum, METH_O, float_sum_doc},
    {"overlap_hard", overlap_hard, METH_VARARGS, overlap_hard_doc},
    {"pick_sum", pick_sum, METH_VARARGS, pick_sum_doc},
    {"row_sq_dist", row_sq_dist, METH_VARARGS, row_sq_dist_doc},
    {"ctc_loglik", ctc_loglik, METH_VARARGS, ctc_loglik_doc},
    {"csv_parse", csv_parse, METH_VARARGS, csv_parse_doc},
    {"csv_count_rows", csv_count_rows, METH_O, csv_count_rows_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "lossctl._kernels",
    "Optional C kernels of lossctl (see lossctl/ckernels.py).", -1, methods,
};

PyMODINIT_FUNC
PyInit__kernels(void)
{
    return PyModule_Create(&module);
}
