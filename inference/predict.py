"""`climseg-predict`: masks for many files with a trained checkpoint, on one process or many.

    climseg-predict --checkpoint runs/x/checkpoints/best --input /data/run1/*.h5 --output-dir masks
    horovodrun -np 4 -H localhost:4 --gloo climseg-predict ...     # the samples split over ranks

(`python train.py predict ...` is the same command.) Each input file gets one
CF netCDF mask file, `NAME.mask.nc` (and a PNG map per time step unless
--no-maps), renamed into place when complete; re-running the same command
skips the files whose outputs are complete and does the rest. Every time
step of every file is a sample; under Horovod the samples are split over
the ranks in contiguous shares, and each file is written once, byte for
byte as one process writes it; only rank 0 prints. Where files hold labels,
the IoU over all of them (all ranks) is printed at the end.
"""

import argparse
import functools
import math
import os
import sys
import threading

import climseg_tf
from data.errors import DEBUG_HELP, CommandError, os_error_reason, write_failed
from data.flag_types import integer
from data.model_output import NETCDF_SUFFIXES
from data.predictions import PROBABILITIES
from data.progress import Progress
from zoo.kernels import KERNELS

# TensorFlow's own log lines (CUDA probing, oneDNN notes) bury ours; a user's choice wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PRECISIONS = ("fp32", "mixed_bfloat16")
INPUT_SUFFIXES = (".h5", ".hdf5", *NETCDF_SUFFIXES)


def build_parser(prog="climseg-predict"):
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--checkpoint", required=True,
                        help="a checkpoint directory (e.g. runs/x/checkpoints/best)")
    parser.add_argument("--input", nargs="+", required=True,
                        help="files, directories or globs to predict")
    parser.add_argument("--output-dir", default="predictions")
    parser.add_argument("--stats", help="stats.h5 (default: the checkpoint's own copy)")
    parser.add_argument("--batch-size", type=integer(minimum=1), default=1,
                        help="samples per forward pass, per rank")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="mixed_bfloat16: bfloat16 arithmetic, float32 logits")
    parser.add_argument("--kernels", choices=KERNELS,
                        help="deeplabv3plus's kernels: the reference Keras layers or the fast "
                             "CPU kernels (the same weights either way); default: chosen by "
                             "the device (cpu without a GPU, reference with one)")
    parser.add_argument("--jit-compile", action="store_true",
                        help="compile the forward pass with XLA")
    parser.add_argument("--rename", metavar="NAME=CHANNEL,...",
                        help="the file's variable names for climseg's channels, for models "
                             "whose names differ, e.g. PRW=TMQ,U850_x=U850")
    parser.add_argument("--probabilities", choices=PROBABILITIES,
                        help="also write each class's probability: as bytes (255 levels, "
                             "CF-packed) or float32")
    parser.add_argument("--skip-bad-files", action="store_true",
                        help="predict the usable files and list the others, instead of "
                             "stopping before any work")
    parser.add_argument("--no-maps", action="store_true", help="masks only, no PNG maps")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    parser.add_argument("--overwrite", action="store_true",
                        help="predict every file again, replacing complete outputs")
    return parser


def main(argv=None, prog="climseg-predict"):
    """Runs prediction; returns the process exit status: 0, 1 when some files failed or
    the run did, 2 for bad usage (a flag, or an input refused before any work).

    Errors end as one line (`--debug` or CLIMSEG_DEBUG=1 shows the traceback).
    """
    from data.errors import run_command

    return run_command(prog, lambda argv: _predict(argv, prog), argv)


