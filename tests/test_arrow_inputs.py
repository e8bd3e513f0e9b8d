"""Parquet / Feather / Arrow IPC inputs and sharded inputs (SPEC §8 "More inputs", issue 11):
values against NumPy on the same arrays, column selection, list columns as (N, C), one decode of a
unit for both columns of a file, forward streaming of huge row groups, nulls, hostile files, shards
in natural order, and the error without pyarrow."""

from __future__ import annotations

import builtins
import hashlib
import json

import numpy as np
import pytest

from cli_support import assert_usage_error
from lossctl.cli import app

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
from pyarrow import feather  # noqa: E402

from lossctl.readers import arrow as arrow_reader  # noqa: E402
from lossctl.readers import open_input  # noqa: E402
from lossctl.readers.shards import natural_key, partitions  # noqa: E402

RNG = np.random.default_rng(11)
N = 1000
P = RNG.normal(size=N).astype(np.float32)
T = (P + RNG.normal(scale=0.5, size=N)).astype(np.float32)
MSE = float(np.mean((P.astype(np.float64) - T.astype(np.float64)) ** 2))


def _value(result) -> float:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)["results"][0]["value"]


def _run(runner, *args, loss="mse"):
    return runner.invoke(app, ["evaluate", *map(str, args), "--loss", loss, "--format", "json"])


@pytest.fixture
def table():
    return pa.table({"id": np.arange(N), "y_pred": P, "y_true": T, "name": [f"r{i}" for i in range(N)]})


@pytest.fixture
def pq_file(tmp_path, table):
    path = tmp_path / "scores.parquet"
    pq.write_table(table, path, row_group_size=97)  # row groups that chunks cut through
    return path


# ---------------------------------------------------------------------------------- formats


def test_parquet_columns_by_name_and_index_equal_numpy(runner, pq_file):
    assert _value(_run(runner, f"{pq_file}:y_pred", f"{pq_file}:y_true")) == pytest.approx(MSE, rel=1e-6)
    assert _value(_run(runner, f"{pq_file}:1", f"{pq_file}:2")) == pytest.approx(MSE, rel=1e-6)


def test_parquet_value_is_the_npy_value(runner, pq_file, tmp_path):
    np.save(tmp_path / "p.npy", P)
    np.save(tmp_path / "t.npy", T)
    for loss in ("mse", "huber", "mae"):
        assert _value(_run(runner, f"{pq_file}:y_pred", f"{pq_file}:y_true", loss=loss)) == \
            _value(_run(runner, tmp_path / "p.npy", tmp_path / "t.npy", loss=loss))


@pytest.mark.parametrize("kind", ["feather", "arrow_file", "arrow_stream"])
def test_feather_and_arrow_ipc(runner, tmp_path, table, kind):
    batches = table.to_batches(max_chunksize=130)
    if kind == "feather":
        path = tmp_path / "s.feather"
        feather.write_feather(table, path, chunksize=130)
    else:
        path = tmp_path / "s.arrow"
        new = pa.ipc.new_file if kind == "arrow_file" else pa.ipc.new_stream
        with new(path, table.schema) as w:
            for b in batches:
                w.write_batch(b)
    assert _value(_run(runner, f"{path}:y_pred", f"{path}:y_true")) == pytest.approx(MSE, rel=1e-6)


def test_default_selection_is_the_numeric_columns(pq_file):
    arr = open_input(str(pq_file))
    assert arr.shape == (N, 3) and arr.columns == ("id", "y_pred", "y_true")
    np.testing.assert_array_equal(arr.read(5, 400)[:, 1], P[5:400])


def test_multi_column_selection_is_n_by_k(pq_file):
    arr = open_input(f"{pq_file}:y_true,y_pred")
    got = arr.read(0, N)
    np.testing.assert_array_equal(got, np.column_stack([T, P]))


