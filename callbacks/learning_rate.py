"""A multi-stage learning rate with linear warmup and a final decay, computed in the graph."""

import math
import numbers

import tensorflow as tf

import climseg_tf

_UNITS = ("epoch", "step")
_VALUES = ("multiplier", "absolute")
_DECAYS = (None, "cosine", "poly")


def parse_stages(text):
    """Parses learning-rate stages: SC18's `"piece:e1:s1:e2:s2:..."` or `"p1:s1,p2:s2"`.

    In the SC18 code the learning rate is the base rate times `s_i` from
    epoch `e_i` on (each `s_i` multiplies the base rate, not the previous
    stage's rate). The second form gives the same pairs, positions in any
    unit (epochs or steps, as the schedule's `unit` says).

    Args:
      text: a string such as `"piece:20:0.5:40:0.1"` or `"4096:0.1,8192:0.01"`.

    Returns:
      A list of `(position, multiplier)` pairs, e.g. `[(20, 0.5), (40, 0.1)]`
      (SC18's epochs as ints, the other form's positions as floats).

    Raises:
      ValueError: if `text` is of neither form.
    """
    if isinstance(text, str) and text[:1].isdigit():
        stages = []
        for item in text.split(","):
            position, _, multiplier = item.partition(":")
            try:
                stages.append((float(position), float(multiplier)))
            except ValueError:
                raise ValueError(f"{item!r} is not POSITION:MULTIPLIER; expected e.g. "
                                 "'piece:20:0.1:40:0.01' or '20:0.1,40:0.01'") from None
        return stages
    expected = "expected 'piece:EPOCH:MULTIPLIER[:EPOCH:MULTIPLIER...]', e.g. 'piece:20:0.5:40:0.1'"
    parts = text.split(":") if isinstance(text, str) else []
    if len(parts) < 3 or parts[0] != "piece" or len(parts) % 2 != 1:
        raise ValueError(f"Learning-rate stages {text!r}: {expected}.")
    stages = []
    for epoch, multiplier in zip(parts[1::2], parts[2::2], strict=True):
        try:
            stages.append((int(epoch), float(multiplier)))
        except ValueError as err:
            raise ValueError(
                f"Learning-rate stages {text!r}: {epoch!r}:{multiplier!r} is not "
                f"EPOCH:MULTIPLIER (an int and a number); {expected}."
            ) from err
    return stages


def check_stages(stages, unit="epoch"):
    """Checks `(start, value)` stages: finite, starts >= 0 and increasing, values >= 0.

    Returns:
        The stages as a list of `(start, float(value))`.

    Raises:
        ValueError: naming the stage at fault.
    """
    checked = []
    for stage in stages:
        try:
            start, value = stage
        except (TypeError, ValueError) as err:
            raise ValueError(f"MultiStageSchedule stages must be (start, value) pairs; "
                             f"received the stage {stage!r}.") from err
        _number(start, "stage start")
        _number(value, "stage value")
        if unit == "step" and int(start) != start:
            raise ValueError(f"MultiStageSchedule stage start {start!r} must be a whole "
                             "number of steps with unit='step'.")
        if checked and start <= checked[-1][0]:
            raise ValueError("MultiStageSchedule stage starts must increase; received "
                             f"{[s for s, _ in checked] + [start]}.")
        checked.append((start, float(value)))
    return checked


def _number(value, name, minimum=0.0, strict=False):
    if not isinstance(value, numbers.Real) or isinstance(value, bool) \
            or not math.isfinite(value) or (value <= minimum if strict else value < minimum):
        relation = ">" if strict else ">="
        raise ValueError(f"MultiStageSchedule {name} must be a number {relation} {minimum}; "
                         f"received {name}={value!r}.")  # a finite one: NaN and Inf are refused
    return value


