"""Metrics from the files a run left: pure parsers that never run user code and never raise.

`parse(rel_path, data, kind=...)` reads a metrics file (JSON, YAML, CSV/TSV,
trainer_state.json, TensorBoard events) or a log; `parse_log(data)` reads console
output. Both return a list of `Metric` (key, step, value, text, wall).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from onlooker.agent.metrics import structured, tabular, tfevents
from onlooker.agent.metrics.base import Metric, decode
from onlooker.agent.metrics.logs import parse_log

__all__ = ["Limits", "Metric", "note_for", "parse", "parse_log"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """What is parsed. `max_bytes`: files of kind metrics or log larger are skipped;
    `sniff_max_bytes`: other outputs (a JSON or CSV not named as metrics) are looked
    at only under this size, and only when `sniff` is on."""

    max_bytes: int = 16 * 1024 * 1024
    sniff_max_bytes: int = 1024 * 1024
    sniff: bool = True


DEFAULT_LIMITS = Limits()
_TABLE_EXT = (".csv", ".tsv")
_DOC_EXT = (".json", ".yaml", ".yml")
# Kinds whose files may hold metrics without being named so (`out.json`, Keras's
# `CSVLogger("training.log")`); datasets are looked at only for a step column.
_SNIFFED_KINDS = ("other", "dataset", "log")


def _metrics_file(rel_path: str, text: str) -> list[Metric]:
    low = rel_path.lower()
    name = os.path.basename(low)
    if name == "trainer_state.json":
        return structured.parse_trainer_state(rel_path, structured.load(rel_path, text))
    if low.endswith(_TABLE_EXT):
        return tabular.parse_table(rel_path, text)
    if low.endswith(_DOC_EXT):
        return structured.parse_document(rel_path, structured.load(rel_path, text))
    # No telling extension (metrics/acc, scores.txt): a document, else a table.
    doc = structured.load(rel_path + ".json", text)
    if isinstance(doc, (dict, list)):
        return structured.parse_document(rel_path, doc)
    return tabular.parse_table(rel_path, text)


def _sniffed(rel_path: str, text: str, kind: str) -> list[Metric] | None:
    """Metrics of a file not named as metrics, when its content says so; else None."""
    low = rel_path.lower()
    if kind != "dataset" and (low.endswith(".json") or text.lstrip()[:1] == "{"):
        doc = structured.load(rel_path if low.endswith(".json") else rel_path + ".json", text)
        if structured.numbers_only(doc):
            return structured.parse_document(rel_path, doc)
        return None
    if tabular.looks_like_log(rel_path, text):
        return tabular.parse_table(rel_path, text)
    return None


def parse(rel_path: str, data: bytes, *, kind: str,
          limits: Limits = DEFAULT_LIMITS) -> list[Metric]:
    """The metrics in a file a run wrote, [] when it holds none (or cannot be read yet).

    `rel_path` is the project-relative path (it prefixes keys: `summary.json:test.f1`);
    `kind` is the asset kind from agent/rules/kinds.py. Never raises.
    """
    try:
        return _parse(rel_path, data, kind, limits)
    except Exception:  # a parser bug must not take the assembler down
        log.exception("metrics: cannot parse %s; skipped", rel_path)
        return []


def _parse(rel_path: str, data: bytes, kind: str, limits: Limits) -> list[Metric]:
    if kind in ("metrics", "log") and len(data) > limits.max_bytes:
        log.info("metrics: %s is %d bytes, over the %d-byte limit; not parsed",
                 rel_path, len(data), limits.max_bytes)
        return []
    if tfevents.is_event_file(rel_path):
        return tfevents.parse_events(rel_path, data) if kind == "metrics" else []
    if b"\0" in data[:4096]:
        return []  # binary: no text format here
    if kind == "metrics":
        return _metrics_file(rel_path, decode(data))
    if kind == "log":
        text = decode(data)
        table = _sniffed(rel_path, text, kind) if limits.sniff else None
        return table if table is not None else parse_log(data)
    if kind in _SNIFFED_KINDS and limits.sniff and len(data) <= limits.sniff_max_bytes:
        return _sniffed(rel_path, decode(data), kind) or []
    return []


def note_for(rel_path: str, kind: str) -> str | None:
    """A sentence for the person when a metrics file was seen but cannot be read here
    (TensorBoard events without the tensorboard package); None otherwise."""
    if kind == "metrics" and tfevents.is_event_file(rel_path) and not tfevents.available():
        return tfevents.MISSING_NOTE
    return None
