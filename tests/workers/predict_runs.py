"""Runs climseg-predict several times in one horovodrun launch, for tests/test_predict.py.

    horovodrun -np 2 -H localhost:2 --gloo python predict_runs.py RUNS.json

RUNS.json maps a run's name to its arguments; every rank runs
`inference.predict.main` on each in turn (one TensorFlow start-up per rank
for all of them). Rank 0 prints `climseg-test: run NAME` before a run, and
every rank `climseg-test: NAME exited STATUS` after it; the launch fails if
a run does.
"""

import json
import os
import sys

from inference.predict import main


def run_all(path):
    with open(path) as f:
        runs = json.load(f)
    rank = os.environ.get("HOROVOD_RANK", "0")
    failed = False
    for name, argv in runs.items():
        if rank == "0":  # predict's own lines come from rank 0 only
            print(f"climseg-test: run {name}", flush=True)
        status = main(argv)
        print(f"climseg-test: {name} exited {status}", flush=True)
        failed |= status != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run_all(sys.argv[1]))
