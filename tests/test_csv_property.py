"""Property (issue 14, SPEC §5): CSV files as pandas, NumPy and spreadsheets write them are read as
exactly the numbers pandas' ``read_csv`` reads with the same header/index choice, or refused with
exit 2 and one ``error:`` line. Never other numbers.

The suite runs a bounded number of examples (a few seconds). A long run::

    LOSSCTL_HYPOTHESIS=long LOSSCTL_PROPERTY_COUNTS=counts.json \\
        python3 -m pytest -q -p no:cacheprovider tests/test_csv_property.py --hypothesis-seed=14

(``long``: examples until ``LOSSCTL_PROPERTY_SECONDS`` (default 600) have passed, half for each CSV
parser, then the test skips itself; the counts of each outcome go to ``LOSSCTL_PROPERTY_COUNTS``.)
"""

from __future__ import annotations

import atexit
import csv
import io
import itertools
import json
import os
import time
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cli_support import assert_usage_error
from lossctl.cli import app
from lossctl.errors import LossctlError
from lossctl.readers import open_input

LONG = os.environ.get("LOSSCTL_HYPOTHESIS") == "long"
SECONDS = float(os.environ.get("LOSSCTL_PROPERTY_SECONDS", "600"))
_STARTED: dict[str, float] = {}
settings.register_profile("csv-suite", max_examples=40, deadline=None, derandomize=False,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.register_profile("csv-long", max_examples=10 ** 7, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
PROFILE = settings.get_profile("csv-long" if LONG else "csv-suite")

COUNTS: Counter[str] = Counter()
_names = itertools.count()


@atexit.register
def _dump_counts() -> None:
    where = os.environ.get("LOSSCTL_PROPERTY_COUNTS")
    if where and COUNTS:
        with open(where, "w") as fh:
            json.dump(dict(COUNTS), fh, indent=1, sort_keys=True)


NA_SPELLINGS = ["", "NaN", "nan", "NA", "#N/A", "null", "N/A"]
finite = st.floats(allow_nan=False, allow_infinity=False, width=64) | st.integers(-10 ** 6, 10 ** 6).map(float)
value = finite | st.just(float("nan")) | st.sampled_from([0.0, 1.0, -1.0, 0.5, 1e-300, 1e300])
def _not_a_number(text):
    try:
        float(text)
    except ValueError:
        return text not in NA_SPELLINGS
    return False


# header names as people write them: text (a header of numbers is data by the rule, except pandas' 0..k-1)
names = st.lists(st.builds(str.__add__, st.sampled_from("abxyzN_"), st.text("abcxyz_ 0123456789", max_size=4))
                 .map(str.strip).filter(_not_a_number), min_size=1, max_size=4, unique=True)


@st.composite
def frames(draw):
    k = draw(st.integers(1, 4))
    n = draw(st.integers(1, 12))
    ints = draw(st.lists(st.booleans(), min_size=k, max_size=k))  # an integer column
    cols = []
    for c in range(k):
        if ints[c]:
            cols.append(np.array(draw(st.lists(st.integers(-1000, 1000), min_size=n, max_size=n)), dtype=np.int64))
        else:
            cols.append(np.array(draw(st.lists(value, min_size=n, max_size=n)), dtype=np.float64))
    return cols


@st.composite
def written(draw):
    """(text bytes, sep, header written?, index written?, a description)."""
    cols = draw(frames())
    k = len(cols)
    writer = draw(st.sampled_from(["pandas", "numpy", "sheet"]))
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    sep = draw(st.sampled_from([",", ",", ";", "\t"]))
    if writer == "pandas":
        default_names = draw(st.booleans())
        columns = list(range(k)) if default_names else draw(names.filter(lambda v: len(v) >= k))[:k]
        df = pd.DataFrame(dict(zip(columns, cols)))
        header, index = draw(st.booleans()), draw(st.booleans())
        na_rep = draw(st.sampled_from(NA_SPELLINGS))
        float_format = draw(st.sampled_from([None, "%.6g", "%.17g"]))
        text = df.to_csv(index=index, header=header, sep=sep, lineterminator=eol, na_rep=na_rep,
                         float_format=float_format)
        return text.encode(), sep, header, index and header, f"pandas header={header} index={index}"
    if writer == "numpy":
        data = np.column_stack([c.astype(np.float64) for c in cols])
        fmt = draw(st.sampled_from(["%.18e", "%g", "%.17g", "%d"]))
        if fmt == "%d":
            assume(np.isfinite(data).all() and (data == np.round(data)).all() and np.abs(data).max() < 1e15)
        header = draw(st.booleans())
        hdr = sep.join(draw(names.filter(lambda v: len(v) >= k))[:k]) if header else ""
        buf = io.StringIO()
        np.savetxt(buf, data, fmt=fmt, delimiter=sep, newline=eol, header=hdr, comments="")
        return buf.getvalue().encode(), sep, header, False, f"numpy fmt={fmt} header={header}"
    # a spreadsheet: csv.writer with quoting, a byte-order mark, NaN spellings, ; delimiters
    quoting = draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC]))
    header = draw(st.booleans())
    bom = draw(st.booleans())
    na = draw(st.sampled_from(NA_SPELLINGS))
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=sep, lineterminator=eol, quoting=quoting)
    if header:
        w.writerow(draw(names.filter(lambda v: len(v) >= k))[:k])
    for row in zip(*cols):
        w.writerow([na if isinstance(v, float) and v != v else (int(v) if isinstance(v, np.integer) else
                                                                 repr(float(v))) for v in row])
    text = ("\ufeff" if bom else "") + buf.getvalue()
    return text.encode(), sep, header, False, f"sheet quoting={quoting} header={header} bom={bom} na={na!r}"


