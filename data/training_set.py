"""The data of one training run as one rank sees it: files, statistics, grid, steps, datasets.

    train_set = prepare_training_set(["/data/train"], ["/data/val"], batch_size=2,
                                     rank=hvd.rank(), size=hvd.size())
    model.fit(train_set.train_dataset(0), steps_per_epoch=train_set.steps,
              validation_data=train_set.validation_dataset(), ...)

Every rank calls `prepare_training_set` (it holds collectives when there are
several ranks). What a rank reads follows the global batch, not the epoch, so
a run resumed at any batch reads what the uninterrupted run read.
"""

import functools
import os

import climseg_tf
from data.errors import BadFileLog, DataFileError
from data.files import STATS_NAME, list_files, num_batches


class TrainingSetError(ValueError):
    """A data set that cannot be trained on; `source` says which input is at fault.

    `source` is one of "train", "validation", "stats" or "batch_size".
    """

    def __init__(self, source, message):
        self.source = source
        super().__init__(message)


class TrainingSet:
    """One rank's training and validation data; made by `prepare_training_set`.

    Attributes:
        train_files, val_files: the files this run reads (validation: all ranks').
        val_samples: the number of validation samples (a netCDF file of model
            output holds one per time step).
        stats, stats_path: the normalization statistics (`data.Stats`), or None.
        channels: the selected channel indices.
        grid: (H, W) of every sample.
        steps: training steps per epoch, the same on every rank.
        pass_batches: batches in one pass over this rank's training files.
        bad_files: this rank's `BadFileLog`.
    """

    def __init__(self, *, train_files, val_files, val_samples, stats, stats_path, channels,
                 grid, steps, pass_batches, batch_size, shard, rank, size, bad_files,
                 read_options, augment):
        self.train_files, self.val_files = train_files, val_files
        self.val_samples = val_samples
        self.stats, self.stats_path = stats, stats_path
        self.channels, self.grid = channels, grid
        self.steps, self.pass_batches = steps, pass_batches
        self.batch_size = batch_size
        self.bad_files = bad_files
        self._shard, self._rank, self._size = shard, rank, size
        self._options = dict(read_options, bad_files=bad_files, grid=grid)
        self._augment = augment

    @property
    def input_shape(self):
        return (*self.grid, len(self.channels))

    @property
    def read_options(self):
        """The reading options (`make_dataset` keywords) shared by training and validation."""
        return dict(self._options)

    def train_dataset(self, position=0):
        """The endless stream of training batches from global batch `position` on."""
        from data.pipeline import make_dataset

        num_shards, shard_index = self._shard
        return make_dataset(self.train_files, self.batch_size, training=True,
                            num_shards=num_shards, shard_index=shard_index,
                            initial_epoch=position // self.pass_batches,
                            initial_batch=position % self.pass_batches, augment=self._augment,
                            **self._options)

    def validation_dataset(self):
        """This rank's validation batches, as many on every rank (zero-weight padding); or None."""
        if not self.val_files:
            return None
        from data.equalize import equalize_batches
        from data.pipeline import make_dataset

        dataset = make_dataset(self.val_files, self.batch_size, training=False,
                               num_shards=self._size, shard_index=self._rank, **self._options)
        # Horovod: IoU metrics allreduce at every step, so all ranks need as many
        # batches; the shorter shards get zero-weight padding.
        count = functools.partial(num_batches, self.val_samples, self.batch_size,
                                  training=False, num_shards=self._size)
        return equalize_batches(dataset, count(shard_index=self._rank), count(shard_index=0))

    def all_bad_files(self):
        """Every rank's skipped files, in one `BadFileLog` (a collective)."""
        merged = BadFileLog()
        for items in climseg_tf.allgather_object(self.bad_files.items(), "climseg.bad_files"):
            for path, problem in items:
                merged.add(path, problem, warn=False)
        return merged


