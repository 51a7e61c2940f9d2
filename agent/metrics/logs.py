"""Scalar series from a run's console output and log files.

What is read, line by line (a line rewritten with carriage returns counts as what was
last shown, terminal colours and backspaces dropped):

* `key=value` and `key: value` anywhere in a line, keys maybe quoted as a printed dict
  shows them (Hugging Face Trainer's `{'loss': 0.69, 'epoch': 1.0}`, and its newer
  `{'loss': '0.69', 'epoch': '1'}`), and a line that is just `key value` pairs
  (`epoch 3 loss 0.25`);
* Keras progress lines (`375/375 [===] - 2s 4ms/step - loss: 0.31 - val_loss: 0.29`),
  numbered by the `Epoch 3/10` line printed before them;
* tqdm and Lightning progress bars: the postfix (`[00:01<00:00, 20.1it/s, loss=0.5]`),
  never the bar's counts or rate; a bar labelled `Epoch N` gives one point per epoch,
  its last state, since Lightning redraws one bar for the whole fit;
* `|`-separated tables whose fields are a name of one or more words and its number
  (`| epoch 3 | valid loss 5.58 |`, fairseq's `epoch 001 | loss 7.8 | ppl 129`), and
  two-cell rows (`│ test_acc │ 0.85 │`, Lightning's test table);
* the W&B run summary (`wandb: Run summary:` then `wandb:   accuracy 0.91`): final
  values. W&B's other lines (history sparklines, paths, hints) are its own messages.

A log record's prefix is not part of its message and is read past first, for every
form above: timestamps (`2026-12-01 10:00:00,123`, ISO, `10:00:00`), level names,
logger names, `[...]` groups and source locations, joined by ` - `, ` | `, `: ` or
spaces, as Python's logging (`INFO:root:`, `%(asctime)s %(levelname)s`), Hydra
(`[time][name][INFO] - `), loguru (`time | INFO | mod:func:42 - `) and absl/glog
(`I1201 10:00:00.123456 1234 train.py:42] `) write them. A prefix holds a timestamp
or a level, or it is none; its digits are never a metric or a step.

The step is a step/epoch/iteration key or label on the same line (`epoch=3`,
`Epoch 3:`, `| epoch 3 |`, `Iteration 3, loss = ...`), else the Keras header.

What is never a metric, and why:

* Diagnostics: Python warnings (`file.py:12: Category: message` through the source line
  Python prints under it; Lightning's `file.py:12: message`), tracebacks and exception
  lines, and log records at WARNING level or above. They quote code and settings
  (`max_iter=5`, `num_workers=7`) rather than report results.
* Code and object dumps: text in backquotes (`` `max_epochs=3` ``), constructor-style
  reprs (`Namespace(lr=0.1, epochs=3)`, a dataclass), a printed dict holding a
  non-number (`{'C': 1.0, 'solver': 'lbfgs'}`) unless it has a step key (a tagged
  metrics record), and a block of two or more YAML-shaped `key: value` lines (an
  OmegaConf dump, scipy's `OptimizeResult`) that holds a non-number, or is nested and
  names no measurement. They are the inputs of a run, recorded as params elsewhere.
* Quantities with a unit or noun after them (`using: 0 TPU cores`, `time: 5 s`) and
  numbers with thousands separators (`Total params: 50,890`): banners and sizes, not
  measurements.
* Counts and settings, decided per key over the whole log: a key whose name is not a
  measurement (loss, acc, f1, ... see _MEASURES) and whose values are whole numbers
  that never change or never have a step (`rows train=480`, `n_samples: 1000`,
  Lightning's `v_num=0`, Keras's `Total params: 178`), or whose one value was printed
  only before the first training step (`lr: 0.001` echoed at start-up). A measurement
  changes as training goes, or is printed as a result. For the same reason a value
  without a step printed before training is not the final value of a key that has
  steps.

Keys are stable across runs of the same code: a path part up to a per-run folder (a
Hydra `outputs/2026-12-01/20-33-10/`, `checkpoint-20/`, a TensorBoard
`runs/Dec01_20-33-10_host/`, a pid or timestamp) is dropped from a key.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache
from typing import NamedTuple

from onlooker.agent.metrics.base import Metric, complete_lines, decode, number

# Terminal control sequences (colours, cursor moves) are not text.
_ANSI = re.compile(r"\x1b(?:\[[0-9;?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
_KEY = r"[A-Za-z_][A-Za-z0-9_.\-/]*"
_VALUE = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf(?:inity)?)"
# `key=value` (spaces allowed around =) or `key: value` (a space after the colon, so
# that host:8080 and 12:30:45 are not metrics), key and value maybe quoted as a printed
# dict shows them. After the value comes the end, a separator, or the next pair: a word
# after it is a unit or a noun (`0 TPU cores`), `,\d` a thousands separator.
_PAIR = re.compile(
    rf"(?<![\w.\-/?&=:@#%+~])(['\"]?)({_KEY})\1(?:\s*=\s*|:\s+)(['\"]?)({_VALUE})\3"
    rf"(?=\s*$|[,;|)\]}}](?!\d)|\s+(?:[-|(\[]|['\"]?{_KEY}['\"]?(?:\s*=|:\s)))",
    re.IGNORECASE,
)
# Log levels and the like print as `INFO: 3 files`; they are never metrics.
_NOT_KEYS = frozenset({"info", "warning", "warn", "error", "debug", "critical", "fatal",
                       "notice", "trace", "note", "pid", "port", "line", "version"})
# A line that is just `key value` pairs (`loss 0.25`, `epoch 3 loss 0.25`, a W&B summary row).
_BARE_LINE = re.compile(rf"\s*(?:{_KEY}\s+(?:{_VALUE})(?:,?\s+|\s*$))+", re.IGNORECASE)
_BARE = re.compile(rf"({_KEY})\s+({_VALUE})", re.IGNORECASE)
# Keras prints `Epoch 3/10` on its own line before that epoch's numbers.
_EPOCH_HEADER = re.compile(r"\s*epoch\s+(\d+)(?:\s*/\s*\d+)?\s*:?\s*", re.IGNORECASE)
STEP_KEYS = ("step", "global_step", "iteration", "iter", "epoch")
# A step written as a label rather than a pair: `Epoch 3:`, `| epoch   1 |`,
# `Iteration 3, loss = ...`, `Step 100/1000`. Not `max_epochs=3` (no word boundary).
_STEP_LABEL = re.compile(r"\b(epoch|step|iteration|iter)\s*[:#]?\s*(\d+(?:\.\d+)?)"
                         r"(?:\s*/\s*\d+)?(?![\w.])", re.IGNORECASE)
_MAX_LINE = 4096
_MAX_RECORD_LINES = 200

# tqdm's layout: `label: NN%|bar| n/total [elapsed<left, rate, postfix]` (or `5it [...]`
# with no total). Only the postfix holds the user's numbers.
_TQDM = re.compile(r"(?P<label>[^|\[\]]*?):?\s*(?:\d{1,3}%\|[^|]*\|)?\s*[\d.]+[kMGTP]?"
                   r"(?:/[\d.?]+[kMGTP]?|it|B)?\s*\[(?P<stats>[^\[\]]*)\]\s*")
_TABLE_SEP = re.compile(r"\s*[|│┃]\s*")
# A table field: a name of one or more words, then its number.
_FIELD = re.compile(rf"([A-Za-z_][\w./\-]*(?:\s+[A-Za-z_][\w./\-]*)*)\s*[:=]?\s+({_VALUE})",
                    re.IGNORECASE)
_NAME = re.compile(r"[A-Za-z_][\w./\- ]*")

# Diagnostics. Python's warnings print `path:lineno: Category: message`, then the
# source line indented by two spaces; Lightning drops the category and that line, and
# its path is absolute (a log format's relative `train.py:42: loss=0.3` is not a warning).
_WARNING_AT = re.compile(r"(?:/\S*\.py|<[\w.\- ]+>):\d+: |\S+:\d+: (?:[\w.]+\.)?\w*Warning: ")
_WARNING_CATEGORY = re.compile(r"\S+:\d+: (?:[\w.]+\.)?\w*Warning: ")
_SOURCE_LINE = re.compile(r"  \S")
_WARNING_SPAN = 30  # lines a warning's message may take before its source line
_TRACEBACK = re.compile(r".{0,40}?Traceback \(most recent call last\):")
_EXCEPTION = re.compile(r"\s*(?:[\w.]+\.)?[A-Z]\w*(?:Error|Exception|Warning|Interrupt|Exit)"
                        r"(?::|\s*$)")
_LOUD_LEVEL = re.compile(r"^.{0,60}?(?<![A-Za-z])(?:WARNING|WARN|ERROR|CRITICAL|FATAL)"
                         r"(?=[\]:|)\s-])|^[WEF]\d{4} \d\d:\d\d:\d\d")

# Log-record prefixes (see the module docstring), read one part at a time: a part is a
# glog/absl header, a timestamp, a `[...]` group, a level (`INFO:root:` as Python's
# basicConfig writes it), a source location (`train.py:42`, loguru's `mod:func:42`) or
# a logger name before ` - `, ` | ` or `: ` (not a `key: value` pair's key).
_LEVELS = ("DEBUG|INFO|NOTICE|TRACE|SUCCESS|WARNING|WARN|ERROR|CRITICAL|FATAL|ALERT"
           "|EMERGENCY|EXCEPTION")
_LOUD_LEVELS = frozenset({"WARNING", "WARN", "ERROR", "CRITICAL", "FATAL", "ALERT",
                          "EMERGENCY", "EXCEPTION", "W", "E", "F"})
_DATE = r"(?:\d{4}[-/.]\d\d[-/.]\d\d|\d\d/\d\d/\d{4})"
_MONTH_DAY = (r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]{0,6}\.?\s+\d{1,2}"
              r"(?:,?\s+\d{4})?")  # syslog's `Dec  1 10:00:00`: only with a time
_TIME = r"\d\d?:\d\d:\d\d(?:[.,]\d+)?(?:\s?[AaPp][Mm])?(?:Z|[+-]\d\d:?\d\d)?(?:\s?UTC)?"
_STAMP_TS = rf"(?:{_DATE}(?:[T ]{_TIME})?|{_MONTH_DAY}\s+{_TIME}|{_TIME})"
_PREFIX_PART = re.compile(
    rf"(?P<glog>([IWEF])\d{{4}}\s+\d\d:\d\d:\d\d(?:\.\d+)?(?:\s+\d+)?\s+[^\s\]]+:\d+\])"
    rf"|(?P<tf>([IWEF])\s+[^\s\]]+\.\w+:\d+\])"  # TensorFlow's C++ records
    rf"|(?P<ts>{_STAMP_TS})"
    rf"|\[(?P<group>[^\[\]\n]{{1,100}})\]"
    rf"|(?P<level>{_LEVELS})(?::[\w.\-<>]+:(?!\s)|(?![\w.]))"
    rf"|(?P<loc>(?:[\w\-/<>]+\.\w+|[\w.\-<>]+:[\w.\-<>]+):\d+)"
    rf"|(?P<name>[A-Za-z_<][\w.\-<>]*(?<!Error)(?<!Exception)(?<!Warning))"
    rf"(?=\s*[-|:]\s+(?!['\"]?(?:{_VALUE})['\"]?(?:[\s,;|]|$)))")
_PREFIX_SEP = re.compile(r"\s*[-|:,](?:\s+|$)|\s+|$|(?<=[\]:])|(?=\[)")
# A group's words: timestamps, levels, names (`__main__`, `rank0`, `train.py:42`); a
# number on its own (`[epoch 3]`, `[1/10]`) makes it part of the message.
_GROUP_TOKEN = rf"(?:{_STAMP_TS}|[A-Za-z_<][\w.\-<>:/@]*)"
_GROUP = re.compile(rf"\s*{_GROUP_TOKEN}(?:[\s,|]+{_GROUP_TOKEN})*[\s,]*")
_GROUP_STAMP = re.compile(r"\d\d:\d\d:\d\d|\d{4}-\d\d-\d\d")
_GROUP_WORD = re.compile(r"[A-Za-z]+")
_LEVEL_SET = frozenset(_LEVELS.split("|"))
_PREFIX_PARTS = 12


def _message(line: str) -> tuple[str, bool, bool]:
    """(the line without its log-record prefix, whether it had one, whether the prefix
    names a level of WARNING or above); the line itself when it has none."""
    pos, strong, loud, end = 0, False, False, 0
    for _ in range(_PREFIX_PARTS):
        part = _PREFIX_PART.match(line, pos)
        if not part:
            break
        if part.group("glog") or part.group("tf"):
            strong = True
            loud = loud or (part.group(2) or part.group(4)) in _LOUD_LEVELS
        elif part.group("ts"):
            strong = True
        elif part.group("group"):
            content = part.group("group")
            if not _GROUP.fullmatch(content):
                break  # `[epoch 3]`: the message
            levels = {w.upper() for w in _GROUP_WORD.findall(content)} & _LEVEL_SET
            if levels or _GROUP_STAMP.search(content):
                strong = True
                loud = loud or bool(levels & _LOUD_LEVELS)
        elif part.group("level"):
            strong = True
            loud = loud or part.group("level") in _LOUD_LEVELS
        sep = _PREFIX_SEP.match(line, part.end())
        if not sep:
            break
        pos = sep.end()
        if strong:
            end = pos
        if pos >= len(line):
            break
    if not end:
        return line, False, False
    return line[end:], True, loud


# Dumps of code and settings.
_BACKQUOTED = re.compile(r"`[^`\n]*`")
_PAREN = re.compile(r"([A-Za-z_][\w.]*)?\(|\)")  # a call's name and "(", or a bracket
_DICT = re.compile(r"\{[^{}]*\}")
_DICT_ENTRY = re.compile(r"""(['"])([^'"]*)\1\s*:\s*([^,}]*)""")
# One YAML mapping entry, list item or opener; a value holding `k=v` or `: ` is a
# sentence (`INFO: epoch=1 loss=0.3`), not a YAML scalar.
_YAML = re.compile(r"\s*(?:-(?:\s+(?P<item>.*))?|(?P<key>[\w.\-/$]+):(?:\s+(?P<value>.*?))?)\s*")

# Words that name a measurement (the name's parts are matched, `val_acc` -> `acc`).
_MEASURES = frozenset("""
    loss losses acc accuracy err error errors f1 f2 fbeta auc auroc auprc roc ap map
    precision prec recall score scores mse mae rmse rmsle mape smape r2 ppl perplexity
    bleu rouge meteor chrf iou miou dice ndcg mrr hit hits reward rewards return returns
    kl entropy nll elbo likelihood psnr ssim lpips fid wer cer top1 top5 correct
    mistakes cost objective kappa jaccard mcc corr pearson spearman brier regret
""".split())
_MEASURE_SUFFIXES = ("loss", "acc", "accuracy", "error", "score")

# Path parts that name one run, not a metric: dates and clock times (Hydra's
# outputs/2026-12-01/20-33-10, TensorBoard's Dec01_20-33-10_host), numbered run
# folders (checkpoint-20, version_3), pids and timestamps (5 digits or more).
_STAMP = r"\d{4}-\d\d-\d\d|(?<!\d)\d{8}(?!\d)|\d\d[-:._]\d\d[-:._]\d\d|\d{5,}"
_PER_RUN = re.compile(
    rf"{_STAMP}|^(?:checkpoint|ckpt|version|run|trial|job|pid|worker|rank)[-_=]?\d+$",
    re.IGNORECASE)
_STAMP_PART = re.compile(rf"[-_.=]?(?:{_STAMP})")


class _Point(NamedTuple):
    order: int  # line index: what came first
    key: str
    step: float | None
    value: float | None
    text: str | None
    whole: bool  # written without a point: `480`, not `20.00`


def _clean(segment: str) -> str:
    return _ANSI.sub("", segment).replace("\b", "")[:_MAX_LINE]


def _blank_spans(text: str, spans: list[tuple[int, int]]) -> str:
    if not spans:
        return text
    chars = list(text)
    for start, end in spans:
        chars[start:end] = " " * (end - start)
    return "".join(chars)


def _without_dumps(line: str) -> str:
    """The line with code and object dumps blanked out (they hold settings, not results)."""
    if "`" in line:
        line = _BACKQUOTED.sub(lambda m: " " * len(m.group()), line)
    if "(" in line and "=" in line:
        spans = []
        opened: list[tuple[int, int, bool]] = []  # (start, end of the "(", is a call)
        for m in _PAREN.finditer(line):
            if m.group() != ")":
                opened.append((m.start(), m.end(), m.group(1) is not None))
            elif opened:
                start, inner, call = opened.pop()
                if call and line.count("=", inner, m.start()):
                    spans.append((start, m.end()))
        line = _blank_spans(line, spans)
    if "{" in line:
        spans = []
        for m in _DICT.finditer(line):
            entries = _DICT_ENTRY.findall(m.group())
            keys = {key.lower() for _, key, _ in entries}
            settings = any(number(value.strip().strip("'\"")) is None
                           for _, _, value in entries)
            if settings and not keys & set(STEP_KEYS):
                spans.append(m.span())
        line = _blank_spans(line, spans)
    return line


def _scalars(line: str) -> list[tuple[str, str]]:
    if "|" in line or "│" in line or "┃" in line:
        cells = [c for c in _TABLE_SEP.split(line.strip()) if c]
        if len(cells) == 2 and _NAME.fullmatch(cells[0]) and number(cells[1]) is not None:
            return [(cells[0].strip(), cells[1])]
        pairs = []
        for cell in cells:
            field = _FIELD.fullmatch(cell)
            if field:
                pairs.append((" ".join(field.group(1).split()), field.group(2)))
            else:
                pairs.extend(_pairs(cell))
        return pairs
    pairs = _pairs(line)
    if pairs:
        return pairs
    if _BARE_LINE.fullmatch(line):
        return [(key, value) for key, value in _BARE.findall(line)
                if key.lower() not in _NOT_KEYS]
    return []


def _pairs(text: str) -> list[tuple[str, str]]:
    return [(key, value) for _, key, _, value in _PAIR.findall(text)
            if key.lower() not in _NOT_KEYS]


def _is_step_name(name: str) -> bool:
    low = name.lower()
    return low in STEP_KEYS or (" " in low and low.rsplit(" ", 1)[-1] in STEP_KEYS)


def _step_of(line: str, pairs: list[tuple[str, str]]) -> float | None:
    found = {}
    for key, value in pairs:
        low = key.lower()
        if " " in low and _is_step_name(low):
            low = low.rsplit(" ", 1)[-1]  # `end of epoch 3`
        found.setdefault(low, value)
    label = _STEP_LABEL.search(line)
    if label:
        found.setdefault(label.group(1).lower(), label.group(2))
    for name in STEP_KEYS:
        got = number(found.get(name, ""))
        if got is not None and got[0] is not None:
            return got[0]
    return None


@lru_cache(maxsize=4096)  # a log repeats its few keys on every line
def _stable_key(key: str) -> str | None:
    """`key` without the path up to its last per-run part; None when no name is left."""
    if "/" not in key and not _PER_RUN.search(key):
        return key
    parts = key.split("/")
    last = -1
    for i, part in enumerate(parts):
        if _PER_RUN.search(part) or (part.isdigit() and last == i - 1 and last >= 0):
            last = i  # a Hydra multirun job number follows its dated folder
    rest = [p for p in parts[last + 1:] if p]
    if rest:
        return "/".join(rest)
    # The name itself carries the pid or timestamp (`loss_1701456789`): drop that part.
    name = _STAMP_PART.sub("", parts[-1]).strip("-_.=")
    return name if re.match(r"[A-Za-z_]", name) else None


def _warning_end(lines: list[str], i: int) -> int:
    """Index of the last line of the warning that starts at line i."""
    if not _WARNING_CATEGORY.match(lines[i]):
        return i  # Lightning's form: one line, no source line under it
    for j in range(i + 1, min(len(lines), i + 1 + _WARNING_SPAN)):
        if _SOURCE_LINE.match(lines[j]):
            return j
        if _WARNING_AT.match(lines[j]) or _TRACEBACK.match(lines[j]):
            break
    return i


def _traceback_end(lines: list[str], i: int) -> int:
    j = i + 1
    while j < len(lines) and lines[j][:1] in (" ", "\t"):
        j += 1  # frames and code
    if j < len(lines) and lines[j].strip():
        j += 1  # the exception line
        while j < len(lines) and lines[j][:1] in (" ", "\t") and lines[j].strip():
            j += 1  # its message's continuation
    return j - 1


def _yaml_block(lines: list[str], i: int, records: list[bool]) -> tuple[int, bool]:
    """(index of the last line, whether it is a config-like dump) of the run of
    YAML-shaped lines starting at line i; (i - 1, False) when line i is not one.
    A log record (a line with a prefix) is a block of its own, unless it only opens one
    (`[...][INFO] - Config:` then the dump, unprefixed); it never joins an earlier block."""
    j, nested, settings, measured = i, False, False, False
    while j < len(lines) and (j == i or not records[j]):
        m = _YAML.fullmatch(lines[j])
        if not m or not lines[j].strip():
            break
        value = m.group("value") if m.group("key") else m.group("item")
        if value is not None and ("=" in value or ": " in value):
            break  # a sentence, not a scalar
        if j == i and records[i] and value is not None:
            return i, False  # `INFO loss: 0.5`: one record, whatever follows
        if m.group("key") is None or value is None:
            nested = True
        else:
            settings = settings or number(value.strip("'\"")) is None
            measured = measured or _measures(m.group("key"))
        j += 1
    return j - 1, j - i >= 2 and (settings or (nested and not measured))


@lru_cache(maxsize=4096)
def _measures(key: str) -> bool:
    words = re.sub(r"([a-z])([A-Z])", r"\1 \2", key).lower()
    for word in re.split(r"[^a-z0-9]+", words):
        if word in _MEASURES or word.rstrip("0123456789") in _MEASURES:
            return True
        if word.endswith(_MEASURE_SUFFIXES):
            return True
    return False


def _lines(data: bytes) -> list[list[str]]:
    """Each line as the segments a carriage return split it into, cleaned, blanks dropped."""
    out = []
    for raw in complete_lines(decode(data)):
        if "\r" in raw:
            out.append([s for s in map(_clean, raw.split("\r")) if s.strip()])
        else:
            out.append([_clean(raw)] if raw.strip() else [])
    return out


def _points(data: bytes) -> list[_Point]:
    """Every metric point the output shows, in order, counts and settings left out."""
    rows = _lines(data)
    shown = [segs[-1] if segs else "" for segs in rows]  # what the terminal kept
    # Each line's message, read past its log-record prefix (timestamp, level, logger).
    messages = [_message(line) if line else ("", False, False) for line in shown]
    texts = [m[0] for m in messages]
    records = [m[1] for m in messages]
    points: list[_Point] = []
    bars: dict[str, tuple[int, list[tuple[str, str]], float]] = {}
    header: float | None = None
    summary = False
    skip_to = yaml_seen = unclosed = -1
    for index, segs in enumerate(rows):
        if index <= skip_to or not segs:
            continue
        # Bars labelled with their epoch: the last state of each epoch's bar counts,
        # wherever Lightning redrew it (its bar spans the whole fit on one line).
        for seg in segs:
            bar = _TQDM.fullmatch(seg) if "[" in seg else None
            if bar:
                step = _step_of(bar.group("label"), [])
                if step is not None:
                    bars.pop(bar.group("label"), None)
                    bars[bar.group("label")] = (index, _pairs(bar.group("stats")), step)
        line = shown[index]
        if line.startswith("wandb:"):
            rest = line[6:].strip()
            if rest.endswith(":") or not rest:
                summary = rest == "Run summary:"
            elif summary:
                for key, value in _scalars(rest):
                    points.extend(_point(index, key, None, value))
            continue
        summary = False
        raw, (line, _, loud) = line, messages[index]
        if (index > unclosed and line.lstrip().startswith("{")
                and line.count("{") > line.count("}")):
            # A dict printed over several lines (pprint, json.dumps(indent=2)) is one record.
            depth = line.count("{") - line.count("}")
            last = min(len(shown), index + _MAX_RECORD_LINES) - 1
            for end in range(index + 1, last + 1):
                depth += texts[end].count("{") - texts[end].count("}")
                if depth <= 0:
                    line = " ".join(part.strip() for part in texts[index:end + 1])
                    skip_to = end
                    break
            else:
                unclosed = last  # not a record: no need to look again inside it
        if _WARNING_AT.match(line):
            skip_to = _warning_end(texts, index)
            continue
        if _TRACEBACK.match(raw) or _TRACEBACK.match(line):
            skip_to = _traceback_end(shown, index)
            continue
        if loud or _EXCEPTION.match(line) or _LOUD_LEVEL.search(raw):
            continue
        if index > yaml_seen and (":" in line or line.lstrip()[:1] == "-"):
            # Each run of YAML-shaped lines is judged once, from its first line.
            yaml_seen, dump = _yaml_block(texts, index, records)
            if dump:
                skip_to = yaml_seen
                continue
        found = _EPOCH_HEADER.fullmatch(line)
        if found:
            header = float(found.group(1))
            continue
        bar = _TQDM.fullmatch(line) if "[" in line else None
        if bar:
            if _step_of(bar.group("label"), []) is not None:
                continue  # kept in `bars`
            pairs, step_text = _pairs(bar.group("stats")), bar.group("label")
        else:
            step_text = line = _without_dumps(line)
            pairs = _scalars(line)
        if not pairs:
            continue
        step = _step_of(step_text, pairs)
        if step is None:
            step = header
        header = None  # a Keras header numbers the one line that follows it
        for key, value in pairs:
            if not _is_step_name(key):
                points.extend(_point(index, key, step, value))
    for index, pairs, step in bars.values():
        for key, value in pairs:
            if not _is_step_name(key):
                points.extend(_point(index, key, step, value))
    points.sort(key=lambda p: p.order)
    return _measurements(points)


def _point(order: int, key: str, step: float | None, value: str) -> list[_Point]:
    got = number(value)
    stable = _stable_key(key)
    if got is None or stable is None:
        return []
    whole = value.strip("'\"").lstrip("+-").isdigit()
    return [_Point(order, stable, step, got[0], got[1], whole)]


def _measurements(points: list[_Point]) -> list[_Point]:
    """The points without counts and settings (see the module docstring)."""
    by_key: dict[str, list[_Point]] = {}
    for p in points:
        by_key.setdefault(p.key, []).append(p)
    stepped = [p.order for p in points if p.step is not None]
    repeated = [ps[1].order for ps in by_key.values() if len(ps) > 1]
    # Training starts at the first stepped point, else at the first repeated key; a
    # log with neither has no "before training".
    start = min(stepped) if stepped else (min(repeated) if repeated else -1)
    dropped = set()
    for key, series in by_key.items():
        if _measures(key):
            continue
        values = {p.value if p.text is None else p.text for p in series}
        whole = all(p.whole for p in series)
        has_step = any(p.step is not None for p in series)
        if whole and (len(values) == 1 or not has_step):
            dropped.add(key)  # a count, a size, an id
        elif len(values) == 1 and series[-1].order < start:
            dropped.add(key)  # a setting echoed at start-up
    # On a key that has steps, a value without one printed before training is no
    # final value (`lr: 0.001` echoed, then `epoch=1 lr=0.001`).
    stepped_keys = {p.key for p in points if p.step is not None}
    return [p for p in points if p.key not in dropped
            and not (p.step is None and p.order < start and p.key in stepped_keys)]


def parse_log(data: bytes) -> list[Metric]:
    """Metric series from output text (the formats in the module docstring).

    A key seen once without a step is a final value; a key seen several times without
    steps is a series by order of appearance; on a key that has steps elsewhere, the
    last value without one is the key's final value.
    """
    series_of: dict[str, list[_Point]] = {}
    for p in _points(data):
        series_of.setdefault(p.key, []).append(p)
    out: list[Metric] = []
    for key, series in series_of.items():
        stepped = any(p.step is not None for p in series)
        if len(series) == 1 and not stepped:
            out.append(Metric(key, None, series[0].value, series[0].text))
            continue
        final = None
        for index, p in enumerate(series):
            if stepped and p.step is None:
                final = p  # `Test accuracy: 0.96` after the epochs
                continue
            out.append(Metric(key, p.step if stepped else float(index), p.value, p.text))
        if final is not None:
            out.append(Metric(key, None, final.value, final.text))
    return out


_SAME_SHARE = 0.9


def same_stream(a: bytes, b: bytes) -> bool:
    """Whether two outputs hold the same metric lines, so that their series are one.

    True when nearly all the points of the one with fewer (at least 90%) are also in
    the other, as (key, step, value), whatever each line's prefix (a log file's
    timestamps, a console's progress bars): a run's stdout and the log file it wrote
    through the same logger. The caller keeps the series of the one with more points.
    False when either holds no point.
    """
    pa, pb = (Counter((p.key, p.step, p.value, p.text) for p in _points(d)) for d in (a, b))
    smaller = min(sum(pa.values()), sum(pb.values()))
    if smaller == 0:
        return False
    return sum((pa & pb).values()) >= _SAME_SHARE * smaller
