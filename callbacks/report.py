"""The run's record on disk: metrics JSON and training-curve plot, after every epoch."""

import json
import math
import os

import matplotlib

matplotlib.use("Agg")  # files only; no display on a cluster node

import matplotlib.pyplot as plt  # noqa: E402
import tensorflow as tf  # noqa: E402


class TrainingReport(tf.keras.callbacks.Callback):
    """Writes `metrics.json` and `curves.png` to a directory after every epoch.

    `metrics.json` holds one entry per epoch with every scalar in the logs
    (loss, validation loss, IoU per class, learning rate, throughput). The
    plot shows the losses and the IoU curves. Both are rewritten after each
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
            with open(path) as f:
                self.epochs = json.load(f).get("epochs", [])

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
        """Writes the metrics JSON and the plot now."""
        os.makedirs(self.directory, exist_ok=True)
        path = os.path.join(self.directory, self.METRICS)
        with open(path + ".tmp", "w") as f:
            json.dump({"run": self.extra, "epochs": self.epochs}, f, indent=2,
                      default=str, allow_nan=True)
        os.replace(path + ".tmp", path)
        plot_curves(self.epochs, os.path.join(self.directory, self.CURVES))


def plot_curves(epochs, path):
    """Plots losses and IoU curves of per-epoch records (dicts) into a PNG."""
    keys = sorted({k for e in epochs for k in e})
    losses = [k for k in keys if k in ("loss", "val_loss")]
    ious = [k for k in keys if "iou" in k]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, group, label in ((axes[0], losses, "loss"), (axes[1], ious, "IoU")):
        for key in group:
            points = [(e["epoch"], e[key]) for e in epochs
                      if e.get(key) is not None and math.isfinite(e[key])]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=key)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        if group:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)
