"""climseg: train a segmentation network on climate data, on one process or many.

    python train.py --model deeplabv3plus                 # synthetic demo data
    python train.py --data-train /data/train --data-val /data/val --stats /data/stats.h5
    horovodrun -np 4 -H localhost:4 --gloo python train.py ...   # data-parallel
    python train.py --config run.yaml --lr 0.001          # YAML, flags override
    python train.py predict --checkpoint runs/x/checkpoints/best --input files/*.h5

Every rank runs this file; only rank 0 prints, writes files and talks to W&B.
The pieces live in `zoo/` (models, losses, IoU), `callbacks/` (LARC, gradient
lag, learning rate, checkpoints, throughput) and `data/` (files to batches,
staging, synthetic data); this file only wires them together.
"""

import argparse
import functools
import json
import math
import os
import sys
import time
import uuid

import yaml

import climseg_tf  # first: selects Keras 2 before TensorFlow loads

DEFAULT_DATA = {"height": 64, "width": 96, "train": 48, "val": 16, "seed": 2018}
OPTIMIZERS = ("sgd", "adam", "adamw", "lamb")
PRECISIONS = ("fp32", "mixed_float16", "mixed_bfloat16")


# --------------------------------------------------------------------------- flags

def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def _nonnegative_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def _positive_float(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def build_parser():
    """The training flags, grouped by topic (`python train.py --help`)."""
    import zoo

    parser = argparse.ArgumentParser(
        prog="train.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="A YAML --config may set any flag by its long name (dashes or underscores); "
               "flags given on the command line override it. "
               "See also: python train.py predict --help")
    parser.add_argument("--config", help="YAML file of flag values")

    g = parser.add_argument_group("model")
    g.add_argument("--model", choices=sorted(zoo.MODELS), default="deeplabv3plus")
    g.add_argument("--output-stride", type=int, choices=(8, 16),
                   help="DeepLabv3+ encoder output stride (model default: 8, as the paper)")
    g.add_argument("--decoder", choices=("deconv1x", "bilinear"),
                   help="DeepLabv3+ decoder (model default: deconv1x, as the paper)")
    g.add_argument("--periodic-padding", action=argparse.BooleanOptionalAction, default=False,
                   help="convolutions wrap around in longitude")
    g.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE",
                   help="any other argument of the model builder, value in YAML syntax, "
                        "e.g. --model-option blocks=[2,2,4] --model-option growth_rate=16")

    g = parser.add_argument_group("data")
    g.add_argument("--data-train", nargs="+",
                   help="training files: directories, globs or files. Default: a small "
                        "synthetic CAM5-format set generated once into --cache-dir")
    g.add_argument("--data-val", nargs="+", help="validation files (default: none, or the "
                                                 "synthetic set's)")
    g.add_argument("--stats", help="stats.h5 for normalization and class weights (default: "
                                   "stats.h5 next to the training files, if there)")
    g.add_argument("--normalization", choices=("minmax", "zscore"), default="minmax")
    g.add_argument("--channels", help="input channels by name or index, comma-separated, "
                                      "e.g. TMQ,U850,V850,PSL (default: all 16)")
    g.add_argument("--label-set", choices=("labels_0", "labels_1", "random"),
                   default="labels_0")
    g.add_argument("--stage-dir", help="copy each rank's share of the training files here "
                                       "(e.g. /dev/shm or a node-local disk) before training")
    g.add_argument("--stage-oversample", type=float, default=1.0,
                   help="each rank stages this many times its share")
    g.add_argument("--skip-bad-files", action="store_true",
                   help="skip unreadable or invalid files and report them at the end")
    g.add_argument("--augment", action="store_true",
                   help="random longitude roll and north-south flip")
    g.add_argument("--cache-dir", default=os.environ.get(
        "CLIMSEG_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "climseg")),
        help="where the default synthetic data set is generated")

    g = parser.add_argument_group("optimization")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    g.add_argument("--lr", type=_positive_float, default=1e-3, help="learning rate (one rank)")
    g.add_argument("--lr-stages", help="multi-stage schedule: the learning rate times M from "
                                       "position P on (in --lr-unit), as 'piece:P1:M1:P2:M2' "
                                       "(SC18) or 'P1:M1,P2:M2'")
    g.add_argument("--lr-unit", choices=("epoch", "step"), default="epoch",
                   help="unit of --lr-stages and --warmup")
    g.add_argument("--warmup", type=float, default=0.0,
                   help="linear warmup length, in --lr-unit")
    g.add_argument("--warmup-start", type=float, default=0.0,
                   help="learning-rate factor at the start of the warmup")
    g.add_argument("--lr-decay", choices=("none", "cosine", "poly"), default="none",
                   help="decay over the last stage down to 0 at the end of training")
    g.add_argument("--lr-scaling", choices=("none", "linear"), default="none",
                   help="'linear': multiply the learning rate by the number of ranks")
    g.add_argument("--weight-decay", type=float, default=0.0,
                   help="weight decay (adamw, lamb, and LARC's trust ratio)")
    g.add_argument("--larc", action="store_true", help="wrap the optimizer in LARC")
    g.add_argument("--larc-eta", type=_positive_float, default=0.002)
    g.add_argument("--larc-mode", choices=("clip", "scale"), default="clip")
    g.add_argument("--gradient-lag", type=_nonnegative_int, default=0,
                   help="apply the gradient of N steps ago (overlaps the allreduce)")
    g.add_argument("--batch-size", type=_positive_int, default=2, help="samples per rank")
    g.add_argument("--epochs", type=_positive_int, default=8)
    g.add_argument("--steps-per-epoch", type=_positive_int,
                   help="default: one pass over this rank's share of the files")

    g = parser.add_argument_group("loss")
    g.add_argument("--loss", choices=("weighted_ce", "focal", "jaccard"), default="weighted_ce")
    g.add_argument("--class-weights", default="sc18",
                   help="'sc18' (1/sqrt(frequency), normalised), 'deepcam' (frequency^-0.125), "
                        "'none', or 3 comma-separated numbers")
    g.add_argument("--focal-gamma", type=float, default=2.0)

    g = parser.add_argument_group("precision")
    g.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="mixed_float16 uses dynamic loss scaling (GPUs); on a CPU use "
                        "mixed_bfloat16")

    g = parser.add_argument_group("outputs and resuming")
    g.add_argument("--output-dir", default="runs/latest")
    g.add_argument("--single-rank-rate", type=_positive_float,
                   help="samples/s of one rank training alone on the same per-rank work: "
                        "the parallel efficiency of each epoch is reported against it")
    g.add_argument("--checkpoint-every", type=_positive_int, default=1,
                   help="write a checkpoint every N epochs")
    g.add_argument("--checkpoint-every-steps", type=_positive_int,
                   help="also write one every N global steps")
    g.add_argument("--keep-checkpoints", type=_positive_int, default=3,
                   help="recent checkpoints kept (the best is kept apart)")
    g.add_argument("--resume", nargs="?", const="auto", default="auto",
                   help="'auto': continue from the newest checkpoint in --output-dir if "
                        "there is one; 'never': refuse a directory holding checkpoints; or a "
                        "checkpoint directory")
    g.add_argument("--seed", type=int, default=0)

    g = parser.add_argument_group("fine-tuning")
    g.add_argument("--init-checkpoint",
                   help="start from these weights: a climseg checkpoint (other classes or "
                        "channels allowed), a .h5 weights file, or a tf-models-official "
                        "backbone checkpoint")
    g.add_argument("--init-modules", choices=("all", "backbone"), default="all")
    g.add_argument("--freeze-backbone", type=_nonnegative_int, default=0,
                   help="keep the encoder frozen for the first N epochs")

    g = parser.add_argument_group("Weights & Biases")
    g.add_argument("--wandb-project", default="climseg")
    g.add_argument("--wandb-entity")
    g.add_argument("--wandb-mode", choices=("online", "offline", "disabled"),
                   help="default: online if WANDB_API_KEY is set, else offline")
    g.add_argument("--wandb-name", help="run name (default: the output directory's name)")
    g.add_argument("--wandb-images", type=_nonnegative_int, default=2,
                   help="validation samples logged as images each epoch")
    return parser