@tf.keras.saving.register_keras_serializable(package="climseg")
class MultiStageSchedule(tf.keras.optimizers.schedules.LearningRateSchedule):
    """Stages, linear warmup and a final decay, as a schedule of the optimizer's step.

    Give it to the optimizer as its learning rate; the optimizer evaluates it
    in the graph from its own `iterations` at every `apply_gradients`, so no
    step reads anything back to Python (on a GPU, a callback that sets the
    rate before each batch forces a device sync every step). The rate for a
    schedule step `s` is built from, in this order:

    1. stages: `learning_rate` until the first stage starts; from stage
       `(start, value)` on, `value` (with `values="absolute"`) or
       `learning_rate * value` (`values="multiplier"`, as in SC18's
       `piece:e1:s1:e2:s2`, where each multiplier applies to the base rate);
    2. decay (optional) over the last stage, from its start (or the end of
       the warmup, if later) to `decay_end`, down to `end_learning_rate`:
       `"cosine"`: `end + (lr - end) * (1 + cos(pi * p)) / 2`;
       `"poly"`: `end + (lr - end) * (1 - p) ** decay_power`, where `p` is the
       fraction of the decay done; `end_learning_rate` after `decay_end`;
    3. linear warmup (optional): the rate times
       `warmup_start + (1 - warmup_start) * s / warmup` while `s < warmup`;
    4. Horovod scaling (optional, `scale_by_ranks=True`): everything times the
       number of ranks, the usual `lr x size` rule for data parallelism.

    The arithmetic is done in float64, in this order, and rounded to float32
    once, so the rates are exactly those of `learning_rate_at` (its Python
    twin) as a float32 variable would hold them. Positions given in epochs
    become steps with `steps_per_epoch`; fractional epochs are allowed.
    Because the step is the optimizer's `iterations`, which checkpoints keep,
    a resumed run continues the schedule where it stopped. With `GradientLag`
    the step counts every batch, including the first `lag` ones that apply
    nothing. With gradient accumulation over N micro-batches
    (`steps_per_update=N`), `iterations` counts micro-batches and the
    schedule step is `iterations // N`: the optimizer's updates.

    Wrappers (`LARC`, `GradientLag`, Horovod's `DistributedOptimizer`,
    `LossScaleOptimizer`) evaluate the inner optimizer's schedule: LARC's
    clip uses the rate of the step being applied. This replaces Horovod's
    `LearningRateWarmupCallback` and `LearningRateScheduleCallback`, which use
    Keras 3's `keras.backend` and fail with tf-keras. `LearningRateLogger`
    puts the rate into the epoch logs.

    Reference: Kurth et al., SC18 (arXiv:1810.01993) for the `piece` form;
    Goyal et al., "Accurate, Large Minibatch SGD" (arXiv:1706.02677) for
    warmup and `lr x size`; MLPerf HPC DeepCAM for warmup with a start factor.

    Args:
      learning_rate: the base learning rate (for one rank). A number > 0.
      stages: a list of `(start, value)` pairs with increasing starts, or an
        SC18 string `"piece:e1:s1:e2:s2"` (epochs, multipliers). Defaults to
        `()` (one stage).
      unit: `"epoch"` or `"step"`: the unit of stage starts and `decay_end`.
        Defaults to `"epoch"`.
      values: `"multiplier"` (stage values multiply `learning_rate`) or
        `"absolute"` (stage values are rates). Defaults to `"multiplier"`.
      warmup: length of the linear warmup, in `warmup_unit`s; 0 for none.
        Defaults to `0`.
      warmup_unit: `"epoch"` or `"step"`. Defaults to `unit`.
      warmup_start: factor at step 0 of the warmup, in [0, 1]. Defaults to
        `0.0`.
      decay: `None`, `"cosine"` or `"poly"`, applied in the last stage.
        Defaults to `None`.
      decay_end: where the decay reaches `end_learning_rate`, in `unit`s;
        required with `decay`.
      decay_power: exponent of `"poly"`. Defaults to `1.0` (linear).
      end_learning_rate: the rate at `decay_end` (for one rank). Defaults to
        `0.0`.
      scale_by_ranks: multiply every rate by the number of Horovod ranks
        (read when the schedule is first evaluated). Defaults to `False`.
      steps_per_epoch: schedule steps (optimizer updates) in one epoch;
        required when a position is in epochs. Defaults to `None`.
      steps_per_update: optimizer iterations per schedule step (the
        micro-batches of one accumulated update). Defaults to `1`.
      name: name scope of the ops. Defaults to `"MultiStageSchedule"`.

    Example:

        # 0.001 per rank, x size; 5-epoch warmup from 1/size; x0.1 at epoch 30.
        lr = MultiStageSchedule(0.001, stages="piece:30:0.1", warmup=5,
                                warmup_start=1 / hvd.size(), scale_by_ranks=True,
                                steps_per_epoch=steps)
        model.compile(optimizer=hvd.DistributedOptimizer(tf.keras.optimizers.Adam(lr)),
                      ...)
        model.fit(..., callbacks=[MetricAverage(), LearningRateLogger(lr), ...])
    """

    def __init__(self, learning_rate, stages=(), unit="epoch", values="multiplier", warmup=0,
                 warmup_unit=None, warmup_start=0.0, decay=None, decay_end=None,
                 decay_power=1.0, end_learning_rate=0.0, scale_by_ranks=False,
                 steps_per_epoch=None, steps_per_update=1, name="MultiStageSchedule"):
        super().__init__()
        self.learning_rate = float(_number(learning_rate, "learning_rate", strict=True))
        if unit not in _UNITS:
            raise ValueError(f"MultiStageSchedule unit must be one of {_UNITS}; "
                             f"received unit={unit!r}.")
        if values not in _VALUES:
            raise ValueError(f"MultiStageSchedule values must be one of {_VALUES}; "
                             f"received values={values!r}.")
        if isinstance(stages, str):
            if stages.startswith("piece") and (unit != "epoch" or values != "multiplier"):
                raise ValueError(
                    f"MultiStageSchedule stages={stages!r} is an SC18 string, in epochs and "
                    f"multipliers; received unit={unit!r}, values={values!r}."
                )
            stages = parse_stages(stages)
        self.stages = check_stages(stages, unit)
        self.unit = unit
        self.values = values
        self.warmup_unit = unit if warmup_unit is None else warmup_unit
        if self.warmup_unit not in _UNITS:
            raise ValueError(f"MultiStageSchedule warmup_unit must be one of {_UNITS}; "
                             f"received warmup_unit={warmup_unit!r}.")
        self.warmup = _number(warmup, "warmup")
        self.warmup_start = float(_number(warmup_start, "warmup_start"))
        if self.warmup_start > 1:
            raise ValueError("MultiStageSchedule warmup_start must be in [0, 1]; "
                             f"received warmup_start={warmup_start!r}.")
        if decay not in _DECAYS:
            raise ValueError(f"MultiStageSchedule decay must be one of {_DECAYS}; "
                             f"received decay={decay!r}.")
        if decay is not None:
            _number(decay_end, "decay_end", strict=True)
            last_start = self.stages[-1][0] if self.stages else 0
            if decay_end <= last_start:
                raise ValueError(
                    f"MultiStageSchedule decay_end={decay_end!r} must come after the start "
                    f"of the last stage ({last_start} {unit}s)."
                )
        self.decay = decay
        self.decay_end = decay_end
        self.decay_power = float(_number(decay_power, "decay_power", strict=True))
        self.end_learning_rate = float(_number(end_learning_rate, "end_learning_rate"))
        self.scale_by_ranks = bool(scale_by_ranks)
        for key, value in (("steps_per_epoch", steps_per_epoch),
                           ("steps_per_update", steps_per_update)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or value < 1):
                raise ValueError(f"MultiStageSchedule {key} must be an int >= 1"
                                 f"{' or None' if key == 'steps_per_epoch' else ''}; "
                                 f"received {key}={value!r}.")
        if steps_per_update is None:
            raise ValueError("MultiStageSchedule steps_per_update must be an int >= 1; "
                             "received steps_per_update=None.")
        uses_epochs = (self.unit == "epoch" and (self.stages or self.decay)) or (
            self.warmup_unit == "epoch" and self.warmup)
        if uses_epochs and not steps_per_epoch:
            raise ValueError(
                "MultiStageSchedule has positions in epochs but does not know the number of "
                "steps per epoch: pass steps_per_epoch= to it."
            )
        self.steps_per_epoch = steps_per_epoch
        self.steps_per_update = steps_per_update
        self.name = name
        self._plan = None

    def _steps(self, position, unit):
        if unit == "step":
            return int(round(position))
        return int(round(position * self.steps_per_epoch))

    def plan(self):
        """Every position as a schedule step, and the rank scale (resolved once)."""
        if self._plan is None:
            _, size = climseg_tf.rank_and_size()
            plan = {
                "scale": size if self.scale_by_ranks else 1,
                "stages": [(self._steps(s, self.unit), v) for s, v in self.stages],
                "warmup": self._steps(self.warmup, self.warmup_unit),
            }
            if self.decay:
                last = plan["stages"][-1][0] if plan["stages"] else 0
                plan["decay_begin"] = max(last, plan["warmup"])
                plan["decay_end"] = self._steps(self.decay_end, self.unit)
            self._plan = plan
        return self._plan

    def _stage_rate(self, value):
        return value if self.values == "absolute" else self.learning_rate * value

    def learning_rate_at(self, step):
        """The rate at schedule step `step` (an int >= 0), in Python float64 arithmetic."""
        plan = self.plan()
        lr = self.learning_rate
        for start, value in plan["stages"]:
            if step >= start:
                lr = self._stage_rate(value)
        if self.decay and step >= plan["decay_begin"]:
            span = plan["decay_end"] - plan["decay_begin"]
            done = min((step - plan["decay_begin"]) / span, 1.0) if span > 0 else 1.0
            if self.decay == "cosine":
                shape = 0.5 * (1.0 + math.cos(math.pi * done))
            else:
                shape = (1.0 - done) ** self.decay_power
            lr = self.end_learning_rate + (lr - self.end_learning_rate) * shape
        if step < plan["warmup"]:
            lr *= self.warmup_start + (1.0 - self.warmup_start) * step / plan["warmup"]
        # Horovod: scale the learning rate by the number of ranks.
        return lr * plan["scale"]

    def __call__(self, step):
        plan = self.plan()
        with tf.name_scope(self.name):
            step = tf.convert_to_tensor(step)
            if self.steps_per_update > 1:  # micro-batches -> updates
                step = tf.math.floordiv(tf.cast(step, tf.int64), self.steps_per_update)
            # float64 and the order of learning_rate_at: the same numbers, rounded once.
            step = tf.cast(step, tf.float64)
            lr = tf.constant(self.learning_rate, tf.float64)
            for start, value in plan["stages"]:
                lr = tf.where(step >= start, tf.constant(self._stage_rate(value), tf.float64),
                              lr)
            if self.decay:
                begin, span = plan["decay_begin"], plan["decay_end"] - plan["decay_begin"]
                done = tf.minimum((step - begin) / span, 1.0) if span > 0 \
                    else tf.constant(1.0, tf.float64)
                if self.decay == "cosine":
                    shape = 0.5 * (1.0 + tf.cos(math.pi * done))
                else:
                    shape = tf.pow(1.0 - done, self.decay_power)
                end = self.end_learning_rate
                lr = tf.where(step >= begin, end + (lr - end) * shape, lr)
            if plan["warmup"]:
                factor = self.warmup_start + (1.0 - self.warmup_start) * step / plan["warmup"]
                lr = tf.where(step < plan["warmup"], lr * factor, lr)
            # Horovod: scale the learning rate by the number of ranks.
            return tf.cast(lr * float(plan["scale"]), tf.float32)

    def get_config(self):
        return {
            "learning_rate": self.learning_rate,
            "stages": [[s, v] for s, v in self.stages],
            "unit": self.unit,
            "values": self.values,
            "warmup": self.warmup,
            "warmup_unit": self.warmup_unit,
            "warmup_start": self.warmup_start,
            "decay": self.decay,
            "decay_end": self.decay_end,
            "decay_power": self.decay_power,
            "end_learning_rate": self.end_learning_rate,
            "scale_by_ranks": self.scale_by_ranks,
            "steps_per_epoch": self.steps_per_epoch,
            "steps_per_update": self.steps_per_update,
            "name": self.name,
        }


