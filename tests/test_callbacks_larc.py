"""LARC against an independent numpy implementation, one process and two Horovod ranks.

The numpy reference here (a 5-4-1 tanh network with hand-written backprop,
SGD/Adam/AdamW as tf-keras defines them, LARC as in apex, gradient lag) is
also used by test_callbacks_gradient_lag.py, and the two-rank runs of both
files share one horovodrun launch (`two_rank_runs`).
"""

import json
from collections import deque

import numpy as np
import pytest
import tensorflow as tf
from conftest import WORKERS_DIR, run_horovod
from workers.callbacks_optimizers import build_optimizer  # the same as the ranks use

from callbacks import LARC

FEATURES, HIDDEN, PER_RANK, RANKS, STEPS = 5, 4, 4, 2, 5
VARIABLE_NAMES = ("kernel", "bias", "kernel", "bias")

# Optimizer specs, run by the numpy reference, by Keras in this process and by
# tests/workers/callbacks_optimizers.py under horovodrun.
CASES = {
    "larc_sgd_clip": {"inner": "sgd", "lr": 0.1, "momentum": 0.9,
                      "larc": {"eta": 0.02, "mode": "clip"}},
    "larc_adam_scale_wd": {"inner": "adam", "lr": 0.01,
                           "larc": {"eta": 0.002, "mode": "scale", "weight_decay": 0.01,
                                    "exclude": "bias"}},
    "larc_adamw_clip": {"inner": "adamw", "lr": 0.05, "weight_decay": 0.1,
                        "larc": {"eta": 0.01, "mode": "clip", "epsilon": 0.0}},
    "lag1_sgd": {"inner": "sgd", "lr": 0.1, "momentum": 0.9, "lag": 1},
    "lag2_adam": {"inner": "adam", "lr": 0.01, "lag": 2},
    "lag1_larc_adam": {"inner": "adam", "lr": 0.01, "lag": 1,
                       "larc": {"eta": 0.002, "mode": "clip"}},
}
# Stopped after `split` steps and resumed from rank 0's checkpoint (the worker's resume()).
RESUME = {"inner": "sgd", "lr": 0.1, "momentum": 0.9, "lag": 2, "split": 3}


# ---------------------------------------------------------------- numpy reference

def problem(steps=STEPS, ranks=RANKS):
    """Initial weights and `steps` combined batches of `ranks * PER_RANK` rows, float32."""
    rng = np.random.default_rng(7)
    limit1, limit2 = np.sqrt(6 / (FEATURES + HIDDEN)), np.sqrt(6 / (HIDDEN + 1))
    weights = [rng.uniform(-limit1, limit1, (FEATURES, HIDDEN)), np.zeros(HIDDEN),
               rng.uniform(-limit2, limit2, (HIDDEN, 1)), np.zeros(1)]
    x = rng.normal(size=(steps, ranks * PER_RANK, FEATURES))
    y = np.sin(x.sum(axis=2, keepdims=True)) + 0.1 * x[..., :1]
    return [w.astype("float32") for w in weights], x.astype("float32"), y.astype("float32")


def mlp_gradients(weights, x, y):
    """Gradients of mean((tanh(x W1 + b1) W2 + b2 - y)^2), by hand, in float64."""
    w1, b1, w2, b2 = weights
    h = np.tanh(x @ w1 + b1)
    d_out = 2.0 * (h @ w2 + b2 - y) / len(x)
    d_z = (d_out @ w2.T) * (1.0 - h**2)
    return [x.T @ d_z, d_z.sum(axis=0), h.T @ d_out, d_out.sum(axis=0)]


