"""climseg: train a segmentation network on climate data, on one process or many.

    python train.py --model deeplabv3plus                 # synthetic demo data
    python train.py --data-train /data/train --data-val /data/val --stats /data/stats.h5
    horovodrun -np 4 -H localhost:4 --gloo python train.py ...   # data-parallel
    python train.py --config run.yaml --lr 0.001          # YAML, flags override
    python train.py predict --checkpoint runs/x/checkpoints/best --input files/*.h5
                                                          # = climseg-predict ...

Every rank runs this file; only rank 0 prints, writes files and talks to W&B.
The pieces live in `zoo/` (models, losses, IoU), `callbacks/` (LARC, gradient
lag, learning rate, checkpoints, throughput) and `data/` (files to batches,
staging, synthetic data); this file only wires them together.
"""

import argparse
import functools
import math
import os
import sys
import time

import yaml

import climseg_tf  # first: selects Keras 2 before TensorFlow loads
from data import flag_types
from data.errors import DEBUG_HELP, CommandError, run_command

# TensorFlow's own warnings repeat our errors with a traceback; a user's choice wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PRECISIONS = ("fp32", "mixed_float16", "mixed_bfloat16")


# --------------------------------------------------------------------------- flags

_positive_int = flag_types.integer(minimum=1)
_nonnegative_int = flag_types.integer(minimum=0)
_positive_float = flag_types.number(above=0)
_nonnegative_float = flag_types.number(minimum=0)
_finite_float = flag_types.number()


