"""Reads and writes netCDF from many threads at once, as the pipelines do.

`python netcdf_threads.py DIR`: reads every time step of the model-output
files in DIR through `data.layouts.read_sample` from six threads (with two
files kept open, so that handles are evicted and reopened under the
readers) while a seventh writes mask files, and checks every value against
a serial read. The HDF5 library in the netCDF4 package is not thread-safe:
without climseg's lock this process dies of a segmentation fault.
"""

import os
import sys
import threading

import numpy as np

from data import layouts, predictions
from data.model_output import ModelOutput

CHANNELS = [0, 1, 2, 7]


def main(directory):
    paths = sorted(os.path.join(directory, n) for n in os.listdir(directory) if n.endswith(".nc"))
    steps = [(p, t) for p in paths for t in range(3)]
    expected = {key: layouts.read_sample(key[0], channels=CHANNELS, time=key[1])
                for key in steps}
    layouts._KEEP_OPEN = 2
    failures = []

    def read(k):
        try:
            for _ in range(10):
                for key in steps[k::6]:
                    data, labels = layouts.read_sample(key[0], channels=CHANNELS, time=key[1])
                    if not (np.array_equal(data, expected[key][0])
                            and np.array_equal(labels, expected[key][1])):
                        failures.append(f"{key}: values differ from the serial read")
        except Exception as err:  # noqa: BLE001 - reported below
            failures.append(repr(err))

    def write():
        out = os.path.join(directory, "masks")
        os.makedirs(out, exist_ok=True)
        masks = np.zeros((3, *expected[steps[0]][1].shape), np.uint8)
        try:
            for n in range(20):
                with ModelOutput(paths[n % len(paths)], channels=CHANNELS) as source:
                    predictions.write_masks(source, out, masks)
        except Exception as err:  # noqa: BLE001 - reported below
            failures.append(repr(err))

    threads = [threading.Thread(target=read, args=(k,)) for k in range(6)]
    threads.append(threading.Thread(target=write))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print("\n".join(failures) or f"read {len(steps) * 10} steps in 6 threads while writing")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