@pytest.mark.parametrize("fixed", [True, False])
def test_list_columns_are_n_by_c_logits(runner, tmp_path, fixed):
    logits = RNG.normal(size=(300, 4))
    labels = RNG.integers(0, 4, size=300)
    flat = pa.array(logits.reshape(-1))
    col = pa.FixedSizeListArray.from_arrays(flat, 4) if fixed else \
        pa.ListArray.from_arrays(pa.array(np.arange(0, 1201, 4, dtype=np.int32)), flat)
    path = tmp_path / "logits.parquet"
    pq.write_table(pa.table({"logits": col, "label": labels}), path, row_group_size=64)
    arr = open_input(f"{path}:logits")
    assert arr.shape == (300, 4)
    np.testing.assert_array_equal(arr.read(10, 200), logits[10:200])
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    expected = -np.mean(logp[np.arange(300), labels])
    got = _value(_run(runner, f"{path}:logits", f"{path}:label", loss="cross_entropy"))
    assert got == pytest.approx(expected, rel=1e-12)


def test_both_columns_of_one_file_are_decoded_in_one_scan(runner, pq_file, monkeypatch):
    decoded = []
    real = arrow_reader._ArrowSource._decode_unit

    def counting(self, i):
        decoded.append((i, tuple(self.wanted)))
        return real(self, i)

    monkeypatch.setattr(arrow_reader._ArrowSource, "_decode_unit", counting)
    assert _value(_run(runner, f"{pq_file}:y_pred", f"{pq_file}:y_true")) == pytest.approx(MSE, rel=1e-6)
    units = pq.ParquetFile(pq_file).metadata.num_row_groups
    assert sorted(i for i, _ in decoded) == list(range(units))  # each row group once ...
    assert all(cols == ("y_pred", "y_true") for _, cols in decoded)  # ... with both columns


def test_huge_row_groups_stream_forward(runner, pq_file, monkeypatch):
    monkeypatch.setattr(arrow_reader, "MAX_UNIT_BYTES", 100)  # every row group "too big": streamed
    monkeypatch.setattr(arrow_reader, "STREAM_BATCH_ROWS", 61)
    arr = open_input(f"{pq_file}:y_pred")
    assert arr.sequential and not arr.can_view()
    assert _value(_run(runner, f"{pq_file}:y_pred", f"{pq_file}:y_true", "--chunk-size", "50")) == \
        pytest.approx(MSE, rel=1e-6)


def test_partitions_list_row_groups(pq_file):
    parts = partitions(open_input(f"{pq_file}:y_pred"))
    assert parts[0] == (str(pq_file), 0, 97) and parts[1][1] == 97
    assert sum(rows for _, _, rows in parts) == N


# ---------------------------------------------------------------------------------- nulls


def test_null_in_float_column_is_nan_under_the_nan_policy(runner, tmp_path):
    p = pa.array([1.0, None, 3.0, 4.0], type=pa.float32())
    path = tmp_path / "n.parquet"
    pq.write_table(pa.table({"p": p, "t": pa.array([1.5, 2.0, 2.0, 4.0])}), path)
    assert_usage_error(_run(runner, f"{path}:p", f"{path}:t"), "1 NaN value", "sample 1")
    got = _value(_run(runner, f"{path}:p", f"{path}:t", "--nan-policy", "omit"))
    assert got == pytest.approx(np.mean(np.array([0.5, 1.0, 0.0]) ** 2))


def test_null_in_int_column(runner, tmp_path):
    t = pa.table({"p": pa.array([1.0, 2.0, 3.0]), "label": pa.array([1, 0, None], type=pa.int64())})
    ipc = tmp_path / "n.arrow"  # nulls known from the batches' headers: NaN, as a blank CSV cell
    with pa.ipc.new_file(ipc, t.schema) as w:
        w.write_table(t)
    assert open_input(f"{ipc}:label").dtype == np.float64
    assert_usage_error(_run(runner, f"{ipc}:p", f"{ipc}:label"), "1 NaN value", "sample 2")
    assert _value(_run(runner, f"{ipc}:p", f"{ipc}:label", "--nan-policy", "omit")) == pytest.approx(((1 - 1) ** 2 + (2 - 0) ** 2) / 2)
    blind = tmp_path / "n.parquet"  # no statistics: the null is found when read
    pq.write_table(t, blind, write_statistics=False)
    assert open_input(f"{blind}:label").dtype == np.int64
    assert_usage_error(_run(runner, f"{blind}:p", f"{blind}:label"), "'label'", "null at row 2")