def build_parser():
    """The training flags, grouped by topic (`python train.py --help`)."""
    import callbacks
    import zoo

    parser = argparse.ArgumentParser(
        prog="train.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="A YAML --config may set any flag by its long name (dashes or underscores); "
               "flags given on the command line override it. "
               "See also: python train.py predict --help")
    parser.add_argument("--config", help="YAML file of flag values")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)

    g = parser.add_argument_group("model")
    g.add_argument("--model", choices=sorted(zoo.MODELS), default="deeplabv3plus")
    g.add_argument("--output-stride", type=int, choices=(8, 16),
                   help="DeepLabv3+ encoder output stride (model default: 8, as the paper)")
    g.add_argument("--decoder", choices=("deconv1x", "bilinear"),
                   help="DeepLabv3+ decoder (model default: deconv1x, as the paper)")
    g.add_argument("--periodic-padding", action=argparse.BooleanOptionalAction, default=False,
                   help="convolutions wrap around in longitude")
    g.add_argument("--kernels", choices=("reference", "cpu"),
                   help="deeplabv3plus's kernels: the reference Keras layers or the fast CPU "
                        "kernels, with the same weights (default: chosen by the device: cpu "
                        "without a GPU, reference with one)")
    g.add_argument("--jit-compile", action="store_true",
                   help="compile the model's forward and backward pass with XLA (the "
                        "optimizer's update and Horovod's allreduce stay outside)")
    g.add_argument("--sync-bn", action="store_true",
                   help="batch norm with the statistics of all ranks' batches (Horovod's "
                        "SyncBatchNormalization; one allreduce per layer and step)")
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
    g.add_argument("--stage-oversample", type=_finite_float, default=1.0,
                   help="each rank stages this many times its share")
    g.add_argument("--skip-bad-files", action="store_true",
                   help="skip unreadable or invalid files and report them at the end")
    g.add_argument("--augment", action="store_true",
                   help="random longitude roll and north-south flip")
    g.add_argument("--cache-dir", default=os.environ.get(
        "CLIMSEG_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "climseg")),
        help="where the default synthetic data set is generated")

    g = parser.add_argument_group("optimization")
    g.add_argument("--optimizer", choices=callbacks.OPTIMIZERS, default="adam")
    g.add_argument("--lr", type=_positive_float, default=1e-3, help="learning rate (one rank)")
    g.add_argument("--lr-stages", help="multi-stage schedule: the learning rate times M from "
                                       "position P on (in --lr-unit), as 'piece:P1:M1:P2:M2' "
                                       "(SC18) or 'P1:M1,P2:M2'")
    g.add_argument("--lr-unit", choices=("epoch", "step"), default="epoch",
                   help="unit of --lr-stages and --warmup")
    g.add_argument("--warmup", type=_nonnegative_float, default=0.0,
                   help="linear warmup length, in --lr-unit")
    g.add_argument("--warmup-start", type=_nonnegative_float, default=0.0,
                   help="learning-rate factor at the start of the warmup")
    g.add_argument("--lr-decay", choices=("none", "cosine", "poly"), default="none",
                   help="decay over the last stage down to 0 at the end of training")
    g.add_argument("--lr-scaling", choices=("none", "linear"), default="none",
                   help="'linear': multiply the learning rate by the number of ranks")
    g.add_argument("--weight-decay", type=_nonnegative_float, default=0.0,
                   help="weight decay (adamw, lamb, and LARC's trust ratio)")
    g.add_argument("--larc", action="store_true", help="wrap the optimizer in LARC")
    g.add_argument("--larc-eta", type=_positive_float, default=0.002)
    g.add_argument("--larc-mode", choices=("clip", "scale"), default="clip")
    g.add_argument("--gradient-lag", type=_nonnegative_int, default=0,
                   help="apply the gradient of N steps ago (overlaps the allreduce)")
    g.add_argument("--batch-size", type=_positive_int, default=2, help="samples per rank")
    g.add_argument("--accumulate", type=_positive_int, default=1, metavar="N",
                   help="apply the mean gradient of N batches as one update (the global batch "
                        "is N x batch size x ranks; one allreduce per update). "
                        "--steps-per-epoch counts batches; --lr-stages and --warmup in steps "
                        "count updates")
    g.add_argument("--epochs", type=_positive_int, default=8)
    g.add_argument("--target-iou", type=_positive_float, metavar="X",
                   help="stop after the first epoch whose validation mean IoU reaches X "
                        "(0 < X <= 1); that epoch's checkpoint is kept")
    g.add_argument("--validate-every", type=_positive_int, default=1, metavar="N",
                   help="validate every N epochs and after the last one")
    g.add_argument("--steps-per-epoch", type=_positive_int,
                   help="default: one pass over this rank's share of the files")

    g = parser.add_argument_group("loss")
    g.add_argument("--loss", choices=("weighted_ce", "focal", "jaccard"), default="weighted_ce")
    g.add_argument("--class-weights", default="sc18",
                   help="'sc18' (1/sqrt(frequency), normalised), 'deepcam' (frequency^-0.125), "
                        "'none', or 3 comma-separated numbers")
    g.add_argument("--focal-gamma", type=_nonnegative_float, default=2.0)

    g = parser.add_argument_group("precision")
    g.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="mixed_float16 uses dynamic loss scaling (GPUs); on a CPU use "
                        "mixed_bfloat16")

    g = parser.add_argument_group("outputs and resuming")
    g.add_argument("--output-dir", default="runs/latest")
    g.add_argument("--single-rank-rate", type=_positive_float,
                   help="samples/s of one rank training alone on the same per-rank work: "
                        "the parallel efficiency of each epoch is reported against it")
    g.add_argument("--nan-check-every", type=_positive_int, default=50,
                   help="check for a NaN or Inf training loss every N steps (and at every "
                        "epoch's end); all ranks stop together")
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
    g.add_argument("--seed", type=_nonnegative_int, default=0)

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
    g.add_argument("--wandb-log-every", type=_positive_int, default=1, metavar="N",
                   help="log the batch metrics every N steps (each log reads them from the "
                        "device: on GPUs give e.g. 50)")
    g.add_argument("--wandb-images", type=_nonnegative_int, default=2,
                   help="validation samples logged as images each epoch")
    return parser


def _load_config(parser, path):
    """Reads a YAML config (safe loader) into parser defaults; unknown keys are errors."""
    try:
        with open(path, encoding="utf-8") as f:
            values = yaml.safe_load(f) or {}
    except OSError as e:
        parser.error(f"--config {path}: {e.strerror}")
    except UnicodeDecodeError as e:
        parser.error(f"--config {path}: not UTF-8 text (byte {e.start}: {e.reason}); save it "
                     "as UTF-8")
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
        many = isinstance(value, list) or action.nargs in ("+", "*") \
            or isinstance(action, argparse._AppendAction)  # --model-option: one or a list
        defaults[dest] = converted if many else converted[0]
    parser.set_defaults(**defaults)


