"""Atomic checkpoints: keep-K, best, restore of model and optimizer state, full disk."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from callbacks.checkpoint import (
    Checkpointer,
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    read_meta,
    restore_checkpoint,
    write_checkpoint,
)


def _model(seed=0):
    tf.keras.utils.set_random_seed(seed)
    model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(3, name="d1"),
                                 tf.keras.layers.Dense(1, name="d2")])
    model.compile(tf.keras.optimizers.Adam(0.01), "mse")
    return model


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 4)).astype("float32")
    return x, x.sum(axis=1, keepdims=True)


class _ValIoU(tf.keras.callbacks.Callback):
    """Puts a scripted `val_mean_iou` into the epoch logs (before the checkpointer)."""

    def __init__(self, values):
        super().__init__()
        self.values = values

    def on_epoch_end(self, epoch, logs=None):
        logs["val_mean_iou"] = self.values[epoch]


def test_keeps_last_k_and_the_best(tmp_path):
    model = _model()
    x, y = _data()
    ckpt = Checkpointer(str(tmp_path), keep=2, verbose=0)
    model.fit(x, y, batch_size=8, epochs=5, verbose=0,
              callbacks=[_ValIoU([0.1, 0.5, 0.3, 0.2, 0.4]), ckpt])
    names = [os.path.basename(p) for p in list_checkpoints(str(tmp_path))]
    assert names == ["ckpt-e0004-s00000008", "ckpt-e0005-s00000010"]
    best = read_meta(str(tmp_path / "best"))
    assert (best["epoch"], best["step"]) == (2, 4)
    assert best["metrics"]["val_mean_iou"] == pytest.approx(0.5)
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p or ".old" in p]


def test_restore_gives_back_weights_and_optimizer_state(tmp_path):
    x, y = _data()
    model = _model()
    model.fit(x, y, batch_size=8, epochs=3, verbose=0)
    path = write_checkpoint(str(tmp_path), model, model.optimizer, epoch=3, step=6,
                            meta={"model": "tiny"})
    # Continue the original for two epochs: the reference.
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)

    other = _model(seed=1)
    meta = restore_checkpoint(path, other, other.optimizer, expect_model="tiny")
    assert (meta["epoch"], meta["step"]) == (3, 6)
    assert int(other.optimizer.iterations.numpy()) == 6
    # Adam moments were restored too.
    other.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
    for a, b in zip(model.get_weights(), other.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_checkpoint_of_another_model_is_refused_by_name(tmp_path):
    model = _model()
    path = write_checkpoint(str(tmp_path), model, model.optimizer, 1, 2, meta={"model": "tiramisu"})
    with pytest.raises(CheckpointError, match="written for model 'tiramisu', not 'deeplabv3plus'"):
        restore_checkpoint(path, _model(), expect_model="deeplabv3plus")


def test_incomplete_checkpoint_is_ignored(tmp_path):
    model = _model()
    good = write_checkpoint(str(tmp_path), model, model.optimizer, 1, 2)
    # A crash mid-write leaves a temporary directory and no meta.json.
    os.makedirs(tmp_path / "ckpt-e0002-s00000004.tmp-123")
    os.makedirs(tmp_path / "ckpt-e0003-s00000006")
    assert latest_checkpoint(str(tmp_path)) == good
    with pytest.raises(CheckpointError, match="meta.json is missing"):
        read_meta(str(tmp_path / "ckpt-e0003-s00000006"))


def test_nan_state_is_not_written(tmp_path):
    model = _model()
    x, y = _data()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[Checkpointer(str(tmp_path),
                                                                               verbose=0)])
    before = latest_checkpoint(str(tmp_path))
    y_bad = y.copy()
    y_bad[0] = np.nan
    model.fit(x, y_bad, batch_size=8, epochs=2, verbose=0,
              callbacks=[Checkpointer(str(tmp_path), verbose=0)])
    assert latest_checkpoint(str(tmp_path)) == before


def test_full_disk_reports_and_keeps_earlier_checkpoints(small_disk):
    model = _model()
    first = write_checkpoint(str(small_disk), model, model.optimizer, 1, 2)
    with open(small_disk / "filler", "wb") as f:  # fill the disk
        try:
            f.write(b"\0" * (4 << 20))
        except OSError:
            pass
    with pytest.raises(CheckpointError, match="could not write checkpoint .*ckpt-e0002.*"
                                              "Earlier checkpoints .* are intact"):
        write_checkpoint(str(small_disk), model, model.optimizer, 2, 4)
    assert list_checkpoints(str(small_disk)) == [first]
    assert not [p for p in os.listdir(small_disk) if ".tmp" in p]
    with open(os.path.join(first, "meta.json")) as f:
        assert json.load(f)["epoch"] == 1


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="keep must be a positive integer, got 0"):
        Checkpointer("x", keep=0)
    with pytest.raises(ValueError, match="mode must be 'max' or 'min', got 'up'"):
        Checkpointer("x", mode="up")


def _dropout_model(seed, rng_type="stateful"):
    tf.keras.utils.set_random_seed(seed)
    model = tf.keras.Sequential([
        tf.keras.Input((4,)), tf.keras.layers.Dense(8, name="d1"),
        tf.keras.layers.Dropout(0.5, rng_type=rng_type, name="drop"),
        tf.keras.layers.Dense(1, name="d2")])
    model.compile(tf.keras.optimizers.Adam(0.01), "mse")
    return model


def test_resume_repeats_the_dropout_masks_bit_for_bit(tmp_path):
    x, y = _data()
    fit = dict(batch_size=4, verbose=0, shuffle=False)
    whole = _dropout_model(0)
    whole.fit(x, y, epochs=1, **fit)
    path = write_checkpoint(str(tmp_path), whole, whole.optimizer, 1, 4)
    whole.fit(x, y, epochs=2, **fit)

    resumed = _dropout_model(1)  # another seed: everything must come from the checkpoint
    restore_checkpoint(path, resumed, resumed.optimizer)
    resumed.fit(x, y, epochs=2, **fit)
    for a, b in zip(whole.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)

    # Without the generator's state the masks differ: the test can tell.
    fresh = _dropout_model(1)
    fresh.load_weights(os.path.join(path, "model-weights.h5"))
    tf.train.Checkpoint(optimizer=fresh.optimizer).read(
        os.path.join(path, "state")).expect_partial()
    fresh.fit(x, y, epochs=2, **fit)
    assert any((a != b).any() for a, b in zip(whole.get_weights(), fresh.get_weights(),
                                              strict=True))


def test_weights_are_stored_once_and_the_stats_travel_with_the_checkpoint(tmp_path):
    model = _model()
    stats = tmp_path / "my-stats.h5"
    stats.write_bytes(b"stats")
    path = write_checkpoint(str(tmp_path / "c"), model, model.optimizer, 1, 2,
                            files={"stats.h5": str(stats)})
    keys = [key for key, _ in tf.train.list_variables(os.path.join(path, "state"))]
    assert keys and not [k for k in keys if k.startswith("model/")]
    assert (tmp_path / "c" / os.path.basename(path) / "stats.h5").read_bytes() == b"stats"


def test_a_checkpoint_that_also_holds_the_model_in_its_state_still_restores(tmp_path):
    model = _model()
    x, y = _data()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = write_checkpoint(str(tmp_path), model, model.optimizer, 1, 2)
    # The layout written before the weights were stored once: state holds the model too.
    tf.train.Checkpoint(model=model, optimizer=model.optimizer).write(
        os.path.join(path, "state"))
    os.remove(os.path.join(path, "model-weights.h5"))
    other = _model(seed=1)
    restore_checkpoint(path, other, other.optimizer)
    for a, b in zip(model.get_weights(), other.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_checkpointer_names_random_layers_it_cannot_save(tmp_path, capsys):
    model = _dropout_model(0, rng_type=None)
    x, y = _data()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[Checkpointer(str(tmp_path))])
    assert "1 random layer(s) (drop) use TensorFlow's legacy random ops" in capsys.readouterr().out
    quiet = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dropout(0.0),
                                 tf.keras.layers.Dense(1)])  # rate 0: draws nothing
    quiet.compile("sgd", "mse")
    quiet.fit(x, y, batch_size=8, epochs=1, verbose=0,
              callbacks=[Checkpointer(str(tmp_path / "q"))])
    assert "random layer" not in capsys.readouterr().out


def test_no_step_checkpoint_claims_an_epoch_whose_end_never_ran(tmp_path):
    # 4 steps per epoch, a checkpoint every 2 steps and none at epoch ends: step 4 and 8
    # are epochs' last batches, which only an epoch's end may save (with its metrics).
    model = _model()
    x, y = _data()
    model.fit(x, y, batch_size=4, epochs=2, verbose=0,
              callbacks=[Checkpointer(str(tmp_path), every_epochs=None, every_steps=2,
                                      keep=10, verbose=0)])
    names = [os.path.basename(p) for p in list_checkpoints(str(tmp_path))]
    assert names == ["ckpt-e0000-s00000002", "ckpt-e0001-s00000006"]


def test_a_checkpoint_from_before_the_in_graph_schedule_resumes(tmp_path):
    """Written when the rate was a plain variable (set by a callback); restored into an
    optimizer with a schedule, whose current-rate variable is recomputed at every step."""
    from callbacks import MultiStageSchedule

    x, y = _data()
    model = _model()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = write_checkpoint(str(tmp_path), model, model.optimizer, 1, 2)
    other = _model(seed=1)
    other.compile(tf.keras.optimizers.Adam(MultiStageSchedule(0.01, unit="step")), "mse")
    restore_checkpoint(path, other, other.optimizer)
    assert int(other.optimizer.iterations.numpy()) == 2
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    other.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(model.get_weights(), other.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    # Anything else missing is still refused.
    bigger = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(3, name="d1"),
                                  tf.keras.layers.Dense(1, name="d2")])
    bigger.compile(tf.keras.optimizers.SGD(MultiStageSchedule(0.01, unit="step"), momentum=0.9),
                   "mse")
    with pytest.raises(CheckpointError, match="does not fit this model/optimizer"):
        restore_checkpoint(path, bigger, bigger.optimizer)
