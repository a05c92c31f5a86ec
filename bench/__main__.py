"""climseg's performance suite: one command, one report.

Runs the benchmark scripts of bench/ one after the other, each in its own
process (so that one part's memory and TensorFlow state do not affect the
next), parses what they print, and writes a Markdown and a JSON report with
the machine's description and load:

1. models: matmul peak and fp32 training speed of the zoo models (bench/models.py);
   versus: deeplabv3plus and deeplabv3plus_tfm taking turns, step by step, so that
   both see the same load (bench/models.py --head-to-head; batch 1 at full size,
   where the two do not fit in memory at batch 2);
2. data: the input pipeline against raw h5py reads, and data wait (bench/data_pipeline.py);
3. scaling: horovodrun -np 1 vs -np 2, gradient lag 0 and 1, at two per-rank inputs
   (bench/scaling.py);
4. memory: peak RSS of one full-size deeplabv3plus training step, batch 1, AdamW
   (bench/memory.py);
5. precision: deeplabv3plus under mixed_bfloat16 next to fp32 (bench/precision.py);
6. profile: where deeplabv3plus's training step time goes, by layer, op type and
   region, from TensorFlow's profiler (bench/profile.py; always 192x288, batch 2,
   2 or 3 steps: about a minute).
7. predict: climseg-predict over multi-time-step netCDF files against the bare
   model forward in turns, deeplabv3plus and tiramisu, fp32 and mixed_bfloat16,
   batch 1, 2 and 4; start-up; 2 ranks against 2 ranks that only compute
   (bench/predict.py).
8. events (only when asked: `--only events`): climseg-events over a year of full-size
   masks (2,920 steps; `--events-steps` fewer) with --jobs 1 and 2, against ClimateNet's
   track_events on the first steps (`--climatenet-steps`) when `--climatenet DIR` gives a
   copy of its repository (bench/events.py; the masks are generated once into the
   cache, about a second a step).
9. gpu (first with `--gpu`, or `--only gpu`): deeplabv3plus training on a GPU at
   768x1152, both kernel sets, fp32, mixed_bfloat16 and mixed_float16 (loss
   scaling), batch 2, 4 and 8, against the bf16 matmul peak timed in the same run,
   beside MLPerf DeepCAM's PyTorch figures on an H200 (bench/gpu.py).

    .venv/bin/python -m bench                               # everything (about 20 min on 2 cores)
    .venv/bin/python -m bench --gpu                         # on a GPU machine
    .venv/bin/python -m bench --quick                       # fewer steps and repeats
    .venv/bin/python -m bench --only models,precision --full-size

Run it on an otherwise idle machine; the report records the load average
before and after each part.
"""

import argparse
import datetime
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# isort: off
import climseg_tf  # noqa: E402,F401  (sets TF_ENABLE_ONEDNN_OPTS for the children; no TensorFlow here)
from bench.report import machine_text, write_report  # noqa: E402
# isort: on

PARTS = ("models", "versus", "data", "scaling", "memory", "precision", "profile", "predict",
         "events", "gpu")
# What runs without --only: the events part takes hours at its full size (a year of
# masks to generate once, at 1 to 2 s a step, then six runs over them) and needs
# ClimateNet; the gpu part needs a GPU (--gpu).
DEFAULT_PARTS = PARTS[:-2]
REDUCED, FULL = (192, 288), (768, 1152)
# Run at 192x288, or 768x1152 with --full-size.
SIZED_PARTS = ("models", "versus", "precision", "predict")
_NUMBER = r"([-+]?[0-9.]+)"


_ISA_FLAGS = (("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_bf16", "AVX-512 BF16"),
              ("amx_tile", "AMX"))


def cpu_info(cpuinfo="/proc/cpuinfo"):
    """The CPU's model name, identity (vendor, family, model, stepping), MHz and vector ISA.

    Cloud machines of one name ("AMD EPYC") differ by generation: the family
    and model tell them apart, and with them the float32 peak (seen here on
    2 cores, 27 Nov to 3 Dec: 177 to 522 GFLOP/s).
    """
    fields = {}
    try:
        with open(cpuinfo) as f:
            for line in f:
                if not line.strip():
                    break  # The first processor's block is enough.
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    flags = set(fields.get("flags", "").split())
    ident = " ".join(f"{name} {fields[key]}" for key, name in (
        ("cpu family", "family"), ("model", "model"), ("stepping", "stepping")) if key in fields)
    return {"cpu": fields.get("model name") or platform.processor() or "unknown",
            "cpu_id": " ".join(filter(None, (fields.get("vendor_id"), ident))),
            "cpu_mhz": float(fields["cpu MHz"]) if "cpu MHz" in fields else None,
            "isa": [name for flag, name in _ISA_FLAGS if flag in flags]}


