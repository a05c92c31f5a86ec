"""The run record: metrics.json and curves.png after every epoch, kept on resume."""

import json

import matplotlib.image
import numpy as np
import pytest
import tensorflow as tf

from callbacks.report import TrainingReport, plot_curves


def _fit(directory, epochs, initial_epoch=0):
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    x = np.ones((4, 3), np.float32)
    model.fit(x, x[:, :1], epochs=epochs, initial_epoch=initial_epoch, verbose=0,
              validation_data=(x, x[:, :1]),
              callbacks=[TrainingReport(str(directory), extra={"model": "tiny"})])
    return model


def test_writes_every_epoch_and_appends_on_resume(tmp_path):
    _fit(tmp_path, epochs=2)
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["run"] == {"model": "tiny"}
    assert [e["epoch"] for e in record["epochs"]] == [1, 2]
    assert set(record["epochs"][0]) == {"epoch", "loss", "val_loss"}
    first_loss = record["epochs"][0]["loss"]

    _fit(tmp_path, epochs=3, initial_epoch=2)  # a resumed run
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert [e["epoch"] for e in record["epochs"]] == [1, 2, 3]
    assert record["epochs"][0]["loss"] == first_loss
    image = matplotlib.image.imread(tmp_path / "curves.png")
    assert image.shape[0] > 100 and image.shape[1] > 300


def test_an_undefined_value_is_json_null(tmp_path):
    report = TrainingReport(str(tmp_path))
    report.on_train_begin()
    report.on_epoch_end(0, {"loss": 0.5, "val_iou_tc": float("nan"), "val_iou_ar": 0.25})
    text = (tmp_path / "metrics.json").read_text()

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    record = json.loads(text, parse_constant=refuse)["epochs"][0]  # strict JSON: no NaN
    assert record == {"epoch": 1, "loss": 0.5, "val_iou_tc": None, "val_iou_ar": 0.25}


def _records(epochs=8):
    """Per-epoch records like those of a demo run: warmup, then a stage drop at epoch 6."""
    loss = [1.10, 0.62, 0.45, 0.36, 0.30, 0.25, 0.22, 0.20]
    val_loss = [0.78, 0.55, 0.47, 0.40, 0.37, 0.31, 0.30, 0.29]
    rate = [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-4, 1e-4, 1e-4]
    tc = [0.0, 0.12, 0.28, 0.36, 0.41, 0.47, 0.49, 0.50]
    ar = [0.18, 0.34, 0.45, 0.52, 0.56, 0.60, 0.62, 0.63]
    val_tc = [None, 0.10, 0.25, 0.33, 0.39, 0.45, 0.47, 0.48]  # no TC in epoch 1's truth
    val_ar = [0.22, 0.36, 0.44, 0.50, 0.53, 0.58, 0.60, 0.61]
    total = [31.0, 42.5, 43.1, 42.8, 43.4, 43.0, 42.9, 43.2]
    records = []
    for i in range(epochs):
        present = [v for v in (0.98, val_tc[i], val_ar[i]) if v is not None]
        records.append({
            "epoch": i + 1, "loss": loss[i], "val_loss": val_loss[i], "learning_rate": rate[i],
            "iou_background": 0.97, "iou_tc": tc[i], "iou_ar": ar[i],
            "mean_iou": (0.97 + tc[i] + ar[i]) / 3,
            "val_iou_background": 0.98, "val_iou_tc": val_tc[i], "val_iou_ar": val_ar[i],
            "val_mean_iou": sum(present) / len(present),
            "samples_per_second": total[i] / 2, "samples_per_second_total": total[i],
            "parallel_efficiency": total[i] / (2 * 23.0),
        })
    return records


def _panels(fig):
    """Axes by label, the throughput panel's second axis included."""
    axes = list(fig.axes) + [child for ax in fig.axes for child in ax.child_axes]
    return {ax.get_label(): ax for ax in axes if ax.get_label()}


def _visible_xticks(ax):
    low, high = ax.get_xlim()
    return [t for t in ax.get_xticks() if low <= t <= high]


def test_curves_have_loss_iou_learning_rate_and_throughput_panels(tmp_path):
    fig = plot_curves(_records(), str(tmp_path / "curves.png"))
    panels = _panels(fig)
    assert set(panels) == {"loss", "iou", "learning_rate", "throughput", "efficiency"}
    assert [panels[k].get_title(loc="left") for k in ("loss", "iou", "learning_rate",
                                                      "throughput")] == [
        "loss (log scale)", "IoU per class", "learning rate", "throughput"]
    assert panels["loss"].get_yscale() == "log"
    assert panels["learning_rate"].get_yscale() == "log"
    assert panels["iou"].get_title(loc="right") == "best validation mean: 0.690 (epoch 8)"
    assert panels["throughput"].get_title(loc="right") == "last: 43.2 samples/s, efficiency 94%"
    for ax in fig.axes:
        assert _visible_xticks(ax) == [1, 2, 3, 4, 5, 6, 7, 8]
    image = matplotlib.image.imread(tmp_path / "curves.png")
    assert image.shape[0] > 500 and image.shape[1] > 900


