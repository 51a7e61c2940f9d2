"""Scalar series from a run's console output (Guild's output-scalar convention, widened)."""

from __future__ import annotations

import re

from .base import Metric, complete_lines, decode, number

# Terminal control sequences (colours, cursor moves) are not text.
_ANSI = re.compile(r"\x1b(?:\[[0-9;?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
_KEY = r"[A-Za-z_][A-Za-z0-9_.\-/]*"
_VALUE = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf(?:inity)?)"
# `key=value` (spaces allowed around =) or `key: value` (a space after the colon, so
# that host:8080 and 12:30:45 are not metrics), the key maybe quoted as a printed dict
# shows it (Hugging Face's `{'loss': 0.52, 'epoch': 1.0}`); the value must end the token.
_PAIR = re.compile(
    rf"(?<![\w.\-/?&=:@#%+~])(['\"]?)({_KEY})\1(?:\s*=\s*|:\s+)({_VALUE})(?=$|[\s,;|)\]}}])",
    re.IGNORECASE,
)
# Log levels and the like print as `INFO: 3 files`; they are never metrics.
_NOT_KEYS = frozenset({"info", "warning", "warn", "error", "debug", "critical", "fatal",
                       "notice", "trace", "note", "pid", "port", "line", "version"})
# A line that is just `key value` (`loss 0.25`).
_BARE = re.compile(rf"\s*({_KEY})\s+({_VALUE})\s*", re.IGNORECASE)
# Keras prints `Epoch 3/10` on its own line before that epoch's numbers.
_EPOCH_HEADER = re.compile(r"\s*epoch\s+(\d+)(?:\s*/\s*\d+)?\s*:?\s*", re.IGNORECASE)
STEP_KEYS = ("step", "global_step", "iteration", "iter", "epoch")
_MAX_LINE = 4096


def _scalars(line: str) -> list[tuple[str, str]]:
    pairs = [(key, value) for _, key, value in _PAIR.findall(line)
             if key.lower() not in _NOT_KEYS]
    if pairs:
        return pairs
    bare = _BARE.fullmatch(line)
    if bare and bare.group(1).lower() not in _NOT_KEYS:
        return [(bare.group(1), bare.group(2))]
    return []


def parse_log(data: bytes) -> list[Metric]:
    """Metric series from output text: every `key=value`, `key: value` or `key value`
    scalar, with the step from a step/epoch key on the same line (or from a Keras
    `Epoch N/M` line just before). A key seen once without a step is a final value; a key seen
    several times without steps is a series by order of appearance; on a key that has
    steps elsewhere, the last value without one is the key's final value.
    """
    points: dict[str, list[tuple[float | None, float | None, str | None]]] = {}
    epoch: float | None = None
    for raw in complete_lines(decode(data)):
        # A progress bar rewrites its line with \r: the last state is what was shown.
        line = _ANSI.sub("", raw.rsplit("\r", 1)[-1])[:_MAX_LINE]
        if not line.strip():
            continue
        header = _EPOCH_HEADER.fullmatch(line)
        if header:
            epoch = float(header.group(1))
            continue
        pairs = _scalars(line)
        if not pairs:
            continue
        found = {key.lower(): value for key, value in pairs}
        step, epoch = epoch, None  # a Keras header numbers the one line that follows it
        for name in STEP_KEYS:
            got = number(found.get(name, ""))
            if got is not None and got[0] is not None:
                step = got[0]
                break
        for key, value in pairs:
            if key.lower() in STEP_KEYS:
                continue
            got = number(value)
            if got is not None:
                points.setdefault(key, []).append((step, got[0], got[1]))
    out: list[Metric] = []
    for key, series in points.items():
        stepped = any(step is not None for step, _, _ in series)
        if len(series) == 1 and not stepped:
            out.append(Metric(key, None, series[0][1], series[0][2]))
            continue
        final = None
        for index, (step, value, text) in enumerate(series):
            if stepped and step is None:
                final = (value, text)  # `Test accuracy: 0.96` after the epochs
                continue
            out.append(Metric(key, step if stepped else float(index), value, text))
        if final is not None:
            out.append(Metric(key, None, final[0], final[1]))
    return out
