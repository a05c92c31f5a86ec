"""Pieces for `model.fit` at scale with Horovod: LARC, gradient lag, learning rate, metrics.

Optimizer wrappers (they change the weight update, so they live in the
optimizer, wrapping the one that applies the gradients):

    opt = tf.keras.optimizers.Adam(lr)
    opt = LARC(opt, eta=0.002, mode="clip")   # layer-wise trust ratio
    opt = GradientLag(opt, lag=1)             # apply the gradient of the previous step
    opt = hvd.DistributedOptimizer(opt)       # Horovod: average gradients, outermost

Callbacks (`MetricAverage` first in the list):

    callbacks = [MetricAverage(), MultiStageLearningRate(lr, ...), Throughput(batch_size)]
"""

import climseg_tf  # noqa: F401  (selects Keras 2 before TensorFlow loads)
from callbacks.checkpoint import (
    Checkpointer,
    CheckpointError,
    latest_checkpoint,
    read_meta,
    restore_checkpoint,
)
from callbacks.gradient_lag import GradientLag, average_lag_buffers
from callbacks.larc import LARC
from callbacks.learning_rate import MultiStageLearningRate, parse_stages
from callbacks.metric_average import MetricAverage
from callbacks.nan_guard import StopOnNonFinite
from callbacks.report import TrainingReport
from callbacks.throughput import Throughput, format_flops
from callbacks.wandb_images import WandbValidationImages

__all__ = [
    "CheckpointError",
    "Checkpointer",
    "GradientLag",
    "LARC",
    "MetricAverage",
    "MultiStageLearningRate",
    "StopOnNonFinite",
    "Throughput",
    "TrainingReport",
    "WandbValidationImages",
    "average_lag_buffers",
    "format_flops",
    "latest_checkpoint",
    "parse_stages",
    "read_meta",
    "restore_checkpoint",
]
