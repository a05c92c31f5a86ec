"""Rank, size and collectives of the Horovod job, or of a single process: private."""


def _hvd():
    """`horovod.tensorflow` if Horovod is installed and initialized, else None."""
    try:
        import horovod.tensorflow as hvd
    except ImportError:
        return None
    return hvd if hvd.is_initialized() else None


def rank_and_size():
    """(rank, size) of the Horovod job; (0, 1) without Horovod."""
    hvd = _hvd()
    return (hvd.rank(), hvd.size()) if hvd else (0, 1)


def allreduce(values, op, name):
    """Reduces a list of floats over ranks with `op` ("mean", "sum" or "max"), as float64."""
    hvd = _hvd()
    if hvd is None or hvd.size() == 1:
        return [float(v) for v in values]
    import tensorflow as tf

    reduced = hvd.allreduce(tf.constant(values, dtype=tf.float64),
                            op={"mean": hvd.Average, "sum": hvd.Sum, "max": hvd.Max}[op],
                            name=name)
    return [float(v) for v in reduced.numpy()]


def allgather_object(obj, name):
    """Every rank's `obj`, in rank order; `[obj]` without Horovod."""
    hvd = _hvd()
    if hvd is None or hvd.size() == 1:
        return [obj]
    return hvd.allgather_object(obj, name=name)