def parse_args(argv=None):
    """Parses flags (over a YAML --config) and checks their combinations."""
    import callbacks
    import zoo

    parser = build_parser()
    config = _config_flag(argv)
    if config:
        _load_config(parser, config)
    args = parser.parse_args(argv)

    if args.model != "deeplabv3plus" and args.decoder:
        parser.error(f"--decoder applies to --model deeplabv3plus, not {args.model}")
    if args.jit_compile and args.sync_bn:
        parser.error("--jit-compile cannot compile --sync-bn's batch norm (an allreduce inside "
                     "the model has no XLA kernel); drop one")
    if args.model != "deeplabv3plus" and args.kernels:
        parser.error(f"--kernels applies to --model deeplabv3plus, not {args.model}")
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
    if args.accumulate > 1:
        _check_accumulate(parser, args)
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
    if args.target_iou is not None and args.target_iou > 1:
        parser.error(f"--target-iou must be at most 1 (a mean IoU), got {args.target_iou:g}")
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
    if args.channels is not None:
        import data

        try:
            data.channel_indices(args.channels)
        except ValueError as e:
            parser.error(f"--channels: {e}")
    args.lr_stage_list = []
    if args.lr_stages:
        try:
            args.lr_stage_list = callbacks.check_stages(callbacks.parse_stages(args.lr_stages),
                                                        args.lr_unit)
        except ValueError as e:
            parser.error(f"--lr-stages: {e}")
    return args


def _check_accumulate(parser, args):
    """--accumulate N: what it cannot be combined with, and whole updates per epoch."""
    n = args.accumulate
    if args.gradient_lag:
        parser.error(f"--accumulate {n} cannot be combined with --gradient-lag (the lag would "
                     "delay micro-batches, not updates); drop one")
    if args.precision == "mixed_float16":
        parser.error(f"--accumulate {n} cannot be combined with --precision mixed_float16 "
                     "(each rank's loss scaling would judge its own partial sums); use "
                     "mixed_bfloat16 or fp32")
    if args.freeze_backbone:
        parser.error(f"--accumulate {n} cannot be combined with --freeze-backbone")
    for flag, value in (("--steps-per-epoch", args.steps_per_epoch),
                        ("--checkpoint-every-steps", args.checkpoint_every_steps)):
        if value is not None and value % n:
            parser.error(f"{flag} {value} must be a multiple of --accumulate {n} (checkpoints "
                         "and epochs fall between whole updates)")


def _config_flag(argv):
    argv = sys.argv[1:] if argv is None else list(argv)
    for i, item in enumerate(argv):
        if item == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if item.startswith("--config="):
            return item.split("=", 1)[1]
    return None


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


# --------------------------------------------------------------------------- training

def main(argv=None):
    """Runs training (or `predict ...`); returns the process exit status.

    An error ends as one line, `train.py: error: ...` (with the rank under
    Horovod), and exit status 2 for bad usage (a flag, or an input it names,
    refused before training starts) or 1 for a run that failed; `--debug` or
    `CLIMSEG_DEBUG=1` shows the traceback instead.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "predict":  # the same as climseg-predict
        from inference.predict import main as predict

        return predict(argv[1:], prog="train.py predict")
    return run_command("train.py", _train, argv)


def _train(argv):
    args = parse_args(argv)
    job = start_job(args)
    train_set = prepare_data(args, job)
    model, compile_args, details = build_model(args, job, train_set)
    start = resume_or_initialise(args, job, model, compile_args, train_set)
    config = record_config(args, job, train_set, details)
    callback_list, stop, run = make_callbacks(args, job, train_set, model, compile_args, details,
                                              config, start)
    seconds, history = fit(args, job, train_set, model, compile_args, callback_list, stop, start)
    return finish(args, job, train_set, stop, run, seconds, history, callback_list)


class Job:
    """This process's place in the run: rank, ranks, output and checkpoint directories."""

    def __init__(self, rank, size, out):
        self.rank, self.size, self.out = rank, size, out
        self.transport = None  # Horovod's collectives: "MPI" or "Gloo"
        self.ckpt_dir = os.path.join(out, "checkpoints")

    def say(self, *parts):
        """Prints a line as climseg (rank 0 only)."""
        _say(self.rank, *parts)


