"""The run record: metrics.json and curves.png after every epoch, kept on resume."""

import json

import matplotlib.image
import numpy as np
import tensorflow as tf

from callbacks.report import TrainingReport


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
