"""The steps train.py wires together, each called on its own (no subprocess)."""

import os

import numpy as np
import pytest
import tensorflow as tf

import callbacks
import data
import zoo


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("set")
    data.generate(root / "train", 7, 16, 24, seed=1)
    data.generate(root / "val", 3, 16, 24, seed=2)
    return root


def test_training_set_of_one_rank(files):
    said = []
    train_set = data.prepare_training_set([str(files / "train")], [str(files / "val")],
                                          batch_size=2, channels="TMQ,PSL", rank=0, size=1,
                                          say=said.append)
    assert (train_set.grid, train_set.input_shape) == ((16, 24), (16, 24, 2))
    assert train_set.steps == train_set.pass_batches == 3  # 7 files, whole batches of 2
    assert train_set.stats_path == str(files / "train" / "stats.h5") and not said
    from data.training_set import stats_next_to

    assert stats_next_to(str(files / "train")) == str(files / "train" / "stats.h5")
    assert train_set.channels == [0, 7] and len(train_set.val_files) == 3
    x, y = next(iter(train_set.train_dataset(0)))
    assert x.shape == (2, 16, 24, 2) and y.shape == (2, 16, 24)
    # The stream from global batch 4 is the uninterrupted stream's from there on.
    whole = [b[0].numpy() for b in train_set.train_dataset(0).take(6)]
    later = [b[0].numpy() for b in train_set.train_dataset(4).take(2)]
    for a, b in zip(whole[4:], later, strict=True):
        np.testing.assert_array_equal(a, b)
    assert len(list(train_set.validation_dataset())) == 2  # 3 files: 2 + 1
    longer = data.prepare_training_set([str(files / "train")], batch_size=2, steps_per_epoch=10)
    assert (longer.steps, longer.pass_batches, longer.validation_dataset()) == (10, 3, None)


@pytest.mark.parametrize("kwargs, source, message", [
    (dict(train_paths=["nowhere"]), "train", "nowhere"),
    (dict(val_paths=["nowhere"]), "validation", "nowhere"),
    (dict(stats_path="missing.h5"), "stats", "missing.h5: statistics file not found"),
    (dict(batch_size=8), "batch_size", "7 training samples over 1 rank(s) give no full batch"),
])
def test_training_set_errors_name_their_source(files, kwargs, source, message):
    arguments = dict(train_paths=[str(files / "train")], batch_size=2)
    arguments.update(kwargs)
    with pytest.raises(data.TrainingSetError, match=message.replace("(", r"\(").replace(
            ")", r"\)")) as err:
        data.prepare_training_set(**arguments)
    assert err.value.source == source


def test_resume_position_follows_the_step():
    assert callbacks.resume_position({"epoch": 2, "step": 20}, 10) == (2, 0, None)
    assert callbacks.resume_position({"epoch": 2, "step": 24}, 10) == (2, 4, None)
    epoch, done, note = callbacks.resume_position({"epoch": 2, "step": 24}, 4)
    assert (epoch, done) == (2, 0)
    assert note == ("checkpoint step 24 does not fall in epoch 3 at 4 steps per epoch (other "
                    "batch size?); starting that epoch from its beginning")


def test_resume_point(tmp_path):
    assert callbacks.resume_point(str(tmp_path)) is None
    model = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(1)])
    newest = callbacks.checkpoint.write_checkpoint(str(tmp_path), model, None, 1, 4)
    assert newest == str(tmp_path / "ckpt-e0001-s00000004")
    assert callbacks.resume_point(str(tmp_path), "auto") == newest
    with pytest.raises(callbacks.CheckpointError, match="--resume never: .* already holds "
                                                        "checkpoints"):
        callbacks.resume_point(str(tmp_path), "never")
    with pytest.raises(callbacks.CheckpointError, match="--resume nope: no such checkpoint"):
        callbacks.resume_point(str(tmp_path), "nope")
    assert callbacks.resume_point(str(tmp_path), newest) == newest


def test_optimizer_wrappers_in_their_order():
    opt = callbacks.build_optimizer("sgd", 0.1, larc=True, gradient_lag=1, distributed=False,
                                    precision="mixed_float16")
    chain = [type(opt).__name__]
    while hasattr(opt, "inner_optimizer"):
        opt = opt.inner_optimizer
        chain.append(type(opt).__name__)
    assert chain == ["LossScaleOptimizerV3", "GradientLag", "LARC", "SGD"]
    assert float(opt.momentum) == 0.9
    adamw = callbacks.build_optimizer("adamw", 0.1, weight_decay=0.01, larc=True,
                                      distributed=False)
    assert adamw.weight_decay == 0.0  # AdamW decays the weights itself, not LARC too
    with pytest.raises(ValueError, match="optimizer 'rmsprop'; expected one of sgd, adam"):
        callbacks.build_optimizer("rmsprop", 0.1, distributed=False)


def test_gradient_lag_buffer_size_and_bound():
    model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(3)])  # 15 floats
    assert callbacks.gradient_lag_bytes(2, 2, 5, model) == 2 * 15 * 4
    with pytest.raises(ValueError, match=r"the run has 10 steps \(2 epochs x 5\), so no lagged"):
        callbacks.gradient_lag_bytes(10, 2, 5, model)