def numpy_larc(weights, grads, lr, eta=0.002, mode="clip", epsilon=1e-8, weight_decay=0.0,
               exclude=None):
    """apex LARC: factor * (g + wd * w), factor 1 where a norm is 0."""
    out = []
    for name, w, g in zip(VARIABLE_NAMES, weights, grads, strict=True):
        w_norm, g_norm = np.linalg.norm(w), np.linalg.norm(g)
        if (exclude and exclude in name) or w_norm == 0 or g_norm == 0:
            out.append(g)
            continue
        local = eta * w_norm / (g_norm + weight_decay * w_norm + epsilon)
        factor = min(local / lr, 1.0) if mode == "clip" else local
        out.append(factor * (g + weight_decay * w))
    return out


def numpy_run(spec, weights, xs, ys):
    """Trains like tf-keras would on the batches (xs[t], ys[t]); returns float64 weights."""
    w = [a.astype("float64") for a in weights]
    lr, lag = spec["lr"], spec.get("lag", 0)
    m = [np.zeros_like(a) for a in w]
    v = [np.zeros_like(a) for a in w]
    pending = deque()
    for step, (x, y) in enumerate(zip(xs.astype("float64"), ys.astype("float64"), strict=True)):
        grads = mlp_gradients(w, x, y)
        if lag:
            pending.append(grads)
            if len(pending) <= lag:
                continue  # nothing to apply yet; the step still counts
            grads = pending.popleft()
        if "larc" in spec:
            grads = numpy_larc(w, grads, lr, **spec["larc"])
        t = step + 1  # tf-keras: iterations + 1, and iterations counts every step
        for i, g in enumerate(grads):
            if spec["inner"] == "sgd":
                m[i] = spec.get("momentum", 0.0) * m[i] - lr * g
                w[i] = w[i] + m[i]
                continue
            if spec["inner"] == "adamw":
                w[i] = w[i] - w[i] * spec["weight_decay"] * lr
            m[i] = m[i] + (g - m[i]) * (1 - 0.9)
            v[i] = v[i] + (g * g - v[i]) * (1 - 0.999)
            alpha = lr * np.sqrt(1 - 0.999**t) / (1 - 0.9**t)
            w[i] = w[i] - m[i] * alpha / (np.sqrt(v[i]) + 1e-7)
    return w


# ---------------------------------------------------------------- Keras side



def build_model(weights):
    model = tf.keras.Sequential([
        tf.keras.Input((FEATURES,)),
        tf.keras.layers.Dense(HIDDEN, activation="tanh"),
        tf.keras.layers.Dense(1),
    ])
    model.set_weights(weights)
    return model


def keras_run(spec, weights, xs, ys):
    """model.fit over the batches in order, one step each, in this process."""
    model = build_model(weights)
    model.compile(optimizer=build_optimizer(spec), loss="mse")
    steps, rows = xs.shape[:2]
    model.fit(xs.reshape(steps * rows, -1), ys.reshape(steps * rows, -1), batch_size=rows,
              epochs=1, shuffle=False, verbose=0)
    return model


def assert_weights_close(actual, expected):
    for a, e in zip(actual, expected, strict=True):
        np.testing.assert_allclose(a, e, rtol=2e-5, atol=2e-6)


@pytest.fixture(scope="session")
def two_rank_runs(tmp_path_factory):
    """CASES and RESUME under `horovodrun -np 2` in one launch: {case: [rank0, rank1]}."""
    root = tmp_path_factory.mktemp("callbacks_optimizers")
    weights, xs, ys = problem()
    np.savez(root / "problem.npz", *weights, xs=xs, ys=ys)
    (root / "cases.json").write_text(json.dumps(CASES))
    (root / "resume.json").write_text(json.dumps(RESUME))
    run_horovod([WORKERS_DIR / "callbacks_optimizers.py", root])
    runs = {}
    for case in [*CASES, "resume_continued", "resume_raw", "resume_averaged"]:
        runs[case] = []
        for rank in range(RANKS):
            with np.load(root / f"{case}_rank{rank}.npz") as f:
                runs[case].append([f[f"arr_{i}"] for i in range(len(f.files))])
    return runs


# ---------------------------------------------------------------- tests

LARC_CASES = [c for c in CASES if c.startswith("larc")]