def _load_config(parser, path):
    """Reads a YAML config (safe loader) into parser defaults; unknown keys are errors."""
    try:
        with open(path) as f:
            values = yaml.safe_load(f) or {}
    except OSError as e:
        parser.error(f"--config {path}: {e.strerror}")
    except yaml.YAMLError as e:
        parser.error(f"--config {path}: not valid YAML: {e}")
    if not isinstance(values, dict):
        parser.error(f"--config {path}: expected a mapping of flag names to values, "
                     f"got {type(values).__name__}")
    actions = {a.dest: a for a in parser._actions}
    defaults = {}
    for key, value in values.items():
        dest = str(key).replace("-", "_")
        if dest not in actions or dest in ("config", "help"):
            parser.error(f"--config {path}: unknown option {key!r}")
        action = actions[dest]
        if action.nargs == 0:  # an on/off flag: YAML true/false, not a string ("no" is truthy)
            if not isinstance(value, bool):
                parser.error(f"--config {path}: {key}: expected true or false, got {value!r}")
            defaults[dest] = value
            continue
        # Values go through the flag's own type and choices checks.
        items = value if isinstance(value, list) else [value]
        try:
            converted = [action.type(str(v)) if action.type else v for v in items]
        except (argparse.ArgumentTypeError, ValueError) as e:
            parser.error(f"--config {path}: {key}: {e}")
        if action.choices and any(v not in action.choices for v in converted):
            parser.error(f"--config {path}: {key}: {value!r} is not one of "
                         f"{', '.join(map(str, action.choices))}")
        defaults[dest] = converted if isinstance(value, list) or action.nargs in ("+", "*") \
            else converted[0]
    parser.set_defaults(**defaults)


