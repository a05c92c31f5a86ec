"""`climseg-predict`: masks for many files with a trained checkpoint, on one process or many.

    climseg-predict --checkpoint runs/x/checkpoints/best --input /data/run1/*.h5 --output-dir masks
    horovodrun -np 4 -H localhost:4 --gloo climseg-predict ...     # the files split over ranks

(`python train.py predict ...` is the same command.) Each input file gets one
mask file (and a PNG map unless --no-maps), written atomically; re-running
the same command skips the files whose outputs are complete and does the
rest. Under Horovod every rank predicts its share of the files, each written
once; only rank 0 prints. Where files hold labels, the IoU over all of them
(all ranks) is printed at the end.
"""

import argparse
import math
import os
import sys
import time

import climseg_tf
from data.flag_types import integer
from data.model_output import NETCDF_SUFFIXES

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
    parser.add_argument("--rename", metavar="NAME=CHANNEL,...",
                        help="the file's variable names for climseg's channels, for models "
                             "whose names differ, e.g. PRW=TMQ,U850_x=U850")
    parser.add_argument("--no-maps", action="store_true", help="masks only, no PNG maps")
    parser.add_argument("--overwrite", action="store_true",
                        help="predict every file again, replacing complete outputs")
    return parser


def main(argv=None, prog="climseg-predict"):
    """Runs prediction; returns the process exit status."""
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

    try:
        meta = callbacks.read_meta(args.checkpoint)
        weights = zoo.weights_file(args.checkpoint)
    except (callbacks.CheckpointError, ValueError) as e:
        parser.error(f"--checkpoint: {e}")
    try:
        files = data.list_files(args.input, suffixes=INPUT_SUFFIXES)
    except data.DataFileError as e:
        parser.error(f"--input: {e}")
    out_dir = os.path.realpath(args.output_dir)  # earlier outputs are not inputs
    files = [p for p in files if os.path.dirname(os.path.realpath(p)) != out_dir]
    if not files:
        parser.error(f"--input: only files of --output-dir {args.output_dir} given")
    stems = {}
    for path in files:  # one mask (and map) name per input: nothing overwritten
        stem = os.path.splitext(data.predictions.mask_path(path, args.output_dir))[0]
        if stem in stems:
            parser.error(f"--input: {stems[stem]} and {path} would both write "
                         f"{os.path.basename(stem)}.*; predict them into separate "
                         "--output-dir")
        stems[stem] = path
    stats = _checkpoint_stats(parser, args, meta)
    channels = meta["channels"]

    mine = files[rank::size]  # every file predicted (and written) by one rank
    todo = [p for p in mine if args.overwrite or not output_done(p, args.output_dir)]
    sources, problems = [], []
    for path in todo:  # metadata only
        try:
            sources.append(open_source(path, channels, rename))
        except data.DataFileError as e:
            problems.append(str(e))
    problems = sum(climseg_tf.allgather_object(problems, "climseg.predict.problems"), [])
    if problems:
        for source in sources:
            source.close()
        raise SystemExit(f"{prog}: error: --input: {problems[0]}"
                         + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    grids = sum(climseg_tf.allgather_object([(s.path, s.grid) for s in sources],
                                            "climseg.predict.grids"), [])
    grid = _common_grid(prog, grids)
    model = _model_at(prog, meta, weights, grid, args.precision, grids[0][0]) if grids else None
    os.makedirs(args.output_dir, exist_ok=True)  # after every check: a refusal writes nothing
    if rank == 0:  # what a killed run was writing: never complete, so never kept
        for name in os.listdir(args.output_dir):
            if ".tmp-" in name:
                os.remove(os.path.join(args.output_dir, name))
    climseg_tf.broadcast_object(None, "climseg.predict.clean")
    samples = [(i, t) for i, source in enumerate(sources) for t in range(source.num_times)]
    totals = climseg_tf.allgather_object([len(samples), len(todo)], "climseg.predict.todo")
    total_samples, total_files = (sum(column) for column in zip(*totals, strict=True))
    skipped = len(files) - total_files
    say(f"{prog}: {meta['model']}"
        + (f" at {grid[0]}x{grid[1]}" if grid else "")
        + f", {len(files)} files ({total_samples} samples to predict) on {size} rank(s), "
          f"batch {args.batch_size}"
        + (f"; {skipped} already done in {args.output_dir}" if skipped else ""))

    tmq = channels.index(0) if 0 in channels else 0
    attrs = {"checkpoint": os.path.abspath(args.checkpoint), "model": meta["model"]}
    confusion = np.zeros((data.NUM_CLASSES, data.NUM_CLASSES), np.int64)
    progress = _Progress(total_samples, size, say)
    pending = {}  # source index -> (masks so far, count)
    failed = {}  # source index -> its problem: the file is not written
    norm = data.normalizer(stats, meta.get("normalization", "minmax"), channels) \
        if stats is not None else None
    for batch, inputs, fields, labels in _batches(sources, samples, args.batch_size, norm):
        logits = model(inputs, training=False)
        masks = np.argmax(np.asarray(logits, np.float32), axis=-1).astype(np.uint8)
        for (i, t), mask, raw, truth in zip(batch, masks, fields, labels, strict=True):
            source = sources[i]
            if isinstance(truth, data.DataFileError) or i in failed:
                failed.setdefault(i, str(truth))
                pending.pop(i, None)
                continue
            out = data.predictions.mask_path(source.path, args.output_dir)
            if not args.no_maps:  # maps first: the mask file, written last, marks it done
                png = os.path.splitext(out)[0] + (f".t{t:04d}" if source.num_times > 1 else "")
                title = os.path.basename(source.path) + (f", time step {t}"
                                                         if source.num_times > 1 else "")
                data.plot_events(png + ".png", raw[..., tmq], mask, truth, title=title)
            if truth is not None:
                confusion += np.bincount(data.NUM_CLASSES * truth.ravel().astype(np.int64)
                                         + mask.ravel(), minlength=data.NUM_CLASSES ** 2
                                         ).reshape(data.NUM_CLASSES, data.NUM_CLASSES)
            done, count = pending.get(i) or (np.zeros((source.num_times, *grid), np.uint8), 0)
            done[t] = mask
            pending[i] = (done, count + 1)
            if count + 1 == source.num_times:  # all its time steps: write the file
                source.write(args.output_dir, done, attrs)
                source.close()
                del pending[i]
        progress.update(len(batch))
    progress.close()
    for source in sources:
        source.close()
    failed = sum(climseg_tf.allgather_object(sorted(failed.values()),
                                             "climseg.predict.failed"), [])

    confusion = np.asarray(climseg_tf.allreduce(confusion.ravel().tolist(), "sum",
                                                "climseg.predict.confusion")
                           ).reshape(confusion.shape)
    if confusion.sum():
        say(_iou_line(confusion) + (f" over the {total_files} files predicted now" if skipped
                                    else ""))
    if failed:
        say(f"{prog}: error: {len(failed)} file(s) not predicted (the others are written; "
            "a rerun does only these):")
        for problem in failed:
            say(f"  {problem}")
        return 1
    say(f"{prog}: masks in {args.output_dir}")
    return 0


def _common_grid(prog, grids):
    """The grid of all input files; an odd one is an error naming it (None without files)."""
    from data.errors import DataFileError
    from data.layouts import majority_grid

    if not grids:
        return None
    try:
        return majority_grid(grids)
    except DataFileError as e:
        raise SystemExit(f"{prog}: error: --input: {e}; predict each grid separately") \
            from None


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


def _model_at(prog, meta, weights, grid, precision, example):
    """The checkpoint's model, built for `grid` (a fully convolutional model takes any grid
    its architecture allows) with the checkpoint's weights."""
    import tensorflow as tf

    import zoo

    if precision != "fp32":
        tf.keras.mixed_precision.set_global_policy(precision)
    kwargs = dict(meta["model_kwargs"])
    trained = tuple(kwargs["input_shape"])
    kwargs["input_shape"] = (*grid, trained[2])
    try:
        model = zoo.get_model(meta["model"], **kwargs)
        model.load_weights(weights)
    except (ValueError, TypeError, tf.errors.OpError) as e:
        if tuple(grid) == trained[:2]:
            raise SystemExit(f"{prog}: error: --checkpoint: cannot build {meta['model']} from "
                             f"{weights}: {' '.join(str(e).split())[:300]}") from None
        raise SystemExit(
            f"{prog}: error: --input: {example} has a {grid[0]}x{grid[1]} grid; the checkpoint's "
            f"{meta['model']} was trained at {trained[0]}x{trained[1]} and cannot be built at "
            f"{grid[0]}x{grid[1]} ({' '.join(str(e).split())[:200]}); regrid the input or "
            "use a checkpoint trained on this grid") from None
    return model


def _batches(sources, samples, batch_size, norm):
    """`(samples, inputs, fields, labels)` per batch of `(source, time step)` samples.

    Threads read two batches ahead while the model predicts. `inputs` are
    normalized for the model, `fields` as read (for the maps), `labels` a
    list with None where a file has none.
    """
    import concurrent.futures

    import numpy as np

    import data

    def read(sample):
        i, t = sample
        try:
            return sources[i].read(t)
        except data.DataFileError as e:  # this file fails; the others go on
            return np.zeros((*sources[i].grid, len(sources[i].channels)), np.float32), e

    chunks = [samples[i:i + batch_size] for i in range(0, len(samples), batch_size)]
    with concurrent.futures.ThreadPoolExecutor(max(2, batch_size)) as pool:
        pending = [pool.map(read, chunk) for chunk in chunks[:2]]
        for i, chunk in enumerate(chunks):
            read_samples = list(pending[i])
            if i + 2 < len(chunks):  # read ahead while this batch is predicted
                pending.append(pool.map(read, chunks[i + 2]))
            fields = np.stack([sample for sample, _ in read_samples])
            inputs = fields.copy()
            if norm is not None:
                for sample in inputs:  # in place, sample by sample
                    data.normalize(sample, *norm)
            yield chunk, inputs, fields, [labels for _, labels in read_samples]


class _Progress:
    """Rank 0's progress line: samples done on all ranks (estimated), samples/s, ETA."""

    def __init__(self, total, size, say, interval=5.0):
        self.total, self.size, self.say, self.interval = total, size, say, interval
        self.done = 0
        self.start = self.last = time.perf_counter()

    def update(self, count):
        self.done += count * self.size  # the ranks go at about the same pace
        now = time.perf_counter()
        if now - self.last >= self.interval:
            self.last = now
            self._print(now)

    def close(self):
        if self.total:
            self.done = self.total
            self._print(time.perf_counter())

    def _print(self, now):
        rate = self.done / max(now - self.start, 1e-9)
        left = max(self.total - self.done, 0)
        eta = f", ETA {left / rate:.0f} s" if left and rate > 0 else ""
        self.say(f"predicted {min(self.done, self.total)}/{self.total} samples, "
                 f"{rate:.2f} samples/s{eta}")


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