@pytest.mark.parametrize("case", LARC_CASES)
def test_larc_matches_numpy_for_several_steps(case):
    weights, xs, ys = problem()
    model = keras_run(CASES[case], weights, xs, ys)
    expected = numpy_run(CASES[case], weights, xs, ys)
    assert_weights_close(model.get_weights(), expected)
    assert int(model.optimizer.iterations) == STEPS


def test_reference_would_see_a_missing_larc():
    """The comparison above can fail: without LARC the weights are elsewhere."""
    weights, xs, ys = problem()
    spec = dict(CASES["larc_sgd_clip"])
    with_larc = numpy_run(spec, weights, xs, ys)
    del spec["larc"]
    without = numpy_run(spec, weights, xs, ys)
    assert max(np.abs(a - b).max() for a, b in zip(with_larc, without, strict=True)) > 1e-2


def test_trust_ratio_clips_and_scales_as_published():
    """One step on one variable, numbers by hand: ||w|| = 5, ||g|| = 10."""
    w = tf.Variable([3.0, 4.0], name="w")
    g = tf.constant([6.0, 8.0])
    # local = 0.5 * 5 / (10 + 0.1 * 5 + 0.5) = 0.22727...
    for mode, lr, factor in (("clip", 1.0, 0.25 / 1.1), ("clip", 0.1, 1.0),
                             ("scale", 1.0, 0.25 / 1.1)):
        w.assign([3.0, 4.0])
        opt = LARC(tf.keras.optimizers.SGD(lr), eta=0.5, mode=mode, epsilon=0.5,
                   weight_decay=0.1)
        opt.apply_gradients([(g, w)])
        expected = np.array([3.0, 4.0]) - lr * factor * (np.array([6.0, 8.0]) + 0.1 * np.array(
            [3.0, 4.0]))
        np.testing.assert_allclose(w.numpy(), expected, rtol=1e-6)


def test_clip_uses_the_scheduled_rate_of_the_step_being_applied():
    """With a LearningRateSchedule inside, clip divides by the rate of this step."""
    schedule = tf.keras.optimizers.schedules.PiecewiseConstantDecay([0], [1.0, 0.01])
    w = tf.Variable([3.0, 4.0], name="w")
    opt = LARC(tf.keras.optimizers.SGD(schedule), eta=0.5, mode="clip", epsilon=0.0)
    g = tf.constant([6.0, 8.0])
    opt.apply_gradients([(g, w)])  # step 0, lr 1: local 0.25 -> factor 0.25
    np.testing.assert_allclose(w.numpy(), [3.0 - 1.5, 4.0 - 2.0], rtol=1e-6)
    w.assign([3.0, 4.0])
    opt.apply_gradients([(g, w)])  # step 1, lr 0.01: local / lr = 25 -> factor 1
    np.testing.assert_allclose(w.numpy(), [3.0 - 0.06, 4.0 - 0.08], rtol=1e-6)


@pytest.mark.parametrize("epsilon", [0.0, 1e-8])
def test_zero_norms_pass_the_gradient_through_without_nan(epsilon):
    zero_w = tf.Variable(tf.zeros(3), name="zero_w")
    zero_g_w = tf.Variable([1.0, 2.0, 2.0], name="zero_g")
    both_zero = tf.Variable(tf.zeros(3), name="both_zero")
    for mode in ("clip", "scale"):
        opt = LARC(tf.keras.optimizers.SGD(0.5), eta=0.002, mode=mode, epsilon=epsilon,
                   weight_decay=0.01)
        zero_w.assign(tf.zeros(3))
        opt.apply_gradients([(tf.constant([2.0, 0.0, -2.0]), zero_w), (tf.zeros(3), zero_g_w),
                             (tf.zeros(3), both_zero)])
        np.testing.assert_array_equal(zero_w.numpy(), [-1.0, 0.0, 1.0])  # factor 1, no decay
        np.testing.assert_array_equal(zero_g_w.numpy(), [1.0, 2.0, 2.0])
        np.testing.assert_array_equal(both_zero.numpy(), [0.0, 0.0, 0.0])


