"""The run's record on disk: metrics JSON and training-curve plot, after every epoch."""

import json
import math
import numbers
import os

import matplotlib.lines
import matplotlib.ticker
import tensorflow as tf
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from data.errors import os_error_reason


class TrainingReport(tf.keras.callbacks.Callback):
    """Writes `metrics.json` and `curves.png` to a directory after every epoch.

    `metrics.json` holds one entry per epoch with every scalar in the logs
    (loss, validation loss, IoU per class, learning rate, throughput). The
    plot (see `plot_curves`) shows the losses, the IoU per class, the
    learning rate and the throughput. Both are rewritten after each
    epoch (atomically), so a run that is stopped keeps its record, and a
    resumed run appends to the record it finds. Place it after
    `MetricAverage` so that it records global values.

    Args:
        directory: the run's output directory.
        writer: whether this process writes (under Horovod: rank 0).
            Defaults to `True`.
        extra: JSON-serializable values stored under `"run"` (e.g. the
            effective config). Defaults to `None`.
    """

    METRICS = "metrics.json"
    CURVES = "curves.png"

    def __init__(self, directory, writer=True, extra=None):
        super().__init__()
        self.directory = directory
        self.writer = writer
        self.extra = dict(extra or {})
        self.epochs = []

    def on_train_begin(self, logs=None):
        self.epochs = []
        path = os.path.join(self.directory, self.METRICS)
        if os.path.isfile(path):  # resuming: keep the epochs already recorded
            try:
                self.epochs = read_epochs(path)
            except ValueError as e:
                # Not a reason to stop a resumed run; nor to overwrite what is there.
                if self.writer:
                    kept = _set_aside(path)
                    print(f"climseg: note: {e}; kept it as {kept}, and a new record begins",
                          flush=True)

    def on_epoch_end(self, epoch, logs=None):
        record = {"epoch": epoch + 1}
        for key, value in (logs or {}).items():
            try:
                value = float(value)
            except (TypeError, ValueError):
                continue
            # JSON null for an undefined value (e.g. the IoU of a class absent
            # from truth and prediction): NaN is not JSON.
            record[key] = value if math.isfinite(value) else None
        self.epochs = [e for e in self.epochs if e["epoch"] < epoch + 1] + [record]
        if self.writer:
            self.write()

    def write(self):
        """Writes the metrics JSON and the plot now.

        Raises:
            ReportError: one of them could not be written (e.g. the disk is
                full); the message names the file, and the earlier version of
                each file is intact.
        """
        path = os.path.join(self.directory, self.METRICS)
        try:
            os.makedirs(self.directory, exist_ok=True)
            with open(path + ".tmp", "w") as f:
                json.dump({"run": self.extra, "epochs": self.epochs}, f, indent=2,
                          default=str, allow_nan=True)
            os.replace(path + ".tmp", path)
        except OSError as e:
            _remove(path + ".tmp")
            raise ReportError(f"could not write {path}: {os_error_reason(e)}; an earlier "
                              "version of it is left intact") from e
        plot_curves(self.epochs, os.path.join(self.directory, self.CURVES))


class ReportError(OSError):
    """The run's record could not be written; the message names the file."""


def read_epochs(path):
    """The per-epoch records of a `metrics.json`.

    Raises:
        ValueError: one line naming `path`, when it cannot be read or is not
            such a record (an object whose "epochs" is a list of objects, each
            with an integer "epoch").
    """
    try:
        with open(path) as f:
            record = json.load(f)
    except (OSError, ValueError) as e:
        reason = os_error_reason(e) if isinstance(e, OSError) else f"not valid JSON ({e})"
        raise ValueError(f"cannot read {path}: {reason}") from e
    epochs = record.get("epochs", []) if isinstance(record, dict) else None
    if not isinstance(epochs, list) or not all(
            isinstance(e, dict) and isinstance(e.get("epoch"), int) for e in epochs):
        raise ValueError(f"{path} is not a climseg metrics record: expected an object whose "
                         "\"epochs\" is a list of objects with an integer \"epoch\"")
    return epochs


