"""The suite's report: the results dict as Markdown and JSON, and the goals of issues 7, 18-20.

`python -m bench` collects a dict:

    {"machine": {...}, "settings": {...},
     "models": [{"model", "input", "batch", "samples_per_second", "gflops",
                 "ratio_to_matmul", "matmul_gflops", "gflop_per_sample",
                 "architecture_gflop_per_sample", "effective_gflops"}, ...],
     "versus": [{"models", "input", "batch", "rounds", "samples_per_second": {model: ...},
                 "ratios": {model: its samples/s over the first model's}}, ...],
     "data": {"raw_samples_per_second", "pipeline_samples_per_second", "ratio",
              "loop_wait_ms", "loop_step_ms", "loop_wait_percent",
              "fit_wait_ms", "fit_step_ms", "fit_wait_percent" (IteratorGetNext in fit),
              "fit_memory_step_ms", "fit_slowdown_ms", "fit_slowdown_percent"},
     "scaling": [{"model", "input", "rows": [{"lag", "one_rank", "two_ranks", "efficiency",
                                              "vs_no_allreduce", "gflops"}, ...],
                  "independent_efficiency"}, ...],  (one per per-rank input)
     "memory": {... bench/memory.py's result ...},
     "precision": [... bench/precision.py's results ...],
     "profile": {"model", "input", "batch", "steps", "step_ms", "step_mean_ms", "op_ms",
                 "op_ratio", "threads", "busy_ms", "busy_percent",
                 "layers": [{"layer", "forward_ms", "backward_ms", "total_ms", "percent",
                             "cumulative_percent"}, ...],
                 "op_types": [{"op_type", "calls", "ms", "percent", "cumulative_percent"}, ...],
                 "regions": [{"region", "percent", "ms"}, ...],
                 "fused_renamed_ms", "fused_renamed_example"},
     "predict": [{"model", "precision", "input", "samples", "files", "times",
                  "flops_per_sample" (forward, executed), "architecture_flops_per_sample"
                  (forward, the architecture's), "startup" (median seconds,
                  import to first sample), "startup_seconds",
                  "batches": [{"batch", "predict_samples_per_second",
                               "forward_samples_per_second", "ratio" (median over rounds),
                               "predict_rates", "forward_rates", "how", "first_sample_seconds",
                               "forward_gflops", "fp32_matmul_gflops", "fp32_matmul_ratio",
                               "bf16_matmul_gflops", "bf16_matmul_ratio" (mixed_bfloat16),
                               "effective_gflops", "bf16_matmul_effective_ratio" (by the
                               architecture's FLOPs)},
                              ...],
                  "ranks": {"ranks", "batch", "predict_samples_per_second",
                            "forward_samples_per_second", "ratio", "predict_rates",
                            "forward_rates"}}, ...],
     "events": {... bench/events.py's result: "input", "steps", "true_tracks",
                "climseg": {"all"|"climatenet_steps": {"steps", "jobs1"|"jobs2":
                            {"seconds", "median_seconds", "peak_rss_bytes", "tracks"}}},
                "climatenet": {"defaults"|"agree": {"seconds", "load_seconds", "steps",
                               "tracks", "wall_seconds", "peak_rss_bytes", "settings"}},
                "speedups": {"<setting>_jobs<N>": {"same_steps", "per_step"}}},
     "gpu": {"device", "compute_capability", "tensorflow", "bf16_matmul_size",
             "bf16_matmul_gflops", "bf16_matmul_gflops_runs",
             "rows": [{"model", "kernels", "precision", "batch", "input", "jit_compile",
                       "out_of_memory", "samples_per_second", "gflops", "flops_per_sample",
                       "loss_scaling", "fraction_of_bf16_peak"}, ...]},
     "errors": {part: message}}

and `write_report` turns it into report.md and report.json. A part that was
not run is absent; a part that failed is in "errors".
"""

import json
from pathlib import Path

# Issue 7's goals.
GOAL_RATIO = 0.60
GOAL_PIPELINE = 0.9
GOAL_WAIT_PERCENT = 2.0
GOAL_SCALING = 0.95
# Issue 18's goals: climseg-predict against the bare forward, the bfloat16 forward
# against a bfloat16 matmul (on a CPU with bfloat16 hardware), 2 ranks against 2 that
# only compute.
GOAL_PREDICT = 0.9
GOAL_BF16 = 0.6
GOAL_PREDICT_RANKS = 0.95
# Issue 20's goal on a GPU: deeplabv3plus bf16 training at 768x1152 reaches this
# fraction of the chip's bfloat16 matmul peak measured in the same run.
GOAL_GPU_BF16 = 0.40
# MLPerf HPC DeepCAM's PyTorch reference on one H200 (measured, quoted by issue 20):
# 768x1152, channels-last, 0.655 TFLOP forward (3x for a training step).
DEEPCAM_H200 = (
    ("bf16, batch 8", 77.5, 152.0, 0.19),
    ("bf16, batch 8, torch.compile", 92.1, 181.0, 0.225),
    ("fp32/TF32, batch 4", 33.4, None, None),
)
DEEPCAM_H200_PEAK_TFLOPS = 805.0
# Issue 19's goal: climseg-events against ClimateNet's track_events on the same masks.
GOAL_EVENTS_SPEEDUP = 10.0
BF16_ISA = ("AVX-512 BF16", "AMX")  # cpu_info's names of bfloat16 hardware

