"""Read the history a W&B run logged from its local transaction log (``run-<id>.wandb``), offline.

wandb 0.31 writes every run, online or offline, to ``<run dir>/run-<id>.wandb`` and ``wandb sync``
uploads that file; its Python reader (``wandb.sdk.internal.datastore``) is gone, and ``wandb.Api``
needs a server. The file is a LevelDB-style log (https://github.com/google/leveldb/blob/main/doc/log_format.md):
a 7-byte header (``:W&B``, magic ``0xBEE1``, version), then 32 KiB blocks of chunks
``crc32 (4) | length (2) | type (1) | data`` where type 1 is a whole record and 2/3/4 its
first/middle/last pieces; each record is wandb's own protobuf ``wandb_internal_pb2.Record``.
advtune reads it to continue a resumed run without logging its steps twice, and the tests read
back what was logged through it. A file cut short by a crash yields the records before the cut.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any, Iterable, Iterator

__all__ = ["read_records", "history_rows", "last_logged_steps", "run_files"]

_FILE_HEADER = 7
_BLOCK = 32768
_CHUNK_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def read_records(path: str | Path) -> Iterator[Any]:
    """The ``Record`` protobufs of a ``.wandb`` file, in order; stops at a damaged or cut-short chunk."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if not data.startswith(b":W&B"):
        raise ValueError(f"{path} is not a W&B transaction log (no ':W&B' header)")
    position, pieces = _FILE_HEADER, []
    while position + _CHUNK_HEADER <= len(data):
        left = _BLOCK - position % _BLOCK
        if left < _CHUNK_HEADER:  # a block's tail too short for a chunk header is zero padding
            position += left
            continue
        checksum, length, kind = struct.unpack("<IHB", data[position:position + _CHUNK_HEADER])
        end = position + _CHUNK_HEADER + length
        if kind == 0 or end > len(data) or zlib.crc32(data[position + 6:end]) != checksum:
            return
        pieces.append(data[position + _CHUNK_HEADER:end])
        position = end
        if kind in (_FULL, _LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(pieces))
            pieces = []
            yield record


def history_rows(path: str | Path) -> list[dict[str, Any]]:
    """Every ``run.log`` row of the file as ``{key: value}`` (``_step`` included), values decoded from JSON;
    a logged image is a dict (``{"_type": "image-file", "path": "media/images/...", ...}``)."""
    rows = []
    for record in read_records(path):
        if record.WhichOneof("record_type") != "history":
            continue
        row: dict[str, Any] = {}
        for item in record.history.item:
            if item.key:
                row[item.key] = json.loads(item.value_json)
            else:  # a dict value (an image) is written one nested key per field
                node = row
                for part in item.nested_key[:-1]:
                    node = node.setdefault(part, {})
                node[item.nested_key[-1]] = json.loads(item.value_json)
        rows.append(row)
    return rows


def last_logged_steps(paths: Iterable[str | Path]) -> dict[str, int]:
    """``{key: the highest _step it was logged at}`` over the files' history rows."""
    last: dict[str, int] = {}
    for path in paths:
        for row in history_rows(path):
            step = int(row.get("_step", -1))
            for key in row:
                if not key.startswith("_"):
                    last[key] = max(last.get(key, -1), step)
    return last


def run_files(wandb_dir: str | Path, run_id: str) -> list[Path]:
    """The transaction logs of run ``run_id`` under a ``wandb`` folder, oldest segment first."""
    return sorted(Path(wandb_dir).glob(f"*run-*-{run_id}*/run-{run_id}.wandb"), key=lambda p: p.stat().st_mtime)
