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


# --------------------------------------------------------------------------- Horovod
# The one way climseg's pieces reach the Horovod job. Each works in a single
# process too (rank 0 of 1), and none imports Horovod: a process that never
# imported and initialized it is not part of a job.

def horovod():
    """`horovod.tensorflow` if this process imported and initialized it, else None."""
    hvd = sys.modules.get("horovod.tensorflow")
    if hvd is None:
        return None
    try:
        return hvd if hvd.is_initialized() else None
    except ValueError:  # "Horovod has not been initialized"
        return None


def rank_and_size():
    """(rank, size) of the Horovod job; (0, 1) for a lone process."""
    hvd = horovod()
    return (hvd.rank(), hvd.size()) if hvd else (0, 1)


def allreduce(values, op, name):
    """Reduces a list of numbers over ranks with `op`: "mean", "sum", "min" or "max" (float64)."""
    hvd = horovod()
    if hvd is None or hvd.size() == 1:
        return [float(v) for v in values]
    import tensorflow as tf

    ops = {"mean": hvd.Average, "sum": hvd.Sum, "min": hvd.Min, "max": hvd.Max}
    reduced = hvd.allreduce(tf.constant(values, dtype=tf.float64), op=ops[op], name=name)
    return [float(v) for v in reduced.numpy()]


def allreduce_tensor(tensor, op, name=None):
    """Reduces a tensor over ranks (inside a graph too) with `op` ("sum" or "mean")."""
    hvd = horovod()
    if hvd is None or hvd.size() == 1:
        return tensor
    return hvd.allreduce(tensor, op=hvd.Sum if op == "sum" else hvd.Average, name=name)


def allgather_object(obj, name):
    """Every rank's `obj`, in rank order; `[obj]` for a lone process."""
    hvd = horovod()
    if hvd is None or hvd.size() == 1:
        return [obj]
    return hvd.allgather_object(obj, name=name)


def broadcast_object(obj, name):
    """Rank 0's `obj` on every rank (also a barrier); `obj` for a lone process."""
    hvd = horovod()
    if hvd is None or hvd.size() == 1:
        return obj
    return hvd.broadcast_object(obj, root_rank=0, name=name)


# --------------------------------------------------------------------------- packages

def lazy_exports(package, exports):
    """A package's `__getattr__` that imports each name's module on first use.

    `zoo`, `data` and `callbacks` export names this way, so that importing
    them (and `--help` of every command) does not import TensorFlow until
    something that needs it is used. Submodules are found too
    (`callbacks.checkpoint`); where a function shares its module's name
    (`zoo.tiramisu`), the package's name stays the function.

    Args:
        package: the package's `__name__`.
        exports: `{name: module}` of the names the package exports.

    Returns:
        The `__getattr__` function for the package's module namespace.
    """
    import importlib
    import types

    namespace = sys.modules[package].__dict__

    class Package(types.ModuleType):
        def __setattr__(self, name, value):
            # Importing submodule `zoo.tiramisu` sets the package's `tiramisu` to
            # the module; the package exports the function of that name instead.
            if isinstance(value, types.ModuleType) and exports.get(name) == value.__name__:
                value = getattr(value, name)
            super().__setattr__(name, value)

    sys.modules[package].__class__ = Package

    def __getattr__(name):
        module = exports.get(name)
        if module is None:
            try:
                return importlib.import_module(f"{package}.{name}")
            except ModuleNotFoundError as e:
                if e.name != f"{package}.{name}":
                    raise
                raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__
