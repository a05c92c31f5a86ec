"""MetricAverage: scalar logs averaged over two Horovod ranks, before later callbacks read them.

The two-rank run (`two_rank_fit`) also exercises MultiStageSchedule and
Throughput; test_callbacks_learning_rate.py and test_callbacks_throughput.py
import the fixture so that one horovodrun launch serves all three.
"""

import json

import numpy as np
import pytest
import tensorflow as tf
from conftest import WORKERS_DIR, run_horovod

from callbacks import MetricAverage

# MultiStageSchedule arguments for the two-rank run (scale_by_ranks, steps_per_epoch added).
FIT_SCHEDULE = {"learning_rate": 0.01, "stages": [[1, 0.5], [2, 0.25]], "warmup": 2,
                "warmup_unit": "step", "warmup_start": 0.5}


@pytest.fixture(scope="session")
def two_rank_fit(tmp_path_factory):
    """`tests/workers/callbacks_fit.py` under horovodrun -np 2: ([rank0, rank1] json, stdout)."""
    out = tmp_path_factory.mktemp("callbacks_fit")
    proc = run_horovod([WORKERS_DIR / "callbacks_fit.py", out, json.dumps(FIT_SCHEDULE)])
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    return ranks, proc.stdout


def test_single_process_leaves_logs_alone():
    logs = {"loss": np.float32(1.5), "acc": 0.25, "confusion": np.ones((3, 3))}
    callback = MetricAverage()
    callback.on_epoch_end(0, logs)
    assert logs["loss"] == np.float32(1.5) and logs["acc"] == 0.25
    np.testing.assert_array_equal(logs["confusion"], np.ones((3, 3)))


def test_fit_with_one_process_records_the_plain_metrics():
    x = np.arange(20, dtype="float32").reshape(10, 2)
    model = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(1)])
    model.compile(optimizer=tf.keras.optimizers.SGD(0.0), loss="mse", metrics=["mae"])
    history = model.fit(x, x[:, :1], epochs=2, verbose=0, callbacks=[MetricAverage()])
    assert history.history["loss"][0] == pytest.approx(model.evaluate(x, x[:, :1], verbose=0)[0])


@pytest.mark.horovod
@pytest.mark.slow
def test_two_ranks_see_the_mean_of_their_metrics(two_rank_fit):
    ranks, _ = two_rank_fit
    before = [r["before"] for r in ranks]
    for epoch in range(len(before[0])):
        local = [b[epoch] for b in before]
        assert [v["rank_id"] for v in local] == [0.0, 1.0]  # each rank's own value
        assert local[0]["loss"] != local[1]["loss"]
        for r in ranks:
            after = r["after"][epoch]
            assert after["rank_id"] == 0.5
            assert after["loss"] == pytest.approx((local[0]["loss"] + local[1]["loss"]) / 2,
                                                  rel=1e-12)
            assert r["history"]["loss"][epoch] == after["loss"]  # History comes after too
    assert ranks[0]["history"]["loss"] == ranks[1]["history"]["loss"]


@pytest.mark.horovod
@pytest.mark.slow
def test_two_ranks_with_different_metrics_are_refused(two_rank_fit):
    ranks, _ = two_rank_fit
    for r in ranks:
        assert r["mismatch"] is not None and r["mismatch"].startswith(
            "MetricAverage at the end of epoch 1: ranks log different metrics; rank 0 has "
            "['loss', 'rank_id'], other ranks have {1: ['loss', 'mae', 'rank_id']}")
