"""IoU metrics against a numpy confusion matrix, in Keras and under Horovod."""

import importlib.util
import json

import numpy as np
import pytest
import tensorflow as tf
from conftest import WORKERS_DIR, run_horovod, run_python

import zoo
from zoo.metrics import ConfusionMatrixIoU, DeepCAMIoU


def _data(seed=0, n=4):
    rng = np.random.default_rng(seed)
    y = rng.choice(3, size=(n, 8, 12), p=[0.7, 0.1, 0.2]).astype(np.int32)
    logits = rng.standard_normal((n, 8, 12, 3)).astype(np.float32)
    logits[..., 0] += 1.0
    return y, logits


def numpy_iou(y, logits, num_classes=3):
    """IoU per class from a numpy confusion matrix; NaN for a class in neither."""
    pred = logits.argmax(-1).ravel()
    cm = np.zeros((num_classes, num_classes))
    np.add.at(cm, (y.ravel(), pred), 1)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    return np.where(union > 0, tp / np.maximum(union, 1), np.nan)


def numpy_deepcam_iou(y, logits, num_classes=3):
    pred = logits.argmax(-1)
    scores = []
    for p, t in zip(pred, y, strict=True):
        ious = []
        for c in range(num_classes):
            union = np.sum((p == c) | (t == c))
            ious.append(np.sum((p == c) & (t == c)) / union if union else 1.0)
        scores.append(np.mean(ious))
    return np.mean(scores)


def test_iou_per_class_and_mean_match_numpy_confusion_matrix():
    y, logits = _data()
    metrics = zoo.iou_metrics(3, ("background", "tc", "ar"))
    assert [m.name for m in metrics] == ["mean_iou", "iou_background", "iou_tc", "iou_ar"]
    for m in metrics:  # Two batches accumulate.
        m.update_state(y[:2], logits[:2])
        m.update_state(y[2:], logits[2:])
    expected = numpy_iou(y, logits)
    np.testing.assert_allclose(metrics[0].result(), expected.mean(), rtol=1e-12)
    for m, value in zip(metrics[1:], expected, strict=True):
        np.testing.assert_allclose(m.result(), value, rtol=1e-12)


def test_absent_class_is_left_out_of_the_mean():
    y = np.zeros((1, 2, 2), np.int32)
    logits = np.zeros((1, 2, 2, 3), np.float32)
    logits[0, 0, 0, 1] = 1.0  # One false positive of class 1; class 2 absent.
    m = ConfusionMatrixIoU(3)
    m.update_state(y, logits)
    np.testing.assert_allclose(m.result(), (3 / 4 + 0) / 2)


def _results(metrics):
    return {m.name: float(m.result()) for m in metrics}


def test_class_in_neither_truth_nor_prediction_has_no_iou():
    y = np.zeros((2, 4, 6), np.int32)  # All background, and predicted so.
    logits = np.zeros((2, 4, 6, 3), np.float32)
    logits[..., 0] = 1.0
    metrics = zoo.iou_metrics(3, ("bg", "tc", "ar"))
    for m in metrics:
        m.update_state(y, logits)
    results = _results(metrics)
    assert np.isnan(results["iou_tc"]) and np.isnan(results["iou_ar"])
    assert results["iou_bg"] == 1.0 and results["mean_iou"] == results["iou_bg"]

    logits[0, 0, :2, 0] = 0.0
    logits[0, 0, :2, 1] = 2.0  # Two pixels predicted TC, none is.
    for m in metrics:
        m.reset_state()
        m.update_state(y, logits)
    results = _results(metrics)
    assert results["iou_tc"] == 0.0  # Defined: the model was wrong.
    assert np.isnan(results["iou_ar"])
    assert results["iou_bg"] == 46 / 48
    assert results["mean_iou"] == (46 / 48 + 0.0) / 2


def test_iou_with_an_absent_class_matches_numpy_and_evaluate():
    rng = np.random.default_rng(3)
    y = rng.choice(2, size=(4, 8, 12), p=[0.8, 0.2]).astype(np.int32)
    logits = rng.standard_normal((4, 8, 12, 3)).astype(np.float32)
    logits[..., 2] = -10.0  # AR neither in truth nor predicted.
    expected = numpy_iou(y, logits)
    assert np.isnan(expected[2]) and np.isfinite(expected[:2]).all()
    metrics = zoo.iou_metrics(3, ("bg", "tc", "ar"))
    for m in metrics:
        m.update_state(y[:1], logits[:1])
        m.update_state(y[1:], logits[1:])
    results = _results(metrics)
    np.testing.assert_allclose([results[f"iou_{c}"] for c in ("bg", "tc", "ar")], expected,
                               rtol=1e-12)  # NaN == NaN here
    np.testing.assert_allclose(results["mean_iou"], np.nanmean(expected), rtol=1e-12)

    inputs = tf.keras.Input((8, 12, 3))
    model = tf.keras.Model(inputs, tf.keras.layers.Activation("linear")(inputs))
    model.compile(loss=zoo.get_loss("weighted_ce"), metrics=zoo.iou_metrics(3, ("bg", "tc", "ar")))
    logs = model.evaluate(logits, y, batch_size=3, verbose=0, return_dict=True)
    assert np.isnan(logs["iou_ar"])
    np.testing.assert_allclose(logs["iou_tc"], expected[1], rtol=1e-6)
    np.testing.assert_allclose(logs["mean_iou"], np.nanmean(expected), rtol=1e-6)