def start_job(args):
    """Horovod, one GPU per rank, the output directory, the seed and the precision policy."""
    import horovod.tensorflow.keras as hvd
    import tensorflow as tf

    hvd.init()
    gpu = climseg_tf.pin_gpu()  # one GPU per rank, before anything touches a GPU
    job = Job(hvd.rank(), hvd.size(), _output_dir(args, hvd.rank()))
    job.transport = "MPI" if hvd.mpi_enabled() else "Gloo" if hvd.gloo_enabled() else None
    if gpu:
        job.say(f"one GPU per rank, by local rank (rank 0: {gpu}, memory growth)")
    tf.keras.utils.set_random_seed(args.seed)  # the same on every rank
    if args.precision != "fp32":
        tf.keras.mixed_precision.set_global_policy(args.precision)
        job.say(f"{args.precision}: float32 weights and logits"
                + (", dynamic loss scaling" if args.precision == "mixed_float16" else ""))
    if args.precision == "mixed_float16" and not tf.config.list_physical_devices("GPU"):
        job.say("note: mixed_float16 on a CPU is about 150x slower than fp32 (CPUs have no "
                "float16 arithmetic); use --precision mixed_bfloat16 or fp32 here")
    return job


def prepare_data(args, job):
    """The run's files, statistics, grid and steps (a `TrainingSet`); each rank reads its shard."""
    from data.staging import StagingError
    from data.synthetic import default_dataset
    from data.training_set import TrainingSetError, prepare_training_set

    if args.data_train:
        train_paths, val_paths = args.data_train, args.data_val
    else:
        train_dir, val_dir = default_dataset(args.cache_dir, job.rank, say=job.say)
        train_paths, val_paths = [train_dir], [val_dir]
    try:
        train_set = prepare_training_set(
            train_paths, val_paths, batch_size=args.batch_size, stats_path=args.stats,
            normalization=args.normalization, channels=args.channels, label_set=args.label_set,
            skip_bad_files=args.skip_bad_files, augment=args.augment, stage_dir=args.stage_dir,
            stage_oversample=args.stage_oversample, steps_per_epoch=args.steps_per_epoch,
            seed=args.seed, rank=job.rank, size=job.size, say=job.say)
    except TrainingSetError as e:
        flag = {"train": "--data-train", "validation": "--data-val", "stats": "--stats",
                "batch_size": f"--batch-size {args.batch_size}"}[e.source]
        raise CommandError(f"{flag}: {e}", usage=True) from e
    except StagingError as e:  # e.g. a full disk; the message names the directory
        raise CommandError(f"--stage-dir {args.stage_dir}: {e}") from e
    if args.target_iou is not None and not train_set.val_files:
        raise CommandError(f"--target-iou {args.target_iou:g} needs validation files "
                           "(--data-val): the target is a validation mean IoU", usage=True)
    if train_set.steps % args.accumulate:
        raise CommandError(f"--accumulate {args.accumulate}: an epoch of {train_set.steps} "
                           "batches is not a whole number of updates; give --steps-per-epoch "
                           f"as a multiple of {args.accumulate}", usage=True)
    return train_set


