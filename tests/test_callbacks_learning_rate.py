"""MultiStageSchedule: exact in-graph rates for stages, warmup, decay, resume, and x ranks."""

import math

import numpy as np
import pytest
import tensorflow as tf
from test_callbacks_metric_average import (  # noqa: F401  (one launch for three test files)
    FIT_SCHEDULE,
    two_rank_fit,
)

from callbacks import (
    LARC,
    GradientLag,
    LearningRateLogger,
    MultiStageSchedule,
    learning_rate_of,
    parse_stages,
)


def test_parse_stages_reads_the_sc18_string():
    assert parse_stages("piece:20:0.5:40:0.1") == [(20, 0.5), (40, 0.1)]


@pytest.mark.parametrize(("text", "message"), [
    ("piece:20", "Learning-rate stages 'piece:20': expected 'piece:EPOCH:MULTIPLIER"),
    ("poly:2:40", "Learning-rate stages 'poly:2:40': expected"),
    ("piece:a:0.5", "Learning-rate stages 'piece:a:0.5': 'a':'0.5' is not EPOCH:MULTIPLIER"),
])
def test_parse_stages_names_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        parse_stages(text)


def _rates(schedule, steps):
    return [schedule.learning_rate_at(s) for s in steps]


def test_sc18_piece_multiplies_the_base_rate_from_each_epoch():
    schedule = MultiStageSchedule(0.01, "piece:2:0.5:4:0.1", steps_per_epoch=10)
    assert _rates(schedule, [0, 19, 20, 39, 40, 1000]) == [
        0.01, 0.01, 0.005, 0.005, 0.01 * 0.1, 0.01 * 0.1]


def test_absolute_stages_in_steps():
    schedule = MultiStageSchedule(1.0, [(0, 0.3), (5, 0.2)], unit="step", values="absolute")
    assert _rates(schedule, [0, 4, 5, 9]) == [0.3, 0.3, 0.2, 0.2]


def test_linear_warmup_from_a_start_factor():
    schedule = MultiStageSchedule(0.1, warmup=4, warmup_unit="step", warmup_start=0.25)
    assert _rates(schedule, [0, 1, 2, 3, 4, 50]) == [
        0.1 * 0.25, 0.1 * (0.25 + 0.75 / 4), 0.1 * (0.25 + 0.75 / 2), 0.1 * (0.25 + 0.75 * 3 / 4),
        0.1, 0.1]


def test_warmup_in_fractional_epochs():
    schedule = MultiStageSchedule(0.2, warmup=0.5, steps_per_epoch=4)
    assert _rates(schedule, [0, 1, 2]) == [0.0, 0.1, 0.2]


def test_cosine_and_poly_decay_in_the_last_stage():
    common = {"stages": [(10, 0.5)], "unit": "step", "decay_end": 20, "end_learning_rate": 0.1}
    cosine = MultiStageSchedule(1.0, decay="cosine", **common)
    assert _rates(cosine, [9, 10, 15, 20, 30]) == [
        1.0, 0.5, 0.1 + 0.4 * 0.5 * (1 + math.cos(math.pi / 2)), 0.1, 0.1]
    poly = MultiStageSchedule(1.0, decay="poly", decay_power=2.0, **common)
    assert _rates(poly, [10, 15, 20]) == [0.5, 0.1 + 0.4 * 0.25, 0.1]


def test_decay_starts_after_the_warmup():
    schedule = MultiStageSchedule(1.0, unit="step", warmup=4, decay="cosine", decay_end=14)
    assert _rates(schedule, [2, 4, 9, 14]) == [0.5, 1.0, 0.5 * (1 + math.cos(math.pi / 2)), 0.0]


def test_scale_by_ranks_without_horovod_is_one_rank():
    assert MultiStageSchedule(0.3, unit="step", scale_by_ranks=True).learning_rate_at(7) == 0.3


# --------------------------------------------------------------------------- in the graph

def _reference(step, lr, stages=(), warmup=0, warmup_start=0.0, decay=None, decay_begin=0,
               decay_end=0, power=1.0, end=0.0, per_update=1):
    """The rate at optimizer iteration `step`, written out independently (positions in steps,
    multiplier stages), as the float32 an optimizer holds."""
    step //= per_update
    rate = lr
    for start, multiplier in stages:
        rate = lr * multiplier if step >= start else rate
    if decay and step >= decay_begin:
        p = min((step - decay_begin) / (decay_end - decay_begin), 1.0)
        f = 0.5 * (1.0 + math.cos(math.pi * p)) if decay == "cosine" else (1.0 - p) ** power
        rate = end + (rate - end) * f
    if step < warmup:
        rate *= warmup_start + (1.0 - warmup_start) * step / warmup
    return float(np.float32(rate))


