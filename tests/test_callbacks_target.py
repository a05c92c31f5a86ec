"""StopAtTarget: stops after the first epoch whose monitored value reaches the target."""

import numpy as np
import pytest
import tensorflow as tf

from callbacks import Checkpointer, StopAtTarget
from callbacks.checkpoint import list_checkpoints


class _Scripted(tf.keras.callbacks.Callback):
    """Puts scripted values of `val_mean_iou` into the epoch logs (None: no validation)."""

    def __init__(self, values):
        super().__init__()
        self.values = values

    def on_epoch_end(self, epoch, logs=None):
        if self.values[epoch] is not None:
            logs["val_mean_iou"] = self.values[epoch]


def _fit(values, target, tmp_path=None, **kwargs):
    model = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    stop = StopAtTarget(target, **kwargs)
    extra = [Checkpointer(str(tmp_path), every_epochs=10, verbose=0)] if tmp_path else []
    history = model.fit(np.zeros((4, 2)), np.zeros((4, 1)), epochs=len(values), verbose=0,
                        callbacks=[_Scripted(values), stop, *extra])
    return stop, len(history.history["loss"])


def test_stops_after_the_first_epoch_that_reaches_it_and_keeps_its_checkpoint(tmp_path,
                                                                               capsys):
    stop, epochs = _fit([0.3, None, 0.5, 0.7, 0.9], 0.5, tmp_path)
    assert (stop.reached, epochs) == ((3, 0.5), 3)
    assert "climseg: val_mean_iou 0.5000 reached the target 0.5 at epoch 3: stopping" in (
        capsys.readouterr().out)
    # every_epochs=10 would write none; the stop writes epoch 3's.
    assert [p.rsplit("/", 1)[1] for p in list_checkpoints(str(tmp_path))] == [
        "ckpt-e0003-s00000003"]


def test_epochs_without_the_value_are_passed_over_and_min_mode():
    stop, epochs = _fit([None, None, 0.9], 0.5)
    assert (stop.reached, epochs) == ((3, 0.9), 3)
    stop, epochs = _fit([0.3, 0.4, 0.9], 0.95)
    assert (stop.reached, epochs) == (None, 3)
    stop, epochs = _fit([0.9, 0.2, 0.1], 0.25, mode="min")
    assert stop.reached == (2, 0.2) and epochs == 2


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"target": float("nan")}, "StopAtTarget target must be a finite number; received "
                               "target=nan."),
    ({"target": 0.5, "mode": "up"}, "StopAtTarget mode must be 'max' or 'min'; received "
                                    "mode='up'."),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        StopAtTarget(**kwargs)
