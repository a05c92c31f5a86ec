"""Where the training time of a zoo model goes, from TensorFlow's profiler.

Builds and compiles a model as bench/models.py does (fp32, SGD, weighted
cross-entropy), warms up with training steps, then runs `--steps` steps under
`tf.profiler.experimental` (host tracer) and reads the trace it wrote (the
`*.xplane.pb` XSpace). On the host plane `/host:CPU`, every TensorFlow op the
executor runs is an event named `op_name:OpType` on the line of the thread
that ran it (`tf_Compute/...`, the inter-op pool, which hands the op's inner
loops to the intra-op `tf_numa_-1_Eigen/...` threads, whose events are only
zero-length thread-pool markers). Each profiled step is a `climseg_train_step`
event on the `python` line.

Only op events that start inside a step count. An op's time is its self time:
its duration minus that of op events nested inside it on the same thread, and
call or control-flow ops (`PartitionedCall`, `While`, ...) count nothing,
since the ops of their body are traced on their own. Op time is given to the
Keras layer of the op's name scope (`deeplabv3plus/aspp/.../Conv2D` forward,
`gradient_tape/deeplabv3plus/aspp/...` backward), with the path of the layers
nested in it (`decoder_tail/decoder_fuse_conv1`), to the loss or the
optimizer, or else to "(other)". With more than one inter-op thread, ops run
in parallel, so the summed op time of a step can exceed its wall time; the
script prints both, and the time during which at least one op ran.

    .venv/bin/python bench/profile.py --model deeplabv3plus --steps 3 --warmup 1
    .venv/bin/python bench/profile.py --model deeplabv3plus --model-option output_stride=16
    .venv/bin/python bench/profile.py --model tiramisu --trace-dir /tmp/trace  # for TensorBoard

Not a test: deeplabv3plus at 192x288, batch 2, takes minutes on two cores.
"""

import argparse
import ast
import bisect
import collections
import re
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, this file's directory comes first on sys.path, where this
# file would shadow the standard library's `profile` (imported by cProfile).
if sys.path and Path(sys.path[0] or ".").resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)
else:
    sys.path.insert(0, str(ROOT))

# isort: off
import climseg_tf  # noqa: E402,F401  (first: selects Keras 2 and oneDNN before TensorFlow loads)
import tensorflow as tf  # noqa: E402
from tensorflow.tsl.profiler.protobuf import xplane_pb2  # noqa: E402

import zoo  # noqa: E402
from bench.models import (  # noqa: E402
    add_step_arguments,
    compiled_model,
    random_batch,
    select_device,
)
# isort: on

STEP_EVENT = "climseg_train_step"
HOST_PLANE = "/host:CPU"
# A fit step's IteratorGetNext runs asynchronously, traced as this event on a
# line of its own: its duration is the time the step waits for its batch.
GET_NEXT_EVENT = "IteratorGetNextOp::DoCompute"
BACKWARD_SCOPE = "gradient_tape/"
# Ops whose duration is that of a function body or loop: the body's ops are
# traced as events of their own, so counting these too would count twice.
CALL_OPS = frozenset({"PartitionedCall", "StatefulPartitionedCall", "While", "StatelessWhile",
                      "If", "StatelessIf", "Case", "StatelessCase", "RemoteCall", "For"})
_OP_TYPE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Grappler's Conv2D+BiasAdd(+activation) fusion (oneDNN's `_MklNativeFusedConv2D`).
_FUSED_CONV = re.compile(r"_\w*FusedConv2D")
# Coarse regions by layer name; rows of the layer table outside every region
# (loss, optimizer, other) go to the last group.
REGIONS = {
    "deeplabv3plus": (("encoder", r"conv1_.*|pool1_.*|conv[2-5]_.*|post_.*"), ("aspp", r"aspp"),
                      ("decoder", r"decoder_.*")),
    "tiramisu": (("down path", r"stem_.*|down\d+_.*"), ("bottleneck", r"bottleneck_.*"),
                 ("up path", r"up\d+_.*|logits_.*")),
}
REST_REGION = "loss/optimizer/other"


