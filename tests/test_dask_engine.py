"""``--engine dask`` (SPEC §8): every registry loss equals ``--engine local`` to 1e-12 relative on a
real two-process ``LocalCluster``; the CLI's ``--scheduler tcp://`` and ``local:2``; a worker killed
mid-run; an unreachable scheduler; dask arrays and a dask DataFrame through ``lossctl.evaluate``.

The cluster starts once for the module (spawned worker processes import lossctl, never this module:
everything submitted is lossctl's own code, and nothing here runs at import time but definitions).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")

import lossctl  # noqa: E402
from lossctl import dask_engine  # noqa: E402
from lossctl.registry import get_spec  # noqa: E402
from test_state_invariance import ALL, MERGE_RTOL, close, same_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CASES = [p.values[0] for p in ALL if p.values[0] is not None]


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    import logging

    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):  # a task killing 2 workers fails the run
        lc = LocalCluster(n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1",
                          dashboard_address=None, silence_logs=logging.ERROR)
    with lc, Client(lc) as client:
        yield client


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """``lossctl evaluate`` in a subprocess (for --plugin: its losses must not stay registered here)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "lossctl", "evaluate", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def _run(*args: str) -> subprocess.CompletedProcess:
    """``lossctl evaluate`` in this process (CliRunner), as a CompletedProcess."""
    from typer.testing import CliRunner

    from lossctl.cli import app

    r = CliRunner().invoke(app, ["evaluate", *args])
    return subprocess.CompletedProcess(args, r.exit_code, r.stdout, r.stderr)


def _files(tmp: Path, case, inputs: dict[str, np.ndarray]) -> dict:
    """The case's inputs as .npy files, as evaluate() takes them (positional by the loss's names)."""
    spec = get_spec(case.loss)
    paths = {}
    for name, arr in inputs.items():
        path = tmp / f"{case.id.replace('/', '_')}-{name}.npy"
        np.save(path, arr)
        paths[name] = str(path)
    kw = {"preds": paths.pop("preds", None), "targets": paths.pop("targets", None)}
    for role, name in zip(("preds", "targets"), spec.positional):
        if kw[role] is None and name in paths:
            kw[role] = paths.pop(name)
    kw["inputs"] = paths
    return kw