def machine_info():
    """CPU (`cpu_info`), cores, TensorFlow version, oneDNN setting, date, load average."""
    return {"date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
            **cpu_info(), "cores": os.cpu_count(), "tensorflow": metadata.version("tensorflow"),
            "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS"), "python": platform.python_version(),
            "load_before": list(os.getloadavg())}


def other_machine(earlier, now):
    """How an earlier report's machine differs from this one (CPU, identity, cores), or ''.

    Reports from before the CPU identity was recorded are compared by name and cores.
    """
    keys = [k for k in ("cpu", "cpu_id", "cores") if k in earlier]
    if all(earlier[k] == now.get(k) for k in keys):
        return ""

    def describe(m):
        return machine_text({"cpu": m.get("cpu"), "cores": m.get("cores"),
                             "cpu_id": m.get("cpu_id") or "identity not recorded"})
    return f"{describe(earlier)}, this machine is {describe(now)}"


def _run(script, args, timeout):
    """Runs bench/SCRIPT with ARGS; returns its stdout (raises on failure)."""
    cmd = [sys.executable, str(ROOT / "bench" / script), *map(str, args)]
    print("$ " + " ".join(cmd[1:]), flush=True)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    # A session of its own, so that a timeout also ends the script's children
    # (horovodrun's ranks, the memory worker).
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"bench/{script} exited {proc.returncode}:\n{stderr[-3000:]}")
    print(stdout, flush=True)
    return stdout


def _tagged(stdout, tag):
    for line in stdout.splitlines():
        if line.startswith(tag):
            return json.loads(line[len(tag):])
    raise RuntimeError(f"no line starting with {tag!r} in:\n{stdout[-2000:]}")


def parse_models(stdout, input_label, batch):
    """The per-model lines of bench/models.py as dicts.

    `gflop_per_sample` and `gflops` count the FLOPs the graph executes;
    `architecture_gflop_per_sample` and `effective_gflops` (when printed)
    the architecture's, as `zoo.training_flops_per_sample` counts them by name.
    """
    pattern = re.compile(
        rf"^(\S+)\s+{_NUMBER} GFLOP/s = {_NUMBER} x matmul \(\s*{_NUMBER} GFLOP/s.*?\)\s+"
        rf"{_NUMBER} samples/s\s+{_NUMBER} GFLOP/training sample"
        rf"(?: executed,\s+{_NUMBER} in the architecture \(\s*{_NUMBER} GFLOP/s effective\))?")
    rows = []
    for line in stdout.splitlines():
        match = pattern.match(line)
        if match:
            name, gflops, ratio, peak, samples, per_sample, architecture, effective = (
                match.groups())
            rows.append({"model": name, "input": input_label, "batch": batch,
                         "samples_per_second": float(samples), "gflops": float(gflops),
                         "ratio_to_matmul": float(ratio), "matmul_gflops": float(peak),
                         "gflop_per_sample": float(per_sample),
                         "architecture_gflop_per_sample": float(architecture or per_sample),
                         "effective_gflops": float(effective or gflops)})
    if not rows:
        raise RuntimeError(f"no model lines in bench/models.py output:\n{stdout[-2000:]}")
    return rows


def parse_data(stdout):
    """The medians printed by bench/data_pipeline.py."""
    def find(pattern):
        match = re.search(pattern, stdout, re.MULTILINE)
        return tuple(float(g) for g in match.groups()) if match else None

    raw = find(rf"^raw h5py read, sequential:\s+{_NUMBER} samples/s")
    piped = find(rf"^make_dataset pipeline:\s+{_NUMBER} samples/s")
    if raw is None or piped is None:
        raise RuntimeError(f"no read rates in bench/data_pipeline.py output:\n{stdout[-2000:]}")
    result = {"raw_samples_per_second": raw[0], "pipeline_samples_per_second": piped[0],
              "ratio": piped[0] / raw[0]}
    loop = find(rf"wait for data\s+{_NUMBER} ms of a {_NUMBER} ms step = {_NUMBER}%")
    if loop:
        result.update(loop_wait_ms=loop[0], loop_step_ms=loop[1], loop_wait_percent=loop[2])
    fit = find(rf"model.fit: wait for data \(IteratorGetNext\)\s+{_NUMBER} ms of a {_NUMBER} ms "
               rf"step = {_NUMBER}%")
    if fit:
        result.update(fit_wait_ms=fit[0], fit_step_ms=fit[1], fit_wait_percent=fit[2])
    slower = find(rf"model.fit: step {_NUMBER} ms with data in memory, {_NUMBER} ms with "
                  rf"the pipeline = {_NUMBER}%")
    if slower:
        result.update(fit_memory_step_ms=slower[0], fit_slowdown_ms=slower[1],
                      fit_slowdown_percent=slower[2])
    return result