def stats_next_to(paths):
    """The `stats.h5` beside the first of `paths` that has one, or in its parent; or None.

    The parent is where DeepCAM's layout keeps it (`ROOT/train`, `ROOT/stats.h5`).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    for path in paths:
        directory = os.path.abspath(path if os.path.isdir(path) else os.path.dirname(path))
        for candidate in (os.path.join(directory, STATS_NAME),
                          os.path.join(os.path.dirname(directory), STATS_NAME)):
            if os.path.isfile(candidate):
                return candidate
    return None


def prepare_training_set(train_paths, val_paths=None, *, batch_size, stats_path=None,
                         normalization="minmax", channels=None, label_set="labels_0",
                         skip_bad_files=False, augment=False, stage_dir=None,
                         stage_oversample=1.0, steps_per_epoch=None, seed=0, rank=0, size=1,
                         say=print):
    """Lists, checks (and stages) a run's files; every rank calls it.

    Args:
        train_paths, val_paths: directories, globs or files (see `list_files`).
        batch_size: samples per step on one rank.
        stats_path: a `stats.h5`. Defaults to the one next to the training
            files, if there.
        normalization, channels, label_set, skip_bad_files, augment, seed:
            as for `make_dataset`.
        stage_dir: copy each rank's share of the training files below it
            first (`stage_files`). Defaults to None.
        stage_oversample: each rank stages this many times its share.
        steps_per_epoch: training steps per epoch. Defaults to one pass over
            this rank's files.
        rank, size: this rank and the number of ranks.
        say: prints a line for the user (rank 0's). Defaults to `print`.

    Returns:
        A `TrainingSet`.

    Raises:
        TrainingSetError: naming the input at fault.
    """
    from data.layouts import channel_indices, dataset_grid, file_samples
    from data.pipeline import usable_files
    from data.staging import stage_files
    from data.stats import read_stats

    bad_files = BadFileLog()
    skipping = bad_files if skip_bad_files else None
    try:
        train_files = list_files(train_paths, bad_files=skipping)
    except DataFileError as e:
        raise TrainingSetError("train", str(e)) from None
    try:
        val_files = list_files(val_paths, bad_files=skipping) if val_paths else []
    except DataFileError as e:
        raise TrainingSetError("validation", str(e)) from None
    if skip_bad_files and val_files:
        # Known-good validation files keep every rank's step count known.
        if rank == 0:
            val_files = usable_files(val_files, channels=channels, label_set=label_set,
                                     bad_files=bad_files)
        val_files = climseg_tf.broadcast_object(val_files, "climseg.val_files")
    stats_path = stats_path or stats_next_to(train_paths)
    try:
        stats = read_stats(stats_path) if stats_path else None
    except DataFileError as e:
        raise TrainingSetError("stats", str(e)) from None
    if stats is None:
        say("no stats.h5 found: inputs are not normalized (give --stats)")
    shard = (size, rank)
    if stage_dir:
        # Each rank copies only its share; reading then stays node-local.
        train_files = stage_files(train_files, os.path.join(stage_dir, f"rank{rank}"),
                                  num_shards=size, shard_index=rank, oversample=stage_oversample,
                                  seed=seed, progress=rank == 0)
        shard = (1, 0)
    indices = channel_indices(channels)
    try:  # the grid of most files, not of whichever sorts first
        grid = dataset_grid(train_files, skip_bad_files=skip_bad_files, bad_files=bad_files)
    except DataFileError as e:
        raise TrainingSetError("train", str(e)) from None
    if val_files and not skip_bad_files:
        # Before training, not after its first epoch: every validation file opens,
        # is in a known layout and on the training grid (metadata only).
        try:
            val_grid = dataset_grid(val_files)
        except DataFileError as e:
            raise TrainingSetError("validation", str(e)) from None
        if val_grid != grid:
            raise TrainingSetError("validation", f"the validation files' grid is "
                                                 f"{val_grid[0]}x{val_grid[1]}, the training "
                                                 f"files' {grid[0]}x{grid[1]}")
    try:  # a netCDF file of model output holds a sample per time step
        train_samples = len(file_samples(train_files, skip_bad_files=skip_bad_files,
                                         bad_files=bad_files))
    except DataFileError as e:
        raise TrainingSetError("train", str(e)) from None
    val_samples = len(file_samples(val_files)) if val_files else 0
    # An epoch (steps_per_epoch) may be more or less than one pass.
    pass_batches = num_batches(train_samples, batch_size, training=True,
                               num_shards=shard[0], shard_index=shard[1])
    steps = steps_per_epoch or pass_batches
    if stage_dir and size > 1:  # staged shards may differ: all ranks take the least
        steps = int(climseg_tf.allreduce([steps], "min", name="climseg.steps")[0])
    if steps < 1 or pass_batches < 1:
        raise TrainingSetError("batch_size", f"{train_samples} training samples over "
                                             f"{shard[0]} rank(s) give no full batch")
    options = dict(stats=stats, normalization=normalization, channels=indices,
                   label_set=label_set, skip_bad_files=skip_bad_files, seed=seed)
    return TrainingSet(train_files=train_files, val_files=val_files, val_samples=val_samples,
                       stats=stats,
                       stats_path=stats_path, channels=indices, grid=grid, steps=steps,
                       pass_batches=pass_batches, batch_size=batch_size, shard=shard, rank=rank,
                       size=size, bad_files=bad_files, read_options=options, augment=augment)