# MLPerf HPC DeepCAM's PyTorch DeepLabv3+ (fp32, batch 2; peak RSS of one full-size
# step), by the CPU it was measured on (the report's `cpu_id`), so that the goal
# rows compare two networks on one machine; PyTorch and DeepCAM's code are not part
# of climseg, so the suite cannot run it (how it was measured: docs/PERFORMANCE.md).
# None: the figures issue 7 quotes, from a machine it does not name.
DEEPCAM = {
    None: {"source": "issue 7's figures, machine not recorded",
           "samples_per_second": {"192x288": 0.62, "768x1152": 0.037},
           "peak_rss_gb": 12.3, "peak_rss_batch": None},
    "AuthenticAMD family 25 model 17 stepping 1": {
        # The fastest of the day's runs (the machine's speed varied by a third
        # that day: 0.0365 to 0.0500 at full size).
        "source": "measured on this CPU, 3 Dec 2026; speed: its fastest run",
        "samples_per_second": {"192x288": 0.869, "768x1152": 0.0500},
        "peak_rss_gb": 5.43, "peak_rss_batch": 1, "optimizer": "AdamW"},
}


def deepcam_reference(machine):
    """DeepCAM's figures for the report's machine, or issue 7's when not measured on it."""
    return DEEPCAM.get(machine.get("cpu_id"), DEEPCAM[None])


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _loads(values):
    return " / ".join(f"{x:.2f}" for x in values)


def _met(ok):
    return "n/a" if ok is None else ("met" if ok else "**not met**")


def _scaling_runs(results):
    """The scaling results as a list (reports before two inputs held one dict)."""
    scaling = results.get("scaling") or []
    return [scaling] if isinstance(scaling, dict) else scaling


def goals(results):
    """Issue 7's goals as rows (goal, measured, met: True/False/None when not measured)."""
    rows = []
    deepcam = deepcam_reference(results.get("machine", {}))
    # P: the best matmul rate of the report. A matmul timed right after a big
    # model's step can run far below it (196 vs 422 GFLOP/s after a full-size
    # deeplabv3plus step), which would flatter that model's own ratio.
    peak = max((m["matmul_gflops"] for m in results.get("models", [])), default=None)
    for m in results.get("models", []):
        if m["model"] == "deeplabv3plus":
            ratio = m["gflops"] / peak
            rows.append((f"deeplabv3plus training >= {GOAL_RATIO:.0%} of P (the report's best "
                         f"matmul rate, {peak:.0f} GFLOP/s) at {m['input']}",
                         f"{ratio:.0%} ({m['ratio_to_matmul']:.0%} of the matmul timed after "
                         "each step)", ratio >= GOAL_RATIO))
            for size, samples in deepcam["samples_per_second"].items():
                if m["input"].startswith(size + "x"):
                    digits = 3 if samples >= 0.1 else 4
                    measured = f"{m['samples_per_second']:.{digits}f} samples/s"
                    if m["samples_per_second"] <= samples:  # What limits it: the arithmetic.
                        measured += (f"; its {m['gflop_per_sample']:.1f} GFLOP per sample "
                                     f"executed allow {peak / m['gflop_per_sample']:.{digits}f} "
                                     "at P")
                    rows.append((f"deeplabv3plus faster than DeepCAM PyTorch "
                                 f"({samples:.{digits}f} samples/s at {size}, "
                                 f"{deepcam['source']})",
                                 measured, m["samples_per_second"] > samples))
            rows += _versus_tfm(results, m)
    data = results.get("data")
    if data:
        rows.append((f"input pipeline >= {GOAL_PIPELINE} x raw h5py read",
                     f"{data['ratio']:.2f}", data["ratio"] >= GOAL_PIPELINE))
        for how in ("loop", "fit"):
            key = f"{how}_wait_percent"
            if data.get(key) is not None:
                rows.append((f"data wait < {GOAL_WAIT_PERCENT:g}% of a step ({how})",
                             f"{data[key]:.1f}%", data[key] < GOAL_WAIT_PERCENT))
    for scaling in _scaling_runs(results):
        for row in scaling["rows"]:
            if row["lag"] == 1:
                work = f" ({scaling['input']} per rank)" if scaling.get("input") else ""
                measured = f"{row['efficiency']:.3f}"
                if row["efficiency"] < GOAL_SCALING and scaling.get("independent_efficiency"):
                    # What limits it: two ranks that never communicate.
                    measured += (f" (2 ranks without allreduce: "
                                 f"{scaling['independent_efficiency']:.3f}; lag 1 against "
                                 f"them: {row['vs_no_allreduce']:.3f})")
                rows.append((f"2-rank weak scaling >= {GOAL_SCALING} with lag 1{work}",
                             measured, row["efficiency"] >= GOAL_SCALING))
    memory = results.get("memory")
    if memory:
        gb, theirs = memory["ru_maxrss_bytes"] / 1e9, deepcam["peak_rss_gb"]
        batch = deepcam["peak_rss_batch"]
        theirs_with = f" with {deepcam['optimizer']}" if deepcam.get("optimizer") else ""
        rows.append((f"full-size deeplabv3plus step, batch {memory.get('batch', 1)} "
                     f"({_optimizer(memory)}): peak RSS below DeepCAM PyTorch's {theirs} GB"
                     f"{f' at batch {batch}' if batch else ''}{theirs_with} "
                     f"({deepcam['source']})",
                     f"{gb:.2f} GB", gb < theirs))
    return rows + predict_goals(results) + events_goals(results) + gpu_goals(results)