def _set_aside(path):
    """Renames `path` to an unused `PATH.unreadable[-N]`; returns the new name."""
    target, n = f"{path}.unreadable", 1
    while os.path.exists(target):
        target, n = f"{path}.unreadable-{n}", n + 1
    os.rename(path, target)
    return target


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


# Colour per quantity (training is a solid line, validation a dashed one);
# TC red and AR blue as in data.maps.
_IOU_COLORS = {"mean": "black", "background": "#7f7f7f", "tc": "#d62728", "ar": "#1f77b4"}
_LOSS_COLOR = "#6a3d9a"
_LEARNING_RATE_COLOR = "#2ca02c"
_THROUGHPUT_COLOR = "#9467bd"
_EFFICIENCY_COLOR = "#ff7f0e"
_IOU_NAMES = {"mean": "mean of the classes", "tc": "tropical cyclone (tc)",
             "ar": "atmospheric river (ar)"}
# Predicting background everywhere scores IoU ~1 for background and 0 for
# the event classes: a mean IoU of about 1/3, the score to beat.
_ALL_BACKGROUND_IOU = 1 / 3
# Up to this many epochs every point gets a marker (a one-epoch run is a dot).
_MARKERS_UP_TO = 30


def plot_curves(epochs, path):
    """Plots per-epoch records (dicts, as in `metrics.json`) into a PNG of four panels.

    - loss: `loss` (solid) and `val_loss` (dashed), log scale;
    - IoU: mean and per class (`mean_iou`, `iou_<class>`, and `val_`
      versions dashed), one colour per class, with the mean IoU of
      predicting background everywhere (about 0.33) as a dotted line;
    - learning rate: `learning_rate`, log scale;
    - throughput: `samples_per_second_total` (or `samples_per_second`) and,
      if recorded, `parallel_efficiency` on a second axis in percent.

    Epochs are integer ticks. Keys that are missing and values that are
    `None` or NaN (an undefined IoU) are left out; a panel with nothing to
    show says so. The figure is drawn on its own Agg canvas, without
    pyplot: the process's matplotlib backend is not touched. The PNG is
    written atomically.

    Args:
        epochs: list of dicts, each with `"epoch"` (1-based) and scalars.
        path: the PNG file to write.

    Returns:
        The `matplotlib.figure.Figure` drawn; its axes carry the labels
        `"loss"`, `"iou"`, `"learning_rate"`, `"throughput"` (and
        `"efficiency"` for the second throughput axis).

    Example:

        fig = plot_curves(json.load(open("runs/demo/metrics.json"))["epochs"],
                          "runs/demo/curves.png")
    """
    epochs = [e for e in epochs if _number(e.get("epoch")) is not None]
    fig = Figure(figsize=(12, 7.5), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, 2, height_ratios=(3, 2))
    loss = fig.add_subplot(grid[0, 0])
    iou = fig.add_subplot(grid[0, 1], sharex=loss)
    learning_rate = fig.add_subplot(grid[1, 0], sharex=loss)
    throughput = fig.add_subplot(grid[1, 1], sharex=loss)
    markers = len(epochs) <= _MARKERS_UP_TO

    _draw_loss(loss, epochs, markers)
    _draw_iou(iou, epochs, markers)
    _draw_learning_rate(learning_rate, epochs, markers)
    _draw_throughput(throughput, epochs, markers)

    for ax in (loss, iou, learning_rate, throughput):
        ax.grid(alpha=0.3)
        ax.set_xlabel("epoch")
    # Integer epochs; a little room either side so a single epoch is a dot
    # in the middle, not a point on a degenerate axis.
    loss.xaxis.set_major_locator(  # shared by all panels
        matplotlib.ticker.MaxNLocator(integer=True, steps=(1, 2, 5, 10), min_n_ticks=1))
    if epochs:
        first = min(e["epoch"] for e in epochs)
        last = max(e["epoch"] for e in epochs)
        pad = max(0.5, 0.03 * (last - first))
        loss.set_xlim(first - pad, last + pad)

    style = [matplotlib.lines.Line2D([], [], color="black", label=label, **_style(val, markers))
             for label, val in (("training", False), ("validation", True))]
    fig.legend(handles=style, loc="outside upper right", ncol=2, frameon=False)
    fig.suptitle(f"training curves: {len(epochs)} epoch{'s' if len(epochs) != 1 else ''}",
                 x=0.01, ha="left", fontweight="bold")

    tmp = path + ".tmp.png"
    try:
        fig.savefig(tmp, dpi=90, format="png")
        os.replace(tmp, path)
    except OSError as e:  # e.g. PIL's, without a path, for a full disk
        _remove(tmp)
        raise ReportError(f"could not write {path}: {os_error_reason(e)}; an earlier "
                          "version of it is left intact") from e
    return fig