def parse_scaling(stdout):
    """The model, per-rank input and lag rows of bench/scaling.py's final table."""
    row = re.compile(rf"^\s+([01]) \|\s+{_NUMBER} \|\s+{_NUMBER} \|\s+{_NUMBER} \|\s+{_NUMBER} \|"
                     rf"\s+{_NUMBER} GFLOP/s")
    rows = []
    for line in stdout.splitlines():
        match = row.match(line)
        if match:
            lag, one, two, efficiency, versus, gflops = match.groups()
            rows.append({"lag": int(lag), "one_rank": float(one), "two_ranks": float(two),
                         "efficiency": float(efficiency), "vs_no_allreduce": float(versus),
                         "gflops": float(gflops)})
    if not rows:
        raise RuntimeError(f"no scaling table in bench/scaling.py output:\n{stdout[-2000:]}")
    independent = re.search(rf"without allreduce: {_NUMBER} samples/s \({_NUMBER} of", stdout)
    work = re.search(r"^Weak scaling, (\S+) at (\d+x\d+x\d+), ", stdout, re.MULTILINE)
    return {"model": work and work.group(1), "input": work and work.group(2), "rows": rows,
            "independent_efficiency": float(independent.group(2)) if independent else None}


def parse_profile(stdout):
    """The step and op times, the two tables and the regions of bench/profile.py."""
    def numbers(match):
        return [float(g) for g in match.groups()[1:]]

    step = re.search(rf"^step wall time: {_NUMBER} ms \(median of (\d+) profiled steps: "
                     rf".*; mean {_NUMBER} ms\)", stdout, re.MULTILINE)
    ops = re.search(rf"^op time: {_NUMBER} ms per step \(mean\) = {_NUMBER} x the mean wall time "
                    rf"\(ops ran on (\d+) threads?.*; at least one op running {_NUMBER} ms per "
                    rf"step \(mean\) = {_NUMBER}% of the wall time", stdout, re.MULTILINE)
    layer_row = re.compile(rf"^([^|]+?)\s+\|\s+{_NUMBER} \|\s+{_NUMBER} \|\s+{_NUMBER} \|"
                           rf"\s+{_NUMBER}% \|\s+{_NUMBER}%$")
    type_row = re.compile(rf"^([^|]+?)\s+\|\s+{_NUMBER} \|\s+{_NUMBER} \|\s+{_NUMBER}% \|"
                          rf"\s+{_NUMBER}%$")
    layers, op_types = [], []
    for line in stdout.splitlines():
        if match := layer_row.match(line):
            forward, backward, total, percent, cumulative = numbers(match)
            layers.append({"layer": match.group(1), "forward_ms": forward,
                           "backward_ms": backward, "total_ms": total, "percent": percent,
                           "cumulative_percent": cumulative})
        elif match := type_row.match(line):
            calls, ms, percent, cumulative = numbers(match)
            op_types.append({"op_type": match.group(1), "calls": calls, "ms": ms,
                             "percent": percent, "cumulative_percent": cumulative})
    if step is None or ops is None or not layers or not op_types:
        raise RuntimeError(f"no step time or tables in bench/profile.py output:\n"
                           f"{stdout[-2000:]}")
    result = {"step_ms": float(step.group(1)), "steps": int(step.group(2)),
              "step_mean_ms": float(step.group(3)),
              "op_ms": float(ops.group(1)), "op_ratio": float(ops.group(2)),
              "threads": int(ops.group(3)), "busy_ms": float(ops.group(4)),
              "busy_percent": float(ops.group(5)), "layers": layers, "op_types": op_types}
    regions = re.search(r"^regions: (.*)$", stdout, re.MULTILINE)
    if regions:
        result["regions"] = [
            {"region": name.strip(), "percent": float(percent), "ms": float(ms)}
            for name, percent, ms in re.findall(rf"([^,]+?) {_NUMBER}% \({_NUMBER} ms\)",
                                                regions.group(1))]
    fused = re.search(rf"^note: {_NUMBER} ms per step of fused .*\(largest: (\S+), ",
                      stdout, re.MULTILINE)
    if fused:
        result.update(fused_renamed_ms=float(fused.group(1)), fused_renamed_example=fused.group(2))
    return result