def _gpu_best(rows, **match):
    """The fastest row of the GPU part matching `match`, or None."""
    found = [r for r in rows if not r["out_of_memory"]
             and all(r[k] == v for k, v in match.items())]
    return max(found, key=lambda r: r["samples_per_second"], default=None)


def gpu_goals(results):
    """Issue 20's GPU goal: deeplabv3plus bf16 training >= GOAL_GPU_BF16 of the bf16 peak."""
    gpu = results.get("gpu")
    if not gpu or gpu["device"].startswith("CPU"):
        return []
    rows = []
    for kernels in sorted({r["kernels"] for r in gpu["rows"]}):
        best = _gpu_best(gpu["rows"], model="deeplabv3plus", precision="mixed_bfloat16",
                         kernels=kernels)
        if best:
            rows.append((f"deeplabv3plus bf16 training >= {GOAL_GPU_BF16} x the bfloat16 matmul "
                         f"peak on {gpu['device']} ({kernels} kernels, {best['input']})",
                         f"{best['fraction_of_bf16_peak']:.3f} at batch {best['batch']} "
                         f"({best['gflops']:.0f} vs {gpu['bf16_matmul_gflops']:.0f} GFLOP/s)",
                         best["fraction_of_bf16_peak"] >= GOAL_GPU_BF16))
    return rows


def gpu_markdown(results):
    """The GPU part's section: every kernel set, precision and batch, and DeepCAM on an H200."""
    gpu = results["gpu"]
    out = ["## Training on a GPU (`bench/gpu.py`)", "",
           f"{gpu['device']} (compute capability {gpu.get('compute_capability')}), TensorFlow "
           f"{gpu['tensorflow']}: `model.fit` steps on an in-memory batch, median after "
           "warm-up; GFLOP/s count the FLOPs the graph executes; x peak: over a "
           f"{gpu['bf16_matmul_size']}^2 bfloat16 matmul timed in the same run "
           f"({gpu['bf16_matmul_gflops']:.0f} GFLOP/s). mixed_float16 uses dynamic loss "
           "scaling.", ""]
    out.append(_table(
        ["model", "kernels", "precision", "XLA", "input", "batch", "samples/s", "GFLOP/s",
         "x bf16 peak"],
        [(r["model"], r["kernels"], r["precision"], "yes" if r["jit_compile"] else "no",
          r["input"], r["batch"]) + (("out of memory", "", "") if r["out_of_memory"] else (
              f"{r['samples_per_second']:.2f}", f"{r['gflops']:.0f}",
              f"{r['fraction_of_bf16_peak']:.3f}")) for r in gpu["rows"]]))
    out += ["", "For comparison, MLPerf HPC DeepCAM's PyTorch reference on one H200 "
            f"(measured; 768x1152, channels-last; {DEEPCAM_H200_PEAK_TFLOPS:.0f} TFLOP/s bf16 "
            "matmul peak):", ""]
    out.append(_table(["DeepCAM PyTorch on H200", "samples/s", "TFLOP/s", "x bf16 peak"],
                      [(what, f"{rate}", "" if tflops is None else f"{tflops:.0f}",
                        "" if frac is None else f"{frac}")
                       for what, rate, tflops, frac in DEEPCAM_H200]))
    return "\n".join(out)


