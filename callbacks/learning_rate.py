"""A multi-stage learning rate with linear warmup and a final decay, set every batch."""

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
            raise ValueError(f"MultiStageLearningRate stages must be (start, value) pairs; "
                             f"received the stage {stage!r}.") from err
        _number(start, "stage start")
        _number(value, "stage value")
        if unit == "step" and int(start) != start:
            raise ValueError(f"MultiStageLearningRate stage start {start!r} must be a whole "
                             "number of steps with unit='step'.")
        if checked and start <= checked[-1][0]:
            raise ValueError("MultiStageLearningRate stage starts must increase; received "
                             f"{[s for s, _ in checked] + [start]}.")
        checked.append((start, float(value)))
    return checked


def _number(value, name, minimum=0.0, strict=False):
    if not isinstance(value, numbers.Real) or isinstance(value, bool) \
            or not math.isfinite(value) or (value <= minimum if strict else value < minimum):
        relation = ">" if strict else ">="
        raise ValueError(f"MultiStageLearningRate {name} must be a number {relation} {minimum}; "
                         f"received {name}={value!r}.")  # a finite one: NaN and Inf are refused
    return value


class MultiStageLearningRate(tf.keras.callbacks.Callback):
    """Sets the learning rate before every batch from stages, warmup and decay.

    The rate for a global step `s` (the optimizer's `iterations`) is built
    from, in this order:

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

    Positions given in epochs are turned into global steps with
    `steps_per_epoch` (from the argument, or from `model.fit`'s `steps`), so
    the schedule changes at batch granularity and fractional epochs are
    allowed. Because the position is read from `optimizer.iterations`, which
    checkpoints keep, a resumed run (with `initial_epoch`) continues the
    schedule exactly where it stopped. With `GradientLag` the global step
    counts every batch, including the first `lag` ones that apply nothing.

    This replaces Horovod's `LearningRateWarmupCallback` and
    `LearningRateScheduleCallback`, which use Keras 3's `keras.backend` and
    fail with tf-keras. The optimizer must have a float learning rate (not a
    `LearningRateSchedule`); wrappers such as `LARC`, `GradientLag` and
    `hvd.DistributedOptimizer` forward it to the inner optimizer.

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
      scale_by_ranks: multiply every rate by the number of Horovod ranks.
        Defaults to `False`.
      steps_per_epoch: steps in one epoch, for positions in epochs. Defaults
        to `None` (taken from `model.fit`).
      verbose: 0: quiet; 1: rank 0 prints the rate at every epoch start.
        Defaults to `0`.

    Example:

        # 0.001 per rank, x size; 5-epoch warmup from 1/size; x0.1 at epoch 30.
        lr = MultiStageLearningRate(0.001, stages="piece:30:0.1", warmup=5,
                                    warmup_start=1 / hvd.size(),
                                    scale_by_ranks=True)
        model.fit(..., callbacks=[MetricAverage(), lr, ...])
    """

    def __init__(self, learning_rate, stages=(), unit="epoch", values="multiplier", warmup=0,
                 warmup_unit=None, warmup_start=0.0, decay=None, decay_end=None,
                 decay_power=1.0, end_learning_rate=0.0, scale_by_ranks=False,
                 steps_per_epoch=None, verbose=0):
        super().__init__()
        self.learning_rate = float(_number(learning_rate, "learning_rate", strict=True))
        if unit not in _UNITS:
            raise ValueError(f"MultiStageLearningRate unit must be one of {_UNITS}; "
                             f"received unit={unit!r}.")
        if values not in _VALUES:
            raise ValueError(f"MultiStageLearningRate values must be one of {_VALUES}; "
                             f"received values={values!r}.")
        if isinstance(stages, str):
            if stages.startswith("piece") and (unit != "epoch" or values != "multiplier"):
                raise ValueError(
                    f"MultiStageLearningRate stages={stages!r} is an SC18 string, in epochs and "
                    f"multipliers; received unit={unit!r}, values={values!r}."
                )
            stages = parse_stages(stages)
        self.stages = check_stages(stages, unit)
        self.unit = unit
        self.values = values
        self.warmup_unit = unit if warmup_unit is None else warmup_unit
        if self.warmup_unit not in _UNITS:
            raise ValueError(f"MultiStageLearningRate warmup_unit must be one of {_UNITS}; "
                             f"received warmup_unit={warmup_unit!r}.")
        self.warmup = _number(warmup, "warmup")
        self.warmup_start = float(_number(warmup_start, "warmup_start"))
        if self.warmup_start > 1:
            raise ValueError("MultiStageLearningRate warmup_start must be in [0, 1]; "
                             f"received warmup_start={warmup_start!r}.")
        if decay not in _DECAYS:
            raise ValueError(f"MultiStageLearningRate decay must be one of {_DECAYS}; "
                             f"received decay={decay!r}.")
        if decay is not None:
            _number(decay_end, "decay_end", strict=True)
            last_start = self.stages[-1][0] if self.stages else 0
            if decay_end <= last_start:
                raise ValueError(
                    f"MultiStageLearningRate decay_end={decay_end!r} must come after the start "
                    f"of the last stage ({last_start} {unit}s)."
                )
        self.decay = decay
        self.decay_end = decay_end
        self.decay_power = float(_number(decay_power, "decay_power", strict=True))
        self.end_learning_rate = float(_number(end_learning_rate, "end_learning_rate"))
        self.scale_by_ranks = bool(scale_by_ranks)
        if steps_per_epoch is not None and (not isinstance(steps_per_epoch, int)
                                            or steps_per_epoch < 1):
            raise ValueError("MultiStageLearningRate steps_per_epoch must be an int >= 1 or "
                             f"None; received steps_per_epoch={steps_per_epoch!r}.")
        self.steps_per_epoch = steps_per_epoch
        self.verbose = int(verbose)
        self._plan = None
        self._current = None


    def _steps(self, position, unit, steps_per_epoch):
        if unit == "step":
            return int(round(position))
        return int(round(position * steps_per_epoch))

    def _resolve(self, steps_per_epoch):
        """Turns every position into a global step; needs steps_per_epoch for epochs."""
        uses_epochs = (self.unit == "epoch" and (self.stages or self.decay)) or (
            self.warmup_unit == "epoch" and self.warmup)
        if uses_epochs and not steps_per_epoch:
            raise ValueError(
                "MultiStageLearningRate has positions in epochs but does not know the number "
                "of steps per epoch: pass steps_per_epoch= to it (or to model.fit)."
            )
        _, size = climseg_tf.rank_and_size()
        plan = {
            "scale": size if self.scale_by_ranks else 1,
            "stages": [(self._steps(s, self.unit, steps_per_epoch), v) for s, v in self.stages],
            "warmup": self._steps(self.warmup, self.warmup_unit, steps_per_epoch),
        }
        if self.decay:
            last = plan["stages"][-1][0] if plan["stages"] else 0
            plan["decay_begin"] = max(last, plan["warmup"])
            plan["decay_end"] = self._steps(self.decay_end, self.unit, steps_per_epoch)
        return plan

    def learning_rate_at(self, step):
        """The learning rate this callback sets at global step `step` (an int >= 0)."""
        plan = self._plan or self._resolve(self.steps_per_epoch)
        lr = self.learning_rate
        for start, value in plan["stages"]:
            if step >= start:
                lr = value if self.values == "absolute" else self.learning_rate * value
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

    def on_train_begin(self, logs=None):
        self._plan = self._resolve(self.steps_per_epoch or self.params.get("steps"))
        self._current = None

    def on_train_batch_begin(self, batch, logs=None):
        step = int(tf.keras.backend.get_value(self.model.optimizer.iterations))
        self._current = self.learning_rate_at(step)
        self.model.optimizer.learning_rate = self._current

    def on_epoch_begin(self, epoch, logs=None):
        if self.verbose and climseg_tf.rank_and_size()[0] == 0:  # only rank 0 prints
            step = int(tf.keras.backend.get_value(self.model.optimizer.iterations))
            print(f"\nEpoch {epoch + 1}: MultiStageLearningRate: learning rate "
                  f"{self.learning_rate_at(step):.6g} at global step {step}.")

    def on_train_batch_end(self, batch, logs=None):
        if logs is not None and self._current is not None:
            logs["learning_rate"] = self._current

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._current is not None:
            logs["learning_rate"] = self._current
