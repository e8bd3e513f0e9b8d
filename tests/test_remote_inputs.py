"""URL inputs through fsspec (SPEC §8, issue 11), offline: a moto S3 server on 127.0.0.1 (port 0,
once per session) holding a sharded Parquet dataset and an .npy; values against NumPy on the
concatenated arrays; ``--storage-option`` from the command line, the scoring file and the API."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cli_support import assert_usage_error
import lossctl
from lossctl.cli import app

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

RNG = np.random.default_rng(111)
N = 3000
P = RNG.normal(size=N).astype(np.float32)
T = (P + RNG.normal(scale=0.3, size=N)).astype(np.float32)
SIZES = [500, 1200, 1300]  # part-2, part-10, part-11: natural order
MSE = float(np.mean((P.astype(np.float64) - T.astype(np.float64)) ** 2))


@pytest.fixture(scope="session")
def s3():
    """A moto S3 server with bucket ``data``: ``ds/part-{2,10,11}.parquet`` and ``t.npy``."""
    import io

    import boto3

    mp = pytest.MonkeyPatch()
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        mp.setenv(key, "testing")
    mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="data")
    edges = np.concatenate([[0], np.cumsum(SIZES)])
    for i, s, e in zip([2, 10, 11], edges[:-1], edges[1:]):
        buf = io.BytesIO()
        pq.write_table(pa.table({"y_pred": P[s:e], "y_true": T[s:e]}), buf, row_group_size=256)
        client.put_object(Bucket="data", Key=f"ds/part-{i}.parquet", Body=buf.getvalue())
    buf = io.BytesIO()
    np.save(buf, T)
    client.put_object(Bucket="data", Key="t.npy", Body=buf.getvalue())
    client.put_object(Bucket="data", Key="cut.npy", Body=buf.getvalue()[:-100])
    client.put_object(Bucket="data", Key="t.csv", Body=b"t\n1\n")
    yield endpoint
    server.stop()
    mp.undo()


def _value(result) -> float:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)["results"][0]["value"]


def test_sharded_parquet_and_npy_on_s3(runner, s3):
    result = runner.invoke(app, ["evaluate", "s3://data/ds/part-*.parquet:y_pred", "s3://data/t.npy",
                                 "--loss", "mse", "-f", "json", "--chunk-size", "700",
                                 "--storage-option", f"client_kwargs.endpoint_url={s3}"])
    assert _value(result) == pytest.approx(MSE, rel=1e-6)
    import boto3

    etag = boto3.client("s3", endpoint_url=s3, region_name="us-east-1").head_object(Bucket="data", Key="t.npy")["ETag"]
    inputs = json.loads(result.stdout)["provenance"]["inputs"]
    assert inputs["targets"]["digest"] == "etag:" + etag.strip('"')  # the object's ETag, not a second download
    assert inputs["preds"]["digest"].startswith("etag-xxh3_128:")


def test_directory_both_columns_and_api(s3):
    opts = {"endpoint_url": s3}
    report = lossctl.evaluate("s3://data/ds:y_pred", "s3://data/ds:y_true", ["mse", "mae"], storage_options=opts)
    d = P.astype(np.float64) - T
    assert report.results[0].value == pytest.approx(MSE, rel=1e-6)
    assert report.results[1].value == pytest.approx(float(np.mean(np.abs(d))), rel=1e-6)


def test_storage_options_in_the_scoring_file(runner, s3, tmp_path):
    cfg = tmp_path / "scoring.yaml"
    cfg.write_text(f"inputs:\n  preds: s3://data/ds/*.parquet:y_pred\n  targets: s3://data/t.npy\n"
                   f"losses: [mse]\nstorage_options:\n  client_kwargs:\n    endpoint_url: {s3}\n")
    assert _value(runner.invoke(app, ["evaluate", "--config", str(cfg), "-f", "json"])) == pytest.approx(MSE, rel=1e-6)


def test_remote_errors(runner, s3):
    opt = ["--storage-option", f"client_kwargs.endpoint_url={s3}"]
    cases = [
        (["s3://data/nothing-*.parquet:y_pred", "s3://data/t.npy"], ["matches no files"]),
        (["s3://data/missing.npy", "s3://data/t.npy"], ["no such object", "s3://data/missing.npy"]),
        (["s3://data/t.csv", "s3://data/t.npy"], ["remote .csv inputs are not supported"]),
        (["s3://data/cut.npy", "s3://data/t.npy"], ["s3://data/cut.npy", "truncated"]),
        (["s3://data/ds/part-2.parquet:y_pred", "s3://data/t.npy"], ["3000", "500"]),
    ]
    for args, needles in cases:
        assert_usage_error(runner.invoke(app, ["evaluate", *args, "--loss", "mse", *opt]), *needles)
    assert_usage_error(runner.invoke(app, ["evaluate", "s3://data/t.npy", "s3://data/t.npy", "--loss", "mse",
                                           "--storage-option", "nonsense"]), "expected KEY=VALUE")


def test_remote_inputs_pickle_and_list_partitions(s3):
    import pickle

    from lossctl.readers import ReadOptions, open_input
    from lossctl.readers.shards import partitions

    read = ReadOptions(storage_options={"client_kwargs": {"endpoint_url": s3}})
    for spec, expected in [("s3://data/ds/*.parquet:y_true", T), ("s3://data/t.npy", T)]:
        arr = pickle.loads(pickle.dumps(open_input(spec, "x", read)))
        np.testing.assert_array_equal(arr.read(400, 1900), expected[400:1900])
    parts = partitions(open_input("s3://data/ds:y_pred", "x", read))
    assert [(url.rsplit("/", 1)[1], off, rows) for url, off, rows in parts] == \
        [("part-2.parquet", 0, 500), ("part-10.parquet", 500, 1200), ("part-11.parquet", 1700, 1300)]