def test_nothing_counted_is_nan_not_zero():
    for m in [*zoo.iou_metrics(3), DeepCAMIoU(3)]:
        assert np.isnan(float(m.result())), m.name
    y, logits = _data()
    m = DeepCAMIoU(3)  # Zero-weight (padding) samples only: still nothing seen.
    m.update_state(y, logits, sample_weight=np.zeros(len(y)))
    assert np.isnan(float(m.result()))


def test_deepcam_iou_matches_numpy_and_differs_from_global_iou():
    y, logits = _data()
    y[0] = 0  # Sample 0 has no TC or AR in truth.
    m = DeepCAMIoU(3)
    m.update_state(y[:3], logits[:3])
    m.update_state(y[3:], logits[3:])
    np.testing.assert_allclose(m.result(), numpy_deepcam_iou(y, logits), rtol=1e-6)
    assert abs(float(m.result()) - numpy_iou(y, logits).mean()) > 1e-3
    m.reset_state()
    m.update_state(y[:1], np.eye(3)[y[:1]])  # Perfect prediction, absent classes count 1.
    assert float(m.result()) == 1.0
    m.reset_state()  # Zero-weight (padding) samples count for nothing.
    m.update_state(y, logits, sample_weight=np.array([1.0, 0.0, 1.0, 0.0]))
    np.testing.assert_allclose(m.result(), numpy_deepcam_iou(y[::2], logits[::2]), rtol=1e-6)


def test_metrics_work_in_evaluate_and_serialize():
    y, logits = _data()
    inputs = tf.keras.Input((8, 12, 3))
    model = tf.keras.Model(inputs, tf.keras.layers.Activation("linear")(inputs))
    model.compile(loss=zoo.get_loss("weighted_ce"),
                  metrics=[*zoo.iou_metrics(3, ("bg", "tc", "ar")), DeepCAMIoU()])
    logs = model.evaluate(logits, y, batch_size=3, verbose=0, return_dict=True)
    expected = numpy_iou(y, logits)
    np.testing.assert_allclose(logs["mean_iou"], expected.mean(), rtol=1e-6)
    np.testing.assert_allclose(logs["iou_tc"], expected[1], rtol=1e-6)
    np.testing.assert_allclose(logs["deepcam_iou"], numpy_deepcam_iou(y, logits), rtol=1e-6)
    clone = ConfusionMatrixIoU.from_config(ConfusionMatrixIoU(3, [2], name="iou_ar").get_config())
    assert clone.target_class_ids == [2] and clone.allreduce and clone.name == "iou_ar"


@pytest.mark.horovod
@pytest.mark.slow
def test_global_iou_on_two_ranks_equals_single_process_iou_on_all_data(tmp_path):
    run_horovod([WORKERS_DIR / "zoo_iou.py", tmp_path])
    run_python([WORKERS_DIR / "zoo_iou.py", tmp_path, "--single"])
    results = [json.loads((tmp_path / f"{tag}.json").read_text())
               for tag in ("rank0", "rank1", "single")]
    y, logits = (np.concatenate(parts) for parts in zip(
        *[_worker_shard(rank) for rank in (0, 1)], strict=True))
    expected = numpy_iou(y, logits)
    for result in results:
        for key in ("direct", "evaluate"):
            np.testing.assert_allclose(result[key]["mean_iou"], expected.mean(), rtol=1e-6)
            np.testing.assert_allclose(result[key]["iou_tc"], expected[1], rtol=1e-6)
            np.testing.assert_allclose(result[key]["deepcam_iou"],
                                       numpy_deepcam_iou(y, logits), rtol=1e-6)
    # The check can fail: the average of the per-rank IoUs is another number.
    per_rank = [numpy_iou(*_worker_shard(rank)).mean() for rank in (0, 1)]
    assert abs(np.mean(per_rank) - expected.mean()) > 1e-3



def _worker_shard(rank):
    """The shard of rank `rank`, from the worker script itself."""
    spec = importlib.util.spec_from_file_location("zoo_iou", WORKERS_DIR / "zoo_iou.py")
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    return worker.shard(rank)