# ---------------------------------------------------------------------------------- hostile files


def test_hostile_parquet_is_one_error_line(runner, tmp_path, pq_file):
    data = pq_file.read_bytes()
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(data[: len(data) // 2])
    magic = tmp_path / "magic.parquet"
    magic.write_bytes(b"NOPE" + data[4:-4] + b"NOPE")
    text = tmp_path / "text.feather"
    text.write_text("y_pred,y_true\n1,2\n")
    ragged = tmp_path / "ragged.parquet"
    pq.write_table(pa.table({"l": pa.array([[1.0, 2.0], [3.0, 4.0], [5.0]])}), ragged)
    cases = [
        ([f"{cut}:y_pred", f"{pq_file}:y_true"], ["cut.parquet", "not a readable Parquet file"]),
        ([f"{magic}:y_pred", f"{pq_file}:y_true"], ["magic.parquet", "not a readable Parquet file"]),
        ([f"{text}:y_pred", f"{pq_file}:y_true"], ["text.feather", "Feather/Arrow IPC"]),
        ([f"{pq_file}:y_prd", f"{pq_file}:y_true"], ["no column 'y_prd'", "did you mean 'y_pred'", "columns: id"]),
        ([f"{pq_file}:name", f"{pq_file}:y_true"], ["column 'name' is text", "--classes"]),
        ([f"{pq_file}:9", f"{pq_file}:y_true"], ["no column '9'"]),
        ([f"{ragged}:l", f"{ragged}:l"], ["ragged", "row 2 has 1 values", "first row has 2"]),
    ]
    for args, needles in cases:
        assert_usage_error(_run(runner, *args), *needles)


def test_text_labels_with_classes(runner, tmp_path):
    probs = RNG.uniform(0.05, 0.95, size=50)
    labels = RNG.integers(0, 2, size=50)
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"p": probs, "y": pa.array(np.array(["neg", "pos"])[labels]).dictionary_encode()}), path)
    got = _value(runner.invoke(app, ["evaluate", f"{path}:p", f"{path}:y", "--loss", "bce", "--classes",
                                     "neg,pos", "--format", "json"]))
    assert got == pytest.approx(-np.mean(labels * np.log(probs) + (1 - labels) * np.log(1 - probs)), rel=1e-12)


def test_without_pyarrow_the_error_names_the_extra(runner, pq_file, monkeypatch):
    real = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name == "pyarrow" or name.startswith("pyarrow."):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    monkeypatch.setattr(arrow_reader, "_SOURCES", type(arrow_reader._SOURCES)())
    assert_usage_error(_run(runner, f"{pq_file}:y_pred", f"{pq_file}:y_true"), "pip install 'lossctl[parquet]'")


# ---------------------------------------------------------------------------------- shards


def _shard_bounds(sizes):
    edges = np.concatenate([[0], np.cumsum(sizes)])
    return list(zip(edges[:-1], edges[1:]))


def test_natural_order():
    assert sorted(["p/part-10.npy", "p/part-2.npy", "p/part-1.npy"], key=natural_key) == \
        ["p/part-1.npy", "p/part-2.npy", "p/part-10.npy"]