def events_goals(results):
    """Issue 19's goals as rows: speed against ClimateNet, the same tracks where the rules
    agree."""
    events = results.get("events")
    if not events or not events.get("speedups"):
        return []
    rows = []
    for jobs in (1, 2):
        ratio = events["speedups"][f"defaults_jobs{jobs}"]
        agree = events["speedups"][f"agree_jobs{jobs}"]
        rows.append((f"climseg-events --jobs {jobs} >= {GOAL_EVENTS_SPEEDUP:g}x ClimateNet's "
                     f"track_events (its defaults; {events['input']} masks)",
                     f"{ratio['same_steps']:.1f}x on the same "
                     f"{events['climatenet']['defaults']['steps']} steps (start-up included), "
                     f"{ratio['per_step']:.1f}x per step over {events['steps']}; at the "
                     f"thresholds where the rules agree {agree['same_steps']:.1f}x and "
                     f"{agree['per_step']:.1f}x",
                     min(ratio["same_steps"], agree["same_steps"]) >= GOAL_EVENTS_SPEEDUP))
    ours = events["climseg"]["climatenet_steps"]["jobs1"]["tracks"]
    theirs = events["climatenet"]["agree"]["tracks"]
    true = events["climseg"]["climatenet_steps"]["true_tracks"]
    rows.append(("the same tracks as ClimateNet where both rules agree (its thresholds at "
                 "2 pixels and 1 step)",
                 "; ".join(f"{k.replace('_', ' ')}: climseg {ours[k]}, ClimateNet {theirs[k]}, "
                           f"true {true[k]}" for k in ours), ours == theirs))
    return rows


def events_markdown(results):
    """The events part's section: climseg-events against ClimateNet's track_events."""
    e = results["events"]
    out = ["## Events and tracks (climseg-events)", "",
           f"`bench/events.py`: {e['steps']} steps of {e['input']} masks (the true labels of a "
           "synthetic sequence, one file a day), `climseg-events` (objects, tracks, "
           "climatology; one child process, start-up included) with `--jobs 1` and `2`, "
           "medians over runs; peak RSS summed over the process and its workers. ClimateNet's "
           "`track_events` (numpy 2 fix only) on the first steps, loaded into memory first "
           "(not timed).", ""]
    rows = []
    for run in e["climseg"].values():
        for jobs in (1, 2):
            r = run[f"jobs{jobs}"]
            rows.append((f"climseg-events --jobs {jobs}", run["steps"],
                         f"{r['median_seconds']:.1f}",
                         f"{1000 * r['median_seconds'] / run['steps']:.0f}",
                         f"{r['peak_rss_bytes'] / 1e6:.0f}",
                         ", ".join(f"{v}" for v in r["tracks"].values())))
    for run in (e.get("climatenet") or {}).values():
        settings = ", ".join(f"{k}={v}" for k, v in run["settings"].items()) or "defaults"
        rows.append((f"ClimateNet track_events ({settings})", run["steps"],
                     f"{run['seconds']:.1f}", f"{1000 * run['seconds'] / run['steps']:.0f}",
                     f"{run['peak_rss_bytes'] / 1e6:.0f}",
                     ", ".join(f"{v}" for v in run["tracks"].values())))
    out.append(_table(["what", "steps", "seconds (median)", "ms per step", "peak RSS, MB",
                       "tracks (cyclones, rivers)"], rows))
    true = e["climseg"]["climatenet_steps"].get("true_tracks")
    if true:
        out += ["", f"True tracks: {e['true_tracks']['tropical_cyclone']} cyclones and "
                f"{e['true_tracks']['atmospheric_river']} rivers in all {e['steps']} steps, "
                f"{true['tropical_cyclone']} and {true['atmospheric_river']} in the first "
                f"{e['climseg']['climatenet_steps']['steps']}."]
    if e.get("speedups"):
        out += ["", _table(["ClimateNet setting", "climseg --jobs", "speed-up, same steps",
                            "speed-up per step"],
                           [(k.rsplit("_jobs", 1)[0], k.rsplit("_jobs", 1)[1],
                             f"{v['same_steps']:.1f}x", f"{v['per_step']:.1f}x")
                            for k, v in e["speedups"].items()])]
    return "\n".join(out)


def best_batch(row):
    """The batch entry of a predict row at which climseg-predict was fastest."""
    return max(row["batches"], key=lambda b: b["predict_samples_per_second"])


