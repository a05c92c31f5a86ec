"""Climate data: HDF5/netCDF samples to tf.data batches, statistics, staging, synthetic data."""

import climseg_tf  # noqa: F401  (first: selects Keras 2 before TensorFlow loads)
from data.augment import flip_latitude, random_augment, roll_longitude
from data.equalize import equalize_batches
from data.errors import BadFileLog, DataFileError
from data.files import list_files, num_batches, shard_files
from data.layouts import (
    CHANNELS,
    CLASSES,
    NUM_CLASSES,
    channel_indices,
    dataset_grid,
    inspect_file,
    read_sample,
)
from data.maps import plot_events
from data.pipeline import make_dataset, usable_files
from data.predictions import write_mask
from data.staging import StagingError, stage_files
from data.stats import (
    Stats,
    class_frequencies,
    compute_stats,
    normalize,
    normalizer,
    read_stats,
    write_stats,
)
from data.synthetic import generate, synthesize_sample

__all__ = [
    "CHANNELS", "CLASSES", "NUM_CLASSES", "BadFileLog", "DataFileError", "StagingError", "Stats",
    "channel_indices", "class_frequencies", "compute_stats", "dataset_grid", "flip_latitude",
    "generate",
    "equalize_batches", "inspect_file", "list_files", "make_dataset", "plot_events",
    "usable_files", "write_mask", "normalize", "normalizer", "num_batches",
    "random_augment", "read_sample", "read_stats", "roll_longitude", "shard_files", "stage_files",
    "synthesize_sample", "write_stats",
]
