#include "kernels.h"

/* ------------------------------------------------------------------------------------- CSV
 * A parser for the plain numeric CSV files that make up nearly all saved predictions: one-byte
 * separator, the same number of fields on every line, fields that are numbers (with spaces
 * around them), empty (NaN) or nan/inf words, LF or CRLF line ends, empty lines skipped. Anything
 * else (quotes, text, true/false, ragged or whitespace-only lines, long integers) makes it answer
 * "unsupported", and lossctl/readers/csv.py reads the file with pandas instead, which then names the
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

/* One trimmed field [p, end) that scan_number did not take (empty, a nan/inf word, a long
 * number): 0 and *out (and *is_int: an integer literal), or -1 unsupported. Numbers are checked
 * against the grammar here and converted by strtod (correctly rounded). */
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
    int digits = 0, significant = 0, point = 0;
    for (; p < end; p++) {
        char c = *p;
        if (c >= '0' && c <= '9') {
            digits++;
            significant += significant || c != '0';
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
    int has_exponent = p < end && (*p == 'e' || *p == 'E');
    if (has_exponent) {
        p++;
        if (p < end && (*p == '+' || *p == '-')) {
            p++;
        }
        const char *exp_start = p;
        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }
        if (p == exp_start) {
            return -1;
        }
    }
    if (p != end) {
        return -1;
    }
    *is_int = !point && !has_exponent;
    if (*is_int && significant > 15) {
        return -1;  /* beyond 2^53: pandas keeps such integers exact; leave them to it */
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

/* The digits from p on, appended to *m (eight at a time where the bytes allow); returns their end.
 * Past 19 digits *m wraps around: the caller refuses such numbers. */
static inline const char *
scan_digits(const char *p, const char *end, uint64_t *m)
{
    uint64_t value = *m;
    if (little_endian()) {
        while (end - p >= 8) {
            uint64_t v;
            memcpy(&v, p, 8);
            if (!eight_digits(v)) {
                break;
            }
            value = value * 100000000 + eight_digits_value(v);
            p += 8;
        }
    }
    while (p < end && *p >= '0' && *p <= '9') {
        value = value * 10 + (uint64_t)(*p - '0');
        p++;
    }
    *m = value;
    return p;
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
    const char *q = scan_digits(p, end, &m);
    int digits = (int)(q - p), after_point = 0;
    p = q;
    int point = p < end && *p == '.';
    if (point) {
        q = scan_digits(p + 1, end, &m);
        after_point = (int)(q - (p + 1));
        digits += after_point;
        p = q;
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

/* an upper bound on the rows of [p, end): lines that are not blank ("\n" or "\r\n" alone, skipped
 * as parse_lines skips them), plus one for a last line without its newline. Blank lines cost no
 * row, so the block's columns take at most 8 bytes per byte of the block whatever ncols is. */
static Py_ssize_t
count_lines(const char *p, const char *end)
{
    Py_ssize_t n = 0;
    while (p < end) {
        const char *q = memchr(p, '\n', (size_t)(end - p));
        if (q == NULL) {
            break;
        }
        n += !(q == p || (q == p + 1 && *p == '\r'));
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

const char csv_count_rows_doc[] =
"csv_count_rows(buffer) -> int\n\n"
"The lines of buffer (whole lines; the last may lack its newline) that are not blank: blank is\n"
"empty or a lone carriage return, the lines both parsers skip.";

PyObject *
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

const char csv_parse_doc[] =
"csv_parse(buffer, start, stop, sep, ncols) -> (data, capacity, rows, first_float) | None\n\n"
"Parse the lines of buffer[start:stop] (whole lines) into float64 columns: data is a bytearray\n"
"of ncols x capacity doubles, column-major (column c, row r at c * capacity + r); first_float\n"
"holds per column the first row that is not an integer literal (-1: none). None when the block\n"
"has something only pandas reads (see the comment above).";

PyObject *
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

