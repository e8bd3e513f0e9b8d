"""The README's Spark and Ray recipes (docs/recipes/): their merge logic runs here on pure-Python
stand-ins for the partitions (pickled states, shuffled arrival, merge in partition order); the real
Spark run needs pyspark and Java and is skipped without them (no dependency on either)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

RECIPES = Path(__file__).resolve().parents[1] / "docs" / "recipes"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _huber(d: np.ndarray, delta: float) -> np.ndarray:
    a = np.abs(d)
    return np.where(a <= delta, 0.5 * d * d, delta * (a - 0.5 * delta))


def test_spark_recipe_merge_with_stand_in_partitions():
    spark = _load("spark_merge")
    rng = np.random.default_rng(1)
    n = 5003
    df = pd.DataFrame({"row": np.arange(n), "y_pred": rng.standard_normal(n), "y_true": rng.standard_normal(n)})
    cuts = [0, 700, 701, 2600, 4000, n]
    out = []
    for pid, (a, b) in enumerate(zip(cuts, cuts[1:])):  # what mapInPandas does on each partition
        part = df.iloc[a:b]
        batches = [part.iloc[:len(part) // 2], part.iloc[len(part) // 2:]]  # Arrow batches of the partition
        fn = spark.partition_states("huber(delta=0.5)", "y_pred", "y_true", row_index="row",
                                    partition_id=lambda pid=pid: pid, worst=3)
        out.extend((r.partition, r.state) for frame in fn(iter(batches)) for r in frame.itertuples())
    empty = spark.partition_states("huber(delta=0.5)", "y_pred", "y_true", partition_id=lambda: 99)
    assert list(empty(iter([df.iloc[:0]]))) == []  # an empty partition yields nothing
    rng.shuffle(out)  # collect() order is not to be trusted: the merge sorts by partition
    result = spark.merge_in_order(out).result()
    per_row = _huber(df.y_pred.to_numpy() - df.y_true.to_numpy(), 0.5)
    assert result.value == pytest.approx(float(per_row.mean()), rel=1e-12)
    assert result.samples == n
    assert [i for i, _ in result.summary.worst] == list(np.argsort(-per_row, kind="stable")[:3])


def test_ray_recipe_merge_with_stand_in_tasks():
    ray = _load("ray_merge")
    rng = np.random.default_rng(2)
    p, t = rng.standard_normal((3001, 4)), rng.integers(0, 4, 3001)
    import pickle

    states = [pickle.loads(pickle.dumps(ray.block_state("cross_entropy", p[a:b], t[a:b], a)))  # Ray's transport
              for a, b in ray.blocks(len(p), 400)]
    z = p - p.max(axis=1, keepdims=True)
    ce = np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(t)), t]
    assert ray.merge_in_order(states).result().value == pytest.approx(float(ce.mean()), rel=1e-12)


@pytest.mark.skipif(importlib.util.find_spec("pyspark") is None or shutil.which("java") is None,
                    reason="the real Spark run needs pyspark and Java")
def test_spark_recipe_on_spark():  # pragma: no cover - not in CI (no pyspark)
    from pyspark.sql import SparkSession

    spark_merge = _load("spark_merge")
    session = SparkSession.builder.master("local[2]").appName("lossctl-test").getOrCreate()
    try:
        rng = np.random.default_rng(3)
        pdf = pd.DataFrame({"row": np.arange(20_000), "y_pred": rng.standard_normal(20_000),
                            "y_true": rng.standard_normal(20_000)})
        df = session.createDataFrame(pdf).repartitionByRange(4, "row").sortWithinPartitions("row")
        result = spark_merge.evaluate_spark(df, "mse", "y_pred", "y_true", row_index="row", worst=2)
        d = pdf.y_pred.to_numpy() - pdf.y_true.to_numpy()
        assert result.value == pytest.approx(float(np.mean(d * d)), rel=1e-12)
        assert result.summary.worst[0][0] == int(np.argmax(d * d))
    finally:
        session.stop()