def _predict(argv, prog):
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    from data.model_output import parse_rename

    try:
        rename = parse_rename(args.rename)
    except ValueError as e:
        parser.error(f"--rename: {e}")

    import numpy as np

    import callbacks
    import data
    import zoo
    from inference.sources import open_source, output_done

    rank, size = _start_horovod()

    def say(line):
        if rank == 0:
            print(line, flush=True)

    if not os.path.exists(args.checkpoint):
        parser.error(f"--checkpoint: {args.checkpoint} does not exist")
    try:
        meta = callbacks.read_meta(args.checkpoint)
        weights = zoo.weights_file(args.checkpoint)
    except (callbacks.CheckpointError, ValueError) as e:
        parser.error(f"--checkpoint: {e}")
    problem = _meta_problem(meta)
    if problem:
        parser.error(f"--checkpoint: {os.path.join(args.checkpoint, 'meta.json')}: {problem}; "
                     "it is damaged or was not written by climseg")
    try:
        files = data.list_files(args.input, suffixes=INPUT_SUFFIXES)
    except data.DataFileError as e:
        parser.error(f"--input: {e}")
    out_dir = os.path.realpath(args.output_dir)  # earlier outputs are not inputs
    files = [p for p in files if os.path.dirname(os.path.realpath(p)) != out_dir]
    if not files:
        parser.error(f"--input: only files of --output-dir {args.output_dir} given")
    outputs = {}
    for path in files:  # one mask (and map) name per input: nothing overwritten
        out = data.predictions.mask_path(path, args.output_dir)
        if out in outputs:
            stem = os.path.basename(out)[:-len(".nc")]
            parser.error(f"--input: {outputs[out]} and {path} would both write {stem}.*; "
                         "predict them into separate --output-dir")
        outputs[out] = path
    if os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
        parser.error(f"--output-dir: {args.output_dir} is a file; expected a directory (new "
                     "or holding earlier masks)")
    stats = _checkpoint_stats(parser, args, meta)
    channels = meta["channels"]

    # Every rank reads the metadata of a share of the files; all learn every
    # file's time steps and grid, and so the same list of samples.
    todo = [p for p in files if args.overwrite or not output_done(p, args.output_dir)]
    opened, infos, problems = {}, [], []
    for path in todo[rank::size]:  # metadata only
        try:
            opened[path] = source = open_source(path, channels, rename)
            infos.append((path, source.grid, source.num_times))
        except data.DataFileError as e:
            problems.append(str(e))
    problems = sum(climseg_tf.allgather_object(problems, "climseg.predict.problems"), [])
    if problems and not args.skip_bad_files:
        for source in opened.values():
            source.close()
        raise CommandError(f"--input: {problems[0]}"
                           + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
                           + "; fix or remove the file, or give --skip-bad-files", usage=True)
    infos = {path: (grid, steps) for path, grid, steps in
             sum(climseg_tf.allgather_object(infos, "climseg.predict.files"), [])}
    todo = [p for p in todo if p in infos]
    grid = _common_grid(prog, [(p, infos[p][0]) for p in todo])
    model, kernels = _model_at(prog, meta, weights, grid, args, todo[0]) if todo \
        else (None, None)
    try:  # after every check: a refusal writes nothing
        os.makedirs(args.output_dir, exist_ok=True)
    except OSError as e:
        raise CommandError(f"--output-dir: cannot create {args.output_dir}: "
                           f"{os_error_reason(e)}", usage=True) from e
    if rank == 0:  # what a killed run was writing: never complete, so never kept
        data.predictions.remove_unfinished(args.output_dir)
    climseg_tf.broadcast_object(None, "climseg.predict.clean")

    # The samples (file, time step) in order, in one contiguous share per
    # rank: a file is written by the rank that has all of its steps, or in
    # parts by the ranks that share it, merged once all are done.
    samples = [(p, t) for p in todo for t in range(infos[p][1])]
    bounds = [len(samples) * r // size for r in range(size + 1)]
    mine = samples[bounds[rank]:bounds[rank + 1]]
    skipped = len(files) - len(todo) - len(problems)
    say(f"{prog}: {meta['model']}"
        + (f" at {grid[0]}x{grid[1]}" if grid else "")
        + f", {len(files)} files ({len(samples)} samples to predict) on {size} rank(s), "
          f"batch {args.batch_size}"
        + (f"; {skipped} already done in {args.output_dir}" if skipped else ""))
    if kernels:
        say(f"{prog}: kernels {kernels[0]} ({kernels[1]})"
            + ("; forward compiled with XLA" if args.jit_compile else ""))

    sources = {}
    for path in dict.fromkeys(p for p, _ in mine):
        sources[path] = opened.pop(path, None) or open_source(path, channels, rename)
    for source in opened.values():
        source.close()
    attrs = {"checkpoint": os.path.abspath(args.checkpoint), "model": meta["model"]}
    norm = data.normalizer(stats, meta.get("normalization", "minmax"), channels) \
        if stats is not None else None
    writer = _Writer(sources, mine, args.output_dir, args.probabilities, attrs)
    confusion = np.zeros((data.NUM_CLASSES, data.NUM_CLASSES), np.int64)
    # Rank 0 reports for all ranks: its own share's progress, scaled to the whole.
    progress = Progress(len(samples), prog, enabled=rank == 0, stream=sys.stdout,
                        interval=5.0, unit="samples", rate=True,
                        scale=len(samples) / len(mine) if mine else 0)
    tmq = channels.index(0) if 0 in channels else 0
    # Other units than the checkpoint's data, say: told once per file.
    check = functools.partial(_units_warning, prog, stats, channels) if stats is not None \
        else None
    pipeline = _Pipeline(sources, mine, grid, len(channels), norm, tmq, writer.failed,
                         args.batch_size, check)
    step = _predict_step(model, bool(args.probabilities), args.jit_compile)
    for batch, inputs, maps, labels, has_labels in pipeline:
        masks, probabilities = (np.asarray(x) if x is not None else None
                                for x in step(inputs))
        for k, (path, t) in enumerate(batch):
            if path in writer.failed:  # a step of it could not be read
                writer.abandon(path)
                continue
            truth = labels[k] if has_labels[k] else None
            if not args.no_maps:  # maps first: the mask file, renamed last, marks it done
                try:
                    _write_map(sources[path], args.output_dir, t, maps[k], masks[k], truth)
                except OSError as e:
                    writer.abandon(path)
                    raise _write_error(args.output_dir, path, e) from e
            if truth is not None:
                confusion += np.bincount(
                    data.NUM_CLASSES * truth.ravel().astype(np.int64) + masks[k].ravel(),
                    minlength=data.NUM_CLASSES ** 2).reshape(confusion.shape)
            writer.write(path, t, masks[k], None if probabilities is None
                         else probabilities[k])
        progress.update(len(batch))
    progress.close()
    for source in sources.values():
        source.close()
    failed = dict(sum((list(part.items()) for part in climseg_tf.allgather_object(
        writer.failed, "climseg.predict.failed")), []))
    writer.merge_parts(failed)  # the files that ranks shared, by the rank of their first step

    confusion = np.asarray(climseg_tf.allreduce(confusion.ravel().tolist(), "sum",
                                                "climseg.predict.confusion")
                           ).reshape(confusion.shape)
    if confusion.sum():
        say(_iou_line(confusion) + (f" over the {len(todo)} files predicted now" if skipped
                                    else ""))
    if problems:
        say(f"{prog}: skipped {len(problems)} unusable file(s) (--skip-bad-files):")
        for problem in problems:
            say(f"  {problem}")
    if failed:
        say(f"{prog}: error: {len(failed)} file(s) not predicted (the others are written; "
            "a rerun does only these):")
        for path in sorted(failed):
            say(f"  {failed[path]}")
        return 1
    say(f"{prog}: masks in {args.output_dir}")
    return 0


def _write_map(source, out_dir, t, tmq, mask, truth):
    """The PNG map of one time step, beside its mask file."""
    import data

    png = data.predictions.mask_path(source.path, out_dir)[:-len(".nc")]
    title = os.path.basename(source.path)
    if source.num_times > 1:
        png, title = f"{png}.t{t:04d}", f"{title}, time step {t}"
    data.plot_events(png + ".png", tmq, mask, truth, title=title)


class _Writer:
    """This rank's mask files: each written step by step as its samples come.

    A file whose steps are all this rank's is written and committed here. A
    file shared with other ranks gets a part file per rank
    (`NAME.mask.nc.part-T0`, committed when complete), which the rank holding
    its first step merges into the file after every rank is done. A file
    with a bad time step is abandoned (`failed`: path -> problem).
    """

    def __init__(self, sources, mine, out_dir, probabilities, attrs):
        import data

        self.sources, self.out_dir = sources, out_dir
        self.probabilities, self.attrs = probabilities, attrs
        self.failed = {}
        self._open = {}  # path -> (MaskFile, first step, last step)
        self._ranges = {}
        for path, t in mine:
            first, last = self._ranges.get(path, (t, t))
            self._ranges[path] = (min(first, t), max(last, t))
        self._shared_first = {}  # path -> first step of every shared file this rank begins
        for path, (first, last) in self._ranges.items():
            if first == 0 and last + 1 < sources[path].num_times:
                self._shared_first[path] = sources[path]
        self._predictions = data.predictions

    def write(self, path, t, mask, probabilities):
        source = self.sources[path]
        first, last = self._ranges[path]
        whole = first == 0 and last + 1 == source.num_times
        if path not in self._open:
            final = self._predictions.mask_path(path, self.out_dir)
            target = final if whole else f"{final}.part-{first}"
            self._open[path] = self._predictions.open_mask_file(
                source, target, self.probabilities, self.attrs, times=range(first, last + 1))
        out = self._open[path]
        try:
            out.write(t - first, mask, probabilities)
            if t == last:
                out.commit()
                del self._open[path]
        except (OSError, RuntimeError) as e:  # e.g. a full disk: netCDF's "HDF error"
            self.abandon(path)
            raise _write_error(self.out_dir, path, e) from e
        except BaseException:
            self.abandon(path)
            raise

    def abandon(self, path):
        """Removes the unfinished file (or part) of `path`."""
        if path in self._open:
            self._open.pop(path).abort()

    def merge_parts(self, failed):
        """Assembles the shared files this rank begins (after every rank wrote its parts)."""
        import re

        for path, source in self._shared_first.items():
            final = self._predictions.mask_path(path, self.out_dir)
            pattern = re.compile(re.escape(os.path.basename(final)) + r"\.part-(\d+)")
            found = (pattern.fullmatch(n) for n in os.listdir(self.out_dir))
            parts = sorted((int(m.group(1)), os.path.join(self.out_dir, m.group(0)))
                           for m in found if m)
            try:
                if path not in failed:
                    out = None
                    try:
                        out = self._predictions.open_mask_file(source, final,
                                                               self.probabilities, self.attrs)
                        for first, part in parts:
                            out.copy_from(part, first)
                        out.commit()
                    except (OSError, RuntimeError) as e:
                        if out is not None:
                            out.abort()
                        raise _write_error(self.out_dir, path, e) from e
            finally:
                for _, part in parts:
                    os.remove(part)


def _write_error(out_dir, path, error):
    """The one line for an output of `path` that cannot be written (e.g. a full disk)."""

    return write_failed(error, f"--output-dir {out_dir}: cannot write the outputs of {path}",
                        "the files completed before are intact and a rerun does the rest")


class _Pipeline:
    """This rank's samples as batches, read by a tf.data pipeline ahead of the model.

    Each sample is read and normalized (with the checkpoint's statistics) in
    parallel threads, batched, and prefetched while the model predicts.
    Yields `(samples, inputs, maps, labels, has_labels)`: the batch's
    `(path, step)` list, the normalized fields, the TMQ plane of each (for
    maps), the labels and whether the file had them. A time step that cannot
    be read fails its file (in `failed`); its inputs are zeros. `check(path,
    fields)`, when given, sees the first step read of each file before it is
    normalized.
    """

    def __init__(self, sources, samples, grid, num_channels, norm, tmq, failed, batch_size,
                 check=None):
        self.samples, self.failed, self.sources = samples, failed, sources
        self.grid, self.num_channels, self.norm, self.tmq = grid, num_channels, norm, tmq
        self.batch_size = batch_size
        self.check, self._checked, self._lock = check, set(), threading.Lock()

    def _read(self, k):
        import numpy as np

        import data

        path, t = self.samples[int(k)]
        labels = None
        fields = None
        if path not in self.failed:
            try:
                fields, labels = self.sources[path].read(t)
            except data.DataFileError as e:  # this file fails; the others go on
                self.failed.setdefault(path, str(e))
        if fields is None:
            fields = np.zeros((*self.grid, self.num_channels), np.float32)
        elif self.check is not None:
            with self._lock:
                first = path not in self._checked
                self._checked.add(path)
            if first:  # the first step read of each file
                self.check(path, fields)
        fields = np.ascontiguousarray(fields, np.float32)
        tmq = fields[..., self.tmq].copy()
        if self.norm is not None:
            data.normalize(fields, *self.norm)
        has = labels is not None
        labels = labels.astype(np.uint8) if has else np.zeros(self.grid, np.uint8)
        return fields, tmq, labels, np.bool_(has)

    def __iter__(self):
        import tensorflow as tf

        if not self.samples:
            return
        height, width = self.grid

        def read(k):
            out = tf.numpy_function(self._read, [k], (tf.float32, tf.float32, tf.uint8,
                                                      tf.bool), stateful=True)
            for tensor, shape in zip(out, ((height, width, self.num_channels),
                                           (height, width), (height, width), ()), strict=True):
                tensor.set_shape(shape)
            return out

        dataset = (tf.data.Dataset.range(len(self.samples))
                   .map(read, num_parallel_calls=max(2, self.batch_size), deterministic=True)
                   .batch(self.batch_size)
                   .prefetch(1))
        start = 0
        for inputs, maps, labels, has_labels in dataset.as_numpy_iterator():
            count = len(inputs)
            yield self.samples[start:start + count], inputs, maps, labels, has_labels
            start += count


def _units_warning(prog, stats, channels, path, fields):
    """Warns (one line on stderr) when a file's channels are implausible for the statistics
    the model was trained with (`data.implausible_channels`): other units, most often."""
    import data

    found = data.implausible_channels(stats, fields, channels)
    if found:
        what = "; ".join(f"{name} mean {mean:.4g} outside {low:.4g} to {high:.4g}"
                         for name, mean, low, high in found)
        print(f"{prog}: warning: {path}: {what}, the plausible range by the checkpoint's "
              "statistics: other units? (Pa for hPa, say: fix the file or --rename); its "
              "masks are written but may be wrong", file=sys.stderr, flush=True)


def _predict_step(model, probabilities, jit_compile=False):
    """A compiled step: (masks (B, H, W) uint8, class probabilities (B, H, W, C) or None);
    with `jit_compile`, compiled by XLA."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True, jit_compile=jit_compile or None)
    def step(inputs):
        logits = tf.cast(model(inputs, training=False), tf.float32)
        masks = tf.cast(tf.argmax(logits, axis=-1), tf.uint8)
        return (masks, tf.nn.softmax(logits, axis=-1)) if probabilities else (masks, None)

    return step


def _meta_problem(meta):
    """What a checkpoint's metadata lacks for prediction, or None."""
    kwargs = meta.get("model_kwargs")
    shape = kwargs.get("input_shape") if isinstance(kwargs, dict) else None
    channels = meta.get("channels")
    if not isinstance(meta.get("model"), str):
        return f"'model' should name a model, found {meta.get('model', 'no such key')!r}"
    if not (isinstance(shape, list) and len(shape) == 3
            and all(isinstance(n, int) and n > 0 for n in shape)):
        return ("'model_kwargs' should hold the input_shape [H, W, C], found "
                f"{kwargs if kwargs is not None else 'no such key'!r}")
    if not (isinstance(channels, list) and len(channels) == shape[2]
            and all(isinstance(c, int) and not isinstance(c, bool) for c in channels)):
        return (f"'channels' should list the {shape[2]} channel indices of the input, found "
                f"{channels if channels is not None else 'no such key'!r}")
    return None


def _common_grid(prog, grids):
    """The grid of all input files; an odd one is an error naming it (None without files)."""
    from data.errors import DataFileError
    from data.layouts import majority_grid

    if not grids:
        return None
    try:
        return majority_grid(grids)
    except DataFileError as e:
        raise CommandError(f"--input: {e}; predict each grid separately", usage=True) from e


def _start_horovod():
    """(rank, size): Horovod's when launched by horovodrun/mpirun/srun, else (0, 1)."""
    launched = any(name in os.environ for name in ("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK",
                                                   "PMI_RANK", "SLURM_PROCID"))
    if launched:
        import horovod.tensorflow as hvd

        hvd.init()
    climseg_tf.pin_gpu()  # this rank's GPU only
    return climseg_tf.rank_and_size()


def _checkpoint_stats(parser, args, meta):
    """The normalization statistics: --stats, else the checkpoint's own copy (or its path)."""
    import data

    stats_path = args.stats
    if not stats_path and meta.get("stats"):
        # The checkpoint's own copy (a name inside it); older ones hold a path.
        stats_path = os.path.join(args.checkpoint, meta["stats"])
        if not os.path.isfile(stats_path):
            parser.error(f"--checkpoint: {args.checkpoint} names statistics {meta['stats']} "
                         "that are not there; give --stats")
    if stats_path and not os.path.isfile(stats_path):
        parser.error(f"--stats: {stats_path} does not exist")
    try:
        return data.read_stats(stats_path) if stats_path else None
    except data.DataFileError as e:
        parser.error(f"--stats: {e}")


def _model_at(prog, meta, weights, grid, args, example):
    """The checkpoint's model, built for `grid` (a fully convolutional model takes any grid
    its architecture allows) with the checkpoint's weights, and `(kernel set, why)` for a
    model that has kernel sets (else None)."""
    import inspect

    import tensorflow as tf

    import zoo

    if args.precision != "fp32":
        tf.keras.mixed_precision.set_global_policy(args.precision)
    kwargs = dict(meta["model_kwargs"])
    trained = tuple(kwargs["input_shape"])
    kwargs["input_shape"] = (*grid, trained[2])
    checkpoint = os.path.dirname(weights)
    if meta["model"] not in zoo.MODELS:
        raise CommandError(f"--checkpoint {checkpoint}: its meta.json names model "
                           f"{meta['model']!r}, which this climseg does not have; expected one "
                           f"of {', '.join(sorted(zoo.MODELS))}", usage=True)
    kernels = None  # the kernels it was trained with do not matter: the weights are the same
    if "kernels" in inspect.signature(zoo.MODELS[meta["model"]]).parameters:
        try:
            kernels = zoo.choose_kernels(args.kernels, args.jit_compile, "--kernels")
        except ValueError as e:  # --kernels' choices are checked by argparse
            raise CommandError(f"--jit-compile: {e}", usage=True) from e
        kwargs["kernels"] = kernels[0]
    elif args.kernels:
        raise CommandError(f"--kernels: the checkpoint's {meta['model']} has one kernel set; "
                           "--kernels chooses deeplabv3plus's", usage=True)

    def reason(e):
        return " ".join(str(e).split())[:240]

    try:
        model = zoo.get_model(meta["model"], **kwargs)
    except (ValueError, TypeError, tf.errors.OpError) as e:
        if tuple(grid) == trained[:2]:
            raise CommandError(f"--checkpoint {checkpoint}: cannot build {meta['model']} with "
                               f"the options in its meta.json ({reason(e)})", usage=True) from e
        raise CommandError(
            f"--input: {example} has a {grid[0]}x{grid[1]} grid; the checkpoint's "
            f"{meta['model']} was trained at {trained[0]}x{trained[1]} and cannot be built at "
            f"{grid[0]}x{grid[1]} ({reason(e)}); regrid the input or use a checkpoint trained "
            "on this grid", usage=True) from e
    try:
        model.load_weights(weights)
    except (OSError, ValueError, KeyError, TypeError, tf.errors.OpError) as e:
        raise CommandError(f"--checkpoint {checkpoint}: {weights} cannot be loaded into its "
                           f"{meta['model']} (truncated, damaged, or of another model?): "
                           f"{reason(e)}", usage=True) from e
    return model, kernels


def _iou_line(confusion):
    """IoU per class and their mean over the classes present ("-": absent from labels and masks)."""
    tp = confusion.diagonal().astype(float)
    union = confusion.sum(0) + confusion.sum(1) - tp
    iou = [t / u if u else math.nan for t, u in zip(tp, union, strict=True)]
    present = [v for v in iou if not math.isnan(v)]
    mean = sum(present) / len(present) if present else math.nan

    def shown(value):
        return "-" if math.isnan(value) else f"{value:.3f}"

    background, tc, ar = iou
    return (f"IoU background {shown(background)}, tropical cyclone {shown(tc)}, atmospheric "
            f"river {shown(ar)}; mean {shown(mean)} (-: class absent from labels and masks)")


if __name__ == "__main__":
    sys.exit(main())