def parse_args(argv=None):
    """Parses flags (over a YAML --config) and checks their combinations."""
    import zoo

    parser = build_parser()
    config = _config_flag(argv)
    if config:
        _load_config(parser, config)
    args = parser.parse_args(argv)

    if args.model != "deeplabv3plus" and args.decoder:
        parser.error(f"--decoder applies to --model deeplabv3plus, not {args.model}")
    if not args.model.startswith("deeplabv3plus") and args.output_stride:
        parser.error(f"--output-stride applies to the DeepLabv3+ models, not {args.model}")
    if args.optimizer == "lamb" and args.larc:
        parser.error("--larc cannot wrap --optimizer lamb (LAMB has its own layer-wise "
                     "trust ratio); drop one")
    if args.optimizer == "lamb" and args.gradient_lag:
        parser.error("--gradient-lag needs --optimizer sgd, adam or adamw")
    args.model_options = {}
    for item in args.model_option:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            parser.error(f"--model-option {item!r}: expected KEY=VALUE, e.g. growth_rate=16")
        try:
            args.model_options[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            parser.error(f"--model-option {item!r}: the value is not valid YAML")
    if args.data_val and not args.data_train:
        parser.error("--data-val needs --data-train")
    if args.freeze_backbone and not args.init_checkpoint:
        parser.error("--freeze-backbone needs --init-checkpoint (a random encoder gains "
                     "nothing from being frozen)")
    if (args.freeze_backbone or args.init_modules == "backbone") \
            and args.model not in zoo.BACKBONE_PATTERNS:
        parser.error(f"--freeze-backbone and --init-modules backbone need a model whose encoder "
                     f"is known: {', '.join(sorted(zoo.BACKBONE_PATTERNS))}; not {args.model}")
    if args.freeze_backbone >= args.epochs:
        parser.error(f"--freeze-backbone {args.freeze_backbone} must be less than --epochs "
                     f"{args.epochs}")
    if args.stage_oversample < 1:
        parser.error(f"--stage-oversample must be >= 1, got {args.stage_oversample}")
    if args.lr_decay != "none" and args.lr_unit == "step" and not args.steps_per_epoch:
        parser.error("--lr-decay with --lr-unit step needs --steps-per-epoch")
    try:
        args.class_weight_values = _class_weights_flag(args.class_weights)
    except ValueError as e:
        parser.error(f"--class-weights: {e}")
    if args.loss == "jaccard" and args.class_weights not in ("none", "sc18"):
        parser.error("--class-weights does not apply to --loss jaccard; use 'none'")
    if args.channels:
        import data

        try:
            data.channel_indices(args.channels)
        except ValueError as e:
            parser.error(f"--channels: {e}")
    args.lr_stage_list = []
    if args.lr_stages:
        try:
            args.lr_stage_list = _lr_stages_flag(args.lr_stages)
        except ValueError as e:
            parser.error(f"--lr-stages: {e}")
    return args


def _config_flag(argv):
    argv = sys.argv[1:] if argv is None else list(argv)
    for i, item in enumerate(argv):
        if item == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if item.startswith("--config="):
            return item.split("=", 1)[1]
    return None


def _lr_stages_flag(text):
    """`piece:P1:M1:P2:M2` (SC18) or `P1:M1,P2:M2`: (position, multiplier) pairs."""
    if text.startswith("piece:"):
        import callbacks

        return callbacks.parse_stages(text)
    stages = []
    for item in text.split(","):
        position, sep, multiplier = item.partition(":")
        try:
            stages.append((float(position), float(multiplier)))
        except ValueError:
            raise ValueError(f"{item!r} is not POSITION:MULTIPLIER; expected e.g. "
                             "'piece:20:0.1:40:0.01' or '20:0.1,40:0.01'") from None
    return stages


def _class_weights_flag(text):
    if text in ("sc18", "deepcam", "none"):
        return text
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"expected sc18, deepcam, none or 3 numbers, got {text!r}") from None
    if len(values) != 3 or not all(math.isfinite(v) and v >= 0 for v in values):
        raise ValueError(f"expected 3 non-negative numbers, got {text!r}")
    if not any(values):
        raise ValueError(f"{text!r} weighs every class 0: the loss would be 0 and nothing "
                         "would train; give at least one weight > 0")
    return values


# --------------------------------------------------------------------------- pieces

def _say(rank, *parts):
    if rank == 0:  # only rank 0 prints
        print("climseg:", *parts, flush=True)


def _default_data(args, hvd, rank):
    """Generates the embedded synthetic data set once (rank 0) and returns its dirs."""
    import data

    d = DEFAULT_DATA
    root = os.path.join(args.cache_dir, f"synthetic-{d['height']}x{d['width']}-seed{d['seed']}")
    dirs = {split: os.path.join(root, split) for split in ("train", "val")}
    if rank == 0:
        for offset, split in enumerate(("train", "val")):
            marker = os.path.join(dirs[split], ".complete")
            if not os.path.exists(marker):
                _say(0, f"generating the default synthetic data set ({d[split]} {split} files, "
                        f"{d['height']}x{d['width']}x16) in {dirs[split]}")
                data.generate(dirs[split], d[split], d["height"], d["width"],
                              seed=d["seed"] + 1000 * offset, workers=2, progress=True)
                open(marker, "w").close()
            else:
                _say(0, f"using the synthetic data set in {dirs[split]}")
    _broadcast(hvd, None)  # the others wait for rank 0's files
    return [dirs["train"]], [dirs["val"]]


def _broadcast(hvd, value):
    """Rank 0's `value` on every rank (also a barrier)."""
    if hvd.size() == 1:
        return value
    import horovod.tensorflow as hvd_tf

    return hvd_tf.broadcast_object(value, root_rank=0, name="climseg_broadcast")