def model_option(text):
    """`KEY=VALUE` of --model-option as (key, value); VALUE a Python literal or a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(
            f"--model-option expects KEY=VALUE with KEY a builder argument; received {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def profile_steps(model, data, steps, warmup, logdir):
    """Runs `warmup` training steps, then `steps` under the profiler; returns the .xplane.pb.

    The steps are those of `model.fit` on `data` (a `tf.data.Dataset` of
    batches, at least `warmup + steps` of them), as training runs them (in a
    loop of `train_on_batch` calls, about half the steps took ~1 s more,
    outside any TF op; see docs/PERFORMANCE.md). A callback starts the
    profiler after the warm-up and wraps each profiled step in a step event.
    """
    options = tf.profiler.experimental.ProfilerOptions(host_tracer_level=2, python_tracer_level=0,
                                                       device_tracer_level=0)

    class Profiled(tf.keras.callbacks.Callback):
        trace, started = None, False

        def on_train_batch_begin(self, step, logs=None):
            if step == warmup:
                tf.profiler.experimental.start(str(logdir), options=options)
                self.started = True
            if step >= warmup:
                self.trace = tf.profiler.experimental.Trace(STEP_EVENT, step_num=step - warmup,
                                                            _r=1)
                self.trace.__enter__()

        def on_train_batch_end(self, step, logs=None):
            if self.trace is not None:
                self.trace.__exit__(None, None, None)
                self.trace = None

    profiled = Profiled()
    try:
        model.fit(data, steps_per_epoch=warmup + steps, epochs=1, verbose=0,
                  callbacks=[profiled])
    finally:
        if profiled.started:
            tf.profiler.experimental.stop()
    traces = sorted(Path(logdir).glob("plugins/profile/*/*.xplane.pb"))
    if not traces:
        raise RuntimeError(f"the profiler wrote no *.xplane.pb under {logdir}")
    return traces[-1]


def scope_names(model):
    """The name scopes of a compiled model's ops: model, loss, optimizer and layers.

    `layers` maps each top-level layer to the names of the layers nested in
    it (an ASPP's branches, a composed decoder's convolutions), whose ops run
    in name scopes of those names.
    """
    return {"model": model.name, "loss": model.loss.name, "optimizer": model.optimizer.name,
            "layers": {layer.name: {sub.name for sub in layer.submodules
                                    if isinstance(sub, tf.keras.layers.Layer)}
                       for layer in model.layers}}


def _layer(op_name, names):
    """(row, direction) of an op: its layer path, or (loss), (optimizer), (other).

    The row of `model/aspp/branch_1/conv/Conv2D` is `aspp/branch_1/conv`: the
    scopes under the model that are the top-level layer and layers nested in it.
    """
    direction = "backward" if op_name.startswith(BACKWARD_SCOPE) else "forward"
    # A gradient taken inside a gradient (zoo.recompute's recomputed batch norm)
    # is named "gradient_tape/gradient_tape/<model>/...": backward, all of it.
    while op_name.startswith(BACKWARD_SCOPE):
        op_name = op_name.removeprefix(BACKWARD_SCOPE)
    scopes = op_name.split("/")
    if scopes[0] == names["model"]:
        if len(scopes) < 3:
            return "(model)", direction
        row, nested = [scopes[1]], names["layers"].get(scopes[1], set())
        for scope in scopes[2:-1]:  # The last one is the op's own name.
            if scope not in nested:
                break
            row.append(scope)
        return "/".join(row), direction
    if scopes[0] == names["loss"]:
        return "(loss)", direction
    if scopes[0] == names["optimizer"]:
        return "(optimizer)", direction
    return "(other)", direction


def read_trace(path, names):
    """Op self time of the profiled steps, by layer and op type.

    Args:
        path: an `*.xplane.pb` written by `profile_steps`.
        names: `scope_names` of the profiled model.

    Returns:
        A dict: `steps` (wall ms of each step event), `threads` (lines with
        counted ops), `op_ms` (summed self time, all steps), `busy_ms` (time
        during which at least one op ran, all steps), `events`, `call_events`
        (call ops not counted), `layers` {layer: {"forward", "backward"} ms},
        `op_types` {type: [calls, ms]}, `fused_conv` {op name: ms} of the fused
        convolutions, `get_next_ms` (time in the step's `IteratorGetNext`:
        waiting for its input batch), all summed over the steps.

    Raises:
        RuntimeError: no host plane or no step event in the trace.
    """
    space = xplane_pb2.XSpace()
    space.ParseFromString(Path(path).read_bytes())
    host = next((p for p in space.planes if p.name == HOST_PLANE), None)
    if host is None:
        raise RuntimeError(f"no {HOST_PLANE} plane in {path}; planes: "
                           f"{[p.name for p in space.planes]}")

    def events(line):
        for event in line.events:
            start = line.timestamp_ns * 1000 + event.offset_ps
            yield start, start + event.duration_ps, host.event_metadata[event.metadata_id]

    steps = sorted((start, end) for line in host.lines for start, end, meta in events(line)
                   if meta.name == STEP_EVENT)
    if not steps:
        raise RuntimeError(f"no {STEP_EVENT!r} step event in {path}")
    starts = [s for s, _ in steps]

    def in_step(start):
        i = bisect.bisect_right(starts, start) - 1
        return i >= 0 and start <= steps[i][1]

    layers = collections.defaultdict(lambda: {"forward": 0.0, "backward": 0.0})
    op_types = collections.defaultdict(lambda: [0, 0.0])
    fused = collections.Counter()
    intervals, threads, counted, calls, get_next = [], set(), 0, 0, 0
    for line in host.lines:
        ops = []
        for start, end, meta in events(line):
            if meta.name == GET_NEXT_EVENT and in_step(start):
                get_next += end - start
                continue
            name, _, op_type = meta.name.rpartition(":")
            # TF op events are "op_name:OpType" with the type as display name;
            # framework events ("ExecutorState::Process", "Iterator::...") are not.
            if name and op_type == meta.display_name and _OP_TYPE.fullmatch(op_type) \
                    and in_step(start):
                ops.append([start, end, name, op_type, end - start])
        # Self time: subtract each op from the op it is nested in on this thread.
        ops.sort(key=lambda op: (op[0], -op[1]))
        stack = []
        for op in ops:
            while stack and stack[-1][1] <= op[0]:
                stack.pop()
            if stack:
                stack[-1][4] -= min(op[1], stack[-1][1]) - op[0]
            stack.append(op)
        for start, end, name, op_type, self_ps in ops:
            if op_type in CALL_OPS:
                calls += 1
                continue
            ms = self_ps / 1e9
            layer, direction = _layer(name, names)
            layers[layer][direction] += ms
            op_types[op_type][0] += 1
            op_types[op_type][1] += ms
            if _FUSED_CONV.fullmatch(op_type):
                fused[name] += ms
            intervals.append((start, end))
            threads.add(line.name)
            counted += 1
    busy, reach = 0, None
    for start, end in sorted(intervals):
        if reach is None or start > reach:
            busy, reach = busy + end - start, end
        elif end > reach:
            busy, reach = busy + end - reach, end
    return {"steps": [(end - start) / 1e9 for start, end in steps], "threads": len(threads),
            "op_ms": sum(ms for _, ms in op_types.values()), "busy_ms": busy / 1e9,
            "events": counted, "call_events": calls, "layers": dict(layers),
            "op_types": dict(op_types), "fused_conv": dict(fused), "get_next_ms": get_next / 1e9}


def regions(model_name, layers):
    """Op ms per coarse region of `model_name` (None when it has none)."""
    if model_name not in REGIONS:
        return None
    totals = {region: 0.0 for region, _ in REGIONS[model_name]}
    totals[REST_REGION] = 0.0
    for layer, ms in layers.items():
        top = layer.split("/")[0]
        region = next((region for region, pattern in REGIONS[model_name]
                       if re.fullmatch(pattern, top)), REST_REGION)
        totals[region] += ms["forward"] + ms["backward"]
    return totals


def print_report(result, model_name, top):
    """Prints the step time, the layer and op type tables, and the regions."""
    n = len(result["steps"])
    # Op times are means over the steps: compare them with the mean step.
    mean_ms = sum(result["steps"]) / n
    op_ms, busy_ms = result["op_ms"] / n, result["busy_ms"] / n
    print(f"step wall time: {statistics.median(result['steps']):.1f} ms (median of {n} profiled "
          f"steps: {', '.join(f'{s:.1f}' for s in result['steps'])} ms; mean {mean_ms:.1f} ms)")
    threads = f"{result['threads']} thread" + ("s" if result["threads"] > 1 else "")
    if op_ms > 1.001 * busy_ms:
        parallel = (f"ops ran on {threads} and overlapped, {op_ms / busy_ms:.2f} ops at a time "
                    "on average: the summed op time can exceed the wall time")
    else:
        parallel = f"ops ran on {threads} without overlapping"
    print(f"op time: {op_ms:.1f} ms per step (mean) = {op_ms / mean_ms:.2f} x the mean wall time "
          f"({parallel}); at least one op running {busy_ms:.1f} ms per step (mean) = "
          f"{100 * busy_ms / mean_ms:.1f}% of the wall time")
    print(f"counted: {result['events'] / n:.0f} op events per step (self time: minus op events "
          f"nested in them on the same thread); {result['call_events'] / n:.0f} call or "
          "control-flow op events per step not counted (their body is)")

    total = result["op_ms"]
    layers = sorted(result["layers"].items(),
                    key=lambda kv: -(kv[1]["forward"] + kv[1]["backward"]))
    shown, rest = layers[:top], layers[top:]
    if rest:
        shown.append((f"({len(rest)} other layers)",
                      {d: sum(ms[d] for _, ms in rest) for d in ("forward", "backward")}))
    print()
    print(f"layers by op time, ms per step (mean of {n}), top {top} of {len(layers)}; forward: "
          f"ops outside {BACKWARD_SCOPE} (for (optimizer): the update), backward: ops under it:")
    width = max(32, *(len(layer) for layer, _ in shown))
    print(f"{'layer':{width}s} | {'forward ms':>10s} | {'backward ms':>11s} | {'total ms':>9s} | "
          f"{'% op time':>9s} | {'cumulative %':>12s}")
    cumulative = 0.0
    for layer, ms in shown:
        both = ms["forward"] + ms["backward"]
        cumulative += 100 * both / total
        print(f"{layer:{width}s} | {ms['forward'] / n:10.1f} | {ms['backward'] / n:11.1f} | "
              f"{both / n:9.1f} | {100 * both / total:8.1f}% | {cumulative:11.1f}%")

    types = sorted(result["op_types"].items(), key=lambda kv: -kv[1][1])
    shown, rest = types[:top], types[top:]
    if rest:
        shown.append((f"({len(rest)} other op types)",
                      [sum(c for c, _ in (v for _, v in rest)),
                       sum(ms for _, ms in (v for _, v in rest))]))
    print()
    print(f"op types by op time, ms per step (mean of {n}), top {top} of {len(types)}:")
    print(f"{'op type':40s} | {'calls':>6s} | {'ms':>9s} | {'% op time':>9s} | "
          f"{'cumulative %':>12s}")
    cumulative = 0.0
    for op_type, (count, ms) in shown:
        cumulative += 100 * ms / total
        print(f"{op_type:40s} | {count / n:6.0f} | {ms / n:9.1f} | {100 * ms / total:8.1f}% | "
              f"{cumulative:11.1f}%")

    # A fused op is named after its last node: when that is an activation or a
    # residual add, the conv's forward time counts to that layer.
    renamed = {name: ms for name, ms in result["fused_conv"].items()
               if not re.fullmatch(r"(BiasAdd|Conv2D)(_\d+)?", name.rpartition("/")[2])}
    if renamed:
        example = max(renamed, key=renamed.get)
        print()
        print(f"note: {sum(renamed.values()) / n:.1f} ms per step of fused convolutions "
              "(grappler's remapper: Conv2D with the BiasAdd, Add or activation after it) are "
              "named after their last node, so they count to that layer, not the conv's "
              f"(largest: {example}, {renamed[example] / n:.1f} ms)")

    by_region = regions(model_name, result["layers"])
    if by_region:
        print()
        print("regions: " + ", ".join(f"{region} {100 * ms / total:.1f}% ({ms / n:.1f} ms)"
                                      for region, ms in by_region.items()))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="deeplabv3plus", choices=list(zoo.MODELS))
    add_step_arguments(parser)
    parser.set_defaults(steps=3, warmup=1)
    parser.add_argument("--model-option", type=model_option, action="append", default=[],
                        metavar="KEY=VALUE",
                        help="builder argument, e.g. output_stride=16 (repeatable)")
    parser.add_argument("--trace-dir", help="keep the trace here (for TensorBoard). "
                        "Default: a temporary directory, removed")
    parser.add_argument("--top", type=int, default=25, help="rows of each table. Default 25")
    args = parser.parse_args(argv)
    select_device(args.device)
    options = dict(args.model_option)
    if "input_shape" in options:
        parser.error("--model-option input_shape: use --height, --width and --channels")
    if args.steps < 1 or args.top < 1:
        parser.error(f"--steps and --top must be at least 1; received {args.steps}, {args.top}")

    input_shape = (args.height, args.width, args.channels)
    described = ", ".join(f"{k}={v!r}" for k, v in options.items()) or "builder defaults"
    print(f"TensorFlow {tf.__version__}, {args.model} ({described}), input {input_shape}, "
          f"batch {args.batch}, fp32, {args.steps} profiled steps after {args.warmup}", flush=True)
    try:
        model = compiled_model(args.model, input_shape, **options)
    except (TypeError, ValueError) as error:
        parser.error(f"--model {args.model}, input {input_shape}, --model-option "
                     f"{described}: {error}")
    with tempfile.TemporaryDirectory(prefix="climseg-profile-") as scratch:
        logdir = Path(args.trace_dir or scratch)
        data = tf.data.Dataset.from_tensors(random_batch(args.batch, input_shape)).repeat()
        trace = profile_steps(model, data, args.steps, args.warmup, logdir)
        result = read_trace(trace, scope_names(model))
    if args.trace_dir:
        print(f"trace: {trace}")
    print_report(result, model.name, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
