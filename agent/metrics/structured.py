"""Numbers from JSON and YAML metrics files, and Hugging Face's trainer_state.json."""

from __future__ import annotations

import json
import logging
from typing import Any

import yaml

from onlooker.agent.metrics.base import Metric, complete_lines, from_float, number
from onlooker.agent.metrics.tabular import STEP_COLUMNS

log = logging.getLogger(__name__)

_MAX_LEAVES = 10_000
_STEP_KEYS = ("step", "global_step", "iteration", "iter", "epoch")
# trainer_state.json fields that are results; the rest (max_steps, logging_steps,
# train_batch_size...) are settings.
_TRAINER_VALUES = ("best_metric", "global_step")


def load(rel_path: str, text: str) -> Any:
    """The JSON or YAML document in `text`, or None when it is not (yet) complete."""
    low = rel_path.lower()
    if low.endswith((".yaml", ".yml")):
        # YAML parses a torn file happily ("loss: 0.12" of "loss: 0.1234"): keep only
        # the lines the writer finished.
        lines = complete_lines(text)
        try:
            return yaml.safe_load("\n".join(lines))
        except (yaml.YAMLError, ValueError, RecursionError):
            return None
    try:
        return json.loads(text)  # a torn JSON never parses; NaN/Infinity do
    except (ValueError, RecursionError):
        return None


def _leaf(value: Any, yaml_file: bool) -> tuple[float | None, str | None] | None:
    if isinstance(value, bool) or value is None:
        return None  # flags are not metrics
    if isinstance(value, (int, float)):
        return from_float(float(value))
    if yaml_file and isinstance(value, str):
        # YAML 1.1 reads 1e-3 (no dot) as a string; a number written so is still one.
        return number(value)
    return None


def _step_of(entry: dict[str, Any]) -> float | None:
    for name in _STEP_KEYS:
        value = entry.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            got = from_float(float(value))
            if got[0] is not None:
                return got[0]
    return None


def _records(prefix: str, items: list[Any], out: list[Metric], yaml_file: bool) -> None:
    """A list of dicts with a step each (a log history): a series per numeric key."""
    for entry in items:
        step = _step_of(entry)
        if step is None:
            continue
        for key, value in entry.items():
            if str(key).lower() in STEP_COLUMNS:
                continue
            got = _leaf(value, yaml_file)
            if got is not None:
                out.append(Metric(f"{prefix}{key}", step, got[0], got[1]))


def _flatten(obj: Any, key: str, prefix: str, out: list[Metric], yaml_file: bool) -> None:
    if len(out) >= _MAX_LEAVES:
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(v, f"{key}.{k}" if key else str(k), prefix, out, yaml_file)
        return
    if isinstance(obj, list):
        if obj and all(isinstance(e, dict) for e in obj) \
                and all(_step_of(e) is not None for e in obj):
            _records(f"{prefix}{key}." if key else prefix, obj, out, yaml_file)
            return
        leaves = [_leaf(e, yaml_file) for e in obj]
        if obj and all(got is not None for got in leaves):
            # A list of numbers (per-epoch losses): a series by position.
            for index, got in enumerate(leaves):
                assert got is not None
                out.append(Metric(f"{prefix}{key}", float(index), got[0], got[1]))
        return
    got = _leaf(obj, yaml_file)
    if got is not None and key:
        out.append(Metric(f"{prefix}{key}", None, got[0], got[1]))


def parse_document(rel_path: str, doc: Any) -> list[Metric]:
    """Numeric leaves flattened as `rel_path:a.b`; lists of numbers and of stepped
    records become series."""
    if not isinstance(doc, (dict, list)):
        return []
    out: list[Metric] = []
    _flatten(doc, "", f"{rel_path}:", out, rel_path.lower().endswith((".yaml", ".yml")))
    return out


def parse_trainer_state(rel_path: str, doc: Any) -> list[Metric]:
    """Hugging Face Trainer state: `log_history` as series by step, plus best_metric
    and global_step as final values."""
    if not isinstance(doc, dict):
        return []
    out: list[Metric] = []
    history = doc.get("log_history")
    if isinstance(history, list):
        _records(f"{rel_path}:", [e for e in history if isinstance(e, dict)], out, False)
    for name in _TRAINER_VALUES:
        got = _leaf(doc.get(name), False)
        if got is not None:
            out.append(Metric(f"{rel_path}:{name}", None, got[0], got[1]))
    return out


def numbers_only(doc: Any) -> bool:
    """A small document whose leaves are all numbers (bools and nulls aside)."""
    count = 0
    stack = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, (int, float)):
            count += 1
        else:
            return False
        if count > _MAX_LEAVES:
            return False
    return count > 0 and isinstance(doc, dict)