def _expected(path, sep, header, index):
    first = next(csv.reader(io.StringIO(path.read_bytes().decode("utf-8-sig")), delimiter=sep))
    first = [f.strip() for f in first]
    if first == [str(i) for i in range(len(first))]:
        header = True  # data whose first row is 0,1,…,k-1: a header by SPEC §5's rule (and a note says so)
    elif len(first) > 1 and first == [""] + [str(i) for i in range(len(first) - 1)]:
        header = index = True  # ...and ,0,1,…: pandas' header over its index column
    frame = pd.read_csv(path, sep=sep, header=0 if header else None, index_col=0 if index else None)
    numeric = frame.select_dtypes(include=["number", "bool"])
    return numeric.to_numpy(dtype=np.float64) if numeric.shape[1] else None


@pytest.fixture
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("csvprop")


@settings(PROFILE)
@given(case=written())
def test_csv_as_people_write_it(case, folder, runner, csv_parser):
    started = _STARTED.setdefault(csv_parser, time.monotonic())  # half the time for each parser
    if LONG and time.monotonic() > started + SECONDS / 2:
        pytest.skip("the long run's time is spent (the counts are in $LOSSCTL_PROPERTY_COUNTS)")
    data, sep, header, index, how = case
    path = folder / f"f{next(_names)}.{'tsv' if sep == chr(9) else 'csv'}"
    path.write_bytes(data)
    expected = _expected(path, sep, header, index)
    try:
        got = open_input(str(path)).read_all()
    except LossctlError as exc:
        assert "\n" not in str(exc)
        result = runner.invoke(app, ["evaluate", str(path), str(path), "--loss", "mae"])
        assert_usage_error(result)
        COUNTS[f"refused ({csv_parser}): {how.split(' ')[0]}: {' '.join(str(exc).split(': ', 1)[-1].split()[:6])}"] += 1
        return
    assert expected is not None, (how, data[:200], got)
    got = np.asarray(got, dtype=np.float64).reshape(len(got), -1)
    np.testing.assert_array_equal(got, expected, err_msg=f"{how}: {data[:300]!r}")
    COUNTS[f"read equal ({csv_parser}): {how.split(' ')[0]}"] += 1
