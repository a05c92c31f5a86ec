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