def _build_optimizer(args):
    """Inner optimizer -> LARC -> GradientLag; Horovod wraps the result outermost."""
    import tensorflow as tf

    import callbacks

    if args.optimizer == "sgd":
        opt = tf.keras.optimizers.SGD(args.lr, momentum=0.9)
    elif args.optimizer == "adam":
        opt = tf.keras.optimizers.Adam(args.lr)
    elif args.optimizer == "adamw":
        opt = tf.keras.optimizers.AdamW(args.lr, weight_decay=args.weight_decay)
    else:
        from official.modeling.optimization.lamb import LAMB

        opt = LAMB(args.lr, weight_decay_rate=args.weight_decay)
    if args.larc:
        # AdamW and LAMB decay the weights themselves; LARC adds the decay
        # (to the gradient and its trust ratio) for the others, not twice.
        decay = 0.0 if args.optimizer in ("adamw", "lamb") else args.weight_decay
        opt = callbacks.LARC(opt, eta=args.larc_eta, mode=args.larc_mode, weight_decay=decay)
    if args.gradient_lag:
        opt = callbacks.GradientLag(opt, lag=args.gradient_lag)
    return opt


def _output_dir(args, rank):
    """Creates the output directory and proves it writable, before any work."""
    path = os.path.abspath(args.output_dir)
    if rank == 0:
        try:
            os.makedirs(path, exist_ok=True)
            probe = os.path.join(path, f".write-test-{os.getpid()}")
            with open(probe, "w") as f:
                f.write("ok")
            os.remove(probe)
        except OSError as e:
            raise SystemExit(f"train.py: error: --output-dir {args.output_dir}: cannot write "
                             f"there ({e.strerror})") from None
    return path


def _resume_point(args, ckpt_dir):
    import callbacks

    latest = callbacks.latest_checkpoint(ckpt_dir)
    if args.resume == "never":
        if latest:
            raise SystemExit(f"train.py: error: --resume never: {ckpt_dir} already holds "
                             f"checkpoints ({os.path.basename(latest)}); choose another "
                             "--output-dir")
        return None
    if args.resume == "auto":
        return latest
    if not os.path.isdir(args.resume):
        raise SystemExit(f"train.py: error: --resume {args.resume}: no such checkpoint "
                         "directory")
    return args.resume