def test_excluded_variables_get_the_plain_update():
    kernel = tf.Variable([3.0, 4.0], name="dense/kernel")
    bias = tf.Variable([3.0, 4.0], name="dense/bias")
    opt = LARC(tf.keras.optimizers.SGD(1.0), eta=0.002, exclude=["bias", "gamma"])
    g = tf.constant([6.0, 8.0])
    opt.apply_gradients([(g, kernel), (g, bias)])
    np.testing.assert_allclose(bias.numpy(), [-3.0, -4.0])
    np.testing.assert_allclose(kernel.numpy(), [3.0 - 0.006, 4.0 - 0.008], rtol=1e-5)


def test_learning_rate_and_iterations_are_the_inner_optimizers():
    inner = tf.keras.optimizers.Adam(0.01)
    opt = LARC(inner)
    opt.learning_rate = 0.125
    assert float(inner.learning_rate) == 0.125
    assert opt.iterations is inner.iterations
    var = tf.Variable([1.0, 2.0])
    opt.apply_gradients([(tf.constant([0.1, 0.1]), var)])
    assert int(inner.iterations) == 1
    names = [v.name for v in opt.variables]
    assert names[0].startswith("iteration") and len(names) == 3  # iteration, m, v


def test_config_round_trip_keeps_every_hyperparameter():
    opt = LARC(tf.keras.optimizers.AdamW(0.003, weight_decay=0.02, beta_1=0.8), eta=0.004,
               mode="scale", epsilon=1e-6, weight_decay=0.001, exclude=["bias", "gamma"],
               name="my_larc")
    config = opt.get_config()
    again = LARC.from_config(config)
    assert again.get_config() == config
    assert config["inner_optimizer"]["config"]["beta_1"] == pytest.approx(0.8)
    hyper = (again.eta, again.mode, again.epsilon, again.weight_decay, again.exclude, again.name)
    assert hyper == (0.004, "scale", 1e-6, 0.001, ("bias", "gamma"), "my_larc")
    # Through Keras's registry, as saving a model does.
    restored = tf.keras.optimizers.deserialize(tf.keras.optimizers.serialize(opt))
    assert type(restored) is LARC and restored.get_config() == config


def test_horovod_rebuild_keeps_the_config():
    import horovod.tensorflow.keras as hvd

    opt = LARC(tf.keras.optimizers.SGD(0.2, momentum=0.5), eta=0.01, mode="scale")
    wrapped = hvd.DistributedOptimizer(opt)
    assert isinstance(wrapped, LARC)
    assert wrapped.get_config() == opt.get_config()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"eta": 0}, "LARC eta must be a number > 0; received eta=0."),
    ({"mode": "trust"}, "LARC mode must be one of ('clip', 'scale'); received mode='trust'."),
    ({"epsilon": -1.0}, "LARC epsilon must be a number >= 0; received epsilon=-1.0."),
    ({"exclude": "bias("}, "LARC exclude must be a regular expression"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace(".", r"\.")):
        LARC(tf.keras.optimizers.SGD(0.1), **kwargs)


def test_legacy_optimizer_is_refused():
    with pytest.raises(TypeError, match="LARC wraps a tf.keras.optimizers.Optimizer"):
        LARC(tf.keras.optimizers.legacy.SGD(0.1))


@pytest.mark.horovod
@pytest.mark.slow
@pytest.mark.parametrize("case", LARC_CASES)
def test_two_ranks_equal_one_process_on_the_combined_batch(two_rank_runs, case):
    weights, xs, ys = problem()
    rank0, rank1 = two_rank_runs[case]
    for a, b in zip(rank0, rank1, strict=True):
        np.testing.assert_array_equal(a, b)  # ranks stay bit-identical
    assert_weights_close(rank0, numpy_run(CASES[case], weights, xs, ys))
