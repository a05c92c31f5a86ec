"""GradientLag against a numpy simulation of lagged SGD/Adam, checkpoints, overlap, Horovod."""

import numpy as np
import pytest
import tensorflow as tf
from test_callbacks_larc import (  # noqa: F401  (two_rank_runs: one launch for both files)
    CASES,
    FEATURES,
    RESUME,
    STEPS,
    assert_weights_close,
    build_model,
    build_optimizer,
    keras_run,
    numpy_run,
    problem,
    two_rank_runs,
)

from callbacks import LARC, GradientLag

LAG_CASES = [c for c in CASES if "lag" in CASES[c]]


@pytest.mark.parametrize("case", LAG_CASES)
def test_lag_matches_numpy_simulation(case):
    weights, xs, ys = problem()
    model = keras_run(CASES[case], weights, xs, ys)
    assert_weights_close(model.get_weights(), numpy_run(CASES[case], weights, xs, ys))
    assert int(model.optimizer.iterations) == STEPS  # the skipped steps count too


def test_simulation_would_see_a_missing_lag():
    weights, xs, ys = problem()
    spec = dict(CASES["lag1_sgd"])
    lagged = numpy_run(spec, weights, xs, ys)
    del spec["lag"]
    plain = numpy_run(spec, weights, xs, ys)
    assert max(np.abs(a - b).max() for a, b in zip(lagged, plain, strict=True)) > 1e-2


def test_first_lag_steps_apply_nothing():
    weights, xs, ys = problem(steps=2)
    model = keras_run({"inner": "adam", "lr": 0.1, "lag": 2}, weights, xs, ys)
    for a, b in zip(model.get_weights(), weights, strict=True):
        np.testing.assert_array_equal(a, b)
    inner = model.optimizer.inner_optimizer
    assert int(inner.iterations) == 2
    assert all(not np.any(v.numpy()) for v in inner.variables[1:])  # Adam moments untouched