def build_model(args, job, train_set):
    """The model; its optimizer, loss and metrics (`compile` keywords); its builder's kwargs and
    the class weights."""
    import callbacks
    import data
    import zoo

    kwargs = {"input_shape": train_set.input_shape, "num_classes": data.NUM_CLASSES,
              "periodic_padding": args.periodic_padding}
    if args.output_stride:
        kwargs["output_stride"] = args.output_stride
    if args.decoder:
        kwargs["decoder"] = args.decoder
    kwargs.update(args.model_options)
    build = dict(kwargs)
    if args.model == "deeplabv3plus":
        # Not in the checkpoint's model_kwargs: the weights are the same with either set.
        given = kwargs.pop("kernels", None)
        flag = "--model-option kernels" if given else "--kernels"
        try:
            kernels, why = zoo.choose_kernels(given or args.kernels, args.jit_compile, flag)
        except ValueError as e:  # an unknown set (--model-option), or one XLA cannot compile
            unknown = (given or args.kernels) not in (None, *zoo.KERNELS)
            raise CommandError(f"{flag if unknown else '--jit-compile'}: {e}",
                               usage=True) from e
        build["kernels"] = kernels
        job.say(f"kernels {kernels} ({why})")
    try:
        model = zoo.get_model(args.model, **build)
    except (ValueError, TypeError) as e:
        raise CommandError(f"--model {args.model}: {e}", usage=True) from e
    if args.sync_bn:
        # Horovod: batch statistics over all ranks' batches (the layers keep their names).
        changed = callbacks.sync_batch_norm(model)
        if not changed:
            raise CommandError(f"--sync-bn: model {args.model} has no batch normalization "
                               "layer (tiramisu has it with --model-option batch_norm=true)",
                               usage=True)
        job.say(f"--sync-bn: {len(changed)} batch-norm layers normalise with the statistics "
                f"of the global batch ({job.size} rank(s) x batch {args.batch_size})")
    schemes = args.class_weight_values in ("sc18", "deepcam") and args.loss != "jaccard"
    try:
        frequencies = data.class_frequencies(train_set.stats, args.label_set) \
            if schemes and train_set.stats is not None else None
        loss, class_weights = zoo.training_loss(args.loss, args.class_weight_values,
                                                frequencies, gamma=args.focal_gamma)
    except (ValueError, data.DataFileError) as e:  # no counts, or a class never seen
        raise CommandError(f"--class-weights {args.class_weights}: the weights come from the "
                           f"class counts in {train_set.stats_path}, which do not allow them "
                           f"({e}); give --class-weights none or three numbers, or statistics "
                           "of data holding every class", usage=True) from e
    optimizer = callbacks.build_optimizer(
        args.optimizer, learning_rate_schedule(args, train_set.steps),
        weight_decay=args.weight_decay, larc=args.larc,
        larc_eta=args.larc_eta, larc_mode=args.larc_mode, gradient_lag=args.gradient_lag,
        accumulate=args.accumulate, precision=args.precision)
    if args.accumulate > 1:
        # Horovod: each rank sums N batches' gradients, then one allreduce per update.
        job.say(f"accumulating {args.accumulate} batches per update: a global batch of "
                f"{args.accumulate * args.batch_size * job.size} samples, "
                f"{train_set.steps // args.accumulate} updates per epoch")
    if args.gradient_lag:
        try:
            size = callbacks.gradient_lag_bytes(args.gradient_lag, args.epochs, train_set.steps,
                                                model)
        except ValueError as e:
            raise CommandError(f"--gradient-lag {args.gradient_lag}: {e}", usage=True) from e
        job.say(f"gradient lag {args.gradient_lag}: a buffer of {args.gradient_lag} gradients, "
                f"{size / 1e6:.1f} MB per rank and in every checkpoint")
    # Weighted, so that the zero-weight padding of validation shards counts for nothing.
    metrics = zoo.iou_metrics(data.NUM_CLASSES, class_names=data.CLASS_KEYS)
    flops = _flops(zoo, model, job.rank)  # from the graph of its layers, before XLA's
    if args.jit_compile:  # the model's forward and backward; not Horovod's allreduce
        callbacks.compile_with_xla(model)
        job.say("the model's forward and backward pass compiled with XLA")
    return (model, dict(optimizer=optimizer, loss=loss, weighted_metrics=metrics),
            {"model_kwargs": kwargs, "class_weights": class_weights,
             "flops_per_sample": flops})


def learning_rate_schedule(args, steps):
    """The run's learning rate: stages, warmup, decay and rank scaling, evaluated in the graph
    from the optimizer's step (no host read per step). With --accumulate N it counts updates:
    `steps` batches make `steps / N` of them per epoch."""
    import callbacks

    updates = steps // args.accumulate
    return callbacks.MultiStageSchedule(
        args.lr, stages=args.lr_stage_list, unit=args.lr_unit, warmup=args.warmup,
        warmup_start=args.warmup_start,
        decay=None if args.lr_decay == "none" else args.lr_decay,
        decay_end=args.epochs if args.lr_unit == "epoch" else args.epochs * updates,
        # Horovod: scale the learning rate by the number of ranks.
        scale_by_ranks=args.lr_scaling == "linear", steps_per_epoch=updates,
        steps_per_update=args.accumulate)


