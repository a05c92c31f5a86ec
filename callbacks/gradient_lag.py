"""Gradient lag: apply the gradient of N steps ago, so its allreduce overlaps compute."""

import tensorflow as tf

import climseg_tf
from callbacks._wrapper import OptimizerWrapper


@tf.keras.saving.register_keras_serializable(package="climseg")
class GradientLag(OptimizerWrapper):
    """Applies, at step t, the gradient computed at step t - `lag`.

    At every step the wrapper stores the gradient just computed and hands out
    the one stored `lag` steps earlier; the inner optimizer applies that. The
    first `lag` steps apply nothing: weights and the inner optimizer's slots
    (momentum, Adam moments) stay as they are, and only `iterations` (the
    global step) advances, as in the SC18 code, where the first step applied
    the zero-initialized buffer.

    The swap happens in `compute_gradients`: what it returns is the stored,
    lagged gradient, which depends only on optimizer variables, not on the
    current forward and backward pass. `hvd.DistributedOptimizer` allreduces
    exactly what `compute_gradients` returns, so the allreduce can start at
    the beginning of the step and run while the new gradient is computed: the
    overlap of communication and computation the paper used at scale (SC18
    ran with `lag=1`, and lr 0.0064 instead of 0.01). Because the buffer
    holds per-rank gradients and the allreduce averages them, step t applies
    the globally averaged gradient of step t - lag.

    The buffer (`lag` copies of every trainable variable) and a step counter
    are optimizer variables: they are in `optimizer.variables` and in any
    checkpoint of the optimizer (`tf.train.Checkpoint(optimizer=...)`,
    `model.save_weights` in TF format), so a resumed run applies exactly the
    gradients it would have applied without the interruption.

    Under Horovod each rank's buffer holds its own, not yet averaged,
    gradients. Two consequences:
    - before rank 0 writes a checkpoint, call `average_over_ranks()` on every
      rank: it replaces each buffer by the mean over ranks, which changes
      nothing in the run (the next allreduce gives the same mean) and makes
      rank 0's checkpoint hold the global gradients, so that every rank
      restoring it resumes exactly;
    - broadcast the initial weights before `fit` with
      `horovod.tensorflow.broadcast_variables(model.variables, root_rank=0)`
      rather than with `hvd.callbacks.BroadcastGlobalVariablesCallback`,
      which broadcasts the optimizer's variables too, after the first batch,
      and so would give every rank rank 0's stored gradient.

    Composition order (built from the inside out; every layer forwards
    `learning_rate` and `iterations` to the innermost optimizer):

        opt = tf.keras.optimizers.Adam(lr)
        opt = LARC(opt, eta=0.002)           # optional
        opt = GradientLag(opt, lag=1)
        opt = hvd.DistributedOptimizer(opt)  # Horovod: average over ranks
        model.compile(optimizer=opt, ...)

    `hvd.DistributedOptimizer` must be outermost: it subclasses GradientLag
    and allreduces what GradientLag's `compute_gradients` returns. `lag=0`
    passes gradients through unchanged, so a script can always wrap.

    The lag happens in `compute_gradients`, which `model.fit` and
    `optimizer.minimize` call. In a custom training loop call
    `opt.compute_gradients(loss, variables, tape=tape)` then
    `opt.apply_gradients(...)`; `apply_gradients` on gradients that did not
    come from `compute_gradients` raises `RuntimeError` rather than silently
    apply unlagged ones.

    Reference: Kurth et al., "Exascale Deep Learning for Climate Analytics",
    SC18 (arXiv:1810.01993), "gradient lag".

    Args:
      inner_optimizer: the `tf.keras.optimizers.Optimizer` (or LARC) that
        applies the lagged gradients and owns the learning rate.
      lag: number of steps N between computing a gradient and applying it;
        an int >= 0. Defaults to `1`.
      name: name of the optimizer. Defaults to `"GradientLag"`.
      **kwargs: `is_legacy_optimizer` from a config; nothing else.

    Example:

        opt = GradientLag(tf.keras.optimizers.SGD(0.01), lag=1)
        model.compile(optimizer=hvd.DistributedOptimizer(opt), loss="mse")
    """

    def __init__(self, inner_optimizer, lag=1, name="GradientLag", **kwargs):
        if not isinstance(lag, int) or isinstance(lag, bool) or lag < 0:
            raise ValueError(f"GradientLag lag must be an int >= 0; received lag={lag!r}.")
        if tf.distribute.has_strategy():
            raise ValueError(
                "GradientLag supports Horovod data parallelism (or none), not the "
                f"tf.distribute strategy {type(tf.distribute.get_strategy()).__name__}: "
                "its per-replica buffers would be mirrored variables."
            )
        super().__init__(inner_optimizer, name=name, **kwargs)
        self.lag = lag
        # Set by compute_gradients, consumed by apply_gradients (Python, per trace).
        self._gradients_lagged = False

    def _build_wrapper(self, var_list):
        if self.lag == 0:
            return
        # How many gradients were pushed into the buffer so far.
        self._pushed = self.add_variable(shape=(), dtype=tf.int64, name="lag_pushed")
        # One ring buffer of `lag` gradients per variable.
        self._buffers = [
            self.add_variable_from_reference(v, "lag", shape=(self.lag, *v.shape))
            for v in var_list
        ]

    def compute_gradients(self, loss, var_list, tape=None):
        grads_and_vars = super().compute_gradients(loss, var_list, tape=tape)
        self._gradients_lagged = True
        if self.lag == 0:
            return grads_and_vars
        with tf.init_scope():
            self.build([v for _, v in grads_and_vars])
        slot = tf.math.floormod(self._pushed.read_value(), self.lag)
        lagged = []
        for gradient, variable in grads_and_vars:
            if gradient is None:
                lagged.append((None, variable))
                continue
            buffer = self._buffers[self._index_dict[self._var_key(variable)]]
            # Read the old gradient before overwriting its slot (automatic
            # control dependencies order the two by program order).
            old = tf.gather(buffer, slot)
            buffer.scatter_update(tf.IndexedSlices(
                tf.convert_to_tensor(gradient)[tf.newaxis], slot[tf.newaxis]))
            lagged.append((old, variable))
        self._pushed.assign_add(1)
        return lagged

    def _apply_wrapped(self, grads_and_vars, name):
        if not self._gradients_lagged:
            raise RuntimeError(
                "GradientLag.apply_gradients() received gradients that did not come from "
                "GradientLag.compute_gradients(); the lag happens there. Use model.fit, "
                "optimizer.minimize, or compute_gradients(loss, variables, tape=tape) followed "
                "by apply_gradients."
            )
        self._gradients_lagged = False
        if self.lag == 0:
            self._optimizer.apply_gradients(grads_and_vars, name=name,
                                            skip_gradients_aggregation=True)
            return

        def apply():
            self._optimizer.apply_gradients(grads_and_vars, name=name,
                                            skip_gradients_aggregation=True)

        def skip():
            # The buffer held no gradient yet: only the global step advances.
            self.iterations.assign_add(1, read_value=False)

        # `_pushed` already counts this step's gradient.
        tf.cond(self._pushed > self.lag, apply, skip)

    def average_over_ranks(self):
        """Horovod: replaces every rank's stored gradients by their mean over ranks.

        A collective: call it on every rank (eagerly, e.g. from a callback),
        before rank 0 writes a checkpoint. Without Horovod, or before the
        first step, it does nothing.
        """
        if self.lag == 0 or not getattr(self, "_built", False):
            return
        if climseg_tf.rank_and_size()[1] == 1:
            return
        for i, buffer in enumerate(self._buffers):
            buffer.assign(climseg_tf.allreduce_tensor(tf.convert_to_tensor(buffer), "mean",
                                                      name=f"climseg.gradient_lag.{i}"))

    def get_config(self):
        return self._config_with_inner({"lag": self.lag})


def average_lag_buffers(optimizer):
    """Calls `average_over_ranks()` on the `GradientLag` in an optimizer chain, if any.

    Walks `inner_optimizer` links (Horovod's `DistributedOptimizer` subclasses
    the optimizer it wraps; `LossScaleOptimizer`, `LARC` and `GradientLag`
    expose `inner_optimizer`). A collective under Horovod: call it on every
    rank, e.g. as `Checkpointer(before_save=...)`.
    """
    while optimizer is not None:
        if isinstance(optimizer, GradientLag):
            optimizer.average_over_ranks()
            return
        optimizer = getattr(optimizer, "inner_optimizer", None)