def predict_goals(results):
    """Issue 18's goals as rows (goal, measured, met), per model, precision and input."""
    rows = []
    isa = results.get("machine", {}).get("isa")
    bf16_hardware = None if isa is None else any(name in isa for name in BF16_ISA)
    for row in results.get("predict", []):
        what = f"{row['model']}, {row['precision']}, {row['input']}"
        best = best_batch(row)
        rows.append((f"climseg-predict >= {GOAL_PREDICT} x the bare forward at its best batch "
                     f"({what})",
                     f"{best['ratio']:.3f} at batch {best['batch']} "
                     f"({best['predict_samples_per_second']:.4f} vs "
                     f"{best['forward_samples_per_second']:.4f} samples/s)",
                     best["ratio"] >= GOAL_PREDICT))
        bf16 = [b for b in row["batches"] if "bf16_matmul_ratio" in b]
        if bf16:
            # By the architecture's FLOPs (the paper's count), where recorded: a kernel set
            # that gets the same result with fewer FLOPs is not a slower forward.
            key = "bf16_matmul_effective_ratio" if "bf16_matmul_effective_ratio" in bf16[0] \
                else "bf16_matmul_ratio"
            top = max(bf16, key=lambda b: b[key])
            rate = top.get("effective_gflops", top["forward_gflops"])
            measured = (f"{top[key]:.2f} at batch {top['batch']} ({rate:.0f} vs "
                        f"{top['bf16_matmul_gflops']:.0f} GFLOP/s")
            if key != "bf16_matmul_ratio":
                measured += (f", architecture FLOPs; {top['bf16_matmul_ratio']:.2f} by the "
                             "FLOPs executed")
            measured += ")"
            if not bf16_hardware:
                measured += "; this CPU has no bfloat16 hardware (AVX-512 BF16, AMX)"
            rows.append((f"bfloat16 forward >= {GOAL_BF16} x a bfloat16 matmul on a CPU with "
                         f"bfloat16 hardware ({row['model']}, {row['input']})", measured,
                         top[key] >= GOAL_BF16 if bf16_hardware else None))
        ranks = row.get("ranks")
        if ranks:
            rows.append((f"{ranks['ranks']} ranks of climseg-predict >= {GOAL_PREDICT_RANKS} x "
                         f"{ranks['ranks']} ranks that only compute ({what}, batch "
                         f"{ranks['batch']} per rank)",
                         f"{ranks['ratio']:.3f} ({ranks['predict_samples_per_second']:.4f} vs "
                         f"{ranks['forward_samples_per_second']:.4f} samples/s)",
                         ranks["ratio"] >= GOAL_PREDICT_RANKS))
    return rows


def predict_markdown(results):
    """The predict part's section: climseg-predict against the bare forward, start-up, ranks."""
    # P: the report's best float32 matmul rate, as in the training goals.
    peaks = [m["matmul_gflops"] for m in results.get("models", [])]
    peaks += [b["fp32_matmul_gflops"] for r in results["predict"] for b in r["batches"]]
    peak = max(peaks)
    out = ["## Inference (climseg-predict)", "",
           "`bench/predict.py`: `climseg-predict --no-maps --overwrite` over a directory of "
           "netCDF files with several time steps each, its samples/s from its progress lines "
           "(start-up and first batch left out), and the bare forward "
           "(`model(x, training=False)` on an in-memory batch, eager and compiled, the faster "
           "each step) with the same weights, in turns; "
           "the ratio is the median over rounds of predict's rate over the forward's. Forward "
           "GFLOP/s count the FLOPs the graph executes (fp32's under mixed_bfloat16 too), "
           "effective GFLOP/s the architecture's (`zoo.count_flops` by name; deeplabv3plus's "
           "CPU kernels execute fewer for the same result); x P: "
           f"over the report's best float32 matmul rate ({peak:.0f} GFLOP/s); x matmul: each "
           "forward over the matmul timed right after it (float32 2048^2, bfloat16 4096^2). "
           "Start-up: one file of one time step at batch 1, process start to that sample "
           "predicted.", ""]
    out.append(_table(
        ["model", "precision", "input", "batch", "climseg-predict samples/s",
         "bare forward samples/s", "ratio", "forward GFLOP/s", "x P", "x float32 matmul",
         "x bfloat16 matmul", "effective GFLOP/s", "effective x bfloat16 matmul"],
        [(r["model"], r["precision"], r["input"], b["batch"],
          f"{b['predict_samples_per_second']:.4f}", f"{b['forward_samples_per_second']:.4f}",
          f"{b['ratio']:.3f}", f"{b['forward_gflops']:.1f}", f"{b['forward_gflops'] / peak:.2f}",
          f"{b['fp32_matmul_ratio']:.2f}",
          f"{b['bf16_matmul_ratio']:.2f} ({b['bf16_matmul_gflops']:.0f} GFLOP/s)"
          if "bf16_matmul_ratio" in b else "",
          f"{b['effective_gflops']:.1f}" if "effective_gflops" in b else "",
          f"{b['bf16_matmul_effective_ratio']:.2f}" if "bf16_matmul_effective_ratio" in b
          else "")
         for r in results["predict"] for b in r["batches"]]))
    out += ["", _table(
        ["model", "precision", "input", "GFLOP / sample (forward, executed)",
         "GFLOP / sample (architecture)",
         "start-up (import to first sample), s", "2 ranks: climseg-predict samples/s",
         "2 ranks that only compute", "ratio"],
        [(r["model"], r["precision"], r["input"], f"{r['flops_per_sample'] / 1e9:.1f}",
          f"{r['architecture_flops_per_sample'] / 1e9:.1f}"
          if "architecture_flops_per_sample" in r else "",
          f"{r['startup']:.1f}",
          *((f"{r['ranks']['predict_samples_per_second']:.4f}",
             f"{r['ranks']['forward_samples_per_second']:.4f}", f"{r['ranks']['ratio']:.3f}")
            if r.get("ranks") else ("", "", "")))
         for r in results["predict"]])]
    return "\n".join(out)