def _number(value):
    """`value` as a float if it is a finite real number, else None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _series(epochs, key):
    """(epochs, values) of the records that hold a finite number under `key`."""
    points = [(e["epoch"], _number(e.get(key))) for e in epochs]
    points = [(x, y) for x, y in points if y is not None]
    return [x for x, _ in points], [y for _, y in points]


def _line(ax, epochs, key, color, markers, **kwargs):
    """Plots `key`, dashed if it is a validation value; returns the values drawn."""
    x, y = _series(epochs, key)
    if y:
        ax.plot(x, y, color=color, **_style(key.startswith("val_"), markers), **kwargs)
    return y


def _style(validation, markers):
    """Training solid with filled dots, validation dashed with open ones.

    The dots tell the two apart where no line is drawn (a one-epoch run).
    """
    return {"linestyle": "--" if validation else "-", "marker": "o" if markers else None,
            "markersize": 4.5, "markerfacecolor": "white" if validation else None}


def _title(ax, label, name, note=""):
    ax.set_label(label)
    ax.set_title(name, loc="left", fontweight="bold")
    if note:
        ax.set_title(note, loc="right", fontsize=9, color="dimgray")


def _nothing(ax, keys):
    ax.text(0.5, 0.5, f"not recorded ({keys})", transform=ax.transAxes, ha="center",
            va="center", color="dimgray")
    ax.set_yticks([])


def _last(values):
    return f"{values[-1]:.3g}"


def _log_scale(ax, values):
    """Log scale if every value is > 0, ticks as plain numbers (0.2, not 2x10^-1).

    Within a decade or so the powers of ten alone would leave the axis bare,
    so minor ticks are labelled too: all of them over a narrow view, those at
    2, 3 and 5 times a power of ten over a wider one, none beyond two decades.
    """
    if not values or min(values) <= 0:
        return
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda y, _: f"{y:g}"))

    def minor(y, _):
        low, high = ax.yaxis.get_view_interval()  # final when the ticks are drawn
        spread = high / low
        keep = range(1, 10) if spread < 3 else (2, 3, 5) if spread < 100 else ()
        mantissa = round(y / 10 ** math.floor(math.log10(y) + 1e-9))
        return f"{y:g}" if mantissa in keep else ""

    ax.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(minor))


def _draw_loss(ax, epochs, markers):
    train = _line(ax, epochs, "loss", _LOSS_COLOR, markers)
    val = _line(ax, epochs, "val_loss", _LOSS_COLOR, markers)
    _log_scale(ax, train + val)
    last = [f"{name} {_last(v)}" for name, v in (("training", train), ("validation", val)) if v]
    _title(ax, "loss", "loss (log scale)", f"last: {', '.join(last)}" if last else "")
    if not train and not val:
        _nothing(ax, "loss, val_loss")


def _iou_keys(epochs):
    """{quantity: (training key, validation key)}; quantity "mean" or a class name."""
    keys = sorted({k for e in epochs for k in e if "iou" in k and not k.startswith("val_")}
                  | {k[4:] for e in epochs for k in e if "iou" in k and k.startswith("val_")})
    quantities = {}
    for key in keys:
        if key == "mean_iou":
            quantity = "mean"
        elif key.startswith("iou_"):
            quantity = key[4:]
        else:  # another IoU metric (e.g. deepcam_iou): its own name
            quantity = key
        quantities[quantity] = (key, "val_" + key)
    # The mean first, then the classes in data.CLASSES order, then the rest.
    order = list(_IOU_COLORS)
    return dict(sorted(quantities.items(),
                       key=lambda q: (order.index(q[0]) if q[0] in order else len(order), q[0])))


def _draw_iou(ax, epochs, markers):
    others = iter(("C4", "C5", "C6", "C8", "C9"))  # colours of other IoU metrics
    handles = []
    best = None
    for quantity, (train_key, val_key) in _iou_keys(epochs).items():
        color = _IOU_COLORS.get(quantity) or next(others, "C7")
        width = 2.2 if quantity == "mean" else 1.4
        train = _line(ax, epochs, train_key, color, markers, linewidth=width)
        val = _line(ax, epochs, val_key, color, markers, linewidth=width)
        if train or val:
            handles.append(matplotlib.lines.Line2D([], [], color=color, linewidth=width,
                                                   label=_IOU_NAMES.get(quantity, quantity)))
        if quantity == "mean" and val:
            x, y = _series(epochs, val_key)
            best = max(zip(y, x, strict=True))
    reference = ax.axhline(_ALL_BACKGROUND_IOU, color="dimgray", linestyle=":", linewidth=1.5,
                           label=f"all background ({_ALL_BACKGROUND_IOU:.2f})")
    ax.set_ylim(-0.02, 1.02)  # room for the dots of an IoU of 0 or 1
    ax.set_ylabel("IoU")
    note = f"best validation mean: {best[0]:.3f} (epoch {best[1]:g})" if best else ""
    _title(ax, "iou", "IoU per class", note)
    if not handles:
        _nothing(ax, "iou_*, mean_iou")
    ax.legend(handles=handles + [reference], loc="upper left", bbox_to_anchor=(1.01, 1),
              frameon=False, fontsize=9)


def _draw_learning_rate(ax, epochs, markers):
    values = _line(ax, epochs, "learning_rate", _LEARNING_RATE_COLOR, markers)
    _log_scale(ax, values)
    _title(ax, "learning_rate", "learning rate", f"last: {_last(values)}" if values else "")
    if not values:
        _nothing(ax, "learning_rate")


def _draw_throughput(ax, epochs, markers):
    key = "samples_per_second_total"
    if not _series(epochs, key)[1]:
        key = "samples_per_second"  # one rank, or a record from before the total existed
    rate = _line(ax, epochs, key, _THROUGHPUT_COLOR, markers)
    notes = [f"last: {_last(rate)} samples/s"] if rate else []
    if rate:
        ax.set_ylim(0, max(rate) * 1.15)
        ax.set_ylabel("samples/s (all ranks)", color=_THROUGHPUT_COLOR)
        ax.tick_params(axis="y", colors=_THROUGHPUT_COLOR)

    x, efficiency = _series(epochs, "parallel_efficiency")
    if efficiency:
        notes.append(f"efficiency {100 * efficiency[-1]:.0f}%")
        # Efficiency is the total rate over `size * single_rank_rate`: while
        # that divisor stays the same (no resume with other ranks), the rate
        # line read on a second scale is the efficiency; a second line would
        # only lie on top of the first.
        ratios = [100 * _number(e.get("parallel_efficiency")) / _number(e.get(key))
                  for e in epochs
                  if _number(e.get(key)) and _number(e.get("parallel_efficiency"))]
        if (key.endswith("_total") and ratios and min(ratios) > 0
                and max(ratios) <= 1.01 * min(ratios)):
            ratio = ratios[-1]
            axis = ax.secondary_yaxis("right", functions=(lambda r: r * ratio,
                                                          lambda p: p / ratio))
        else:
            axis = ax.twinx()
            axis.plot(x, [100 * v for v in efficiency], color=_EFFICIENCY_COLOR,
                      marker="s" if markers else None, markersize=4)
            axis.set_ylim(0, max(110, 110 * max(efficiency)))
        axis.set_label("efficiency")
        axis.set_ylabel("parallel efficiency (%)", color=_EFFICIENCY_COLOR)
        axis.tick_params(axis="y", colors=_EFFICIENCY_COLOR)
    _title(ax, "throughput", "throughput", ", ".join(notes))
    if not rate and not efficiency:
        _nothing(ax, "samples_per_second_total")
