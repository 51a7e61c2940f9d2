"""Scalars from TensorBoard event files, when the optional `tensorboard` package is there.

The record framing (TFRecord) is read here; each record is decoded with the
tensorboard package's own `Event` protobuf, so nothing of the format is guessed.
"""

from __future__ import annotations

import logging
import os
import struct
from typing import Any

from onlooker.agent.metrics.base import Metric, from_float

log = logging.getLogger(__name__)

MISSING_NOTE = ("TensorBoard event files were seen but not read: install the tensorboard "
                "package (pip install tensorboard) for their scalars")
_warned = False
_CRC_TABLE: list[int] = []


def _event_class() -> Any:
    try:
        from tensorboard.compat.proto import event_pb2
    except Exception:  # ImportError, or a protobuf version clash inside it
        return None
    return event_pb2.Event


def available() -> bool:
    """Whether the tensorboard package can decode event records here."""
    return _event_class() is not None


def is_event_file(rel_path: str) -> bool:
    return os.path.basename(rel_path).startswith("events.out.tfevents")


def _crc32c(data: bytes) -> int:
    if not _CRC_TABLE:
        for n in range(256):
            c = n
            for _ in range(8):
                c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
            _CRC_TABLE.append(c)
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def records(data: bytes) -> list[bytes]:
    """The complete records of a TFRecord stream; stops at a torn or misframed one.

    The 8-byte length is checked against its CRC (misframing would read garbage);
    the payload CRC is not (pure-Python CRC32C over megabytes costs too much) but a
    damaged payload fails to decode and is skipped.
    """
    out = []
    pos = 0
    while pos + 12 <= len(data):
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        if _masked(_crc32c(header)) != header_crc:
            log.debug("event record at byte %d is misframed; the rest is ignored", pos)
            break
        end = pos + 12 + length + 4
        if end > len(data):
            break  # the writer has not finished this record
        out.append(data[pos + 12:pos + 12 + length])
        pos = end
    return out


def _single(value: float) -> float:
    """A float32 as the shortest decimal that is the same float32 (0.1, not 0.100000001)."""
    packed = struct.pack("<f", value)
    for digits in range(6, 10):
        short = float(f"{value:.{digits}g}")
        if struct.pack("<f", short) == packed:
            return short
    return value


def _tensor_scalar(tensor: Any) -> float | None:
    if len(tensor.tensor_shape.dim) != 0:
        return None
    for field in ("float_val", "double_val", "int_val", "int64_val"):
        values = getattr(tensor, field)
        if len(values) == 1:
            return _single(values[0]) if field == "float_val" else float(values[0])
    content = tensor.tensor_content
    formats = {1: "<f", 2: "<d", 3: "<i", 9: "<q"}  # DT_FLOAT, DT_DOUBLE, DT_INT32, DT_INT64
    fmt = formats.get(tensor.dtype)
    if fmt and len(content) == struct.calcsize(fmt):
        got = float(struct.unpack(fmt, content)[0])
        return _single(got) if fmt == "<f" else got
    return None


def parse_events(rel_path: str, data: bytes) -> list[Metric]:
    """Scalar summaries as series keyed `<folder>:<tag>` by step, with wall times."""
    global _warned
    event_cls = _event_class()
    if event_cls is None:
        if not _warned:
            _warned = True
            log.warning("%s (first seen: %s)", MISSING_NOTE, rel_path)
        return []
    folder = os.path.dirname(rel_path) or "."
    scalar_tags: set[str] = set()
    out: list[Metric] = []
    for record in records(data):
        try:
            event = event_cls.FromString(record)
        except Exception:  # protobuf's DecodeError: a damaged record
            continue
        if not event.HasField("summary"):
            continue
        for value in event.summary.value:
            if value.HasField("simple_value"):  # TF1, PyTorch and tensorboardX writers
                number: float | None = _single(value.simple_value)
            elif value.HasField("tensor"):  # TF2: metadata only on a tag's first value
                if value.metadata.plugin_data.plugin_name == "scalars":
                    scalar_tags.add(value.tag)
                if value.tag not in scalar_tags:
                    continue
                number = _tensor_scalar(value.tensor)
            else:
                continue
            if number is None:
                continue
            got = from_float(number)
            out.append(Metric(f"{folder}:{value.tag}", float(event.step), got[0], got[1],
                              event.wall_time or None))
    return out