def test_training_loss_applies_the_class_weight_policy():
    frequencies = [0.98, 0.001, 0.019]
    loss, weights = zoo.training_loss("weighted_ce", "sc18", frequencies)
    np.testing.assert_allclose(weights, zoo.class_weights(frequencies), rtol=1e-6)
    assert zoo.training_loss("weighted_ce", "sc18", None)[1] is None  # no statistics
    assert zoo.training_loss("focal", [1, 2, 3], gamma=1.0)[1] == [1.0, 2.0, 3.0]
    assert zoo.training_loss("weighted_ce", "none", frequencies)[1] is None
    loss, weights = zoo.training_loss("jaccard", "sc18", frequencies)
    assert weights is None and type(loss).__name__ == "JaccardLoss"


def test_learning_rate_stages_in_both_forms():
    assert callbacks.parse_stages("piece:20:0.5:40:0.1") == [(20, 0.5), (40, 0.1)]
    assert callbacks.parse_stages("4096:0.1,8192:0.01") == [(4096.0, 0.1), (8192.0, 0.01)]
    with pytest.raises(ValueError, match="'8192' is not POSITION:MULTIPLIER"):
        callbacks.parse_stages("4096:0.1,8192")


def test_default_dataset_is_made_once(tmp_path):
    said = []
    first = data.default_dataset(str(tmp_path), say=said.append)
    assert said[0].startswith("generating the default synthetic data set (48 train files")
    again = data.default_dataset(str(tmp_path), say=said.append)
    assert first == again and said[-1].startswith("using the synthetic data set in")
    assert len(data.list_files(first[0])) == 48 and os.path.isfile(
        os.path.join(first[0], "stats.h5"))


def test_validation_files_are_checked_before_training(files, tmp_path):
    import shutil

    val = tmp_path / "val"
    shutil.copytree(files / "val", val)
    broken = sorted(val.glob("data-*.h5"))[1]
    broken.write_bytes(broken.read_bytes()[:300])  # truncated
    with pytest.raises(data.TrainingSetError, match=rf"^{broken}: cannot be opened") as err:
        data.prepare_training_set([str(files / "train")], [str(val)], batch_size=2)
    assert err.value.source == "validation"
    other = tmp_path / "other"
    data.generate(other, 2, 32, 24, seed=3, stats=False)
    with pytest.raises(data.TrainingSetError, match="the validation files' grid is 32x24, the "
                                                    "training files' 16x24"):
        data.prepare_training_set([str(files / "train")], [str(other)], batch_size=2)


def _accumulated_fit(batch, accumulate, epochs=2):
    """A small convolutional net (no batch norm) fit on 12 fixed samples; returns its weights,
    the optimizer's iterations, its rate after every batch, and the optimizer."""
    import horovod.tensorflow.keras as hvd

    hvd.init()  # one process: the allreduce is the identity, the aggregation is Horovod's
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([
        tf.keras.Input((8, 8, 2)),
        tf.keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
        tf.keras.layers.Conv2D(3, 1)])
    schedule = callbacks.MultiStageSchedule(0.05, [(2, 0.5)], unit="step", warmup=1,
                                            warmup_start=0.5, steps_per_update=accumulate)
    optimizer = callbacks.build_optimizer("sgd", schedule, larc=True, accumulate=accumulate)
    model.compile(optimizer, tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(1)
    x = rng.normal(size=(12, 8, 8, 2)).astype("float32")
    y = rng.integers(0, 3, size=(12, 8, 8))
    rates = []
    model.fit(x, y, batch_size=batch, epochs=epochs, shuffle=False, verbose=0,
              callbacks=[tf.keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, _: (
                  rates.append(float(model.optimizer.learning_rate))))])
    return model.get_weights(), int(optimizer.iterations), rates, optimizer


def test_accumulating_n_batches_of_b_is_one_step_of_n_times_b():
    accumulated, iterations, rates, optimizer = _accumulated_fit(batch=2, accumulate=3)
    whole, whole_iterations, whole_rates, _ = _accumulated_fit(batch=6, accumulate=1)
    # SGD with momentum, LARC and the schedule: the same 4 updates, to float32 round-off.
    for a, b in zip(accumulated, whole, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)
    # Horovod aggregates 3 backward passes, then allreduces once per update.
    assert optimizer._agg_helper.backward_passes_per_step == 3
    assert optimizer._agg_helper.average_aggregated_gradients
    # `iterations` counts micro-batches; the schedule counts updates (x0.5 from update 2),
    # the warmup too (update 0 at half rate). The rate held changes when an update applies.
    assert (iterations, whole_iterations) == (12, 4)
    half, full = float(np.float32(0.025)), float(np.float32(0.05))
    assert whole_rates == [half, full, half, half]
    assert rates == [half] * 5 + [full] * 3 + [half] * 4
    # The comparison can fail: updates on batches of 2 give other weights.
    single, _, _, _ = _accumulated_fit(batch=2, accumulate=1)
    assert max(np.abs(a - b).max() for a, b in zip(single, whole, strict=True)) > 1e-3


def test_accumulation_needs_horovod_and_no_lag():
    with pytest.raises(ValueError, match="accumulate=2 needs distributed=True"):
        callbacks.build_optimizer("sgd", 0.1, accumulate=2, distributed=False)
    with pytest.raises(ValueError, match="and no gradient_lag"):
        callbacks.build_optimizer("sgd", 0.1, accumulate=2, gradient_lag=1)
