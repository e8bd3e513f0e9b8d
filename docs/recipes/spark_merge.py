"""Spark: a lossctl loss over a Spark DataFrame, one ``LossState`` per partition (SPEC §8).

Each partition (``mapInPandas``) streams its pandas batches into one state and yields the state's
pickled bytes with its partition id; the driver unpickles them and merges in partition order. Only
``LossState`` crosses the cluster (a few KB per partition), never the rows. Run it::

    python docs/recipes/spark_merge.py          # needs pyspark and Java; a local[2] session

``row_index`` (optional): a column holding each row's global position (0, 1, ...), so the worst
samples' indices are rows of the whole DataFrame; it needs each partition to hold consecutive rows in
order (``repartitionByRange(k, col).sortWithinPartitions(col)``). Without it the indices are positions
in their partition. The value never depends on the partitioning.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from lossctl import LossState


def partition_states(expr: str, preds: str, targets: str, *, row_index: str | None = None,
                     partition_id: Callable[[], int] | None = None, **state_options: Any) -> Callable[..., Iterator[Any]]:
    """The function for ``df.mapInPandas(fn, schema="partition long, state binary")``."""

    def fn(batches: Iterable[Any]) -> Iterator[Any]:
        import pandas as pd

        state = LossState(expr, **state_options)
        for batch in batches:
            if len(batch):
                start = int(batch[row_index].iloc[0]) if row_index else None
                state.update(preds=batch[preds].to_numpy(), targets=batch[targets].to_numpy(), start=start)
        if state.rows:  # (an empty partition yields nothing)
            pid = partition_id() if partition_id else _spark_partition_id()
            yield pd.DataFrame({"partition": [pid], "state": [pickle.dumps(state)]})

    return fn


def _spark_partition_id() -> int:
    from pyspark import TaskContext

    return TaskContext.get().partitionId()


def merge_in_order(rows: Iterable[tuple[int, bytes]]) -> LossState:
    """Unpickle ``(partition, state bytes)`` rows and merge them in partition order."""
    states = [pickle.loads(blob) for _, blob in sorted(rows, key=lambda r: r[0])]
    if not states:
        raise ValueError("no partition held any rows")
    merged = states[0]
    for state in states[1:]:
        merged = merged.merge(state)
    return merged


def evaluate_spark(df: Any, expr: str, preds: str, targets: str, **options: Any) -> Any:
    """The loss over a Spark DataFrame: a ``lossctl.result.LossResult``."""
    fn = partition_states(expr, preds, targets, **options)
    rows = df.mapInPandas(fn, schema="partition long, state binary").collect()
    return merge_in_order((r["partition"], bytes(r["state"])) for r in rows).result()


if __name__ == "__main__":
    import numpy as np
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.master("local[2]").appName("lossctl-recipe").getOrCreate()
    rng = np.random.default_rng(0)
    y_true = rng.standard_normal(100_000)
    y_pred = y_true + rng.standard_normal(100_000)
    import pandas as pd

    df = spark.createDataFrame(pd.DataFrame({"row": np.arange(100_000), "y_pred": y_pred, "y_true": y_true}))
    result = evaluate_spark(df.repartitionByRange(8, "row").sortWithinPartitions("row"), "huber(delta=0.5)",
                            "y_pred", "y_true", worst=3)
    print(f"huber(delta=0.5) = {result.value:.12g} over {result.samples} rows")
    spark.stop()
