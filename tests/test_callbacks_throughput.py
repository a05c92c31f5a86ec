"""Throughput: samples/s, sustained FLOP/s and efficiency, with a fake clock and on two ranks."""

import numpy as np
import pytest
import tensorflow as tf
from test_callbacks_metric_average import two_rank_fit  # noqa: F401  (one launch, three files)

from callbacks import Throughput, format_flops
from callbacks import throughput as throughput_module


class FakeClock:
    def __init__(self, times):
        self.times = list(times)

    def perf_counter(self):
        return self.times.pop(0)


def _epoch(callback, epoch, batches, logs):
    callback.on_epoch_begin(epoch)
    for batch in range(batches):
        callback.on_train_batch_begin(batch)
        callback.on_train_batch_end(batch)
    callback.on_epoch_end(epoch, logs)


def test_rates_from_the_timed_batches(monkeypatch, capsys):
    # Batch 0 is skipped; batches 1 and 2 take 10.0 -> 11.0 s; then 20.0 -> 20.5 s.
    monkeypatch.setattr(throughput_module, "time", FakeClock([10.0, 10.5, 11.0, 20.0, 20.5]))
    callback = Throughput(batch_size=4, flops_per_sample=2e12, single_rank_rate=5.0)
    callback.on_train_begin()
    logs = {"loss": 1.0}
    _epoch(callback, 0, 3, logs)
    assert logs == {"loss": 1.0, "samples_per_second": 8.0, "samples_per_second_total": 8.0,
                    "flops_per_second": 1.6e13, "parallel_efficiency": 1.6}
    assert capsys.readouterr().out == (
        "Throughput, epoch 1: 8 samples/s on rank 0, 8 samples/s on 1 rank, "
        "16 TFLOP/s sustained, parallel efficiency 160.0%\n")
    logs = {}
    _epoch(callback, 1, 2, logs)
    assert logs["samples_per_second"] == 8.0  # 1 batch of 4 in 0.5 s


def test_an_epoch_too_short_to_time_logs_nothing(monkeypatch, capsys):
    monkeypatch.setattr(throughput_module, "time", FakeClock([]))
    callback = Throughput(batch_size=4, skip_batches=2)
    callback.on_train_begin()
    logs = {}
    _epoch(callback, 0, 2, logs)
    assert logs == {}
    assert "epoch 1 has at most 2 batches on some rank; nothing timed" in capsys.readouterr().out


def test_format_flops_uses_si_prefixes():
    assert [format_flops(v) for v in (999.0, 2.5e9, 3.25e15, 1.13e18)] == [
        "999 FLOP/s", "2.5 GFLOP/s", "3.25 PFLOP/s", "1.13 EFLOP/s"]


def test_fit_puts_the_values_into_history():
    model = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.ones((40, 2), "float32")
    history = model.fit(x, x[:, :1], batch_size=4, epochs=2, verbose=0,
                        callbacks=[Throughput(batch_size=4, flops_per_sample=10.0, verbose=0)])
    rates = history.history["samples_per_second"]
    assert len(rates) == 2 and all(r > 0 for r in rates)
    assert history.history["samples_per_second_total"] == rates
    assert history.history["flops_per_second"] == [10.0 * r for r in rates]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"batch_size": 0}, "Throughput batch_size must be an int >= 1; received batch_size=0."),
    ({"batch_size": 2, "flops_per_sample": -1},
     "Throughput flops_per_sample must be a number > 0; received flops_per_sample=-1."),
    ({"batch_size": 2, "skip_batches": -1},
     "Throughput skip_batches must be an int >= 0; received skip_batches=-1."),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        Throughput(**kwargs)


@pytest.mark.horovod
@pytest.mark.slow
def test_two_ranks_are_timed_over_the_same_steps(two_rank_fit):  # noqa: F811
    ranks, stdout = two_rank_fit
    for epoch in range(3):
        rates = [r["after"][epoch]["samples_per_second"] for r in ranks]
        # Rank 1 starts its clock 0.3 s late and rank 0 waits for it inside the
        # timed steps: summing the rates would count rank 1's shorter window.
        assert rates[1] > 1.5 * rates[0] > 0
        for r in ranks:
            logs = r["after"][epoch]
            total = logs["samples_per_second_total"]
            assert total == pytest.approx(2 * rates[0], rel=1e-9)  # rank 0's time is the longest
            assert total < sum(rates)
            assert logs["flops_per_second"] == pytest.approx(1000.0 * total, rel=1e-12)
            assert logs["parallel_efficiency"] == pytest.approx(total / 200.0, rel=1e-12)
    lines = [line for line in stdout.splitlines() if "Throughput, epoch" in line]
    assert len(lines) == 3 and all(line.startswith("[0]") for line in lines), lines
    assert "samples/s on 2 ranks" in lines[0]