CONFIGS = [
    # (MultiStageSchedule kwargs, _reference kwargs): 4 steps per epoch where epochs are used.
    ({"learning_rate": 0.1, "stages": "piece:2:0.5:3:0.1", "warmup": 3, "warmup_unit": "step",
      "warmup_start": 0.5, "steps_per_epoch": 4},
     {"lr": 0.1, "stages": [(8, 0.5), (12, 0.1)], "warmup": 3, "warmup_start": 0.5}),
    ({"learning_rate": 0.003, "stages": [(5, 0.3), (9, 0.07)], "unit": "step"},
     {"lr": 0.003, "stages": [(5, 0.3), (9, 0.07)]}),
    ({"learning_rate": 0.7, "warmup": 1.5, "warmup_start": 0.1, "steps_per_epoch": 4},
     {"lr": 0.7, "warmup": 6, "warmup_start": 0.1}),
    ({"learning_rate": 0.05, "stages": [(4, 0.5)], "unit": "step", "decay": "cosine",
      "decay_end": 17, "end_learning_rate": 0.001, "warmup": 6},
     {"lr": 0.05, "stages": [(4, 0.5)], "warmup": 6, "decay": "cosine", "decay_begin": 6,
      "decay_end": 17, "end": 0.001}),
    ({"learning_rate": 0.2, "stages": [(1, 0.9)], "decay": "poly", "decay_power": 2.0,
      "decay_end": 4, "steps_per_epoch": 4},
     {"lr": 0.2, "stages": [(4, 0.9)], "decay": "poly", "decay_begin": 4, "decay_end": 16,
      "power": 2.0}),
    # Gradient accumulation: 3 iterations (micro-batches) per schedule step.
    ({"learning_rate": 0.1, "stages": [(2, 0.5)], "unit": "step", "warmup": 2,
      "warmup_start": 0.25, "steps_per_update": 3},
     {"lr": 0.1, "stages": [(2, 0.5)], "warmup": 2, "warmup_start": 0.25, "per_update": 3}),
]


