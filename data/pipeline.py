"""Climate files to a `tf.data.Dataset` of (inputs, labels) batches for `model.fit`."""

import collections
import concurrent.futures
import os
import sys
import threading

import numpy as np
import tensorflow as tf

from data.augment import random_augment
from data.errors import BadFileLog, DataFileError
from data.files import list_files, num_batches, shard_indices
from data.layouts import (
    LABEL_SETS,
    aligned_empty,
    channel_indices,
    dataset_grid,
    file_samples,
    read_sample,
    read_sample_into,
)
from data.stats import normalizer, row_normalizer

_FOREVER = 2**62


def make_dataset(paths, batch_size, *, training, stats=None, normalization="minmax",
                 channels=None, label_set="labels_0", num_shards=1, shard_index=0, seed=0,
                 initial_epoch=0, initial_batch=0, augment=False, skip_bad_files=False,
                 bad_files=None,
                 num_parallel_reads=None, prefetch=None, validate=True, grid=None):
    """Builds the input pipeline of one shard (Horovod rank).

    Files are read in parallel by reader threads, each sample straight into
    its place in a new batch array, validated and normalized block by block
    while the block is in the CPU cache (see `read_sample_into`); with
    `augment`, read, augmented in physical units, then copied and normalized.
    Batches are prefetched. The order of files and all randomness (shuffle, random label
    set, augmentation) depend only on `seed`, the epoch and the file, not on
    thread timing: two runs with the same arguments give the same batches.

    A sample is an HDF5 file, or one time step of netCDF model output (see
    `data.layouts.file_samples`).

    Training (`training=True`): an endless dataset. Epoch `e` reads this
    shard's part of the sample list shuffled by `(seed, e)` (see
    `shard_files`), cut to whole batches, so that every shard yields exactly
    `num_batches(...)` batches per epoch: pass that as `steps_per_epoch`.

    Validation (`training=False`): one pass over samples `shard_index,
    shard_index + num_shards, ...` in order, last batch possibly smaller, so
    the shards together read every sample exactly once. Shards may differ by
    one batch; sum metrics over ranks (e.g. confusion matrices) at the end.
    With `skip_bad_files`, validation batches are `(inputs, labels,
    weights)`: a skipped sample is all zeros with weight 0, so the number of
    batches never changes (Horovod ranks stay in step).

    Args:
        paths: a directory, glob, file or list of them (see `list_files`).
        batch_size: samples per batch on this shard.
        training: training or validation pipeline (see above).
        stats: a `Stats` or the path of a `stats.h5`; None leaves the data
            unnormalized. Defaults to None.
        normalization: `"minmax"` (as published) or `"zscore"`. Defaults to `"minmax"`.
        channels: channel selection by index or name, e.g. `"TMQ,U850,V850,PSL"`.
            Defaults to all 16.
        label_set: `"labels_0"`, `"labels_1"` or `"random"` (a random one of
            the file's label sets per read, as SC18 did). Defaults to `"labels_0"`.
        num_shards: number of shards, e.g. `hvd.size()`. Defaults to `1`.
        shard_index: this shard, e.g. `hvd.rank()`. Defaults to `0`.
        seed: seed of the shuffle and of augmentation, the same on all ranks.
            Defaults to `0`.
        initial_epoch: first epoch's number, to resume a run where it
            stopped. Defaults to `0`.
        initial_batch: batches of epoch `initial_epoch` already consumed;
            the dataset starts after them (only file numbers are skipped,
            nothing is read). A run resumed at global batch `n` of a training
            loop that reads the dataset without breaks (Keras' `fit` with any
            `steps_per_epoch`) passes `initial_epoch=n // per_epoch,
            initial_batch=n % per_epoch`, where `per_epoch` is
            `num_batches(...)`. Defaults to `0`.
        augment: random longitude roll and north-south flip (see
            `data.augment`); training only. Defaults to False.
        skip_bad_files: skip files that cannot be read or fail validation,
            recording them in `bad_files`, instead of failing. Defaults to False.
        bad_files: a `BadFileLog` for skipped files; print its `report()` at
            the end of the run. Defaults to a new one (then only warnings are
            logged).
        num_parallel_reads: files read at once (reader threads). Defaults to
            the number of cores this process may run on.
        prefetch: batches prepared ahead. Defaults to tf.data's autotuning.
        validate: check every sample for NaN/Inf and labels outside the
            classes. Defaults to True.
        grid: (H, W) of the samples, if already known (e.g. from
            `dataset_grid`). Defaults to None: found with `dataset_grid`, which
            reads every file's metadata.

    Returns:
        A `tf.data.Dataset` of `(inputs, labels)`: float32 (B, H, W, C) and
        int32 (B, H, W); for validation with `skip_bad_files`, `(inputs,
        labels, weights)` with float32 (B, H, W) per-pixel weights.

    Raises:
        DataFileError: no files, or (when not skipping) a file that cannot be
            opened or has another grid than most. A bad file met while
            iterating stops iteration with a TensorFlow error whose message
            holds this error's text.

    Example:

    >>> train = make_dataset("/data/train", 2, training=True, stats="/data/train/stats.h5",
    ...                      num_shards=hvd.size(), shard_index=hvd.rank())
    >>> steps = num_batches("/data/train", 2, training=True, num_shards=hvd.size())
    >>> model.fit(train, epochs=10, steps_per_epoch=steps)
    """
    if label_set not in LABEL_SETS:
        raise ValueError(f"label_set={label_set!r}; expected one of {', '.join(LABEL_SETS)}")
    if augment and not training:
        raise ValueError("augment=True with training=False; augmentation is for training data")
    bad_files = bad_files if bad_files is not None else BadFileLog()
    files = list_files(paths, bad_files=bad_files if skip_bad_files else None)
    # Every time step of model output is a sample; HDF5 files are one each.
    samples = file_samples(files, skip_bad_files=skip_bad_files, bad_files=bad_files)
    steps = num_batches(len(samples), batch_size, training=training, num_shards=num_shards,
                        shard_index=shard_index)
    if training and steps == 0:
        raise ValueError(f"{len(samples)} samples give no full batch of {batch_size} on each "
                         f"of {num_shards} shards; expected at least {batch_size * num_shards}")
    height, width = grid or dataset_grid(files, skip_bad_files=skip_bad_files,
                                         bad_files=bad_files)
    indices = channel_indices(channels)
    offset, scale = (None, None) if stats is None else normalizer(stats, normalization, indices)
    shape = (height, width, len(indices))
    skipped = set()  # This dataset's bad files: when all are bad, an endless one must stop.
    transform = None if offset is None else row_normalizer(offset, scale, width)
    workers = num_parallel_reads or _available_cores()
    readers = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="climseg-read")

    def read(index, epoch, data, labels):
        """Reads sample `index` into `data` and `labels`: True, or False for a skipped bad file."""
        path, time = samples[index]
        rng = np.random.default_rng([seed, int(epoch), int(index)])
        try:
            if augment:  # In physical units, before normalization: read, augment, copy.
                fields, classes = read_sample(path, channels=indices, label_set=label_set,
                                              rng=rng, expected_shape=shape[:2],
                                              validate=validate, time=time)
                data[...], labels[...] = random_augment(fields, classes, rng, channels=indices)
                if transform is not None:
                    transform(data)
            else:
                read_sample_into(path, data, labels, channels=indices, label_set=label_set,
                                 rng=rng, validate=validate, transform=transform, time=time)
        except DataFileError as err:
            if not skip_bad_files:
                raise
            data[...], labels[...] = 0, 0  # a clean zero-weight sample, not stale memory
            bad_files.add(err.path, err.problem)
            skipped.add(int(index))
            if len(skipped) == len(samples):
                raise DataFileError(
                    err.path, f"the last of the {len(samples)} samples is bad too; nothing "
                              f"left to read\n{bad_files.report()}") from err
            return False
        return True

    buffers = _BatchBuffers(shape)

    def read_batch(batch, epochs):
        """One batch, each sample read by a reader thread straight into its place."""
        data, labels = buffers.get(len(batch))
        reads = [readers.submit(read, index, epoch, data[i], labels[i])
                 for i, (index, epoch) in enumerate(zip(batch, epochs, strict=True))]
        ok = np.array([r.result() for r in reads])
        return data, labels, ok

    def read_op(batch, epochs):
        data, labels, ok = tf.numpy_function(read_batch, [batch, epochs],
                                             [tf.float32, tf.int32, tf.bool], stateful=False)
        data.set_shape([None, *shape])
        labels.set_shape([None, *shape[:2]])
        ok.set_shape([None])
        return data, labels, ok

    if training:
        per_epoch = steps * batch_size

        def epoch_order(epoch):
            order = shard_indices(len(samples), training=True, num_shards=num_shards,
                                  shard_index=shard_index, seed=seed, epoch=int(epoch))
            return order[:per_epoch]

        def epoch_elements(epoch):
            order = tf.numpy_function(epoch_order, [epoch], tf.int64, stateful=False)
            order.set_shape([per_epoch])
            return tf.data.Dataset.from_tensor_slices((order, tf.fill([per_epoch], epoch)))

        if not 0 <= initial_batch < steps:
            raise ValueError(f"initial_batch={initial_batch}; expected 0 <= initial_batch < "
                             f"{steps} (batches per epoch)")
        elements = tf.data.Dataset.range(initial_epoch, _FOREVER).flat_map(epoch_elements)
        elements = elements.skip(initial_batch * batch_size)
    else:
        order = shard_indices(len(samples), training=False, num_shards=num_shards,
                              shard_index=shard_index)
        elements = tf.data.Dataset.from_tensor_slices((order, tf.zeros_like(order)))

    # Batches of file numbers, each read into one new batch array (which TensorFlow takes
    # without a copy): enough batches at once to keep every reader thread busy.
    in_flight = max(2, -(-workers // batch_size) + 1)
    dataset = elements.batch(batch_size, drop_remainder=training and not skip_bad_files)
    dataset = dataset.map(read_op, num_parallel_calls=in_flight, deterministic=True)
    if skip_bad_files and training:  # Whole batches of the good samples only: one more copy.
        dataset = dataset.unbatch().filter(lambda data, labels, ok: ok)
        dataset = dataset.batch(batch_size, drop_remainder=True)
    if skip_bad_files and not training:
        # Validation keeps its batch count whatever it skips (Horovod's metric
        # collectives pair up step by step): a bad sample gets weight 0.
        dataset = dataset.map(lambda data, labels, ok: (
            data, labels, tf.broadcast_to(tf.cast(ok, tf.float32)[:, None, None],
                                          tf.shape(labels))))
    else:
        dataset = dataset.map(lambda data, labels, ok: (data, labels))
    if not training:
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(steps))
    return dataset.prefetch(prefetch or tf.data.AUTOTUNE)


class _BatchBuffers:
    """Batch arrays, reused once nothing refers to them any more.

    New memory costs a page fault per 4 KB page on first touch: at full size
    that was as long as reading the sample. TensorFlow takes the arrays that
    `tf.numpy_function` returns without a copy and holds a reference to them
    until the tensor is freed, so an array whose memory only this pool refers
    to can be overwritten with the next batch.
    """

    _KEEP = 16  # arrays kept per batch size; beyond that, new ones are not kept

    def __init__(self, shape):
        self._shape = shape
        self._kept = collections.defaultdict(list)
        self._lock = threading.Lock()

    def get(self, size):
        """`(data, labels)`: float32 (size, H, W, C) and int32 (size, H, W) arrays."""
        shape = (size, *self._shape)
        data_count, labels_count = int(np.prod(shape)), int(np.prod(shape[:3]))
        data_bytes = -(-data_count * 4 // 64) * 64  # the labels start 64-byte aligned too
        with self._lock:
            kept = self._kept[size]
            # A free one's memory is referred to by the aligned view kept here and by
            # getrefcount's argument only; the arrays made from it below, and TensorFlow's
            # tensors of them, refer to it too.
            memory = next((m for m in kept if sys.getrefcount(m.base) == 2), None)
            if memory is None:
                memory = aligned_empty(data_bytes + labels_count * 4, np.uint8)
                if len(kept) < self._KEEP:
                    kept.append(memory)
        data = memory[:data_count * 4].view(np.float32).reshape(shape)
        return data, memory[data_bytes:].view(np.int32).reshape(shape[:3])


def _available_cores():
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def usable_files(paths, *, channels=None, label_set="labels_0", bad_files=None, workers=4):
    """The files that read and validate cleanly; the others go to `bad_files`.

    A validation pipeline with `skip_bad_files=True` would otherwise find out
    only while reading, and a shard that shrinks runs fewer steps than the
    others, so that Horovod's collectives (IoU metrics) no longer pair up.
    Checking the validation files once beforehand keeps every shard's count
    known. Reads each file fully, in `workers` threads.

    Args:
        paths: a directory, glob, file or list (see `list_files`).
        channels: channel selection, as for `read_sample`.
        label_set: as for `read_sample`.
        bad_files: a `BadFileLog` to record skipped files in. Defaults to a new one.
        workers: files checked at once. Defaults to `4`.

    Returns:
        The usable files, in `list_files` order.
    """
    from concurrent.futures import ThreadPoolExecutor

    files = list_files(paths)
    bad_files = bad_files if bad_files is not None else BadFileLog()
    indices = channel_indices(channels)
    height, width = dataset_grid(files, skip_bad_files=True, bad_files=bad_files)

    def check(path):
        try:
            for time in range(len(file_samples([path]))):  # model output: every time step
                read_sample(path, channels=indices, label_set=label_set,
                            rng=np.random.default_rng(0), expected_shape=(height, width),
                            time=time)
        except DataFileError as err:
            bad_files.add(err.path, err.problem)
            return False
        return True

    with ThreadPoolExecutor(max(1, workers)) as pool:
        ok = list(pool.map(check, files))
    return [path for path, good in zip(files, ok, strict=True) if good]