def test_lag_zero_is_the_inner_optimizer():
    weights, xs, ys = problem()
    lagged = keras_run({"inner": "sgd", "lr": 0.1, "momentum": 0.9, "lag": 0}, weights, xs, ys)
    plain = keras_run({"inner": "sgd", "lr": 0.1, "momentum": 0.9}, weights, xs, ys)
    for a, b in zip(lagged.get_weights(), plain.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def _fit_steps(model, xs, ys):
    steps, rows = xs.shape[:2]
    model.fit(xs.reshape(steps * rows, -1), ys.reshape(steps * rows, -1), batch_size=rows,
              epochs=1, shuffle=False, verbose=0)


@pytest.mark.parametrize("build_first", [True, False], ids=["built", "deferred"])
def test_resume_from_checkpoint_continues_exactly(tmp_path, build_first):
    """Stop after 3 of 6 steps, restore into new objects, finish: same as one run."""
    spec = {"inner": "adam", "lr": 0.01, "lag": 2, "larc": {"eta": 0.002}}
    weights, xs, ys = problem(steps=6)
    model = build_model(weights)
    model.compile(optimizer=build_optimizer(spec), loss="mse")
    _fit_steps(model, xs[:3], ys[:3])
    path = tf.train.Checkpoint(model=model, optimizer=model.optimizer).save(tmp_path / "ckpt")
    buffers = [v.numpy() for v in model.optimizer.variables if v.name.startswith("lag/")]
    assert buffers and all(np.any(b) for b in buffers)  # the buffer holds gradients
    halfway = model.get_weights()
    _fit_steps(model, xs[3:], ys[3:])

    resumed = build_model([np.zeros_like(w) for w in weights])
    resumed.compile(optimizer=build_optimizer(spec), loss="mse")
    if build_first:
        resumed.optimizer.build(resumed.trainable_variables)
    tf.train.Checkpoint(model=resumed, optimizer=resumed.optimizer).restore(path)
    _fit_steps(resumed, xs[3:], ys[3:])

    for a, b in zip(resumed.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert int(resumed.optimizer.iterations) == 6
    assert_weights_close(resumed.get_weights(), numpy_run(spec, weights, xs, ys))

    # The weights without the optimizer state (lag buffer, moments) give another result.
    fresh = build_model(halfway)
    fresh.compile(optimizer=build_optimizer(spec), loss="mse")
    _fit_steps(fresh, xs[3:], ys[3:])
    assert max(np.abs(a - b).max() for a, b in zip(
        fresh.get_weights(), model.get_weights(), strict=True)) > 1e-4


def test_lagged_gradient_does_not_depend_on_the_backward_pass():
    """What Horovod allreduces (compute_gradients' result) is ready before the backward pass.

    The test walks the traced graph from each returned gradient through data
    and control inputs, looking for the step's input `x` or any op of the
    backward pass (`gradient_tape/...`); with lag 0 it finds them.
    """
    weights, xs, ys = problem()

    def ancestors(tensor):
        seen, todo = set(), [tensor.op]
        while todo:
            op = todo.pop()
            if op.name in seen:
                continue
            seen.add(op.name)
            todo.extend(t.op for t in op.inputs)
            todo.extend(op.control_inputs)
        return seen

    for lag, depends in ((1, False), (2, False), (0, True)):
        model = build_model(weights)
        opt = GradientLag(LARC(tf.keras.optimizers.SGD(0.1)), lag=lag)

        @tf.function
        def step(x, y, model=model, opt=opt):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(model(x) - y))
            grads_and_vars = opt.compute_gradients(loss, model.trainable_variables, tape=tape)
            probes = [tf.identity(g, name="probe") for g, _ in grads_and_vars]
            opt.apply_gradients(zip(probes, model.trainable_variables, strict=True))
            return probes

        graph = step.get_concrete_function(
            tf.TensorSpec((None, FEATURES)), tf.TensorSpec((None, 1))).graph
        probes = [op for op in graph.get_operations() if op.name.startswith("probe")]
        assert len(probes) == len(weights)
        for probe in probes:
            found = any(name == "x" or name.startswith("gradient_tape")
                        for name in ancestors(probe.outputs[0]))
            assert found == depends, (lag, probe.name)


def test_apply_without_compute_gradients_is_refused():
    var = tf.Variable([1.0, 2.0])
    opt = GradientLag(tf.keras.optimizers.SGD(0.1), lag=1)
    with pytest.raises(RuntimeError, match=r"did not come from GradientLag\.compute_gradients"):
        opt.apply_gradients([(tf.constant([1.0, 1.0]), var)])


def test_minimize_in_a_custom_loop_is_lagged():
    var = tf.Variable([1.0, 2.0])
    opt = GradientLag(tf.keras.optimizers.SGD(0.5), lag=1)
    opt.minimize(lambda: tf.reduce_sum(var * var), [var])  # stores 2 * [1, 2]
    np.testing.assert_array_equal(var.numpy(), [1.0, 2.0])
    opt.minimize(lambda: tf.reduce_sum(var * var), [var])  # applies it
    np.testing.assert_array_equal(var.numpy(), [0.0, 0.0])
    assert int(opt.iterations) == 2


def test_config_round_trip_through_horovod_and_nesting():
    import horovod.tensorflow.keras as hvd

    opt = GradientLag(LARC(tf.keras.optimizers.Adam(0.002, beta_2=0.99), eta=0.003), lag=3,
                      name="lagged")
    config = opt.get_config()
    assert config["lag"] == 3 and config["inner_optimizer"]["registered_name"] == "climseg>LARC"
    again = GradientLag.from_config(config)
    assert again.get_config() == config
    assert isinstance(again.inner_optimizer, LARC) and again.inner_optimizer.eta == 0.003
    wrapped = hvd.DistributedOptimizer(opt)
    assert isinstance(wrapped, GradientLag) and wrapped.get_config() == config
    # train.py order: learning_rate reaches Adam through every layer.
    wrapped.learning_rate = 0.25
    assert float(wrapped.inner_optimizer.inner_optimizer.learning_rate) == 0.25


@pytest.mark.parametrize(("lag", "message"), [
    (-1, "GradientLag lag must be an int >= 0; received lag=-1."),
    (1.5, "GradientLag lag must be an int >= 0; received lag=1.5."),
])
def test_bad_lag_is_named(lag, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        GradientLag(tf.keras.optimizers.SGD(0.1), lag=lag)


@pytest.mark.horovod
@pytest.mark.slow
@pytest.mark.parametrize("case", LAG_CASES)
def test_two_ranks_equal_lagged_numpy_on_the_combined_batch(two_rank_runs, case):  # noqa: F811
    weights, xs, ys = problem()
    rank0, rank1 = two_rank_runs[case]
    for a, b in zip(rank0, rank1, strict=True):
        np.testing.assert_array_equal(a, b)
    assert_weights_close(rank0, numpy_run(CASES[case], weights, xs, ys))


@pytest.mark.horovod
@pytest.mark.slow
def test_two_ranks_resume_exactly_from_rank_0s_averaged_checkpoint(two_rank_runs):  # noqa: F811
    weights, xs, ys = problem()
    spec = {k: v for k, v in RESUME.items() if k != "split"}
    continued, averaged, raw = (two_rank_runs[f"resume_{n}"] for n in ("continued", "averaged",
                                                                     "raw"))
    for run in (continued, averaged, raw):
        for a, b in zip(*run, strict=True):
            np.testing.assert_array_equal(a, b)  # ranks agree
    # average_over_ranks() leaves the run unchanged; its checkpoint resumes it exactly.
    assert_weights_close(continued[0], numpy_run(spec, weights, xs, ys))
    for a, b in zip(averaged[0], continued[0], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # Rank 0's own buffer alone (no averaging) resumes with rank 0's gradients: wrong.
    assert max(np.abs(a - b).max() for a, b in zip(raw[0], continued[0], strict=True)) > 1e-4