def _innermost(optimizer):
    while hasattr(optimizer, "inner_optimizer"):
        optimizer = optimizer.inner_optimizer
    return optimizer


def learning_rate_of(optimizer, step=None):
    """The learning rate (a Python float) of an optimizer chain at optimizer step `step`.

    Args:
        optimizer: the compiled optimizer, wrappers included.
        step: the `iterations` value to evaluate a schedule at. Defaults to
            `None`: the step just done (`iterations - 1`, or 0 before any).

    Reads the optimizer's step from the device once: call it at an epoch's
    end or every N steps, not every batch.
    """
    inner = _innermost(optimizer)
    schedule = getattr(inner, "_learning_rate", None)
    if schedule is None and hasattr(inner, "_hyper"):  # a legacy optimizer (LAMB)
        schedule = inner._hyper.get("learning_rate")
    if isinstance(schedule, tf.keras.optimizers.schedules.LearningRateSchedule):
        if step is None:
            step = max(int(tf.keras.backend.get_value(optimizer.iterations)) - 1, 0)
        return float(schedule(step))
    return float(tf.keras.backend.get_value(schedule if schedule is not None
                                            else optimizer.learning_rate))


class LearningRateLogger(tf.keras.callbacks.Callback):
    """Puts the optimizer's learning rate into the epoch logs, as `learning_rate`.

    The value is that of the epoch's last step, read once at the epoch's end
    (a `MultiStageSchedule` is evaluated at that step): nothing happens per
    batch, so the training loop never waits for the device on its account.

    Args:
        verbose: 0: quiet; 1: rank 0 prints the rate at every epoch start.
            Defaults to `0`.

    Example:

        model.fit(..., callbacks=[MetricAverage(), LearningRateLogger(), ...])
    """

    def __init__(self, verbose=0):
        super().__init__()
        self.verbose = int(verbose)

    def on_epoch_begin(self, epoch, logs=None):
        if self.verbose and climseg_tf.rank_and_size()[0] == 0:  # only rank 0 prints
            optimizer = self.model.optimizer
            step = int(tf.keras.backend.get_value(optimizer.iterations))
            print(f"\nEpoch {epoch + 1}: learning rate {learning_rate_of(optimizer, step):.6g} "
                  f"at global step {step}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = learning_rate_of(self.model.optimizer)
