"""Running `model.fit` over a training run's epochs: resumed mid-epoch, backbone frozen first."""


def fit_epochs(model, train_data, first, last, skip, steps, stop=None, **fit):
    """Trains epochs [first, last), the first from its batch `skip` on.

    Args:
        model: the compiled model.
        train_data: `train_data(n)` is the stream of batches from global batch
            n on (e.g. `TrainingSet.train_dataset`).
        first, last: the epochs to train (0-based, last excluded).
        skip: batches of epoch `first` already trained (a mid-epoch resume).
        steps: steps per epoch.
        stop: a callback with a `stopped` flag (e.g. `StopOnNonFinite`); no
            new fit starts once it is set, nor once a callback set
            `model.stop_training` (e.g. `StopAtTarget`). Defaults to None.
        **fit: passed on to `model.fit` (callbacks, validation_data, verbose).

    An interrupted epoch runs as a fit of its own over its remaining batches
    (Keras' steps per epoch is fixed within one fit).

    Returns:
        The last `History`, or None when nothing was trained.
    """
    history = None
    if skip:
        history = model.fit(train_data(first * steps + skip), epochs=first + 1,
                            initial_epoch=first, steps_per_epoch=steps - skip, **fit)
        first += 1
    if first < last and not (stop is not None and stop.stopped) and not model.stop_training:
        history = model.fit(train_data(first * steps), epochs=last, initial_epoch=first,
                            steps_per_epoch=steps, **fit)
    return history


def fit_run(model, compile_args, train_data, first, last, skip, steps, *, frozen_epochs=0,
            set_backbone_trainable=None, stop=None, say=print, **fit):
    """Trains a run's epochs [first, last), the encoder frozen for the first `frozen_epochs`.

    Args:
        model: the model; compiled here with `compile_args` (each phase anew:
            Keras fixes what is trainable at compile time).
        compile_args: `model.compile` keywords (optimizer, loss, metrics).
        train_data, first, last, skip, steps, stop, **fit: as for `fit_epochs`.
        frozen_epochs: epochs (from the start of the run) with the encoder
            frozen. Defaults to 0.
        set_backbone_trainable: `f(model, trainable)` that freezes or unfreezes
            the encoder; needed with `frozen_epochs`.
        say: prints a line for the user.

    Returns:
        The last `History`, or None when nothing was trained.
    """
    history = None
    if frozen_epochs and first < frozen_epochs:
        # The optimizer must know every variable before some are frozen.
        compile_args["optimizer"].build(model.trainable_variables)
        set_backbone_trainable(model, False)
        model.compile(**compile_args)
        say(f"encoder frozen for epochs 1-{frozen_epochs}")
        history = fit_epochs(model, train_data, first, frozen_epochs, skip, steps, stop, **fit)
        first, skip = frozen_epochs, 0
        set_backbone_trainable(model, True)
    if not (stop is not None and stop.stopped) and not model.stop_training and first < last:
        model.compile(**compile_args)
        history = fit_epochs(model, train_data, first, last, skip, steps, stop, **fit)
    return history


def compile_with_xla(model):
    """Makes `model`'s forward pass, and with it the backward pass, one XLA computation.

    Only the model: Keras' `compile(jit_compile=True)` would compile the whole
    training step, and Horovod's allreduce, inside DistributedOptimizer's
    update, has no XLA kernel on CPU (nor on GPU without
    HOROVOD_ENABLE_XLA_OPS), so the optimizer's update and the allreduce stay
    outside. Layers with collectives of their own (Horovod's
    SyncBatchNormalization) cannot be compiled.

    Returns:
        `model`, whose `call` is now compiled with `jit_compile=True`.
    """
    import tensorflow as tf

    model.call = tf.function(model.call, jit_compile=True, reduce_retracing=True)
    return model
