"""StopOnNonFinite: stops at the first check after a NaN loss, and reads nothing in between."""

import numpy as np
import pytest
import tensorflow as tf

from callbacks import Checkpointer, LearningRateLogger, StopOnNonFinite, Throughput


def _data(bad_batch=None, batches=10, batch_size=2):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batches * batch_size, 3)).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    if bad_batch is not None:
        y[bad_batch * batch_size] = np.nan
    return x, y


def _model():
    model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(1)])
    model.compile(tf.keras.optimizers.SGD(0.01), "mse")
    return model


class _Spy(StopOnNonFinite):
    """Records what the guard is handed after every batch, and when it reads."""

    def __init__(self, every):
        super().__init__(every=every, verbose=0)
        self.handed, self.read_after = [], []

    def on_train_batch_end(self, batch, logs=None):
        self.handed.append(type(logs["loss"]))
        before = self.checks
        super().on_train_batch_end(batch, logs)
        if self.checks > before:
            self.read_after.append(batch)


def test_stops_all_at_the_first_check_after_a_nan(capsys):
    x, y = _data(bad_batch=5)
    model = _model()
    counted = []
    stop = StopOnNonFinite(every=4)
    model.fit(x, y, batch_size=2, epochs=3, shuffle=False, verbose=0, callbacks=[
        stop, tf.keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, _: counted.append(b))])
    # The NaN of batch 5 shows in the epoch's running mean at the check after batch 7.
    assert stop.stopped and counted == list(range(8))
    assert stop.message == ("the training loss became nan by global step 8 (epoch batch 7; "
                            "checked every 4 steps) on 1 rank(s)")
    assert "climseg: stopping: the training loss became nan" in capsys.readouterr().out


def test_a_nan_in_the_last_batches_is_found_at_the_epoch_end():
    x, y = _data(bad_batch=9)
    stop = StopOnNonFinite(every=4, verbose=0)
    history = _model().fit(x, y, batch_size=2, epochs=3, shuffle=False, verbose=0,
                           callbacks=[stop])
    assert stop.stopped and len(history.history["loss"]) == 1
    assert "(the end of epoch 1; checked every 4 steps)" in stop.message


def test_no_host_read_between_checks(tmp_path):
    x, y = _data()
    model = _model()
    spy = _Spy(every=4)
    # With train.py's per-batch callbacks beside it, Keras still hands the logs over as
    # tensors: converting them to numpy would be a device sync after every batch.
    callbacks = [spy, LearningRateLogger(), Throughput(batch_size=2, verbose=0),
                 Checkpointer(str(tmp_path), every_steps=3, verbose=0)]
    assert tf.keras.callbacks.CallbackList(callbacks, model=model)._batch_hooks_support_tf_logs
    model.fit(x, y, batch_size=2, epochs=2, shuffle=False, verbose=0, callbacks=callbacks)
    assert not spy.stopped
    assert len(spy.handed) == 20 and all(issubclass(t, tf.Tensor) for t in spy.handed)
    # Two reads per 10-batch epoch (after batches 3 and 7) plus one at each epoch's end.
    assert spy.read_after == [3, 7, 3, 7] and spy.checks == 6
    # The checkpointer counts steps instead of reading them: every 3 steps mid-epoch, and
    # at the epoch ends (10, 20); the last three kept.
    names = sorted(p.name for p in tmp_path.glob("ckpt-*"))
    assert names[-3:] == ["ckpt-e0001-s00000015", "ckpt-e0001-s00000018",
                          "ckpt-e0002-s00000020"]


def test_every_is_checked():
    with pytest.raises(ValueError, match=r"StopOnNonFinite every must be an int >= 1; "
                                         r"received every=0\."):
        StopOnNonFinite(every=0)