def test_log_axes_are_labelled_in_plain_numbers(tmp_path):
    fig = plot_curves(_records(), str(tmp_path / "curves.png"))  # drawn: tick labels are set
    loss = _panels(fig)["loss"]
    low, high = loss.get_ylim()
    labels = sorted((t.get_position()[1], t.get_text())
                    for t in loss.get_yticklabels() + loss.get_yticklabels(minor=True)
                    if t.get_text() and low <= t.get_position()[1] <= high)
    assert [text for _, text in labels] == ["0.2", "0.3", "0.5", "1"]


def test_training_is_solid_validation_dashed_in_one_colour_per_quantity(tmp_path):
    panels = _panels(plot_curves(_records(), str(tmp_path / "curves.png")))
    lines = {}
    for line in panels["loss"].get_lines() + panels["iou"].get_lines():
        lines.setdefault(line.get_color(), []).append(line.get_linestyle())
    reference = lines.pop("dimgray")
    assert reference == [":"]
    assert len(lines) == 5  # loss, mean, background, tc, ar
    assert all(sorted(styles) == ["-", "--"] for styles in lines.values()), lines
    legend = [t.get_text() for t in panels["iou"].get_legend().get_texts()]
    assert legend == ["mean of the classes", "background", "tropical cyclone (tc)",
                      "atmospheric river (ar)", "all background (0.33)"]
    line = [ln for ln in panels["iou"].get_lines() if ln.get_linestyle() == ":"][0]
    assert list(line.get_ydata()) == [1 / 3, 1 / 3]
    # Legends sit outside the panels, not over the lines.
    box = panels["iou"].get_legend().get_window_extent()
    assert box.x0 >= panels["iou"].get_window_extent().x1


def test_efficiency_is_read_on_a_second_scale_of_the_throughput(tmp_path):
    panels = _panels(plot_curves(_records(), str(tmp_path / "curves.png")))
    # The secondary scale maps samples/s to percent: 43.2 samples/s of 2
    # ranks at 23 samples/s each is 93.9 %.
    ratio = 100 / (2 * 23.0)
    low, high = panels["throughput"].get_ylim()
    assert panels["efficiency"].get_ylim() == pytest.approx((low * ratio, high * ratio))
    assert panels["efficiency"].get_ylabel() == "parallel efficiency (%)"

    records = _records()
    for record in records[4:]:  # resumed with four ranks: efficiency drawn as its own line
        record["parallel_efficiency"] = record["samples_per_second_total"] / (4 * 23.0)
    panels = _panels(plot_curves(records, str(tmp_path / "curves.png")))
    line, = panels["efficiency"].get_lines()
    assert list(line.get_ydata()) == pytest.approx([100 * r["parallel_efficiency"]
                                                    for r in records])


def test_none_nan_and_missing_values_are_left_out(tmp_path):
    records = _records()
    records[2]["val_iou_tc"] = float("nan")
    records[3]["val_iou_tc"] = "n/a"
    del records[4]["val_iou_tc"]
    for record in records:
        del record["learning_rate"]
    panels = _panels(plot_curves(records, str(tmp_path / "curves.png")))
    tc = [ln for ln in panels["iou"].get_lines()
          if ln.get_color() == "#d62728" and ln.get_linestyle() == "--"][0]
    assert list(tc.get_xdata()) == [2, 6, 7, 8]
    assert list(tc.get_ydata()) == [0.10, 0.45, 0.47, 0.48]
    assert not panels["learning_rate"].get_lines()
    assert [t.get_text() for t in panels["learning_rate"].texts] == [
        "not recorded (learning_rate)"]


def test_a_single_epoch_is_a_readable_figure(tmp_path):
    fig = plot_curves(_records(1), str(tmp_path / "curves.png"))
    panels = _panels(fig)
    for key in ("loss", "iou", "learning_rate", "throughput"):
        assert _visible_xticks(panels[key]) == [1]
    low, high = panels["loss"].get_xlim()
    assert low < 1 < high
    loss, val_loss = panels["loss"].get_lines()
    # One point each: markers, filled for training, open for validation.
    assert (loss.get_marker(), val_loss.get_marker()) == ("o", "o")
    assert val_loss.get_markerfacecolor() == "white"
    assert loss.get_markerfacecolor() != "white"
    assert panels["loss"].get_title(loc="right") == "last: training 1.1, validation 0.78"
    assert fig.get_suptitle() == "training curves: 1 epoch"
    assert matplotlib.image.imread(tmp_path / "curves.png").shape[0] > 500


def test_an_empty_record_list_still_writes_a_figure(tmp_path):
    fig = plot_curves([], str(tmp_path / "curves.png"))
    assert [t.get_text() for t in _panels(fig)["loss"].texts] == [
        "not recorded (loss, val_loss)"]
    assert (tmp_path / "curves.png").is_file()