def test_sharded_parquet_and_npy_differently_sharded(runner, tmp_path):
    (tmp_path / "pq").mkdir()
    (tmp_path / "npy").mkdir()
    for i, (s, e) in zip([2, 10, 11], _shard_bounds([100, 350, 550])):  # part-2 first: natural order
        pq.write_table(pa.table({"y_pred": P[s:e], "y_true": T[s:e]}), tmp_path / "pq" / f"part-{i}.parquet",
                       row_group_size=64)
    for i, (s, e) in enumerate(_shard_bounds([999, 1])):
        np.save(tmp_path / "npy" / f"t-{i}.npy", T[s:e])
    (tmp_path / "pq" / "_SUCCESS").write_text("")  # a Spark marker is not a shard
    glob = f"{tmp_path}/pq/part-*.parquet:y_pred"
    assert _value(_run(runner, glob, tmp_path / "npy")) == pytest.approx(MSE, rel=1e-6)
    assert _value(_run(runner, f"{tmp_path}/pq:y_pred", f"{tmp_path}/pq:y_true")) == pytest.approx(MSE, rel=1e-6)
    arr = open_input(glob)
    np.testing.assert_array_equal(arr.read(0, N), P)
    assert [(s.rsplit("/", 1)[1], o, r) for s, o, r in partitions(arr)] == \
        [("part-2.parquet", 0, 100), ("part-10.parquet", 100, 350), ("part-11.parquet", 450, 550)]


def test_sharded_csv_and_digest_of_shards(runner, tmp_path):
    (tmp_path / "c").mkdir()
    for i, (s, e) in enumerate(_shard_bounds([400, 600])):
        (tmp_path / "c" / f"s{i}.csv").write_text("p,t\n" + "".join(f"{a!r},{b!r}\n" for a, b in
                                                                 zip(P[s:e].tolist(), T[s:e].tolist())))
    result = runner.invoke(app, ["evaluate", f"{tmp_path}/c:p", f"{tmp_path}/c:t", "--loss", "mse", "-f", "json",
                                 "--hash", "sha256"])
    assert _value(result) == pytest.approx(MSE, rel=1e-6)
    whole = hashlib.sha256(b"".join((tmp_path / "c" / f"s{i}.csv").read_bytes() for i in range(2))).hexdigest()
    assert json.loads(result.stdout)["provenance"]["inputs"]["preds"]["digest"] == f"sha256:{whole}"


def test_shard_errors(runner, tmp_path, pq_file):
    (tmp_path / "mixed").mkdir()
    np.save(tmp_path / "mixed" / "a.npy", P)
    (tmp_path / "mixed" / "b.csv").write_text("p\n1\n")
    assert_usage_error(_run(runner, tmp_path / "mixed", tmp_path / "mixed"), "mix formats", ".csv, .npy")
    assert_usage_error(_run(runner, f"{tmp_path}/none-*.parquet:y_pred", f"{pq_file}:y_true"),
                       "matches no files", "quote the pattern")
    (tmp_path / "short").mkdir()
    np.save(tmp_path / "short" / "a.npy", T[:600])
    np.save(tmp_path / "short" / "b.npy", T[600:990])
    assert_usage_error(_run(runner, f"{pq_file}:y_pred", tmp_path / "short"), "1000", "990")
    (tmp_path / "wide").mkdir()
    np.save(tmp_path / "wide" / "a.npy", np.zeros((3, 2)))
    np.save(tmp_path / "wide" / "b.npy", np.zeros((3, 3)))
    assert_usage_error(_run(runner, tmp_path / "wide", tmp_path / "wide"), "same shape after the rows axis")


def test_opened_inputs_pickle_for_other_processes(tmp_path, pq_file):
    """An engine may ship an opened input to a worker process: it reads the same rows there."""
    import pickle

    (tmp_path / "d").mkdir()
    for i, (s, e) in enumerate(_shard_bounds([300, 700])):
        pq.write_table(pa.table({"y_pred": P[s:e]}), tmp_path / "d" / f"p{i}.parquet", row_group_size=100)
    feather.write_feather(pa.table({"y_true": T}), tmp_path / "t.feather", chunksize=128)
    for spec, expected in [(f"{tmp_path}/d:y_pred", P), (f"{tmp_path}/t.feather:y_true", T),
                           (f"{pq_file}:y_pred", P)]:
        arr = open_input(spec)
        arr.read(0, 10)  # with decoded units and open handles behind it
        copy = pickle.loads(pickle.dumps(arr))
        np.testing.assert_array_equal(copy.read(250, 750), expected[250:750])
        assert partitions(copy) == partitions(arr)