def resume_or_initialise(args, job, model, compile_args, train_set):
    """Restores the newest checkpoint, or loads --init-checkpoint; then every rank has rank 0's.

    Returns:
        `(epoch, batch)`: where training starts (the epoch, and batches of it done).
    """
    import horovod.tensorflow as hvd

    import callbacks

    resume_from = None
    if job.rank == 0:  # only rank 0 writes checkpoints, and it decides where all ranks start
        removed = callbacks.checkpoint.remove_unfinished_writes(job.ckpt_dir)
        if removed:
            job.say(f"removed {len(removed)} unfinished checkpoint write(s) of a killed run "
                    f"from {job.ckpt_dir}: {', '.join(removed)}")
        try:
            resume_from = callbacks.resume_point(job.ckpt_dir, args.resume, say=job.say)
        except callbacks.CheckpointError as e:
            # --resume never/PATH refused: usage; no checkpoint that verifies: a failure.
            raise CommandError(str(e), usage=args.resume != "auto") from e
    resume_from = climseg_tf.broadcast_object(resume_from, "climseg.resume")
    start = (0, 0)
    if resume_from:
        model.compile(**compile_args)
        try:
            meta = callbacks.restore_checkpoint(resume_from, model, compile_args["optimizer"],
                                                expect_model=args.model)
        except callbacks.CheckpointError as e:  # written for another model or its options
            raise CommandError(str(e), usage=True) from e
        epoch, batch, note = callbacks.resume_position(meta, train_set.steps)
        if note:
            job.say(f"note: {note}")
        start = (epoch, batch)
        job.say(f"resuming from {resume_from} (epoch {epoch}, step {meta['step']})")
    elif args.init_checkpoint:
        _initialise_from(args, job, model, train_set)
    # Horovod: every rank starts from rank 0's weights and optimizer state. Done
    # here, not with BroadcastGlobalVariablesCallback: that one broadcasts the
    # optimizer's variables after the first step, which would overwrite each
    # rank's own gradient in a gradient-lag buffer with rank 0's.
    hvd.broadcast_variables(model.variables, root_rank=0)
    if compile_args["optimizer"].variables():
        hvd.broadcast_variables(compile_args["optimizer"].variables(), root_rank=0)
    return start


def _initialise_from(args, job, model, train_set):
    """--init-checkpoint: weights by layer name, input convolutions adapted (by channel name)."""
    import callbacks
    import data
    import zoo

    # A climseg checkpoint names its input channels: the filters of the
    # channels both runs use are copied, only the others are new.
    source_names = callbacks.checkpoint_channel_names(args.init_checkpoint)
    target_names = [data.CHANNELS[c] for c in train_set.channels] if source_names else None
    try:
        report = zoo.load_matching_weights(model, args.init_checkpoint, modules=args.init_modules,
                                           model_name=args.model, source_channels=source_names,
                                           target_channels=target_names)
    except (ValueError, callbacks.CheckpointError) as e:
        raise CommandError(f"--init-checkpoint: {e}", usage=True) from e
    if not report["loaded"] and not report["adapted"]:
        raise CommandError(f"--init-checkpoint {args.init_checkpoint}: no layer of it fits "
                           f"model {args.model} (by name and shape); nothing would be "
                           "initialised from it", usage=True)
    job.say(f"initialised {len(report['loaded'])} layers from {args.init_checkpoint}"
            + (f", adapted input channels of {', '.join(report['adapted'])}"
               if report["adapted"] else ""))
    for name in report["adapted"]:
        copied, new = report["copied_channels"][name], report["new_channels"][name]
        job.say(f"  {name}: {len(copied)} input channel(s) copied by name, {len(new)} new"
                + (f" ({', '.join(map(str, new))})" if source_names and new else "")
                + ("" if source_names else " (mean filter: the source names no channels)"))
    for name, why in report["skipped"]:
        job.say(f"  not loaded: {name} ({why})")


def record_config(args, job, train_set, details):
    """The effective configuration: in config.yaml (rank 0), metrics.json and W&B."""
    config = {k: v for k, v in vars(args).items()
              if k not in ("class_weight_values", "model_options", "lr_stage_list")}
    config.update(ranks=job.size, global_batch_size=args.batch_size * job.size * args.accumulate,
                  steps_per_epoch=train_set.steps, input_shape=list(train_set.input_shape),
                  class_weights=details["class_weights"], stats_path=train_set.stats_path)
    if job.rank == 0:
        with open(os.path.join(job.out, "config.yaml"), "w") as f:
            yaml.safe_dump(config, f, sort_keys=True)
    return config


