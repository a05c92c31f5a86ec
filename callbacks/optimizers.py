"""The optimizer of a training run: its wrappers in their one valid order.

    inner (SGD, Adam, AdamW, LAMB) -> LARC -> GradientLag -> Horovod -> loss scaling

LARC rescales the update, so it wraps the optimizer that applies it;
GradientLag hands out the gradient of `lag` steps ago, which Horovod's
`DistributedOptimizer` then averages over ranks; dynamic loss scaling
(mixed_float16) is outermost, so a step whose averaged gradients overflow is
skipped on every rank alike. Gradient accumulation is Horovod's own
(`backward_passes_per_step`): each rank sums N micro-batches' gradients
locally and allreduces once per N, when the update is applied.
"""

OPTIMIZERS = ("sgd", "adam", "adamw", "lamb")


def build_optimizer(name, learning_rate, *, weight_decay=0.0, larc=False, larc_eta=0.002,
                    larc_mode="clip", gradient_lag=0, accumulate=1, distributed=True,
                    precision="fp32"):
    """Builds the run's optimizer, wrapped in the module's order.

    Args:
        name: one of `OPTIMIZERS` (SGD with momentum 0.9).
        learning_rate: the learning rate: a number, or a `LearningRateSchedule` of the
            optimizer's step (e.g. `MultiStageSchedule`) that it evaluates in the graph.
        weight_decay: for AdamW and LAMB, or LARC's decay with the others.
        larc, larc_eta, larc_mode: wrap in `LARC`.
        gradient_lag: wrap in `GradientLag` with this lag (0: none).
        accumulate: apply the mean gradient of this many micro-batches as one
            update (Horovod's `backward_passes_per_step`, averaged): N steps
            of batch b give the update of one step of batch N*b. `iterations`
            still counts micro-batches; give the learning-rate schedule
            `steps_per_update=accumulate`. Needs `distributed`; not with
            `gradient_lag`. Defaults to `1`.
        distributed: wrap in Horovod's `DistributedOptimizer` (needs
            `horovod.tensorflow.keras`, initialized). Defaults to True.
        precision: "mixed_float16" adds dynamic loss scaling.

    Returns:
        The optimizer to compile the model with.
    """
    import tensorflow as tf

    from callbacks.gradient_lag import GradientLag

    if accumulate > 1 and (gradient_lag or not distributed):
        raise ValueError(f"accumulate={accumulate} needs distributed=True (Horovod aggregates "
                         "the micro-batches) and no gradient_lag (it would lag micro-batches)")
    from callbacks.larc import LARC

    if name == "sgd":
        opt = tf.keras.optimizers.SGD(learning_rate, momentum=0.9)
    elif name == "adam":
        opt = tf.keras.optimizers.Adam(learning_rate)
    elif name == "adamw":
        opt = tf.keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay)
    elif name == "lamb":
        from official.modeling.optimization.lamb import LAMB

        opt = LAMB(learning_rate, weight_decay_rate=weight_decay)
    else:
        raise ValueError(f"optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")
    if larc:
        # AdamW and LAMB decay the weights themselves; LARC adds the decay
        # (to the gradient and its trust ratio) for the others, not twice.
        decay = 0.0 if name in ("adamw", "lamb") else weight_decay
        opt = LARC(opt, eta=larc_eta, mode=larc_mode, weight_decay=decay)
    if gradient_lag:
        opt = GradientLag(opt, lag=gradient_lag)
    if distributed:
        import horovod.tensorflow.keras as hvd

        # Horovod: average gradients over ranks; with accumulation, sum the
        # micro-batches locally and allreduce (then divide by N) once per update.
        opt = hvd.DistributedOptimizer(opt, backward_passes_per_step=accumulate,
                                       average_aggregated_gradients=True)
    if precision == "mixed_float16":
        opt = tf.keras.mixed_precision.LossScaleOptimizer(opt)
    return opt


def gradient_lag_bytes(lag, epochs, steps_per_epoch, model):
    """Bytes of a gradient-lag buffer on `model`, after checking that the lag can apply.

    Raises:
        ValueError: `lag` >= the run's steps, so no lagged gradient would ever
            be applied in it.
    """
    total = epochs * steps_per_epoch
    if lag >= total:
        raise ValueError(f"the run has {total} steps ({epochs} epochs x {steps_per_epoch}), so "
                         f"no lagged gradient would ever be applied; expected a lag below "
                         f"{total} (the paper used 1)")
    return lag * sum(int(v.shape.num_elements()) * v.dtype.size
                     for v in model.trainable_variables)
