"""Climate data: HDF5/netCDF samples to tf.data batches, statistics, staging, synthetic data.

Names are imported on first use: `import data` (and the commands' `--help`)
does not load TensorFlow.
"""

import climseg_tf

_EXPORTS = {
    **dict.fromkeys(("flip_latitude", "random_augment", "roll_longitude"), "data.augment"),
    "equalize_batches": "data.equalize",
    **dict.fromkeys(("BadFileLog", "DataFileError"), "data.errors"),
    **dict.fromkeys(("STATS_NAME", "list_files", "num_batches", "shard_files"), "data.files"),
    **dict.fromkeys(("CHANNELS", "CLASSES", "CLASS_KEYS", "NUM_CLASSES", "channel_indices",
                     "dataset_grid", "inspect_file", "read_sample"), "data.layouts"),
    "plot_events": "data.maps",
    **dict.fromkeys(("make_dataset", "usable_files"), "data.pipeline"),
    **dict.fromkeys(("MaskFile", "mask_path", "write_masks"), "data.predictions"),
    **dict.fromkeys(("StagingError", "stage_files"), "data.staging"),
    **dict.fromkeys(("Stats", "class_frequencies", "compute_stats", "implausible_channels",
                     "normalize", "normalizer", "read_stats", "write_stats"), "data.stats"),
    **dict.fromkeys(("default_dataset", "generate", "synthesize_sample"), "data.synthetic"),
    **dict.fromkeys(("TrainingSet", "TrainingSetError", "prepare_training_set"),
                    "data.training_set"),
}
__all__ = sorted(_EXPORTS)
__getattr__ = climseg_tf.lazy_exports(__name__, _EXPORTS)