def run_part(part, args):
    """Runs one part with the suite's settings; returns its parsed results."""
    size = FULL if args.full_size else REDUCED
    quick = args.quick
    device = ["--device", "gpu" if getattr(args, "gpu", False) else "cpu"]
    if part == "models":
        steps, warmup = (3, 1) if quick else (5, 2)
        out = _run("models.py", ["--height", size[0], "--width", size[1], "--batch", 2,
                                 "--steps", steps, "--warmup", warmup, *device], args.timeout)
        return parse_models(out, f"{size[0]}x{size[1]}x16", 2)
    if part == "versus":
        steps, warmup = (3, 1) if quick else (5, 1)
        out = _run("models.py", ["--head-to-head", "deeplabv3plus", "deeplabv3plus_tfm",
                                 "--height", size[0], "--width", size[1],
                                 "--batch", 1 if args.full_size else 2, "--steps", steps,
                                 "--warmup", warmup, *device], args.timeout)
        return [_tagged(out, "HEAD_TO_HEAD_RESULT ")]
    if part == "data":
        extra = ["--files", 6, "--repeats", 2, "--steps", 5] if quick else []
        return parse_data(_run("data_pipeline.py", extra, args.timeout))
    if part == "scaling":
        # The small net's per-rank work at two inputs: at 64x96 each allreduce has
        # ~55 ms of computation to hide behind, at 192x288 nine times more.
        results = []
        for height, width, extra in ((64, 96, ["--repeats", 1, "--steps", 8, "--epochs", 3]
                                      if quick else []),
                                     (192, 288, ["--repeats", 1 if quick else 2, "--steps", 8,
                                                 "--epochs", 3 if quick else 4])):
            out = _run("scaling.py", ["--height", height, "--width", width, *extra],
                       args.timeout)
            results.append(parse_scaling(out))
        return results
    if part == "memory":  # always full size: the issue asks for the full-resolution step
        # AdamW: the optimizer of the DeepCAM figure the report compares with.
        out = _run("memory.py", ["--height", FULL[0], "--width", FULL[1], "--batch", 1,
                                 "--optimizer", "adamw"], args.timeout)
        return _tagged(out, "MEMORY_RESULT ")
    if part == "precision":
        steps, warmup = (3, 1) if quick else (5, 2)
        out = _run("precision.py", ["--height", size[0], "--width", size[1], "--batch", 2,
                                    "--steps", steps, "--warmup", warmup, *device],
                   args.timeout)
        results = _tagged(out, "PRECISION_RESULT ")
        for r in results:
            r["input"] = f"{size[0]}x{size[1]}x16"
        return results
    if part == "profile":  # always reduced size: a breakdown, quick, in the default set
        steps = 2 if quick else 3
        out = _run("profile.py", ["--model", "deeplabv3plus", "--height", REDUCED[0], "--width",
                                  REDUCED[1], "--batch", 2, "--steps", steps, "--warmup", 1,
                                  "--top", 20, *device], args.timeout)
        return dict(parse_profile(out), model="deeplabv3plus",
                    input=f"{REDUCED[0]}x{REDUCED[1]}x16", batch=2)
    if part == "predict":
        # Samples per predict run: enough for progress lines at least 5 s apart.
        times = {(False, False): 16, (False, True): 8, (True, False): 4, (True, True): 2}[
            args.full_size, quick]
        rounds = 1 if quick else 2
        out = _run("predict.py", ["--height", size[0], "--width", size[1], "--files", 2,
                                  "--times", times, "--rounds", rounds], args.timeout)
        return _tagged(out, "PREDICT_RESULT ")
    if part == "gpu":  # always full size: the size of the figures it is compared with
        steps, warmup = (3, 1) if quick else (10, 3)
        out = _run("gpu.py", ["--steps", steps, "--warmup", warmup, *device], args.timeout)
        return _tagged(out, "GPU_RESULT ")
    if part == "events":
        extra = ["--quick"] if quick else []
        if getattr(args, "events_steps", None):
            extra += ["--steps", args.events_steps]
        if getattr(args, "climatenet_steps", None):
            extra += ["--climatenet-steps", args.climatenet_steps]
        if getattr(args, "climatenet", None):
            extra += ["--climatenet", args.climatenet]
        return _tagged(_run("events.py", extra, args.timeout), "EVENTS_RESULT ")
    raise ValueError(f"unknown part {part!r}; expected one of {', '.join(PARTS)}")


