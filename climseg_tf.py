"""The one place that chooses how TensorFlow is set up for climseg.

Importing any climseg package (`zoo`, `callbacks`, `data`) or running
`train.py` imports this module first. It must run before TensorFlow is first
imported, because TensorFlow reads these variables once at import:

- `TF_USE_LEGACY_KERAS=1`: `tf.keras` is tf-keras (Keras 2). TensorFlow 2.18
  otherwise hands out Keras 3, whose optimizers Horovod's
  `DistributedOptimizer` wraps without ever averaging gradients.
- `TF_ENABLE_ONEDNN_OPTS=1`: TensorFlow's oneDNN CPU kernels, which it turns
  on by default only on some Intel CPUs; 2.6x faster training measured on an
  AMD CPU (see docs in README). A value the user set is kept.

A user never sets these by hand. If TensorFlow was already imported with
Keras 3 selected, a warning says so, since nothing can be changed any more.
"""

import os
import sys
import warnings

# A user's explicit choice wins for oneDNN; Keras 2 is not optional.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
_LEGACY = os.environ.get("TF_USE_LEGACY_KERAS")
if _LEGACY not in (None, "1", "true", "True"):
    warnings.warn(
        f"TF_USE_LEGACY_KERAS={_LEGACY!r} in the environment; climseg needs Keras 2 "
        "(tf-keras) and sets it to '1'.",
        stacklevel=2,
    )
os.environ["TF_USE_LEGACY_KERAS"] = "1"

if "tensorflow" in sys.modules:  # Too late to choose: check what we got.
    import tensorflow as _tf

    if not _tf.keras.__name__.startswith("tf_keras"):
        warnings.warn(
            "TensorFlow was imported before climseg and tf.keras is Keras 3 "
            f"({_tf.keras.__name__}); climseg needs tf-keras. Import climseg (or set "
            "TF_USE_LEGACY_KERAS=1) before TensorFlow.",
            stacklevel=2,
        )


def keras_is_tf_keras():
    """Returns True when `tf.keras` resolves to tf-keras (Keras 2)."""
    import tensorflow as tf

    return tf.keras.__name__.startswith("tf_keras")


_LOCAL_RANK_VARIABLES = ("HOROVOD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID",
                         "MPI_LOCALRANKID", "PMI_LOCAL_RANK")


def local_rank():
    """This process's rank on its node: Horovod's if it is initialized, else the launcher's.

    Reads `hvd.local_rank()` when Horovod is running, otherwise the variable
    that horovodrun, Open MPI, Slurm or MPICH/Intel MPI sets; 0 for a lone process.
    """
    try:
        import horovod.tensorflow as hvd

        if hvd.is_initialized():
            return hvd.local_rank()
    except ImportError:
        pass
    for name in _LOCAL_RANK_VARIABLES:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def choose_gpu(num_gpus, rank_on_node):
    """Index of the GPU that the process of local rank `rank_on_node` uses, or None.

    One GPU per rank, by local rank, as Horovod's own examples do. A process
    that sees a single GPU uses it (a launcher such as `srun --gpus-per-task=1`
    already gave each rank its own).

    Raises:
        ValueError: more ranks on this node than GPUs it shows them.
    """
    if num_gpus == 0:
        return None
    if num_gpus == 1:
        return 0
    if not 0 <= rank_on_node < num_gpus:
        raise ValueError(f"local rank {rank_on_node} but this node shows {num_gpus} GPUs; "
                         f"start at most {num_gpus} ranks per node (one GPU each)")
    return rank_on_node


def pin_gpu(rank_on_node=None):
    """Lets this process see one GPU, with memory growth: call before anything uses a GPU.

    Under `horovodrun`, `mpirun` or `srun` every rank otherwise sees every
    GPU of its node and TensorFlow allocates memory on all of them. train.py,
    prediction and the examples call this right after `hvd.init()`. On a
    machine without GPUs it does nothing.

    Args:
        rank_on_node: the local rank. Defaults to `local_rank()`.

    Returns:
        The name of the GPU this process now uses, or None without GPUs.
    """
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    index = choose_gpu(len(gpus), local_rank() if rank_on_node is None else rank_on_node)
    if index is None:
        return None
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    tf.config.set_visible_devices(gpus[index], "GPU")
    return gpus[index].name
