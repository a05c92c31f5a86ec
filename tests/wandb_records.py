"""Reads the records of an offline W&B run file (`run-<id>.wandb`), for tests.

wandb 0.31 ships no reader. The file is a 7-byte header (":W&B", a key,
a version) followed by a LevelDB-style log: 32 KiB blocks of chunks, each a
7-byte header (CRC32, little-endian length, type: 1 full, 2 first, 3 middle,
4 last) and a piece of a serialized `wandb_internal_pb2.Record`.
"""

import json
import struct

BLOCK = 32768
CHUNK_HEADER = 7


def read_records(path):
    """Yields the `Record` protobufs of a `.wandb` file in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    with open(path, "rb") as f:
        buf = f.read()
    if buf[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file (header {buf[:4]!r})")
    pos, pending = 7, b""
    while pos + CHUNK_HEADER <= len(buf):
        left = BLOCK - pos % BLOCK
        if left < CHUNK_HEADER:  # block trailer: zero padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", buf[pos:pos + CHUNK_HEADER])
        data = buf[pos + CHUNK_HEADER:pos + CHUNK_HEADER + length]
        pos += CHUNK_HEADER + length
        if kind == 0:
            continue
        pending = data if kind in (1, 2) else pending + data
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            yield record


def run_contents(path):
    """Returns `(config, history)`: config values and the list of logged dicts."""
    config, history = {}, []
    for record in read_records(path):
        kind = record.WhichOneof("record_type")
        updates = {"run": lambda r: r.run.config.update, "config": lambda r: r.config.update}
        if kind in updates:
            for item in updates[kind](record):
                config[item.key] = json.loads(item.value_json)
        elif kind == "history":
            history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                            for item in record.history.item})
    return config, history