def test_every_registry_loss_dask_equals_local(cluster, tmp_path):
    """Each case cut into 4-6 partitions (cutting the fast paths' sub-chunk grids), merged in the
    tree: the value, every term and the sample count equal the local engine's to 1e-12 relative;
    whole-batch losses (mining, info_nce, cox_ph) too: each partition mines against the whole batch."""
    checked = set()
    for case in CASES:
        inputs = case.inputs()
        kw = _files(tmp_path, case, inputs)
        n = 1 if case.unbatched else max(a.shape[get_spec(case.loss).sample_axis(k)] for k, a in inputs.items())
        worst = 3 if case.loss in ("mse", "cross_entropy", "dice", "triplet") else 0
        local = lossctl.evaluate(loss=case.expr, worst=worst, provenance=False, **kw)
        dask = lossctl.evaluate(loss=case.expr, worst=worst, engine="dask", scheduler=cluster,
                                chunk_size=max(1, -(-n // 5)), **kw)
        assert dask.provenance["engine"]["name"] == "dask"
        assert dask.provenance["engine"]["partitions"] == (1 if n == 1 else len(range(0, n, max(1, -(-n // 5)))))
        same_result(dask.results[0], local.results[0], MERGE_RTOL, summary=bool(worst))
        # the pitfall checks see every partition and merge: the same warnings as one pass
        assert [(w.code, w.message) for w in dask.warnings] == [(w.code, w.message) for w in local.warnings]
        checked.add(case.loss)
    assert checked == {s.name for s in lossctl.registry.all_specs() if s.family != "custom"}


def test_partitions_follow_boundaries_and_cover_rows():
    class Sharded(lossctl.arrays.LazyArray):
        def boundaries(self):
            return [0, 3, 4, 5, 40, 90]

    arr = Sharded(path="x", shape=(100,), dtype=np.dtype("f4"))
    parts = dask_engine.partitions([arr], 100, 20)
    assert parts[0] == (0, 5)  # small shards joined up to 20 rows
    assert all(b - a <= 20 for a, b in parts) and parts[-1][1] == 100
    assert all(p[1] == q[0] for p, q in zip(parts, parts[1:]))
    assert {40, 90} <= {a for a, _ in parts}  # a partition never spans a shard boundary once cut
    assert dask_engine.partitions([lossctl.arrays.from_array(np.zeros(9))], 9, 2) == [(0, 9)]  # in memory: one


def test_pitfall_observers_merge_like_one_pass(cluster, tmp_path):
    """Class counts over partitions add up: the imbalance warning names the whole input's counts."""
    rng = np.random.default_rng(8)
    y = (rng.uniform(size=3000) < 0.04).astype(np.float64)
    np.save(tmp_path / "p.npy", rng.standard_normal(3000))
    np.save(tmp_path / "t.npy", y)
    kw = {"preds": str(tmp_path / "p.npy"), "targets": str(tmp_path / "t.npy"), "loss": "bce_with_logits"}
    local = lossctl.evaluate(**kw)
    dask = lossctl.evaluate(**kw, engine="dask", scheduler=cluster, chunk_size=500)
    assert [w.message for w in dask.warnings] == [w.message for w in local.warnings]
    assert len(dask.warnings) == 1 and f"{int(y.sum())} positives, {3000 - int(y.sum())} negatives" in \
        dask.warnings[0].message


def test_cli_tcp_and_local2_equal_local(cluster, tmp_path):
    rng = np.random.default_rng(3)
    p, t = rng.standard_normal((3000, 4)), rng.integers(0, 4, 3000)
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "t.npy", t)
    args = [str(tmp_path / "p.npy"), str(tmp_path / "t.npy"), "--loss", "cross_entropy", "--loss",
            "focal(gamma=1) + 0.5*multi_margin", "--format", "json", "--worst", "4", "--chunk-size", "700"]
    runs = {"local": _run(*args), "tcp": _run(*args, "--engine", "dask", "--scheduler", cluster.scheduler.address),
            "local:2": _cli(*args, "--engine", "dask", "--scheduler", "local:2")}
    docs = {}
    for k, r in runs.items():
        assert r.returncode == 0, (k, r.stderr)
        docs[k] = json.loads(r.stdout)
    assert docs["local"]["provenance"]["engine"]["name"] == "local"
    assert docs["tcp"]["provenance"]["engine"] == {"name": "dask", "workers": 2, "partitions": 5}
    assert docs["local:2"]["provenance"]["engine"] == {"name": "dask", "workers": 2, "partitions": 5}
    # the NumPy reference
    z = p - p.max(axis=1, keepdims=True)
    ce = float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(3000), t]))
    close(docs["local"]["results"][0]["value"], ce, 1e-12, "local vs numpy")
    for k in ("tcp", "local:2"):
        for r, ref in zip(docs[k]["results"], docs["local"]["results"]):
            close(r["value"], ref["value"], MERGE_RTOL, f"{k} {r['loss']}")
    # the same partitions on another cluster: the very same bits
    assert [r["value"] for r in docs["tcp"]["results"]] == [r["value"] for r in docs["local:2"]["results"]]
    assert docs["tcp"]["results"][0]["summary"]["worst"] == docs["local"]["results"][0]["summary"]["worst"]


def test_scoring_file_engine(cluster, tmp_path):
    rng = np.random.default_rng(4)
    np.save(tmp_path / "p.npy", rng.standard_normal(500))
    np.save(tmp_path / "t.npy", rng.standard_normal(500))
    (tmp_path / "s.yaml").write_text(f"inputs: {{preds: p.npy, targets: t.npy}}\nlosses: [huber]\nengine: dask\n"
                                     f"scheduler: {cluster.scheduler.address}\nchunk_size: 100\n"
                                     f"report: {{format: json}}\n")
    r = _run("--config", str(tmp_path / "s.yaml"))
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["provenance"]["engine"]["partitions"] == 5
    d = np.load(tmp_path / "p.npy") - np.load(tmp_path / "t.npy")
    close(doc["results"][0]["value"], float(np.mean(np.where(abs(d) < 1, 0.5 * d * d, abs(d) - 0.5))), 1e-12)


def test_unreachable_scheduler_is_exit_2_quickly(tmp_path):
    import socket

    np.save(tmp_path / "p.npy", np.zeros(4))
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    r = _run(str(tmp_path / "p.npy"), str(tmp_path / "p.npy"), "--loss", "mse", "--engine", "dask",
             "--scheduler", f"tcp://127.0.0.1:{port}")
    assert time.monotonic() - start < 15
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --scheduler tcp://127.0.0.1:") and "Traceback" not in r.stderr


@pytest.mark.parametrize("args, needle", [
    (["--engine", "spark"], "--engine must be local or dask"),
    (["--engine", "local", "--scheduler", "local:2"], "--scheduler is for --engine dask"),
    (["--engine", "dask", "--scheduler", "local:0"], "--scheduler local:0"),
    (["--engine", "dask", "--per-sample", "x.npy"], "--per-sample"),
])
def test_engine_usage_errors(tmp_path, args, needle):
    from typer.testing import CliRunner

    from cli_support import assert_usage_error, evaluate_arrays

    r = evaluate_arrays(CliRunner(), tmp_path, np.zeros(3), np.zeros(3), "--loss", "mse", *args)
    assert_usage_error(r, needle)


def test_missing_dask_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(lossctl.errors.UsageError, match=r"pip install 'lossctl\[dask\]'"):
        dask_engine.require()


KILLER = '''
import os
import numpy as np
from lossctl.registry import register_loss

@register_loss("dies_once", formula="mean((p-t)^2)", summary="mse that kills its worker once",
               use_when="tests", reference="-")
def dies_once(preds, targets):
    marker = {marker!r}
    if not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), 9)
    return (np.asarray(preds, dtype=np.float64) - targets) ** 2
'''


def test_worker_killed_mid_run_recovers_with_the_same_value(cluster, tmp_path):
    """The first partition task SIGKILLs its worker process; dask reruns it elsewhere (the nanny
    restarts the worker) and the value is the NumPy one, never one from fewer partitions."""
    rng = np.random.default_rng(5)
    p, t = rng.standard_normal(4000), rng.standard_normal(4000)
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "t.npy", t)
    plugin = tmp_path / "killer.py"
    plugin.write_text(KILLER.format(marker=str(tmp_path / "killed")))
    r = _cli(str(tmp_path / "p.npy"), str(tmp_path / "t.npy"), "--loss", "dies_once", "--plugin", str(plugin),
             "--engine", "dask", "--scheduler", cluster.scheduler.address, "--chunk-size", "1000",
             "--format", "json", timeout=90)
    assert (tmp_path / "killed").exists()  # a worker did die
    assert r.returncode == 0, r.stderr
    close(json.loads(r.stdout)["results"][0]["value"], float(np.mean((p - t) ** 2)), 1e-12)
    cluster.wait_for_workers(2, timeout=30)


def test_task_that_always_kills_its_worker_is_one_error_line(cluster, tmp_path):
    """Past the scheduler's allowed failures (1 in the fixture) the run stops: exit 2, one line."""
    np.save(tmp_path / "p.npy", np.zeros(10))
    plugin = tmp_path / "killer.py"
    plugin.write_text(KILLER.format(marker="/nonexistent/dir/marker").replace(
        'open(marker, "w").close()', "pass"))
    r = _cli(str(tmp_path / "p.npy"), str(tmp_path / "p.npy"), "--loss", "dies_once", "--plugin", str(plugin),
             "--engine", "dask", "--scheduler", cluster.scheduler.address, timeout=90)
    assert r.returncode == 2 and r.stdout == "", r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the dask cluster lost the workers"), r.stderr
    cluster.wait_for_workers(2, timeout=30)


def test_dask_arrays_and_dataframe(cluster):
    import dask.array as da
    import dask.dataframe as dd
    import pandas as pd

    rng = np.random.default_rng(6)
    p, t = rng.standard_normal((2000, 3)), rng.integers(0, 3, 2000)
    w = rng.uniform(0, 2, 2000)
    z = p - p.max(axis=1, keepdims=True)
    ce = np.log(np.exp(z).sum(axis=1)) - z[np.arange(2000), t]
    rep = lossctl.evaluate(da.from_array(p, chunks=(300, 3)), da.from_array(t, chunks=450), "cross_entropy",
                           weights=da.from_array(w, chunks=700), worst=2)
    close(rep.results[0].value, float(np.sum(w * ce) / np.sum(w)), 1e-12, "weighted cross_entropy")
    assert rep.provenance["engine"] == {"name": "dask", "workers": 2, "partitions": 7}
    assert rep.results[0].summary.worst[0][0] == int(np.argmax(ce))

    df = pd.DataFrame({"y_pred": p[:, 0], "y_true": p[:, 1] + 0.1})
    ddf = dd.from_pandas(df, npartitions=6)
    for data in (ddf, df):
        rep = lossctl.evaluate(preds="y_pred", targets="y_true", data=data, loss=["mse", "mae"])
        close(rep.results[0].value, float(np.mean((df.y_pred - df.y_true) ** 2)), 1e-12, "mse")
        close(rep.results[1].value, float(np.mean(abs(df.y_pred - df.y_true))), 1e-12, "mae")
    assert rep.provenance["engine"]["name"] == "local"
    # a whole-batch loss from dask arrays is one partition: the value of the whole batch
    emb, lab = rng.standard_normal((60, 4)), rng.integers(0, 3, 60)
    local = lossctl.evaluate(emb, lab, "triplet(mining=batch_hard)")
    rep = lossctl.evaluate(da.from_array(emb, chunks=(10, 4)), da.from_array(lab, chunks=10),
                           "triplet(mining=batch_hard)")
    assert rep.provenance["engine"]["partitions"] == 1
    close(rep.results[0].value, local.results[0].value, MERGE_RTOL)
    with pytest.raises(lossctl.errors.UsageError, match="no column 'nope'"):
        lossctl.evaluate(preds="nope", targets="y_true", data=ddf)
    assert math.isfinite(rep.results[0].value)


def test_npy_read_along_axis_1_is_clamped_by_that_axis(tmp_path):
    """CTC's log_probs (T, N, C) from an .npy with T < N: a chunk along axis 1 was cut at T rows."""
    from lossctl.readers import open_input

    x = np.arange(2 * 5 * 3, dtype=np.float64).reshape(2, 5, 3)
    np.save(tmp_path / "x.npy", x)
    np.testing.assert_array_equal(open_input(str(tmp_path / "x.npy")).read(1, 5, axis=1), x[:, 1:5])


def test_input_errors_found_on_workers_read_as_the_local_ones(cluster, tmp_path):
    p = np.random.default_rng(7).standard_normal(4000)
    p[[2500, 3100]] = np.nan
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "t.npy", np.clip(p, 0, 1))
    kw = {"preds": str(tmp_path / "p.npy"), "targets": str(tmp_path / "t.npy")}
    for loss in ("mse", "mae + mse"):
        with pytest.raises(lossctl.errors.InputError) as local:
            lossctl.evaluate(loss=loss, **kw)
        with pytest.raises(lossctl.errors.InputError) as dask:
            lossctl.evaluate(loss=loss, engine="dask", scheduler=cluster, chunk_size=1000, **kw)
        assert str(dask.value) == str(local.value)
        assert "2 NaN values (first at sample 2500)" in str(dask.value)
    np.save(tmp_path / "p.npy", np.where(np.isnan(p), 3.0, p))  # bce: preds outside [0, 1], counted over all rows
    np.save(tmp_path / "t.npy", np.clip(np.nan_to_num(p), 0, 1))
    with pytest.raises(lossctl.errors.InputError) as local:
        lossctl.evaluate(loss="bce", **kw)
    with pytest.raises(lossctl.errors.InputError) as dask:
        lossctl.evaluate(loss="bce", engine="dask", scheduler=cluster, chunk_size=1000, **kw)
    assert str(dask.value) == str(local.value)
    # a plugin's exception on a worker: exit 2 naming the plugin and the loss (SPEC §2)
    plugin = tmp_path / "broken.py"
    plugin.write_text(KILLER.replace("dies_once", "broken_loss").format(marker=str(plugin)).replace(
        "    return (np.asarray", "    raise ValueError('boom')\n    return (np.asarray"))
    r = _cli(kw["preds"], kw["targets"], "--loss", "broken_loss", "--plugin", str(plugin), "--engine", "dask",
             "--scheduler", cluster.scheduler.address)
    assert r.returncode == 2 and r.stderr.strip() == "error: plugin broken.py: loss 'broken_loss' raised ValueError: boom"


@pytest.mark.parametrize("loss, params, chunk", [
    ("cross_entropy", {}, lambda r, n: {"preds": r.dirichlet(np.ones(4), n), "targets": (r.uniform(size=n) < 0.05) * 1}),
    ("bce", {}, lambda r, n: {"preds": r.standard_normal(n), "targets": (r.uniform(size=n) < 0.5) * 1.0}),
    ("kl_div", {}, lambda r, n: {"preds": r.uniform(size=(n, 3)), "targets": r.dirichlet(np.ones(3), n)}),
    ("mse", {}, lambda r, n: {"preds": r.standard_normal(n), "targets": r.integers(0, 2, n) * 1.0}),
])
def test_observer_merge_equals_one_pass(loss, params, chunk):
    """A pitfalls Observer fed two halves and merged says what one fed the whole says."""
    from lossctl import pitfalls

    data = chunk(np.random.default_rng(9), 600)
    whole = pitfalls.observer(loss, params)
    whole(data)
    a, b = pitfalls.observer(loss, params), pitfalls.observer(loss, params)
    a({k: v[:250] for k, v in data.items()})
    b({k: v[250:] for k, v in data.items()})
    assert whole.messages(), "the case should warn"
    assert a.merge(b).messages() == whole.messages()


def test_relative_paths_reach_workers_with_another_working_directory(cluster, tmp_path, monkeypatch):
    """The workers started in another directory: relative input paths are made absolute first."""
    rng = np.random.default_rng(10)
    p, t = rng.standard_normal(900), rng.standard_normal(900)
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "t.npy", t)
    monkeypatch.chdir(tmp_path)
    assert cluster.run(os.getcwd) != {a: str(tmp_path) for a in cluster.scheduler_info()["workers"]}
    rep = lossctl.evaluate("p.npy", "t.npy", "mae", engine="dask", scheduler=cluster, chunk_size=200)
    close(rep.results[0].value, float(np.mean(np.abs(p - t))), 1e-12)
    assert rep.inputs["preds"]["path"] == "p.npy"  # (the report names them as given)


def test_every_registry_loss_from_dask_arrays(cluster):
    """``lossctl.evaluate`` on dask arrays (one state per chunk) = on the NumPy arrays: the first case of
    every loss (the file path above runs them all)."""
    import dask.array as da

    firsts = {}
    for case in CASES:
        firsts.setdefault(case.loss, case)
    for case in firsts.values():
        inputs = case.inputs()
        local = lossctl.evaluate(loss=case.expr, inputs=inputs, provenance=False)
        chunked = {k: da.from_array(v, chunks=(max(1, -(-len(v) // 4)),) + v.shape[1:]) for k, v in inputs.items()}
        rep = lossctl.evaluate(loss=case.expr, inputs=chunked)
        same_result(rep.results[0], local.results[0], MERGE_RTOL)
        whole = case.mining or case.unbatched or get_spec(case.loss).prepare is not None
        assert rep.provenance["engine"]["partitions"] == (1 if whole else len(chunked[next(iter(chunked))].chunks[0]))


def test_same_partitions_give_the_same_bits_on_any_cluster_size(cluster, tmp_path):
    """The merge tree depends on the partitions only: 2 worker processes, or one thread in this
    process (dask's synchronous scheduler), give bit-identical states."""
    import dask
    from dask import delayed

    rng = np.random.default_rng(11)
    np.save(tmp_path / "p.npy", rng.standard_normal(5000) * 1e3)
    np.save(tmp_path / "t.npy", rng.standard_normal(5000))
    ev = dask_engine.Evaluation(("huber + 0.1*mae", "mse"), "mean", "raise", 3, (True, True))
    files = dask_engine.FileInputs(str(tmp_path / "p.npy"), str(tmp_path / "t.npy"))
    leaves = [delayed(dask_engine._file_partition)(ev, files, s, min(5000, s + 333), (0, 1))
              for s in range(0, 5000, 333)]
    root = dask_engine.tree(leaves, split_every=4)
    on_cluster = cluster.compute(root).result()
    in_one_thread = dask.compute(root, scheduler="sync")[0]
    for a, b in zip(on_cluster.states, in_one_thread.states):
        ra, rb = a.result(), b.result()
        assert ra.value == rb.value and ra.summary == rb.summary
    local = lossctl.evaluate(files.preds, files.targets, ["huber + 0.1*mae", "mse"], provenance=False)
    for a, ref in zip(on_cluster.states, local.results):
        close(a.result().value, ref.value, MERGE_RTOL)


@pytest.mark.parametrize("method", ["auto", "jackknife", "bootstrap"])
def test_intervals_on_dask_equal_local(cluster, tmp_path, method):
    """--ci's buckets and resamples are keyed by global row, so dask partitions give the local interval."""
    rng = np.random.default_rng(11)
    n = 2500
    np.save(tmp_path / "p.npy", rng.standard_normal(n))
    np.save(tmp_path / "t.npy", rng.standard_normal(n))
    np.save(tmp_path / "w.npy", rng.uniform(0.5, 2.0, n))
    base = [str(tmp_path / "p.npy"), str(tmp_path / "t.npy"), "--loss", "mse", "--loss", "huber + 0.5*mae",
            "--ci", "--ci-method", method, "--resamples", "50", "--format", "json", "--chunk-size", "600"]
    for extra in ([], ["--weights", str(tmp_path / "w.npy")]):
        local = json.loads(_run(*base, *extra).stdout)
        r = _run(*base, *extra, "--engine", "dask", "--scheduler", cluster.scheduler.address)
        assert r.returncode == 0, r.stderr
        dask = json.loads(r.stdout)
        assert dask["provenance"]["engine"]["partitions"] == 5
        for a, b in zip(dask["results"], local["results"]):
            assert a["ci"]["method"] == b["ci"]["method"] != "clt" or not extra
            for key in ("low", "high", "se"):
                close(a["ci"][key], b["ci"][key], MERGE_RTOL, f"{method} {a['loss']} {key} {extra}")


def test_parquet_shards_on_dask_equal_numpy(cluster, tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rng = np.random.default_rng(12)
    p, t = rng.standard_normal(4000).astype("f4"), rng.standard_normal(4000).astype("f4")
    (tmp_path / "ds").mkdir()
    for i, (a, b) in enumerate(((0, 1000), (1000, 2500), (2500, 4000))):  # part-10 sorts after part-2
        pq.write_table(pa.table({"y_pred": p[a:b], "y_true": t[a:b]}), tmp_path / "ds" / f"part-{[1, 2, 10][i]}.parquet",
                       row_group_size=500)
    spec = str(tmp_path / "ds" / "part-*.parquet")
    r = _run(f"{spec}:y_pred", f"{spec}:y_true", "--loss", "mse", "--format", "json", "--engine", "dask",
             "--scheduler", cluster.scheduler.address, "--chunk-size", "700")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["provenance"]["engine"]["partitions"] > 1
    # float32 inputs: the per-element loss in float32 (PyTorch's semantics), the mean in float64
    close(doc["results"][0]["value"], float(np.mean(((p - t) ** 2).astype("f8"))), 1e-12, "parquet shards on dask")


@pytest.mark.parametrize("flag", ["--against", "--by"])
def test_dask_refuses_what_it_does_not_do_yet(tmp_path, flag):
    np.save(tmp_path / "p.npy", np.zeros(8))
    r = _run(str(tmp_path / "p.npy"), str(tmp_path / "p.npy"), "--loss", "mse", "--engine", "dask",
             "--scheduler", "local:1", flag, str(tmp_path / "p.npy"))
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and flag in lines[0], r.stderr


def test_concurrent_runs_on_one_cluster_never_share_a_task(cluster, tmp_path):
    """Two runs of the same shapes at once on one cluster: each gets its own value (task names carry
    a token of the run, not just the row range)."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(13)
    paths = []
    for k in range(4):
        np.save(tmp_path / f"p{k}.npy", rng.standard_normal(3000) * (k + 1))
        np.save(tmp_path / f"t{k}.npy", rng.standard_normal(3000))
        paths.append((str(tmp_path / f"p{k}.npy"), str(tmp_path / f"t{k}.npy")))

    def one(pt):
        return lossctl.evaluate(pt[0], pt[1], loss="mse", engine="dask", scheduler=cluster, chunk_size=500,
                                provenance=False).results[0].value

    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(one, paths))
    for (p, t), value in zip(paths, got):
        close(value, float(np.mean((np.load(p) - np.load(t)) ** 2)), 1e-12, p)
