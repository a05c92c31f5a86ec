"""LARC: layer-wise adaptive rate control, as an optimizer wrapper."""

import numbers
import re

import tensorflow as tf

from callbacks._wrapper import OptimizerWrapper

_MODES = ("clip", "scale")


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@tf.keras.saving.register_keras_serializable(package="climseg")
class LARC(OptimizerWrapper):
    """Scales each variable's gradient by a trust ratio, then lets `inner_optimizer` apply it.

    For every variable `w` with (averaged) gradient `g` and the inner
    optimizer's learning rate `lr`:

        local = eta * ||w|| / (||g|| + weight_decay * ||w|| + epsilon)
        clip mode:  factor = min(local / lr, 1)
        scale mode: factor = local

    and the inner optimizer (SGD, Adam, AdamW, ...) applies
    `factor * (g + weight_decay * w)`; with the default `weight_decay=0` that
    is `factor * g`. When `||w||` or `||g||` is zero (zero-initialized biases,
    unused variables) the gradient is passed on unchanged (factor 1, no decay
    term), as in NVIDIA apex's LARC, so no NaN can appear. Variables whose
    name matches one of the `exclude` patterns are passed on unchanged too.

    The trust ratio is computed in `apply_gradients`. Under Horovod,
    `hvd.DistributedOptimizer(LARC(...))` averages the gradients over ranks in
    `compute_gradients`, before `apply_gradients`, so the ratio uses the
    global gradient, as in the SC18 runs.

    Composition order (built from the inside out; every layer forwards
    `learning_rate` and `iterations` to the innermost optimizer):

        opt = tf.keras.optimizers.Adam(lr)
        opt = LARC(opt, eta=0.002, mode="clip")   # trust ratio on the applied gradient
        opt = GradientLag(opt, lag=1)             # delays the gradient; optional
        opt = hvd.DistributedOptimizer(opt)       # Horovod: average over ranks
        model.compile(optimizer=opt, ...)

    Put LARC inside GradientLag, as above, so the ratio is computed from the
    lagged, averaged gradient and the current weights at the moment it is
    applied (what SC18 did); the other order gives the same arithmetic, since
    both wrappers pass each other's calls through.

    Reference: Kurth et al., "Exascale Deep Learning for Climate Analytics",
    SC18 (arXiv:1810.01993), section on LARC; You et al., "Large Batch
    Training of Convolutional Networks" (arXiv:1708.03888); NVIDIA apex
    `apex.parallel.LARC`.

    Args:
      inner_optimizer: the `tf.keras.optimizers.Optimizer` that applies the
        scaled gradients and owns the learning rate.
      eta: trust coefficient. Defaults to `0.002` (the SC18 value).
      mode: `"clip"` or `"scale"`. Defaults to `"clip"` (SC18).
      epsilon: added to the denominator of the trust ratio. Defaults to
        `1e-8`.
      weight_decay: L2 coefficient, both in the ratio's denominator and added
        to the gradient (as in apex). Leave it 0 when the inner optimizer
        decays weights itself (AdamW). Defaults to `0.0`.
      exclude: a regular expression or a list of them; variables whose
        `name` matches one (`re.search`) skip LARC, e.g.
        `r"bias|batch_normalization|gamma|beta"`. Defaults to `None` (LARC on
        every variable, as in SC18).
      name: name of the optimizer. Defaults to `"LARC"`.
      **kwargs: `is_legacy_optimizer` from a config; nothing else.

    Example:

        opt = LARC(tf.keras.optimizers.SGD(0.1, momentum=0.9), eta=0.002,
                   exclude=r"bias")
        model.compile(optimizer=opt, loss="mse")
    """

    def __init__(self, inner_optimizer, eta=0.002, mode="clip", epsilon=1e-8,
                 weight_decay=0.0, exclude=None, name="LARC", **kwargs):
        if not _is_real(eta) or eta <= 0:
            raise ValueError(f"LARC eta must be a number > 0; received eta={eta!r}.")
        if mode not in _MODES:
            raise ValueError(f"LARC mode must be one of {_MODES}; received mode={mode!r}.")
        if not _is_real(epsilon) or epsilon < 0:
            raise ValueError(f"LARC epsilon must be a number >= 0; received epsilon={epsilon!r}.")
        if not _is_real(weight_decay) or weight_decay < 0:
            raise ValueError(
                f"LARC weight_decay must be a number >= 0; received weight_decay={weight_decay!r}."
            )
        patterns = [] if exclude is None else [exclude] if isinstance(exclude, str) else exclude
        try:
            patterns = tuple(str(p) for p in patterns)
            compiled = tuple(re.compile(p) for p in patterns)
        except (TypeError, re.error) as err:
            raise ValueError(
                "LARC exclude must be a regular expression or a list of them; "
                f"received exclude={exclude!r} ({err})."
            ) from err
        super().__init__(inner_optimizer, name=name, **kwargs)
        self.eta = float(eta)
        self.mode = mode
        self.epsilon = float(epsilon)
        # Not the base class's decoupled decay: LARC applies it itself.
        self.weight_decay = float(weight_decay)
        self.exclude = self._no_dependency(patterns)
        self._exclude_res = self._no_dependency(compiled)

    def _is_excluded(self, variable):
        return any(p.search(variable.name) for p in self._exclude_res)

    def _trust_factor(self, gradient, variable, learning_rate):
        """Returns (factor, applies): LARC's factor, and False where a norm is zero."""
        w_norm = tf.norm(tf.cast(variable, tf.float32))
        g_norm = tf.norm(tf.cast(gradient, tf.float32))
        local = self.eta * w_norm / (g_norm + self.weight_decay * w_norm + self.epsilon)
        if self.mode == "clip":
            # min(local / lr, 1), written so that lr = 0 gives 1, not NaN.
            factor = tf.where(local < learning_rate, local / learning_rate, 1.0)
        else:
            factor = local
        applies = (w_norm > 0.0) & (g_norm > 0.0)
        # The unused branch may be NaN (0 / 0 with epsilon 0); where() drops it.
        return tf.where(applies, factor, 1.0), applies

    def _apply_wrapped(self, grads_and_vars, name):
        learning_rate = self._current_learning_rate_value()
        scaled = []
        for gradient, variable in grads_and_vars:
            if gradient is None or self._is_excluded(variable):
                scaled.append((gradient, variable))
                continue
            # LARC needs the whole gradient; sparse ones become dense.
            gradient = tf.convert_to_tensor(gradient)
            factor, applies = self._trust_factor(gradient, variable, learning_rate)
            if self.weight_decay:
                decay = tf.where(applies, self.weight_decay, 0.0)
                gradient = gradient + tf.cast(decay, gradient.dtype) * tf.cast(
                    variable, gradient.dtype)
            scaled.append((tf.cast(factor, gradient.dtype) * gradient, variable))
        self._optimizer.apply_gradients(scaled, name=name, skip_gradients_aggregation=True)

    def get_config(self):
        return self._config_with_inner({
            "eta": self.eta,
            "mode": self.mode,
            "epsilon": self.epsilon,
            "weight_decay": self.weight_decay,
            "exclude": list(self.exclude),
        })
