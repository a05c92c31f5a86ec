"""Training throughput: samples/s per rank and in total, sustained FLOP/s, efficiency."""

import numbers
import time

import tensorflow as tf

import climseg_tf


def format_flops(flops_per_second):
    """`1.23e15` -> `"1.23 PFLOP/s"`."""
    for factor, prefix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M")):
        if flops_per_second >= factor:
            return f"{flops_per_second / factor:.3g} {prefix}FLOP/s"
    return f"{flops_per_second:.3g} FLOP/s"


def _positive(value, name, allow_none=True):
    if value is None and allow_none:
        return None
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"Throughput {name} must be a number > 0; received {name}={value!r}.")
    return value


class Throughput(tf.keras.callbacks.Callback):
    """Measures training speed each epoch: samples/s, sustained FLOP/s, parallel efficiency.

    Each epoch, the time from the start of batch `skip_batches` to the end of
    the last batch is measured on every rank (the skipped first batches hold
    tracing and input-pipeline start-up). Every rank times the same steps,
    but a rank that waits for the others at the first timed step's allreduce
    starts its clock earlier: the job's rate is the samples of all ranks over
    the longest of the ranks' times, never more than `size` times the
    slowest rank's rate. From it:

    - `samples_per_second`: this rank's rate, `batches * batch_size / time`;
    - `samples_per_second_total`: all ranks' samples of the timed steps over
      the longest rank's time;
    - `flops_per_second`: `samples_per_second_total * flops_per_sample`, the
      sustained rate the paper reports (PF/s), if `flops_per_sample` is given;
    - `parallel_efficiency`: `samples_per_second_total / (size *
      single_rank_rate)`, the weak-scaling efficiency the paper reports, if
      `single_rank_rate` is given.

    The values go into the epoch `logs` (so `History`, W&B and CSV loggers
    after it record them) and rank 0 prints them when `verbose` is 1. Every
    rank must run the callback (the total is an allreduce).

    Reference: Kurth et al., SC18 (arXiv:1810.01993): sustained PF/s and
    parallel efficiency as headline figures.

    Args:
      batch_size: samples per step on one rank (the local batch size).
      flops_per_sample: training FLOPs (forward and backward) per sample, e.g.
        from the zoo's FLOP counter. Defaults to `None` (no FLOP/s).
      single_rank_rate: samples/s of one rank training alone on the same
        per-rank work, the reference for efficiency. Defaults to `None`.
      skip_batches: batches at the start of each epoch not timed; at least 1
        in the first epoch is wise (tracing). Defaults to `1`.
      verbose: 0: quiet; 1: rank 0 prints a line per epoch. Defaults to `1`.

    Example:

        flops = zoo.training_flops_per_sample(model)
        model.fit(..., callbacks=[MetricAverage(), Throughput(batch_size=2,
                                                              flops_per_sample=flops)])
    """

    def __init__(self, batch_size, flops_per_sample=None, single_rank_rate=None, skip_batches=1,
                 verbose=1):
        super().__init__()
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"Throughput batch_size must be an int >= 1; received "
                             f"batch_size={batch_size!r}.")
        if not isinstance(skip_batches, int) or isinstance(skip_batches, bool) or skip_batches < 0:
            raise ValueError(f"Throughput skip_batches must be an int >= 0; received "
                             f"skip_batches={skip_batches!r}.")
        self.batch_size = batch_size
        self.flops_per_sample = _positive(flops_per_sample, "flops_per_sample")
        self.single_rank_rate = _positive(single_rank_rate, "single_rank_rate")
        self.skip_batches = skip_batches
        self.verbose = int(verbose)
        # The batch hooks only read the clock: Keras may keep the logs on the device.
        self._supports_tf_logs = True
        self._reset()

    def _reset(self):
        self._start = None
        self._end = None
        self._timed_batches = 0

    def on_train_begin(self, logs=None):
        self._reset()

    def on_epoch_begin(self, epoch, logs=None):
        self._reset()

    def on_train_batch_begin(self, batch, logs=None):
        if batch == self.skip_batches:
            self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if batch >= self.skip_batches and self._start is not None:
            self._end = time.perf_counter()
            self._timed_batches += 1

    def on_epoch_end(self, epoch, logs=None):
        rank, size = climseg_tf.rank_and_size()
        timed = self._timed_batches > 0 and self._end > self._start
        rate = self._timed_batches * self.batch_size / (self._end - self._start) if timed else 0.0
        # Horovod: the same steps on every rank; the job took the longest rank's time.
        samples, ranks_timed = climseg_tf.allreduce(
            [self._timed_batches * self.batch_size, float(timed)], "sum",
            name="climseg.throughput")
        (longest,) = climseg_tf.allreduce([self._end - self._start if timed else 0.0], "max",
                                        name="climseg.throughput_time")
        if ranks_timed < size:
            if self.verbose and rank == 0:
                print(f"Throughput: epoch {epoch + 1} has at most {self.skip_batches} batches "
                      "on some rank; nothing timed.")
            return
        total = samples / longest
        values = {"samples_per_second": rate, "samples_per_second_total": total}
        if self.flops_per_sample:
            values["flops_per_second"] = total * self.flops_per_sample
        if self.single_rank_rate:
            values["parallel_efficiency"] = total / (size * self.single_rank_rate)
        if logs is not None:
            logs.update(values)
        if self.verbose and rank == 0:  # only rank 0 prints
            line = (f"Throughput, epoch {epoch + 1}: {rate:.4g} samples/s on rank 0, "
                    f"{total:.4g} samples/s on {size} rank{'s' if size > 1 else ''}")
            if "flops_per_second" in values:
                line += f", {format_flops(values['flops_per_second'])} sustained"
            if "parallel_efficiency" in values:
                line += f", parallel efficiency {100 * values['parallel_efficiency']:.1f}%"
            print(line)