def _optimizer(memory):
    """The memory benchmark's optimizer, by name (results before it was recorded: SGD)."""
    return {"sgd": "SGD", "adamw": "AdamW"}[memory.get("optimizer", "sgd")]


def _versus_tfm(results, ours):
    """The goal row "faster than deeplabv3plus_tfm" at `ours`' input: from the head-to-head
    run (steps in turn, the same load) when there is one, else from the models' rows."""
    reference = next((r for r in results["models"] if r["model"] == "deeplabv3plus_tfm"
                      and r["input"] == ours["input"] and r["batch"] == ours["batch"]), None)
    apart = reference and (f"{ours['samples_per_second']:.3f} vs "
                           f"{reference['samples_per_second']:.3f} samples/s")
    goal = ("deeplabv3plus faster than tf-models-official's DeepLabV3+ (deeplabv3plus_tfm) "
            f"at {ours['input']}")
    versus = next((v for v in results.get("versus", []) if v["input"] == ours["input"]
                   and {"deeplabv3plus", "deeplabv3plus_tfm"} <= set(v["ratios"])), None)
    if versus:  # Ratios are to the run's first model, whichever it was.
        speedup = versus["ratios"]["deeplabv3plus"] / versus["ratios"]["deeplabv3plus_tfm"]
        rates = versus["samples_per_second"]
        measured = (f"{speedup:.2f} x its samples/s, steps in turn, batch {versus['batch']} "
                    f"({rates['deeplabv3plus']:.3f} vs {rates['deeplabv3plus_tfm']:.3f})")
        if apart:
            measured += f"; run one after the other, batch {ours['batch']}: {apart}"
        return [(goal, measured, speedup > 1)]
    if reference:
        return [(goal, apart, ours["samples_per_second"] > reference["samples_per_second"])]
    return []


def profile_markdown(profile):
    """The profile part's section: step and op time, regions, top layers, op types."""
    out = ["## Where the training time goes (profile)", "",
           f"`bench/profile.py`: {profile['model']} at {profile['input']}, batch "
           f"{profile['batch']}, fp32, {profile['steps']} training steps under TensorFlow's "
           "profiler (host tracer). Op self time per step from the trace, given to the Keras "
           "layer of the op's name scope; backward = ops under `gradient_tape/`.", ""]
    overlap = ("in parallel, so their summed time can exceed the wall time"
               if profile["op_ms"] > 1.001 * profile["busy_ms"] else "without overlapping")
    out.append(f"Step wall time **{profile['step_ms']:.0f} ms** (median; mean "
               f"{profile['step_mean_ms']:.0f} ms). Op time {profile['op_ms']:.0f} ms per step "
               f"(mean) = {profile['op_ratio']:.2f} x the mean wall time: ops ran on "
               f"{profile['threads']} thread(s), {overlap}; at least one op was running "
               f"{profile['busy_percent']:.1f}% of the wall time. Tables: ms per step, mean over "
               "the steps.")
    if profile.get("fused_renamed_ms"):
        out[-1] += (" Fused convolutions are named after their last node (an activation or a "
                    f"residual add): {profile['fused_renamed_ms']:.0f} ms per step of conv "
                    "forward time count to the layer of that node (largest: "
                    f"`{profile['fused_renamed_example']}`).")
    if profile.get("regions"):
        out += ["", _table(["region", "ms per step", "% of op time"],
                           [(r["region"], f"{r['ms']:.0f}", f"{r['percent']:.1f}")
                            for r in profile["regions"]])]
    out += ["", _table(
        ["layer", "forward ms", "backward ms", "total ms", "% of op time", "cumulative %"],
        [(r["layer"], f"{r['forward_ms']:.1f}", f"{r['backward_ms']:.1f}",
          f"{r['total_ms']:.1f}", f"{r['percent']:.1f}", f"{r['cumulative_percent']:.1f}")
         for r in profile["layers"]])]
    out += ["", _table(
        ["op type", "calls per step", "ms per step", "% of op time", "cumulative %"],
        [(f"`{r['op_type']}`" if not r["op_type"].startswith("(") else r["op_type"],
          f"{r['calls']:.0f}", f"{r['ms']:.1f}", f"{r['percent']:.1f}",
          f"{r['cumulative_percent']:.1f}") for r in profile["op_types"]])]
    return "\n".join(out)