def make_callbacks(args, job, train_set, model, compile_args, details, config, start):
    """The callbacks in their order (averaged metrics first, writers after), and W&B's run.

    Returns:
        `(callbacks, stop, run)`: the list, the non-finite-loss guard in it,
        and the W&B run (None on ranks other than 0 or when disabled).
    """
    import callbacks
    import data

    steps = train_set.steps
    stop = callbacks.StopOnNonFinite(every=args.nan_check_every)
    ckpt_meta = {"model": args.model, "model_kwargs": details["model_kwargs"],
                 "channels": train_set.channels,
                 "channel_names": [data.CHANNELS[c] for c in train_set.channels],
                 "normalization": args.normalization,
                 # A copy inside each checkpoint: it can move anywhere.
                 "stats": callbacks.checkpoint.STATS if train_set.stats_path else None}
    callback_list = [
        callbacks.MetricAverage(),  # first: the callbacks after it see global values
        stop,
        callbacks.LearningRateLogger(),  # the schedule runs in the graph; logged per epoch
        callbacks.Throughput(args.batch_size, flops_per_sample=details["flops_per_sample"],
                             single_rank_rate=args.single_rank_rate),
        # Before the writers: the epoch that reaches the target is recorded and checkpointed.
        *([callbacks.StopAtTarget(args.target_iou, monitor="val_mean_iou")]
          if args.target_iou is not None else []),
        # metrics.json before the checkpoint: killed between the two, a resumed
        # run redoes the epoch and replaces its record; the other way round,
        # it would resume after an epoch that metrics.json never recorded.
        callbacks.TrainingReport(job.out, writer=job.rank == 0, extra=config),
        callbacks.Checkpointer(
            job.ckpt_dir, every_epochs=args.checkpoint_every,
            every_steps=args.checkpoint_every_steps, keep=args.keep_checkpoints,
            monitor="val_mean_iou" if train_set.val_files else "mean_iou", meta=ckpt_meta,
            files={callbacks.checkpoint.STATS: train_set.stats_path}
            if train_set.stats_path else None,
            writer=job.rank == 0,
            before_save=functools.partial(callbacks.average_lag_buffers,
                                          compile_args["optimizer"])),
    ]
    run = _wandb_start(args, config, job.out, job.say) if job.rank == 0 else None
    if run is not None:
        callback_list += _wandb_callbacks(args, train_set, initial_step=start[0] * steps
                                          + start[1])
    return callback_list, stop, run


def fit(args, job, train_set, model, compile_args, callback_list, stop, start):
    """Trains the remaining epochs (encoder frozen first, if asked); returns (seconds, History)."""
    import callbacks
    import zoo

    over = f" over {job.transport}" if job.size > 1 and job.transport else ""
    job.say(f"{args.model}: {model.count_params():,} parameters; {job.size} rank(s){over} x batch "
            f"{args.batch_size}; {len(train_set.train_files)} training files, "
            f"{train_set.steps} steps per epoch; {len(train_set.val_files)} validation files; "
            f"output in {job.out}")
    import tensorflow as tf

    from callbacks.report import ReportError

    began = time.perf_counter()
    try:
        history = callbacks.fit_run(
            model, compile_args, train_set.train_dataset, start[0], args.epochs, start[1],
            train_set.steps, frozen_epochs=args.freeze_backbone,
            set_backbone_trainable=functools.partial(_set_backbone_trainable, zoo, args.model),
            stop=stop, say=job.say, validation_data=train_set.validation_dataset(),
            validation_freq=validation_epochs(args.validate_every, args.epochs),
            verbose=2 if job.rank == 0 else 0, callbacks=callback_list)
    except tf.errors.OpError as e:
        problem = _data_file_problem(e.message)
        if problem is None:
            raise
        raise CommandError(f"{problem}; fix or remove the file, or give --skip-bad-files. "
                           f"Checkpoints in {job.ckpt_dir} are intact.") from e
    except callbacks.CheckpointError as e:  # its message says what is intact
        raise CommandError(str(e)) from e
    except ReportError as e:  # e.g. a full disk
        raise CommandError(f"{e}. Checkpoints in {job.ckpt_dir} are intact: the same command "
                           "resumes from the last one.") from e
    return time.perf_counter() - began, history


