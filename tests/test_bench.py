"""bench/: the suite's parsers read the scripts' printed lines; the report shows the figures.

No benchmark runs here: the inputs are lines in the scripts' exact formats
and a results dict with known numbers.
"""

import json

import pytest

from bench import report
from bench.__main__ import _parts, parse_data, parse_models, parse_scaling

MODELS_OUT = """TensorFlow 2.18.1, oneDNN TF_ENABLE_ONEDNN_OPTS=1, input (192, 288, 16), batch 2, fp32
deeplabv3plus          50.2 GFLOP/s = 0.41 x matmul (122.4 GFLOP/s float32 2048^2, timed after each step)   0.062 samples/s   813.0 GFLOP/training sample
tiramisu               60.0 GFLOP/s = 0.55 x matmul (109.1 GFLOP/s float32 2048^2, timed after each step)   0.229 samples/s   262.0 GFLOP/training sample
"""  # noqa: E501

DATA_OUT = """raw h5py read, sequential:  120.0 samples/s  (runs: 119.0, 121.0)
make_dataset pipeline:      108.0 samples/s  (runs: 107.0, 109.0)
ratio pipeline / raw:        0.90   (goal >= 0.9)
train_on_batch loop: wait for data     1.5 ms of a 300 ms step = 0.5%   (goal < 2%)
model.fit: step 290 ms with data in memory, +8.7 ms with the pipeline = +3.0%   (goal < 2%)
"""

SCALING_OUT = """lag | 1 rank samples/s | 2 ranks samples/s | efficiency | vs no allreduce | sustained (2 ranks)
  0 |             4.000 |             7.200 |      0.900 |           0.947 | 12.5 GFLOP/s
  1 |             4.000 |             7.680 |      0.960 |           1.011 | 13.3 GFLOP/s
2 ranks without allreduce: 7.600 samples/s (0.950 of 2x one rank)
"""  # noqa: E501


def test_parsers_read_the_scripts_lines():
    models = parse_models(MODELS_OUT, "192x288x16", 2)
    assert [(m["model"], m["gflops"], m["ratio_to_matmul"], m["matmul_gflops"],
             m["samples_per_second"], m["gflop_per_sample"]) for m in models] == [
        ("deeplabv3plus", 50.2, 0.41, 122.4, 0.062, 813.0),
        ("tiramisu", 60.0, 0.55, 109.1, 0.229, 262.0)]
    data = parse_data(DATA_OUT)
    assert data["ratio"] == pytest.approx(0.9)
    assert (data["loop_wait_ms"], data["loop_step_ms"], data["loop_wait_percent"]) == (
        1.5, 300, 0.5)
    assert (data["fit_step_ms"], data["fit_wait_ms"], data["fit_wait_percent"]) == (290, 8.7, 3.0)
    scaling = parse_scaling(SCALING_OUT)
    assert [(r["lag"], r["efficiency"], r["gflops"]) for r in scaling["rows"]] == [
        (0, 0.9, 12.5), (1, 0.96, 13.3)]
    assert scaling["independent_efficiency"] == 0.95
    with pytest.raises(RuntimeError, match="no model lines"):
        parse_models("Traceback ...", "192x288x16", 2)


def test_only_rejects_unknown_parts():
    assert _parts("models, memory") == ["models", "memory"]
    with pytest.raises(Exception, match="unknown part.*gpu.*models,data,scaling,memory,precision"):
        _parts("models,gpu")


def test_report_tables_and_goals(tmp_path):
    results = {
        "machine": {"date": "2026-11-27 18:00", "cpu": "AMD EPYC", "cores": 2,
                    "load_before": [0.5, 0.25, 0.125], "load_after": [2.0, 1.5, 1.0],
                    "tensorflow": "2.18.1", "onednn": "1"},
        "settings": {"mode": "quick", "command": "python -m bench --quick"},
        "models": parse_models(MODELS_OUT, "192x288x16", 2),
        "data": parse_data(DATA_OUT),
        "scaling": parse_scaling(SCALING_OUT),
        "memory": {"model": "deeplabv3plus", "input_shape": [768, 1152, 16], "batch": 1,
                   "precision": "fp32", "step_seconds": [150.0], "ru_maxrss_bytes": 11.5e9,
                   "vm_hwm_bytes": 11.4e9, "vm_hwm_after_build_bytes": 1.1e9},
        "errors": {"precision": "bench/precision.py exited 1:\nTraceback"},
        "load": {"scaling": {"before": [3.5, 2.0, 1.0], "after": [4.25, 3.0, 2.0],
                             "date": "2026-11-27 18:09"}},
        "seconds": {"scaling": 151.4},
    }
    md_path, json_path = report.write_report(results, tmp_path / "r.md", tmp_path / "r.json")
    text = md_path.read_text()
    assert "| load average before (1/5/15 min) | 0.50 / 0.25 / 0.12 |" in text
    assert ("| deeplabv3plus | 192x288x16 | 2 | 0.062 | 50.2 | 0.41 | 122.4 | 813.0 |"
            in text)
    assert "| 1 | 4.000 | 7.680 | 0.960 | 1.011 | 13.3 |" in text
    assert "peak RSS **11.50 GB**" in text
    assert "| scaling | 2026-11-27 18:09 | 151 | 3.50 | 4.25 |" in text
    assert ("| deeplabv3plus training >= 60% of matmul rate at 192x288x16 | 41% | **not met** |"
            in text)
    assert "| input pipeline >= 0.9 x raw h5py read | 0.90 | met |" in text
    assert "| data wait < 2% of a step (fit) | 3.0% | **not met** |" in text
    assert "| 2-rank weak scaling >= 0.95 with lag 1 | 0.960 | met |" in text
    assert "below DeepCAM PyTorch's 12.3 GB | 11.50 GB | met |" in text
    assert "- precision: bench/precision.py exited 1:" in text
    saved = json.loads(json_path.read_text())
    assert [g["met"] for g in saved["goals"]] == [False, False, True, True, False, True, True]