def machine_text(machine):
    """'AMD EPYC (AuthenticAMD family 25 model 17 stepping 1, 2596 MHz, AVX2, AVX-512), 2 cores'."""
    details = [machine.get("cpu_id")]
    if machine.get("cpu_mhz"):
        details.append(f"{machine['cpu_mhz']:.0f} MHz")
    details += machine.get("isa", [])
    details = ", ".join(filter(None, details))
    return f"{machine['cpu']}{f' ({details})' if details else ''}, {machine['cores']} cores"


def markdown(results):
    """The report as Markdown text."""
    machine, settings = results["machine"], results.get("settings", {})
    out = ["# climseg performance report", ""]
    out.append(_table(["", ""], [
        ("date (UTC)", machine["date"]),
        ("CPU", machine_text(machine)),
        ("load average before (1/5/15 min)", _loads(machine["load_before"])),
        ("load average after (1/5/15 min)", _loads(machine.get("load_after", ()))),
        ("TensorFlow", machine["tensorflow"]),
        ("oneDNN (TF_ENABLE_ONEDNN_OPTS)", machine["onednn"]),
        ("mode", settings.get("mode", "")),
        ("command", f"`{settings.get('command', '')}`"),
    ]))
    if results.get("load"):
        out += ["", "Each part, with the 1-minute load average before and after it (2 means "
                "both cores busy: a load above what the part itself adds means another user):",
                ""]
        out.append(_table(["part", "started (UTC)", "seconds", "load before", "load after"], [
            (part, load.get("date", ""), f"{results.get('seconds', {}).get(part, 0):.0f}",
             f"{load['before'][0]:.2f}", f"{load['after'][0]:.2f}")
            for part, load in results["load"].items()]))
    if results.get("models"):
        out += ["", "## Training speed (fp32)", "",
                "Median over timed steps after warm-up; the ratio divides each step's rate by a "
                "float32 2048^2 matmul timed right after it (`bench/models.py`). GFLOP/s and the "
                "ratio count the FLOPs the graph executes; the architecture's count (as the "
                "paper's) is larger for `deeplabv3plus`, whose composed decoder tail does the "
                "same arithmetic in fewer operations, and its rate is the effective GFLOP/s.",
                ""]
        out.append(_table(
            ["model", "input", "batch", "samples/s", "GFLOP/s", "x matmul", "matmul GFLOP/s",
             "GFLOP / training sample executed", "in the architecture", "effective GFLOP/s"],
            [(m["model"], m["input"], m["batch"], f"{m['samples_per_second']:.3f}",
              f"{m['gflops']:.1f}", f"{m['ratio_to_matmul']:.2f}", f"{m['matmul_gflops']:.1f}",
              f"{m['gflop_per_sample']:.1f}",
              f"{m.get('architecture_gflop_per_sample', m['gflop_per_sample']):.1f}",
              f"{m.get('effective_gflops', m['gflops']):.1f}") for m in results["models"]]))
    if results.get("versus"):
        out += ["", "## Head to head", "",
                "The models take turns, one training step each per round, so that they see "
                "the same load (`bench/models.py --head-to-head`); the ratio is the median over "
                "rounds of a model's samples/s over the first model's in the same round.", ""]
        out.append(_table(["input", "batch", "rounds", "model", "samples/s", "ratio"], [
            (v["input"], v["batch"], v["rounds"], name, f"{v['samples_per_second'][name]:.3f}",
             f"{v['ratios'][name]:.3f}") for v in results["versus"] for name in v["models"]]))
    if results.get("precision"):
        out += ["", "## Precision", "",
                "The same measurement with the Keras policy set before building "
                "(`bench/precision.py`); GFLOP/s count the fp32 FLOPs.", ""]
        out.append(_table(
            ["model", "input", "precision", "samples/s", "GFLOP/s", "x float32 matmul"],
            [(p["model"], p.get("input", ""), p["precision"], f"{p['samples_per_second']:.3f}",
              f"{p['gflops']:.1f}", f"{p['ratio_to_matmul']:.2f}")
             for p in results["precision"]]))
    if results.get("profile"):
        out += ["", profile_markdown(results["profile"])]
    data = results.get("data")
    if data:
        out += ["", "## Input pipeline (768x1152x16 files, page cache)", "",
                "`bench/data_pipeline.py`: medians over repeats.", ""]
        rows = [("raw sequential h5py read", f"{data['raw_samples_per_second']:.1f} samples/s"),
                ("make_dataset pipeline", f"{data['pipeline_samples_per_second']:.1f} samples/s"),
                ("ratio pipeline / raw", f"{data['ratio']:.2f}")]
        if data.get("loop_wait_percent") is not None:
            rows.append(("data wait, train_on_batch loop",
                         f"{data['loop_wait_ms']:.1f} ms of a {data['loop_step_ms']:.0f} ms step "
                         f"= {data['loop_wait_percent']:.1f}%"))
        if data.get("fit_wait_percent") is not None:
            rows.append(("data wait, model.fit (the step's IteratorGetNext, from the profiler)",
                         f"{data['fit_wait_ms']:.1f} ms of a {data['fit_step_ms']:.0f} ms step "
                         f"= {data['fit_wait_percent']:.1f}%"))
        if data.get("fit_slowdown_percent") is not None:
            rows.append(("model.fit step with the pipeline vs data in memory (the readers' CPU "
                         "time on the same cores, not waiting)",
                         f"{data['fit_slowdown_ms']:+.1f} ms on a "
                         f"{data['fit_memory_step_ms']:.0f} ms step = "
                         f"{data['fit_slowdown_percent']:+.1f}%"))
        out.append(_table(["", ""], rows))
    runs = _scaling_runs(results)
    if runs:
        out += ["", "## Weak scaling, 1 to 2 Horovod ranks (Gloo, one thread per rank)", "",
                "`bench/scaling.py`: batch 2 per rank. \"vs no allreduce\" divides by 2 ranks "
                "that train without any allreduce: 1.0 means communication costs nothing, and "
                "that control's own ratio to twice one rank is the cost of two processes "
                "sharing the machine.", ""]
        rows = []
        for scaling in runs:
            work = " ".join(filter(None, (scaling.get("model") or "small",
                                          scaling.get("input"))))
            rows += [(work, r["lag"], f"{r['one_rank']:.3f}", f"{r['two_ranks']:.3f}",
                      f"{r['efficiency']:.3f}", f"{r['vs_no_allreduce']:.3f}",
                      f"{r['gflops']:.1f}") for r in scaling["rows"]]
            independent = scaling.get("independent_efficiency")
            if independent is not None:
                rows.append((work, "no allreduce", "", "", f"{independent:.3f}", "1.000", ""))
        out.append(_table(
            ["per-rank work", "gradient lag", "1 rank samples/s", "2 ranks samples/s",
             "efficiency", "vs no allreduce", "sustained GFLOP/s (2 ranks)"], rows))
    memory = results.get("memory")
    if memory:
        shape = "x".join(str(s) for s in memory["input_shape"])
        out += ["", "## Memory", "",
                f"One {memory['model']} training step at {shape}, batch {memory['batch']}, "
                f"{memory['precision']}, {_optimizer(memory)}, in a child process "
                "(`bench/memory.py`): peak RSS "
                f"**{memory['ru_maxrss_bytes'] / 1e9:.2f} GB** (getrusage of the child; its VmHWM "
                f"{memory['vm_hwm_bytes'] / 1e9:.2f} GB, "
                f"{memory['vm_hwm_after_build_bytes'] / 1e9:.2f} GB after building the model). "
                "The step took "
                f"{', '.join(f'{s:.0f}' for s in memory['step_seconds'])} s (first step: "
                "includes tracing)."]
    if results.get("predict"):
        out += ["", predict_markdown(results)]
    if results.get("events"):
        out += ["", events_markdown(results)]
    if results.get("gpu"):
        out += ["", gpu_markdown(results)]
    rows = goals(results)
    if rows:
        numbers = ["7"] + ["18"] * bool(results.get("predict")) + ["19"] * bool(
            results.get("events", {}).get("speedups")) + ["20"] * bool(gpu_goals(results))
        issues = (f"issues {', '.join(numbers[:-1])} and {numbers[-1]}" if len(numbers) > 1
                  else "issue 7")
        out += ["", f"## Goals ({issues})", ""]
        out.append(_table(["goal", "measured", "status"], [(g, m, _met(ok)) for g, m, ok in rows]))
    if results.get("errors"):
        out += ["", "## Parts that failed", ""]
        out += [f"- {part}: {message.splitlines()[0] if message else ''}"
                for part, message in results["errors"].items()]
    return "\n".join(out) + "\n"


def write_report(results, markdown_path, json_path):
    """Writes report.md and report.json (with the goals added); returns the two paths."""
    markdown_path, json_path = Path(markdown_path), Path(json_path)
    markdown_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    markdown_path.write_text(markdown(results))
    full = dict(results, goals=[{"goal": g, "measured": m, "met": ok}
                                for g, m, ok in goals(results)])
    json_path.write_text(json.dumps(full, indent=2) + "\n")
    return markdown_path, json_path