def validation_epochs(every, epochs):
    """The epochs (1-based) that validate: every `every`-th and the last (Keras'
    `validation_freq`)."""
    return sorted(set(range(every, epochs + 1, every)) | {epochs})


def _data_file_problem(message):
    """The data file's own one-line error inside a TensorFlow error raised by the input
    pipeline (`DataFileError: PATH: problem`), or None."""
    marker = "DataFileError: "
    if marker not in message:
        return None
    return message.split(marker, 1)[1].splitlines()[0].strip()


def _set_backbone_trainable(zoo, model_name, model, trainable):
    zoo.set_backbone_trainable(model, model_name, trainable)


def finish(args, job, train_set, stop, run, seconds, history, callback_list=()):
    """Reports skipped files, a stop on a non-finite loss, or the run's summary; the exit status."""
    import callbacks

    if args.skip_bad_files:  # every rank's skips, in rank 0's report
        bad = train_set.all_bad_files()
        if len(bad):
            job.say(bad.report())
    if stop.stopped:
        job.say(f"error: {stop.message}. The last good checkpoint in {job.ckpt_dir} is "
                "intact; resume from it with a lower --lr or other settings.")
        if run is not None:
            run.finish(exit_code=1)
        return 1
    if job.rank == 0:
        if history is None:
            job.say(f"nothing to do: {args.epochs} epochs were already trained in {job.out}")
        for target in (c for c in callback_list if isinstance(c, callbacks.StopAtTarget)):
            if target.reached:
                kept = next((c.last_path for c in callback_list
                             if isinstance(c, callbacks.Checkpointer) and c.last_path), None)
                job.say(f"reached --target-iou {args.target_iou:g}: validation mean IoU "
                        f"{target.reached[1]:.4f} at epoch {target.reached[0]} of "
                        f"{args.epochs}; stopped there"
                        + (f", its checkpoint {kept} kept" if kept else ""))
        _summary(job.out, seconds, job.ckpt_dir)
        if run is not None:
            from callbacks import wandb_run

            wandb_run.finish_run(run, job.ckpt_dir)
    return 0


def _say(rank, *parts):
    if rank == 0:  # only rank 0 prints
        print("climseg:", *parts, flush=True)


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
            raise CommandError(f"--output-dir {args.output_dir}: cannot write there "
                               f"({e.strerror})", usage=True) from e
    return path


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
    from callbacks.report import read_epochs

    path = os.path.join(out, callbacks.TrainingReport.METRICS)
    if not os.path.isfile(path):
        return
    try:
        epochs = read_epochs(path)
    except ValueError as e:  # the run is done: its summary is not worth a failure
        print(f"climseg: done in {seconds:.0f} s; no summary: {e}", flush=True)
        return
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


def _number(value):
    """4 decimals, or "-" for an undefined value (None or NaN: e.g. the IoU of an absent class)."""
    return "-" if value is None or not math.isfinite(value) else f"{value:.4f}"


# --------------------------------------------------------------------------- W&B

def _wandb_start(args, config, out, say):
    """Rank 0 only: starts (or resumes) the W&B run; offline without an API key or network."""
    mode = args.wandb_mode or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
    if mode == "disabled":
        return None
    from callbacks import wandb_run

    return wandb_run.start_run(mode=mode, directory=out, run_id=wandb_run.run_id(out), say=say,
                               project=args.wandb_project, entity=args.wandb_entity,
                               name=args.wandb_name or os.path.basename(out), config=config)


def _wandb_callbacks(args, train_set, initial_step):
    import callbacks
    import data
    from callbacks import wandb_run

    cbs = [wandb_run.metrics_logger(initial_step, every=args.wandb_log_every)]
    if train_set.val_files and args.wandb_images:
        samples = [data.read_sample(p, channels=train_set.channels, label_set="labels_0")
                   for p in train_set.val_files[:args.wandb_images]]
        norm = data.normalizer(train_set.stats, args.normalization, train_set.channels) \
            if train_set.stats is not None else None
        cbs.append(callbacks.WandbValidationImages(samples, normalize=norm,
                                                   channels=train_set.channels))
    return cbs


if __name__ == "__main__":
    sys.exit(main())
