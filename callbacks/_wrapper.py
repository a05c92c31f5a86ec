"""The shared base of the optimizer wrappers (LARC, GradientLag): private."""

import copy

import tensorflow as tf


class _CallableList(list):
    """A list that also answers `()`, as tf-keras's optimizer `variables` does.

    Horovod's `DistributedOptimizer` calls `super().variables()`, so the
    property has to return something callable.
    """

    def __call__(self):
        return self


class OptimizerWrapper(tf.keras.optimizers.Optimizer):
    """A tf-keras optimizer that changes the gradients, then lets another apply them.

    It keeps no learning rate or iteration counter of its own: both are the
    inner optimizer's, so a learning-rate callback or a checkpoint sees one
    value however many wrappers are stacked. Its own state (subclasses add it
    in `_build_wrapper`) is made of optimizer variables: it is in
    `optimizer.variables` and in checkpoints of the model's optimizer.

    Subclasses implement `_apply_wrapped(grads_and_vars, name)`, which must
    end by calling `self._optimizer.apply_gradients(...,
    skip_gradients_aggregation=True)` or by incrementing `self.iterations`.

    Args:
      inner_optimizer: a `tf.keras.optimizers.Optimizer` (Keras 2, not
        legacy) that applies the gradients.
      name: name of the wrapper.
      **kwargs: `is_legacy_optimizer` from a config; nothing else.
    """

    def __init__(self, inner_optimizer, name, **kwargs):
        if not isinstance(inner_optimizer, tf.keras.optimizers.Optimizer):
            raise TypeError(
                f"{type(self).__name__} wraps a tf.keras.optimizers.Optimizer (tf-keras, "
                f"not legacy, not Keras 3); received inner_optimizer={inner_optimizer!r} "
                f"of type {type(inner_optimizer).__module__}.{type(inner_optimizer).__name__}. "
                "Import climseg (or climseg_tf) before tensorflow so that tf.keras is tf-keras."
            )
        super().__init__(name=name, **kwargs)
        self._optimizer = inner_optimizer

    def _create_iteration_variable(self):
        # The inner optimizer's counter is the only one (see `iterations`).
        pass

    @property
    def inner_optimizer(self):
        """The optimizer that applies the gradients."""
        return self._optimizer

    @property
    def iterations(self):
        return self._optimizer.iterations

    @iterations.setter
    def iterations(self, variable):
        self._optimizer.iterations = variable

    @property
    def learning_rate(self):
        return self._optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self._optimizer.learning_rate = learning_rate

    def _current_learning_rate_value(self):
        """The inner optimizer's learning rate for the step being applied.

        With a `LearningRateSchedule`, `learning_rate` returns the value of
        the previous step until the inner `apply_gradients` refreshes it, so
        evaluate the schedule here instead.
        """
        if isinstance(self._optimizer, OptimizerWrapper):
            return self._optimizer._current_learning_rate_value()
        schedule = getattr(self._optimizer, "_learning_rate", None)
        if isinstance(schedule, tf.keras.optimizers.schedules.LearningRateSchedule):
            return tf.cast(schedule(self.iterations), tf.float32)
        return tf.cast(self._optimizer.learning_rate, tf.float32)

    @property
    def variables(self):
        """The inner optimizer's variables, then this wrapper's own."""
        return _CallableList(list(self._optimizer.variables) + list(self._variables))

    def set_weights(self, weights):
        variables = self.variables
        if len(weights) != len(variables):
            raise ValueError(
                f"{self.name}.set_weights() received {len(weights)} arrays; the optimizer "
                f"has {len(variables)} variables."
            )
        for variable, weight in zip(variables, weights, strict=True):
            variable.assign(weight)

    def build(self, var_list):
        self._optimizer.build(var_list)
        if getattr(self, "_built", False):
            return
        super().build(var_list)
        self._build_wrapper(var_list)
        self._built = True

    def _build_wrapper(self, var_list):
        """Creates the wrapper's own variables (none by default)."""
        del var_list

    def compute_gradients(self, loss, var_list, tape=None):
        # The inner optimizer may itself be a wrapper that changes gradients
        # here (GradientLag), so always ask it.
        return self._optimizer.compute_gradients(loss, var_list, tape=tape)

    def apply_gradients(self, grads_and_vars, name=None, skip_gradients_aggregation=False,
                        **kwargs):
        grads_and_vars = list(grads_and_vars)
        if not grads_and_vars:
            return self.iterations
        variables = [v for _, v in grads_and_vars]
        with tf.init_scope():
            # Variables are created outside any tf.function or tf.cond.
            self.build(variables)
        aggregate = kwargs.pop("experimental_aggregate_gradients", True)
        if not skip_gradients_aggregation and aggregate:
            # tf.distribute replicas are summed before the wrapper looks at
            # the gradients (a no-op under Horovod, which averaged them in
            # compute_gradients).
            grads_and_vars = self._optimizer.aggregate_gradients(grads_and_vars)
        self._apply_wrapped(list(grads_and_vars), name)
        return self.iterations

    def _apply_wrapped(self, grads_and_vars, name):
        raise NotImplementedError

    def finalize_variable_values(self, var_list):
        self._optimizer.finalize_variable_values(var_list)

    def _config_with_inner(self, config):
        """`config` plus what every wrapper config has."""
        return {
            "name": self.name,
            "inner_optimizer": tf.keras.optimizers.serialize(self._optimizer),
            **config,
            "is_legacy_optimizer": False,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        inner = config.pop("inner_optimizer")
        if not isinstance(inner, tf.keras.optimizers.Optimizer):
            # Keras's deserialize edits the dict it is given: keep the caller's intact.
            inner = tf.keras.optimizers.deserialize(
                copy.deepcopy(inner), custom_objects=custom_objects, use_legacy_optimizer=False
            )
        # Keywords only: Horovod's DistributedOptimizer subclass takes **kwargs.
        return cls(inner_optimizer=inner, **config)