def main(argv=None):
    """Runs training (or `predict ...`); returns the process exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "predict":
        return predict_main(argv[1:])
    args = parse_args(argv)

    import horovod.tensorflow as hvd_tf
    import horovod.tensorflow.keras as hvd
    import tensorflow as tf

    import callbacks
    import data
    import zoo

    hvd.init()
    gpu = climseg_tf.pin_gpu()  # one GPU per rank, before anything touches a GPU
    rank, size = hvd.rank(), hvd.size()
    if gpu:
        _say(rank, f"one GPU per rank, by local rank (rank 0: {gpu}, memory growth)")
    out = _output_dir(args, rank)
    ckpt_dir = os.path.join(out, "checkpoints")
    tf.keras.utils.set_random_seed(args.seed)  # the same on every rank
    if args.precision != "fp32":
        tf.keras.mixed_precision.set_global_policy(args.precision)

    # ---- data: every rank reads its own shard.
    if args.data_train:
        train_paths, val_paths = args.data_train, args.data_val
    else:
        train_paths, val_paths = _default_data(args, hvd, rank)
    try:
        train_files = data.list_files(train_paths)
    except data.DataFileError as e:
        raise SystemExit(f"train.py: error: --data-train: {e}") from None
    try:
        val_files = data.list_files(val_paths) if val_paths else []
    except data.DataFileError as e:
        raise SystemExit(f"train.py: error: --data-val: {e}") from None
    bad_files = data.BadFileLog()
    if args.skip_bad_files and val_files:
        # Known-good validation files keep every rank's step count known.
        if rank == 0:
            val_files = data.usable_files(val_files, channels=args.channels,
                                          label_set=args.label_set, bad_files=bad_files)
        val_files = _broadcast(hvd, val_files)
    stats_path = args.stats or _stats_next_to(train_paths)
    try:
        stats = data.read_stats(stats_path) if stats_path else None
    except data.DataFileError as e:
        raise SystemExit(f"train.py: error: --stats: {e}") from None
    if stats is None:
        _say(rank, "no stats.h5 found: inputs are not normalized (give --stats)")
    num_shards, shard_index = size, rank
    if args.stage_dir:
        # Each rank copies only its share; reading then stays node-local.
        train_files = data.stage_files(train_files, os.path.join(args.stage_dir, f"rank{rank}"),
                                       num_shards=size, shard_index=rank,
                                       oversample=args.stage_oversample, seed=args.seed,
                                       progress=rank == 0)
        num_shards, shard_index = 1, 0
    channels = data.channel_indices(args.channels)
    try:  # the grid of most files, not of whichever sorts first
        height, width = data.dataset_grid(train_files, skip_bad_files=args.skip_bad_files,
                                          bad_files=bad_files)
    except data.DataFileError as e:
        raise SystemExit(f"train.py: error: --data-train: {e}") from None
    # Batches in one pass over this rank's files; an epoch (--steps-per-epoch)
    # may be more or less than one pass.
    pass_batches = data.num_batches(len(train_files), args.batch_size, training=True,
                                    num_shards=num_shards, shard_index=shard_index)
    steps = args.steps_per_epoch or pass_batches
    if args.stage_dir and size > 1:  # staged shards may differ: all ranks take the least
        steps = int(hvd_tf.allreduce(tf.constant(steps), op=hvd_tf.Min, name="climseg_steps"))
    if steps < 1 or pass_batches < 1:
        raise SystemExit(f"train.py: error: --batch-size {args.batch_size}: "
                         f"{len(train_files)} training files over {num_shards} rank(s) give "
                         "no full batch")
    common = dict(stats=stats, normalization=args.normalization, channels=channels,
                  label_set=args.label_set, skip_bad_files=args.skip_bad_files,
                  bad_files=bad_files, seed=args.seed, grid=(height, width))

    # ---- model, loss, optimizer.
    model_kwargs = {"input_shape": (height, width, len(channels)), "num_classes": 3,
                    "periodic_padding": args.periodic_padding}
    if args.output_stride:
        model_kwargs["output_stride"] = args.output_stride
    if args.decoder:
        model_kwargs["decoder"] = args.decoder
    model_kwargs.update(args.model_options)
    try:
        model = zoo.get_model(args.model, **model_kwargs)
    except (ValueError, TypeError) as e:
        raise SystemExit(f"train.py: error: --model {args.model}: {e}") from None
    weights = None
    if args.class_weight_values in ("sc18", "deepcam"):
        if stats is not None and args.loss != "jaccard":
            weights = zoo.class_weights(data.class_frequencies(stats),
                                        scheme=args.class_weight_values)
    elif args.class_weight_values != "none":
        weights = args.class_weight_values
    loss_kwargs = {"gamma": args.focal_gamma} if args.loss == "focal" else {}
    loss = zoo.get_loss(args.loss, class_weights=weights if args.loss != "jaccard" else None,
                        **loss_kwargs)
    optimizer = _build_optimizer(args)
    # Horovod: average gradients over ranks.
    optimizer = hvd.DistributedOptimizer(optimizer)
    if args.precision == "mixed_float16":
        # Dynamic loss scaling, outermost: a step whose (averaged) gradients
        # overflow is skipped on every rank and the scale lowered.
        optimizer = tf.keras.mixed_precision.LossScaleOptimizer(optimizer)
    if args.precision != "fp32":
        _say(rank, f"{args.precision}: float32 weights and logits"
                   + (", dynamic loss scaling" if args.precision == "mixed_float16" else ""))
    if args.precision == "mixed_float16" and not tf.config.list_physical_devices("GPU"):
        _say(rank, "note: mixed_float16 on a CPU is about 150x slower than fp32 (CPUs have no "
                   "float16 arithmetic); use --precision mixed_bfloat16 or fp32 here")
    _check_gradient_lag(args, steps, model, rank)
    # Weighted, so that the zero-weight padding of validation shards counts for nothing.
    metrics = zoo.iou_metrics(3, class_names=("background", "tc", "ar"))

    # ---- resume, or start from pretrained weights.
    # Rank 0 decides, so that all ranks start at the same point.
    resume_from = _broadcast(hvd, _resume_point(args, ckpt_dir) if rank == 0 else None)
    initial_epoch = resume_batches = 0
    if resume_from:
        model.compile(optimizer=optimizer, loss=loss, weighted_metrics=metrics)
        try:
            meta = callbacks.restore_checkpoint(resume_from, model, optimizer,
                                                expect_model=args.model)
        except callbacks.CheckpointError as e:
            raise SystemExit(f"train.py: error: {e}") from None
        initial_epoch = int(meta["epoch"])
        # A checkpoint written mid-epoch (--checkpoint-every-steps): continue
        # that epoch after the batches it had done.
        resume_batches = int(meta["step"]) - initial_epoch * steps
        if not 0 <= resume_batches < steps:
            _say(rank, f"note: checkpoint step {meta['step']} does not fall in epoch "
                       f"{initial_epoch + 1} at {steps} steps per epoch (other batch size?); "
                       "starting that epoch from its beginning")
            resume_batches = 0
        _say(rank, f"resuming from {resume_from} (epoch {initial_epoch}, "
                   f"step {meta['step']})")
    elif args.init_checkpoint:
        # A climseg checkpoint names its input channels: the filters of the
        # channels both runs use are copied, only the others are new.
        source_names = callbacks.checkpoint.checkpoint_channel_names(args.init_checkpoint)
        target_names = [data.CHANNELS[c] for c in channels] if source_names else None
        try:
            report = zoo.load_matching_weights(model, args.init_checkpoint,
                                               modules=args.init_modules, model_name=args.model,
                                               source_channels=source_names,
                                               target_channels=target_names)
        except (ValueError, callbacks.CheckpointError) as e:
            raise SystemExit(f"train.py: error: --init-checkpoint: {e}") from None
        if not report["loaded"] and not report["adapted"]:
            raise SystemExit(f"train.py: error: --init-checkpoint {args.init_checkpoint}: no "
                             f"layer of it fits model {args.model} (by name and shape); "
                             "nothing would be initialised from it")
        _say(rank, f"initialised {len(report['loaded'])} layers from {args.init_checkpoint}"
                   + (f", adapted input channels of {', '.join(report['adapted'])}"
                      if report["adapted"] else ""))
        for name in report["adapted"]:
            copied, new = report["copied_channels"][name], report["new_channels"][name]
            _say(rank, f"  {name}: {len(copied)} input channel(s) copied by name, {len(new)} new"
                       + (f" ({', '.join(map(str, new))})" if source_names and new else "")
                       + ("" if source_names else " (mean filter: the source names no channels)"))
        for name, why in report["skipped"]:
            _say(rank, f"  not loaded: {name} ({why})")

    # Horovod: every rank starts from rank 0's weights and optimizer state. Done
    # here, not with BroadcastGlobalVariablesCallback: that one broadcasts the
    # optimizer's variables after the first step, which would overwrite each
    # rank's own gradient in a gradient-lag buffer with rank 0's.
    hvd_tf.broadcast_variables(model.variables, root_rank=0)
    if optimizer.variables():
        hvd_tf.broadcast_variables(optimizer.variables(), root_rank=0)

    # ---- callbacks: order matters (averaged metrics first; writers after).
    config = {k: v for k, v in vars(args).items()
              if k not in ("class_weight_values", "model_options", "lr_stage_list")}
    config.update(ranks=size, global_batch_size=args.batch_size * size,
                  steps_per_epoch=steps, input_shape=list(model_kwargs["input_shape"]),
                  class_weights=None if weights is None else [float(w) for w in weights],
                  stats_path=stats_path)
    if rank == 0:
        with open(os.path.join(out, "config.yaml"), "w") as f:
            yaml.safe_dump(config, f, sort_keys=True)
    lr_callback = callbacks.MultiStageLearningRate(
        args.lr, stages=args.lr_stage_list, unit=args.lr_unit, warmup=args.warmup,
        warmup_start=args.warmup_start,
        decay=None if args.lr_decay == "none" else args.lr_decay,
        decay_end=args.epochs if args.lr_unit == "epoch" else args.epochs * steps,
        scale_by_ranks=args.lr_scaling == "linear", steps_per_epoch=steps)
    guard = callbacks.StopOnNonFinite()
    cbs = [
        callbacks.MetricAverage(),  # first: the callbacks after it see global values
        guard,
        lr_callback,
        callbacks.Throughput(args.batch_size, flops_per_sample=_flops(zoo, model, rank),
                             single_rank_rate=args.single_rank_rate),
        # metrics.json before the checkpoint: killed between the two, a resumed
        # run redoes the epoch and replaces its record; the other way round,
        # it would resume after an epoch that metrics.json never recorded.
        callbacks.TrainingReport(out, writer=rank == 0, extra=config),
        callbacks.Checkpointer(ckpt_dir, every_epochs=args.checkpoint_every,
                     every_steps=args.checkpoint_every_steps, keep=args.keep_checkpoints,
                     monitor="val_mean_iou" if val_files else "mean_iou",
                     meta={"model": args.model, "model_kwargs": model_kwargs,
                           "channels": channels,
                           "channel_names": [data.CHANNELS[c] for c in channels],
                           "normalization": args.normalization,
                           # A copy inside each checkpoint: it can move anywhere.
                           "stats": callbacks.checkpoint.STATS if stats_path else None},
                     files={callbacks.checkpoint.STATS: stats_path} if stats_path else None,
                     writer=rank == 0,
                     before_save=functools.partial(callbacks.average_lag_buffers, optimizer)),
    ]
    run = _wandb_init(args, config, out) if rank == 0 else None
    if run is not None:
        cbs += _wandb_callbacks(args, run, val_files, common,
                                initial_step=initial_epoch * steps + resume_batches)

    def train_data(position):
        # The stream of batches from global batch `position` on: fit reads one
        # stream without breaks, whose pass p is shuffled by (seed, p) only, so
        # a resumed run reads the same batches as an uninterrupted one.
        return data.make_dataset(train_files, args.batch_size, training=True,
                                 num_shards=num_shards, shard_index=shard_index,
                                 initial_epoch=position // pass_batches,
                                 initial_batch=position % pass_batches, augment=args.augment,
                                 **common)

    val_ds = None
    if val_files:
        val_ds = data.make_dataset(val_files, args.batch_size, training=False,
                                   num_shards=size, shard_index=rank, **common)
        # Horovod: IoU metrics allreduce at every step, so all ranks need as many
        # batches; the shorter shards get zero-weight padding.
        count = functools.partial(data.num_batches, len(val_files), args.batch_size,
                                  training=False, num_shards=size)
        val_ds = data.equalize_batches(val_ds, count(shard_index=rank), count(shard_index=0))

    _say(rank, f"{args.model}: {model.count_params():,} parameters; {size} rank(s) x batch "
               f"{args.batch_size}; {len(train_files)} training files, {steps} steps per "
               f"epoch; {len(val_files)} validation files; output in {out}")
    start = time.perf_counter()
    fit = dict(validation_data=val_ds, verbose=2 if rank == 0 else 0, callbacks=cbs)
    history = None
    if args.freeze_backbone and initial_epoch < args.freeze_backbone:
        # The optimizer must know every variable before some are frozen.
        optimizer.build(model.trainable_variables)
        zoo.set_backbone_trainable(model, args.model, False)
        model.compile(optimizer=optimizer, loss=loss, weighted_metrics=metrics)
        _say(rank, f"encoder frozen for epochs 1-{args.freeze_backbone}")
        history = _fit_epochs(model, train_data, initial_epoch, args.freeze_backbone,
                              resume_batches, steps, guard, **fit)
        initial_epoch, resume_batches = args.freeze_backbone, 0
        zoo.set_backbone_trainable(model, args.model, True)
    if not guard.stopped and initial_epoch < args.epochs:
        model.compile(optimizer=optimizer, loss=loss, weighted_metrics=metrics)
        history = _fit_epochs(model, train_data, initial_epoch, args.epochs, resume_batches,
                              steps, guard, **fit)
    seconds = time.perf_counter() - start

    if args.skip_bad_files:  # every rank's skips, in rank 0's report
        all_bad = data.BadFileLog()
        for items in callbacks._horovod.allgather_object(bad_files.items(), "climseg_bad"):
            for path, problem in items:
                all_bad.add(path, problem, warn=False)
        if len(all_bad):
            _say(rank, all_bad.report())
    if guard.stopped:
        _say(rank, f"error: {guard.message}. The last good checkpoint in {ckpt_dir} is "
                   "intact; resume from it with a lower --lr or other settings.")
        if run is not None:
            run.finish(exit_code=1)
        return 1
    if rank == 0:
        if history is None:
            _say(0, f"nothing to do: {args.epochs} epochs were already trained in {out}")
        _summary(out, seconds, ckpt_dir)
        if run is not None:
            _wandb_finish(run, ckpt_dir)
    return 0


def _fit_epochs(model, train_data, first, last, skip, steps, guard, **fit):
    """Trains epochs [first, last), the first from its batch `skip` on.

    `train_data(n)` is the stream of batches from global batch n on. An
    interrupted epoch runs as a fit of its own over its remaining batches
    (Keras' steps per epoch is fixed within one fit). Returns the last History.
    """
    history = None
    if skip:
        history = model.fit(train_data(first * steps + skip), epochs=first + 1,
                            initial_epoch=first, steps_per_epoch=steps - skip, **fit)
        first += 1
    if first < last and not guard.stopped:
        history = model.fit(train_data(first * steps), epochs=last, initial_epoch=first,
                            steps_per_epoch=steps, **fit)
    return history


def _check_gradient_lag(args, steps, model, rank):
    """Refuses a lag that applies no gradient in the run; says what the buffer costs."""
    if not args.gradient_lag:
        return
    total = args.epochs * steps
    if args.gradient_lag >= total:
        raise SystemExit(f"train.py: error: --gradient-lag {args.gradient_lag}: the run has "
                         f"{total} steps ({args.epochs} epochs x {steps}), so no lagged gradient "
                         f"would ever be applied; expected a lag below {total} (the paper "
                         "used 1)")
    size = sum(int(v.shape.num_elements()) * v.dtype.size for v in model.trainable_variables)
    _say(rank, f"gradient lag {args.gradient_lag}: a buffer of {args.gradient_lag} gradients, "
               f"{args.gradient_lag * size / 1e6:.1f} MB per rank and in every checkpoint")


def _stats_next_to(paths):
    from data.files import STATS_NAME

    for path in paths:
        candidate = os.path.join(path if os.path.isdir(path) else os.path.dirname(path),
                                 STATS_NAME)
        if os.path.isfile(candidate):
            return candidate
    return None


def _flops(zoo, model, rank):
    """Training FLOPs per sample, for the FLOP/s figure (None if they cannot be counted)."""
    try:
        return zoo.training_flops_per_sample(model)
    except Exception as e:  # noqa: BLE001  (a missing figure must not stop training)
        _say(rank, f"FLOPs not counted ({type(e).__name__}: {e})")
        return None


def _summary(out, seconds, ckpt_dir):
    """Prints the last epoch's figures, as recorded in metrics.json."""
    import callbacks

    path = os.path.join(out, callbacks.TrainingReport.METRICS)
    if not os.path.isfile(path):
        return
    with open(path) as f:
        epochs = json.load(f)["epochs"]
    last = epochs[-1] if epochs else {}
    keys = ("loss", "mean_iou", "val_loss", "val_mean_iou", "val_iou_background", "val_iou_tc",
            "val_iou_ar", "samples_per_second_total")
    shown = ", ".join(f"{k} {_number(last[k])}" for k in keys if k in last)
    print(f"climseg: done in {seconds:.0f} s. Epoch {last.get('epoch')}: {shown}", flush=True)
    iou = last.get("val_mean_iou", last.get("mean_iou"))
    if iou is not None and math.isfinite(iou):
        print(f"climseg: mean IoU {iou:.3f} (all-background prediction scores about "
              f"0.33)", flush=True)
    print(f"climseg: checkpoints in {ckpt_dir}; metrics.json and curves.png in {out}",
          flush=True)


# --------------------------------------------------------------------------- W&B

def _number(value):
    """4 decimals, or "-" for an undefined value (None or NaN: e.g. the IoU of an absent class)."""
    return "-" if value is None or not math.isfinite(value) else f"{value:.4f}"


def _wandb_init(args, config, out):
    """Rank 0 only: starts (or resumes) the W&B run; offline without an API key."""
    mode = args.wandb_mode or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
    if mode == "disabled":
        return None
    from callbacks import wandb_run

    id_file = os.path.join(out, "wandb_run_id")
    run_id = open(id_file).read().strip() if os.path.exists(id_file) else uuid.uuid4().hex[:8]
    with open(id_file, "w") as f:
        f.write(run_id)
    return wandb_run.start_run(mode=mode, directory=out, run_id=run_id,
                               say=functools.partial(_say, 0), project=args.wandb_project,
                               entity=args.wandb_entity,
                               name=args.wandb_name or os.path.basename(out), config=config)


def _wandb_callbacks(args, run, val_files, common, initial_step):
    import callbacks
    import data
    from callbacks import wandb_run

    cbs = [wandb_run.metrics_logger(initial_step)]
    if val_files and args.wandb_images:
        samples = [data.read_sample(p, channels=common["channels"], label_set="labels_0")
                   for p in val_files[:args.wandb_images]]
        norm = data.normalizer(common["stats"], common["normalization"], common["channels"]) \
            if common["stats"] is not None else None
        cbs.append(callbacks.WandbValidationImages(samples, normalize=norm,
                                                   channels=common["channels"]))
    return cbs


def _wandb_finish(run, ckpt_dir):
    import wandb

    best = os.path.join(ckpt_dir, "best")
    if os.path.isdir(best):
        artifact = wandb.Artifact(f"{run.name}-best", type="model",
                                  metadata=json.load(open(os.path.join(best, "meta.json"))))
        artifact.add_dir(best)
        run.log_artifact(artifact)
    run.finish()


# --------------------------------------------------------------------------- predict

def build_predict_parser():
    parser = argparse.ArgumentParser(
        prog="train.py predict",
        description="Predict TC/AR masks for climate files with a trained checkpoint; write "
                    "masks (HDF5, or netCDF next to netCDF inputs) and PNG maps.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--checkpoint", required=True,
                        help="a checkpoint directory (e.g. runs/x/checkpoints/best)")
    parser.add_argument("--input", nargs="+", required=True,
                        help="files, directories or globs to predict")
    parser.add_argument("--output-dir", default="predictions")
    parser.add_argument("--stats", help="stats.h5 (default: the one the checkpoint used)")
    parser.add_argument("--batch-size", type=_positive_int, default=1)
    parser.add_argument("--no-maps", action="store_true", help="masks only, no PNG maps")
    return parser


def predict_main(argv):
    """`python train.py predict`: masks and maps for files, with IoU where labels exist."""
    parser = build_predict_parser()
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    import callbacks
    import data
    import zoo

    climseg_tf.pin_gpu()  # under a launcher: this rank's GPU only
    try:
        meta = callbacks.read_meta(args.checkpoint)
        weights = zoo.weights_file(args.checkpoint)
    except (callbacks.CheckpointError, ValueError) as e:
        parser.error(f"--checkpoint: {e}")
    try:
        files = data.list_files(args.input)
    except data.DataFileError as e:
        parser.error(f"--input: {e}")
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
        stats = data.read_stats(stats_path) if stats_path else None
    except data.DataFileError as e:
        raise SystemExit(f"train.py: error: --stats: {e}") from None
    channels = meta["channels"]
    kwargs = dict(meta["model_kwargs"])
    kwargs["input_shape"] = tuple(kwargs["input_shape"])
    model = zoo.get_model(meta["model"], **kwargs)
    model.load_weights(weights)
    norm = data.normalizer(stats, meta.get("normalization", "minmax"), channels) \
        if stats is not None else None
    os.makedirs(args.output_dir, exist_ok=True)
    tmq = channels.index(0) if 0 in channels else 0
    # The training metrics, on this process only: the same IoU rule as val_mean_iou.
    ious = zoo.iou_metrics(3, class_names=("background", "tc", "ar"), allreduce=False)
    for i, path in enumerate(files):
        fields, labels = data.read_sample(path, channels=channels, labels_required=False)
        inputs = fields if norm is None else data.normalize(fields.copy(), *norm)
        logits = model.predict_on_batch(inputs[None])
        mask = np.argmax(logits[0], axis=-1).astype(np.uint8)
        out = data.write_mask(path, args.output_dir, mask,
                              attrs={"checkpoint": os.path.abspath(args.checkpoint),
                                     "model": meta["model"]})
        line = f"[{i + 1}/{len(files)}] {path} -> {out}"
        if labels is not None:
            for metric in ious:
                metric.update_state(labels[None], logits)
        if not args.no_maps:
            png = os.path.splitext(out)[0] + ".png"
            data.plot_events(png, fields[..., tmq], mask, labels,
                             title=os.path.basename(path))
            line += f", {os.path.basename(png)}"
        print(line, flush=True)
    if float(tf.reduce_sum(ious[0].total_cm)):
        mean, background, tc, ar = (float(metric.result()) for metric in ious)

        def shown(value):  # "-": the class is in neither the labels nor the masks
            return "-" if math.isnan(value) else f"{value:.3f}"

        print(f"IoU background {shown(background)}, tropical cyclone {shown(tc)}, atmospheric "
              f"river {shown(ar)}; mean {shown(mean)} (-: class absent from labels and "
              "masks)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