@pytest.mark.parametrize(("kwargs", "reference"), CONFIGS)
def test_in_graph_rates_equal_an_independent_computation(kwargs, reference):
    schedule = MultiStageSchedule(**kwargs)
    steps = range(22)
    in_graph = tf.function(lambda s: schedule(s))
    got = [float(in_graph(tf.constant(s, tf.int64))) for s in steps]
    assert got == [_reference(s, **reference) for s in steps]
    # ... and equal the float32 of its Python twin (the rate the callback used to set).
    per_update = kwargs.get("steps_per_update", 1)
    assert got == [float(np.float32(schedule.learning_rate_at(s // per_update))) for s in steps]


def test_config_round_trips_through_an_optimizer_and_horovod():
    import horovod.tensorflow.keras as hvd

    schedule = MultiStageSchedule(**CONFIGS[0][0])
    opt = LARC(tf.keras.optimizers.SGD(schedule, momentum=0.9))
    restored = tf.keras.optimizers.deserialize(tf.keras.optimizers.serialize(opt))
    inner = restored.inner_optimizer._learning_rate
    assert type(inner) is MultiStageSchedule and inner.get_config() == schedule.get_config()
    assert hvd.DistributedOptimizer(opt).get_config() == opt.get_config()
    assert [float(inner(s)) for s in range(14)] == [float(schedule(s)) for s in range(14)]


def _fit(model, epochs, initial_epoch=0, logger=None):
    """3 steps per epoch; returns the rate of every step as the optimizer applied it, and
    History."""
    seen = []
    record = tf.keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda b, logs: seen.append(float(model.optimizer.learning_rate)))
    x = np.linspace(-1, 1, 24, dtype="float32").reshape(12, 2)
    history = model.fit(x, x[:, :1], batch_size=4, epochs=epochs, initial_epoch=initial_epoch,
                        shuffle=False, verbose=0, callbacks=[logger or LearningRateLogger(),
                                                             record])
    return seen, history.history


def _model(optimizer):
    model = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(1)])
    model.compile(optimizer=optimizer, loss="mse")
    return model


SCHEDULE = {"learning_rate": 0.1, "stages": "piece:2:0.5:3:0.1", "warmup": 2,
            "warmup_unit": "step", "warmup_start": 0.5, "steps_per_epoch": 3}


def _expected(steps):
    """SCHEDULE by hand, with 3 steps per epoch, as the float32 the optimizer holds."""
    out = []
    for s in steps:
        lr = 0.1 * {0: 1.0, 1: 1.0, 2: 0.5}.get(s // 3, 0.1)
        if s < 2:
            lr *= 0.5 + 0.5 * s / 2
        out.append(float(np.float32(lr)))
    return out


@pytest.mark.parametrize("wrap", ["plain", "wrapped"])
def test_fit_applies_the_exact_rate_at_every_step(wrap):
    optimizer = tf.keras.optimizers.SGD(MultiStageSchedule(**SCHEDULE))
    if wrap == "wrapped":
        optimizer = GradientLag(LARC(optimizer), lag=1)
    seen, history = _fit(_model(optimizer), 4)
    # Gradient lag's first step applies nothing: the rate held is still step 0's.
    assert seen == _expected(range(12))
    # The epoch's last step's rate, read once at the epoch's end.
    assert history["learning_rate"] == [_expected([s])[0] for s in (2, 5, 8, 11)]


def test_resumed_run_continues_the_schedule(tmp_path):
    model = _model(tf.keras.optimizers.SGD(MultiStageSchedule(**SCHEDULE)))
    first, _ = _fit(model, 2)
    path = tf.train.Checkpoint(model=model).save(tmp_path / "ckpt")

    resumed = _model(tf.keras.optimizers.SGD(MultiStageSchedule(**SCHEDULE)))
    tf.train.Checkpoint(model=resumed).restore(path)
    rest, _ = _fit(resumed, 4, initial_epoch=2)
    assert first + rest == _expected(range(12))


def test_verbose_prints_the_rate_at_each_epoch(capsys):
    _fit(_model(tf.keras.optimizers.SGD(MultiStageSchedule(0.05, unit="step"))), 1,
         logger=LearningRateLogger(verbose=1))
    assert "Epoch 1: learning rate 0.05 at global step 0." in capsys.readouterr().out


def test_logger_reads_a_plain_rate_too():
    optimizer = tf.keras.optimizers.SGD(0.25)
    _, history = _fit(_model(optimizer), 1)
    assert history["learning_rate"] == [0.25] and learning_rate_of(optimizer) == 0.25


def test_epochs_need_steps_per_epoch():
    with pytest.raises(ValueError, match="pass steps_per_epoch= to it"):
        MultiStageSchedule(0.1, "piece:3:0.1")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"learning_rate": 0}, "learning_rate must be a number > 0.0; received learning_rate=0."),
    ({"unit": "batch"}, "unit must be one of ('epoch', 'step'); received unit='batch'."),
    ({"stages": "piece:2:0.5", "unit": "step"}, "is an SC18 string, in epochs and multipliers"),
    ({"stages": [(3, 0.5), (2, 0.1)]}, "stage starts must increase; received [3, 2]."),
    ({"stages": [(1, 2, 3)]}, "stages must be (start, value) pairs; received the stage (1, 2, 3)."),
    ({"decay": "cosine"}, "decay_end must be a number > 0.0; received decay_end=None."),
    ({"stages": [(5, 0.1)], "decay": "poly", "decay_end": 5},
     "decay_end=5 must come after the start of the last stage (5 epochs)."),
    ({"warmup_start": 2.0}, "warmup_start must be in [0, 1]; received warmup_start=2.0."),
    ({"steps_per_update": 0}, "steps_per_update must be an int >= 1; received "
                              "steps_per_update=0."),
])
def test_bad_arguments_are_named(kwargs, message):
    kwargs = {"learning_rate": 0.1, "steps_per_epoch": 3, **kwargs}
    escaped = "".join("\\" + c if c in "()[]." else c for c in message)
    with pytest.raises(ValueError, match=escaped):
        MultiStageSchedule(**kwargs)


@pytest.mark.horovod
@pytest.mark.slow
def test_two_ranks_scale_the_rate_by_size(two_rank_fit):  # noqa: F811
    ranks, _ = two_rank_fit
    reference = MultiStageSchedule(**FIT_SCHEDULE, steps_per_epoch=3)
    for r in ranks:
        assert r["steps"] == list(range(9))
        assert r["lrs"] == [float(np.float32(2 * reference.learning_rate_at(s)))
                            for s in r["steps"]]
        assert r["history"]["learning_rate"] == [r["lrs"][s] for s in (2, 5, 8)]