def _rows_at_other_size(part, rows, full_size):
    """The rows of an earlier models or precision result at the other input size.

    `--update --full-size` then adds the 768x1152 rows next to the 192x288 ones.
    """
    if part not in SIZED_PARTS or not rows:
        return []
    size = FULL if full_size else REDUCED
    return [row for row in rows if not row.get("input", "").startswith(f"{size[0]}x{size[1]}x")]


def _parts(text):
    parts = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown part(s) {', '.join(unknown)}; expected a comma-separated subset of "
            f"{','.join(PARTS)}")
    return parts


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", type=_parts, default=list(DEFAULT_PARTS),
                        help=f"comma-separated parts to run, of {','.join(PARTS)}. Default "
                             f"all but events and gpu: {','.join(DEFAULT_PARTS)}")
    parser.add_argument("--quick", action="store_true",
                        help="fewer timed steps and repeats (about 10 minutes instead of 20)")
    parser.add_argument("--full-size", action="store_true",
                        help="models, versus, precision and predict at 768x1152x16 "
                             "instead of 192x288x16")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "report"),
                        help="report path without suffix (.md and .json are written). "
                             "Default bench/results/report")
    parser.add_argument("--timeout", type=float, default=3600,
                        help="seconds per script run (the scaling part runs two)")
    parser.add_argument("--gpu", action="store_true",
                        help="the gpu part (both kernel sets, fp32, bf16 and fp16 against the "
                             "bf16 matmul peak, 768x1152) first, then models, precision and "
                             "profile on the GPU (an error without one); default: CPU only, "
                             "GPUs hidden")
    parser.add_argument("--update", action="store_true",
                        help="keep the other parts of the existing report and replace only "
                             "those run now (each part's date and load are recorded)")
    parser.add_argument("--events-steps", type=int,
                        help="events: time steps of full-size masks. Default 2920 (a year)")
    parser.add_argument("--climatenet-steps", type=int,
                        help="events: the first steps ClimateNet runs on (and climseg-events "
                             "again, start-up included). Default 24")
    parser.add_argument("--climatenet", metavar="DIR",
                        help="events: a copy of github.com/andregraubner/ClimateNet (with the "
                             "numpy 2 fix, see bench/events.py) to compare with")
    args = parser.parse_args(argv)
    if args.gpu and "gpu" not in args.only:
        args.only = ["gpu", *args.only]

    command = "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv)
    previous = Path(args.output + ".json")
    kept = {}
    if args.update and previous.exists():
        results = json.loads(previous.read_text())
        other = other_machine(results["machine"], machine_info())
        if other:
            parser.error(f"--update: {previous} was measured on {other}; its parts and "
                         "this run's would be two machines' figures in one report. Run "
                         "the whole suite (without --update), or write elsewhere with --output")
        results.pop("goals", None)
        for part in args.only:
            kept[part] = _rows_at_other_size(part, results.pop(part, None), args.full_size)
            results["errors"].pop(part, None)
        results["settings"]["command"] += f"; then {command}"
    else:
        results = {"machine": machine_info(), "errors": {}, "load": {}, "seconds": {},
                   "settings": {"mode": ("quick" if args.quick else "full")
                                + (", full size" if args.full_size else ""),
                                "command": command}}
    for part in args.only:
        print(f"== {part} (load average {os.getloadavg()[0]:.2f})", flush=True)
        before, start = os.getloadavg(), time.perf_counter()
        started = machine_info()["date"]
        try:
            results[part] = run_part(part, args)
            if kept.get(part):
                results[part] = kept[part] + results[part]
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            results["errors"][part] = str(error)
            print(f"{part} failed: {error}", file=sys.stderr, flush=True)
        label = part
        if args.full_size and part in SIZED_PARTS:
            label = f"{part} ({FULL[0]}x{FULL[1]})"  # Next to the reduced-size run's entry.
        results["seconds"][label] = time.perf_counter() - start
        results["load"][label] = {"before": list(before), "after": list(os.getloadavg()),
                                  "date": started}
    results["machine"]["load_after"] = list(os.getloadavg())
    md, js = write_report(results, args.output + ".md", args.output + ".json")
    print(f"wrote {md} and {js}")
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
