"""Pieces for `model.fit` at scale with Horovod: LARC, gradient lag, learning rate, metrics.

Optimizer wrappers (they change the weight update, so they live in the
optimizer, wrapping the one that applies the gradients; `build_optimizer`
puts them in this order):

    opt = tf.keras.optimizers.Adam(lr)
    opt = LARC(opt, eta=0.002, mode="clip")   # layer-wise trust ratio
    opt = GradientLag(opt, lag=1)             # apply the gradient of the previous step
    opt = hvd.DistributedOptimizer(opt)       # Horovod: average gradients, outermost

The learning rate is a schedule the optimizer evaluates in the graph:

    opt = tf.keras.optimizers.Adam(MultiStageSchedule(lr, ..., steps_per_epoch=steps))

Callbacks (`MetricAverage` first in the list):

    callbacks = [MetricAverage(), LearningRateLogger(), Throughput(batch_size)]

Names are imported on first use: `import callbacks` does not load TensorFlow.
"""

import climseg_tf

_EXPORTS = {
    **dict.fromkeys(("Checkpointer", "CheckpointError", "checkpoint_channel_names",
                     "latest_checkpoint", "read_meta", "restore_checkpoint", "resume_point",
                     "resume_position"), "callbacks.checkpoint"),
    **dict.fromkeys(("compile_with_xla", "fit_epochs", "fit_run"), "callbacks.fitting"),
    **dict.fromkeys(("GradientLag", "average_lag_buffers"), "callbacks.gradient_lag"),
    "LARC": "callbacks.larc",
    **dict.fromkeys(("LearningRateLogger", "MultiStageSchedule", "check_stages",
                     "learning_rate_of", "parse_stages"), "callbacks.learning_rate"),
    "MetricAverage": "callbacks.metric_average",
    **dict.fromkeys(("OPTIMIZERS", "build_optimizer", "gradient_lag_bytes"),
                    "callbacks.optimizers"),
    "StopAtTarget": "callbacks.target",
    "StopOnNonFinite": "callbacks.nan_guard",
    "sync_batch_norm": "callbacks.sync_batch_norm",
    "TrainingReport": "callbacks.report",
    **dict.fromkeys(("Throughput", "format_flops"), "callbacks.throughput"),
    "WandbValidationImages": "callbacks.wandb_images",
}
__all__ = sorted(_EXPORTS)
__getattr__ = climseg_tf.lazy_exports(__name__, _EXPORTS)
