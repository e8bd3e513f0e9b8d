"""Inputs as people write them (SPEC §5, issue 14): the CSV header rule and pandas' index column,
ragged rows, delimiters, stdin, compressed files, string class labels, empty inputs, and messages
that name the selector that fixes them. Each behaviour through the CLI and through the readers,
for both CSV parsers (the C kernels and pandas) where the file is a CSV."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma

import numpy as np
import pandas as pd
import pytest

from cli_support import assert_usage_error
import lossctl
from lossctl.cli import app
from lossctl.errors import InputError
from lossctl.readers import ReadOptions, open_input

RNG = np.random.default_rng(14)
PREDS = RNG.normal(size=200)
TARGETS = PREDS + RNG.normal(scale=0.1, size=200)
MSE = float(np.mean((PREDS - TARGETS) ** 2))


def _json_value(result) -> float:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)["results"][0]["value"]


def _mse(runner, *args):
    return runner.invoke(app, ["evaluate", *map(str, args), "--loss", "mse", "--format", "json"])


# ----------------------------------------------------------------------------------- header rule


def test_pandas_default_column_names_are_a_header(tmp_path, runner, csv_parser):
    """DataFrame(arr).to_csv(index=False) writes the header `0`: 200 samples, not 201, and a note."""
    p, t = tmp_path / "p.csv", tmp_path / "t.npy"
    pd.DataFrame(PREDS).to_csv(p, index=False)
    np.save(t, TARGETS)
    arr = open_input(str(p))
    assert arr.shape == (200,)
    np.testing.assert_array_equal(arr.read_all(), PREDS)
    assert "pandas' default column names" in arr.notes[0]
    result = _mse(runner, p, t)
    assert _json_value(result) == pytest.approx(MSE, rel=1e-12)
    assert "note: preds" in result.stderr and "--header no" in result.stderr
    # several columns: 0,1,2 is a header too, and its names select by name before index
    wide = tmp_path / "wide.csv"
    pd.DataFrame(np.column_stack([TARGETS, PREDS, TARGETS])).to_csv(wide, index=False)
    np.testing.assert_array_equal(open_input(f"{wide}:1").read_all(), PREDS)
    assert open_input(str(wide)).shape == (200, 3)
    # --header no: the first row is data (what the user says)
    assert open_input(str(p), options=ReadOptions(header="no")).shape == (201,)
    assert open_input(str(p), options=ReadOptions(header="no")).read_all()[0] == 0
    result = runner.invoke(app, ["evaluate", str(p), str(t), "--loss", "mse", "--header", "no"])
    assert_usage_error(result, "shape (201,)")


def test_header_yes_and_a_text_first_row(tmp_path, runner, csv_parser):
    path = tmp_path / "n.csv"
    path.write_text("1,2\n3,4\n5,6\n")  # numbers: no header unless told
    assert open_input(str(path)).shape == (3, 2)
    told = open_input(f"{path}:1", options=ReadOptions(header="yes"))  # names "1", "2": "1" by name
    np.testing.assert_array_equal(told.read_all(), [3, 5])
    result = runner.invoke(app, ["evaluate", f"{path}:0", f"{path}:1", "--loss", "mse", "--header", "maybe"])
    assert_usage_error(result, "--header maybe", "auto, yes, no")


def test_pandas_index_column_is_left_out(tmp_path, runner, csv_parser):
    """Series(arr).to_csv() writes `,0` and an index column: read as read_csv(index_col=0) does."""
    p, t = tmp_path / "s.csv", tmp_path / "frame.csv"
    pd.Series(PREDS).to_csv(p)
    pd.DataFrame({"y": TARGETS, "p": PREDS}).to_csv(t)  # `,y,p` over 0..n-1
    arr = open_input(str(p))
    assert arr.shape == (200,)
    np.testing.assert_array_equal(arr.read_all(), PREDS)
    np.testing.assert_array_equal(open_input(f"{p}:0").read_all(), PREDS)  # by name "0"
    assert open_input(str(t)).shape == (200, 2)  # the index is no column
    np.testing.assert_array_equal(open_input(f"{t}:0").read_all(), TARGETS)  # index 0 = y, as index_col=0
    expected = pd.read_csv(t, index_col=0)
    np.testing.assert_array_equal(open_input(f"{t}:y,p").read_all(), expected.to_numpy())
    result = _mse(runner, p, f"{t}:y")
    assert _json_value(result) == pytest.approx(MSE, rel=1e-12)
    assert "index column" in result.stderr


# ----------------------------------------------------------------------------------- ragged rows


@pytest.mark.parametrize("text, line", [
    ("a,b\n1,2,3\n4,5,6\n7,8,9\n", 2),  # every row one field more: pandas would take an index column
    ("a,b\n1,2\n4\n7,8\n", 3),  # a short row: pandas pads it with NaN
    ("a,b\n1,2\n4,5\n7,8,9\n", 4),
    ('a,b\n1,2\n"4,5"\n', 3),  # quoted: one field
])
def test_a_ragged_row_is_an_error_naming_its_line(tmp_path, runner, csv_parser, text, line):
    path = tmp_path / "r.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=f"malformed row at line {line}"):
        open_input(f"{path}:a").read_all()
    result = runner.invoke(app, ["evaluate", f"{path}:a", f"{path}:b", "--loss", "mse"])
    assert_usage_error(result, f"line {line}", "same number of fields")


# ------------------------------------------------------------------------------------- delimiters


def test_delimiters_sniffed_and_given(tmp_path, runner, csv_parser):
    semi = tmp_path / "eu.csv"
    semi.write_text("p;t\n0.5;1.5\n2.5;2\n")
    np.testing.assert_array_equal(open_input(f"{semi}:t").read_all(), [1.5, 2])
    pipe = tmp_path / "pipe.csv"
    pipe.write_text("p|t\n1|2\n3|5\n")
    np.testing.assert_array_equal(open_input(f"{pipe}:t").read_all(), [2, 5])
    tsv = tmp_path / "d.tsv"
    tsv.write_text("p\tt\n1\t2\n3\t5\n")
    np.testing.assert_array_equal(open_input(f"{tsv}:t").read_all(), [2, 5])
    colon = tmp_path / "c.txt"
    colon.write_text("p:t\n1:2\n3:5\n")
    assert open_input(str(colon), options=ReadOptions(delimiter=":")).shape == (2, 2)
    for path in (semi, pipe):
        result = _mse(runner, f"{path}:p", f"{path}:t")
        assert result.exit_code == 0, result.stderr
    result = _mse(runner, f"{colon}:p", f"{colon}:t", "--delimiter", ":")
    assert _json_value(result) == pytest.approx(2.5)
    result = runner.invoke(app, ["evaluate", f"{colon}:p", f"{colon}:t", "--loss", "mse", "--delimiter", "::"])
    assert_usage_error(result, "--delimiter", "one character")


# ------------------------------------------------------------------------------------------ stdin


def test_stdin_csv_read_once_for_both_inputs(tmp_path, runner, csv_parser):
    text = pd.DataFrame({"p": PREDS, "t": TARGETS}).to_csv(index=False)
    result = runner.invoke(app, ["evaluate", "-:p", "-:t", "--loss", "mse", "--format", "json"], input=text)
    assert _json_value(result) == pytest.approx(MSE, rel=1e-12)
    assert json.loads(result.stdout)["inputs"]["preds"]["path"] == "-:p"
    np.save(tmp_path / "t.npy", TARGETS)
    result = runner.invoke(app, ["evaluate", "-:p", str(tmp_path / "t.npy"), "--loss", "mse", "-f", "json"],
                           input=text)
    assert _json_value(result) == pytest.approx(MSE, rel=1e-12)


def test_stdin_npy_is_told_by_its_magic(tmp_path, runner):
    buf = io.BytesIO()
    np.save(buf, PREDS)
    np.save(tmp_path / "t.npy", TARGETS)
    result = runner.invoke(app, ["evaluate", "-", str(tmp_path / "t.npy"), "--loss", "mse", "-f", "json"],
                           input=buf.getvalue())
    assert _json_value(result) == pytest.approx(MSE, rel=1e-12)
    result = runner.invoke(app, ["evaluate", "-", str(tmp_path / "t.npy"), "--loss", "mse"], input=b"")
    assert_usage_error(result, "preds (-)", "empty")


# ------------------------------------------------------------------------------------- compressed


@pytest.mark.parametrize("ext, pack", [("gz", gzip.compress), ("bz2", bz2.compress), ("xz", lzma.compress)])
def test_compressed_csv_is_read(tmp_path, runner, csv_parser, ext, pack):
    path = tmp_path / f"pt.csv.{ext}"
    path.write_bytes(pack(pd.DataFrame({"p": PREDS, "t": TARGETS}).to_csv(index=False).encode()))
    np.testing.assert_array_equal(open_input(f"{path}:p").read_all(), PREDS)
    result = _mse(runner, f"{path}:p", f"{path}:t")
    assert _json_value(result) == pytest.approx(MSE, rel=1e-12)
    bad = tmp_path / f"bad.csv.{ext}"
    bad.write_bytes(pack(b"a,b\n1,2\n3\n"))
    with pytest.raises(InputError, match="line 3"):
        open_input(f"{bad}:a").read_all()


def test_compressed_csv_in_many_blocks(tmp_path, monkeypatch):
    from lossctl.readers import csv

    monkeypatch.setattr(csv, "CSV_BLOCK_BYTES", 100)
    path = tmp_path / "pt.csv.gz"
    path.write_bytes(gzip.compress(pd.DataFrame({"p": PREDS, "t": TARGETS}).to_csv(index=False).encode()))
    np.testing.assert_array_equal(open_input(f"{path}:p,t").read_all(), np.column_stack([PREDS, TARGETS]))


def test_compressed_npy(tmp_path, runner):
    buf = io.BytesIO()
    np.save(buf, PREDS.reshape(100, 2))
    path = tmp_path / "p.npy.gz"
    path.write_bytes(gzip.compress(buf.getvalue()))
    arr = open_input(str(path))
    np.testing.assert_array_equal(arr.read(10, 20), PREDS.reshape(100, 2)[10:20])
    np.testing.assert_array_equal(arr.read(0, 5), PREDS.reshape(100, 2)[:5])  # a read behind: from the top
    np.save(tmp_path / "t.npy", TARGETS.reshape(100, 2))
    result = _mse(runner, path, tmp_path / "t.npy", "--chunk-size", "7")
    assert _json_value(result) == pytest.approx(MSE, rel=1e-12)


# ---------------------------------------------------------------------------------------- classes


def test_string_class_labels_need_classes(tmp_path, runner, csv_parser):
    logits = RNG.normal(size=(4, 3))
    np.save(tmp_path / "logits.npy", logits)
    labels = tmp_path / "labels.csv"
    labels.write_text("id,label\n1,cat\n2,bird\n3,dog\n4,cat\n")
    args = ["evaluate", str(tmp_path / "logits.npy"), f"{labels}:label", "--loss", "cross_entropy"]
    assert_usage_error(runner.invoke(app, args), "--classes")
    result = runner.invoke(app, [*args, "--classes", "cat,dog,bird", "-f", "json"])
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    expected = -np.mean(logp[np.arange(4), [0, 2, 1, 0]])
    assert _json_value(result) == pytest.approx(expected, rel=1e-12)
    assert_usage_error(runner.invoke(app, [*args, "--classes", "cat,dog"]), "'bird'", "line 3", "--classes cat,dog")
    arr = open_input(f"{labels}:label", options=ReadOptions(classes=("cat", "dog", "bird")))
    assert arr.dtype == np.int64
    np.testing.assert_array_equal(arr.read_all(), [0, 2, 1, 0])
    only = tmp_path / "only.csv"
    only.write_text("label\ncat\ndog\n")
    assert_usage_error(runner.invoke(app, ["evaluate", str(tmp_path / "logits.npy"), str(only),
                                           "--loss", "cross_entropy"]), "--classes")
    np.testing.assert_array_equal(open_input(str(only), options=ReadOptions(classes=("cat", "dog"))).read_all(),
                                  [0, 1])
    assert_usage_error(runner.invoke(app, [*args, "--classes", "cat,cat"]), "given twice")


# ----------------------------------------------------------------------------------------- empty


def test_inputs_without_elements_are_errors(tmp_path, runner):
    np.save(tmp_path / "e.npy", np.zeros((200, 0)))
    result = runner.invoke(app, ["evaluate", str(tmp_path / "e.npy"), str(tmp_path / "e.npy"), "--loss", "mse"])
    assert_usage_error(result, "no elements", "(200, 0)")
    np.savez(tmp_path / "e.npz", preds=np.zeros((5, 0)), targets=np.zeros((5, 0)))
    result = runner.invoke(app, ["evaluate", str(tmp_path / "e.npz"), "--loss", "mse"])
    assert_usage_error(result, "no elements", "(5, 0)")
    header_only = tmp_path / "h.csv"
    header_only.write_text("p,t\n")
    result = runner.invoke(app, ["evaluate", f"{header_only}:p", f"{header_only}:t", "--loss", "mse"])
    assert_usage_error(result, "no rows")
    with pytest.raises(InputError, match=r"no elements \(shape \(200, 0\)\)"):  # in-memory arrays too
        lossctl.evaluate(np.zeros((200, 0)), np.zeros((200, 0)), "mse", provenance=False)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    result = runner.invoke(app, ["evaluate", str(empty), str(empty), "--loss", "mse"])
    assert_usage_error(result, "empty")


# -------------------------------------------------------------------------------------- messages


def test_messages_name_the_selector_that_fixes_them(tmp_path, runner, csv_parser):
    both = tmp_path / "both.csv"
    both.write_text("p,t\n1,2\n3,4\n")
    assert_usage_error(runner.invoke(app, ["evaluate", str(both), "--loss", "mse"]), f"{both}:COL", f"{both}:p")
    np.save(tmp_path / "t.npy", np.zeros(2))
    assert_usage_error(runner.invoke(app, ["evaluate", str(both), str(tmp_path / "t.npy"), "--loss", "mse"]),
                       "shapes do not match", f"{both}:COL")
    np.savez(tmp_path / "k.npz", a=np.zeros(2), b=np.ones(2))
    assert_usage_error(runner.invoke(app, ["evaluate", str(tmp_path / "k.npz"), "--loss", "mse"]),
                       f"{tmp_path / 'k.npz'}:KEY", "--input NAME=")
    np.savez(tmp_path / "tri.npz", anc=np.zeros((2, 3)), pos=np.ones((2, 3)), neg=np.ones((2, 3)))
    assert_usage_error(runner.invoke(app, ["evaluate", str(tmp_path / "tri.npz"), "--loss", "triplet"]),
                       "--input anchor=FILE.npz:KEY")


def test_scoring_file_reads_csv_options(tmp_path, runner):
    labels = tmp_path / "labels.csv"
    labels.write_text("label\ncat\nbird\n")
    np.save(tmp_path / "logits.npy", np.zeros((2, 3)))
    (tmp_path / "s.yaml").write_text("version: 1\ninputs: {preds: logits.npy, targets: labels.csv}\n"
                                     "losses: [cross_entropy]\nclasses: [cat, dog, bird]\nheader: yes\n")
    result = runner.invoke(app, ["evaluate", "--config", str(tmp_path / "s.yaml"), "-f", "json"])
    assert _json_value(result) == pytest.approx(np.log(3))
    (tmp_path / "bad.yaml").write_text("version: 1\ninputs: {preds: logits.npy, targets: labels.csv}\n"
                                       "losses: [cross_entropy]\ndelimiter: ';;'\n")
    assert_usage_error(runner.invoke(app, ["evaluate", "--config", str(tmp_path / "bad.yaml")]), "delimiter")


def test_the_header_note_is_plain_text_in_the_report_and_no_strict_failure(tmp_path, runner):
    p, t = tmp_path / "p.csv", tmp_path / "t.npy"
    pd.DataFrame(PREDS).to_csv(p, index=False)
    np.save(t, TARGETS)
    result = runner.invoke(app, ["evaluate", str(p), str(t), "--loss", "mse", "-f", "json", "--strict"])
    assert result.exit_code == 0, result.stderr
    [note] = json.loads(result.stdout)["warnings"]
    assert note["level"] == "info" and "--header no" in note["message"] and "\ue000" not in note["message"]


def test_python_api_takes_the_csv_options(tmp_path):
    import lossctl
    from lossctl.errors import UsageError

    path = tmp_path / "d.csv"
    path.write_text("p|label\n0.5|dog\n0.25|cat\n")
    np.save(tmp_path / "logits.npy", np.zeros((2, 2)))
    report = lossctl.evaluate(str(tmp_path / "logits.npy"), f"{path}:label", "cross_entropy",
                              classes=["cat", "dog"], delimiter="|")
    assert report.results[0].value == pytest.approx(np.log(2))
    with pytest.raises(UsageError, match=r"header='maybe'"):
        lossctl.evaluate(f"{path}:p", f"{path}:p", "mse", header="maybe", delimiter="|")
    with pytest.raises(InputError, match=r"classes="):
        lossctl.evaluate(str(tmp_path / "logits.npy"), f"{path}:label", "cross_entropy", delimiter="|")
