"""Metrics parsers on files as the frameworks write them, whole, torn and corrupt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onlooker.agent import metrics
from onlooker.agent.metrics import Limits, Metric, parse, tfevents

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "metrics"
EVENTS = "runs/exp1/events.out.tfevents.1700000000.host.1234.0"
# (path under the fixtures, kind agent/rules/kinds.py gives it)
FILES = [
    ("training.log", "log"),  # Keras CSVLogger("training.log")
    ("lightning_logs/version_0/metrics.csv", "metrics"),
    ("dvclive/metrics.json", "metrics"),
    ("dvclive/plots/metrics/train/loss.tsv", "metrics"),
    ("trainer_state.json", "metrics"),
]


def read(rel: str) -> bytes:
    return (FIXTURES / rel).read_bytes()


def series(found: list[Metric], key: str) -> list[tuple[float | None, float | None]]:
    return [(m.step, m.value) for m in found if m.key == key]


def finals(found: list[Metric]) -> dict[str, float | None]:
    return {m.key: m.value for m in found if m.step is None}


def test_keras_csvlogger_with_crlf_lines():
    found = parse("training.log", read("training.log"), kind="log")
    assert series(found, "training.log:val_loss") == [
        (0.0, 0.24043525755405426), (1.0, 0.16220881044864655), (2.0, 0.13017603754997253)]
    assert {m.key for m in found} == {f"training.log:{k}" for k in
                                      ("accuracy", "loss", "val_accuracy", "val_loss")}


def test_lightning_sparse_rows_keep_their_steps():
    rel = "lightning_logs/version_0/metrics.csv"
    found = parse(rel, read(rel), kind="metrics")
    assert series(found, f"{rel}:train_loss") == [
        (49.0, 0.6931471824645996), (99.0, 0.5123456716537476),
        (149.0, 0.4010000228881836), (199.0, 0.3504999876022339)]
    assert series(found, f"{rel}:val_acc") == [(99.0, 0.7749999761581421),
                                               (199.0, 0.8500000238418579)]
    assert not any(m.key.endswith((":epoch", ":step")) for m in found)


def test_dvclive_summary_and_plot_tsv():
    found = parse("dvclive/metrics.json", read("dvclive/metrics.json"), kind="metrics")
    assert finals(found) == {"dvclive/metrics.json:train.loss": 0.2130873203277588,
                             "dvclive/metrics.json:train.acc": 0.934,
                             "dvclive/metrics.json:eval.loss": 0.25,
                             "dvclive/metrics.json:eval.acc": 0.91,
                             "dvclive/metrics.json:step": 2.0}
    rel = "dvclive/plots/metrics/train/loss.tsv"
    found = parse(rel, read(rel), kind="metrics")
    assert [(m.key, m.step, m.value, m.wall) for m in found][-1] == (
        f"{rel}:loss", 2.0, 0.2130873203277588, 1700000002.789)
    assert len(found) == 3


def test_trainer_state_history_by_step_and_results():
    found = parse("out/trainer_state.json", read("trainer_state.json"), kind="metrics")
    key = "out/trainer_state.json:"
    assert series(found, key + "eval_accuracy") == [(10.0, 0.8012), (20.0, 0.8612)]
    assert series(found, key + "loss") == [(5.0, 0.6932), (10.0, 0.5511), (20.0, 0.4102)]
    assert finals(found) == {key + "best_metric": 0.8612, key + "global_step": 20.0}
    nan = [m for m in found if m.key == key + "grad_norm" and m.step == 20.0]
    assert nan == [Metric(key + "grad_norm", 20.0, None, "nan")]
    # Settings are not results.
    assert not any(m.key.endswith((":max_steps", ":logging_steps", ":train_batch_size",
                                   ":epoch", ":num_train_epochs")) for m in found)


def test_json_and_yaml_summaries_flatten_numeric_leaves():
    data = json.dumps({"test": {"f1": 0.9, "name": "x", "ok": True, "per_class": [0.5, 0.7]},
                       "n": 3}).encode()
    found = parse("summary.json", data, kind="metrics")
    assert finals(found) == {"summary.json:test.f1": 0.9, "summary.json:n": 3.0}
    assert series(found, "summary.json:test.per_class") == [(0.0, 0.5), (1.0, 0.7)]
    yml = b"loss: 1e-3\nacc: .nan\nbest: 0.91\nname: run\n"
    assert parse("scores.yaml", yml, kind="metrics") == [
        Metric("scores.yaml:loss", None, 0.001), Metric("scores.yaml:acc", None, None, "nan"),
        Metric("scores.yaml:best", None, 0.91)]


def test_nan_and_infinity_are_text_never_numbers():
    data = b'{"a": NaN, "b": Infinity, "c": -Infinity, "d": 1e999}'
    found = parse("metrics.json", data, kind="metrics")
    assert [(m.key[-1], m.value, m.text) for m in found] == [
        ("a", None, "nan"), ("b", None, "inf"), ("c", None, "-inf"), ("d", None, "inf")]
    csv = b"step,loss\n0,nan\n1,inf\n2,0.5\n"
    assert [(m.value, m.text) for m in parse("m.csv", csv, kind="metrics")] == [
        (None, "nan"), (None, "inf"), (0.5, None)]


def test_torn_and_corrupt_files():
    assert parse("metrics.json", b'{"loss": 0.12', kind="metrics") == []
    # A CSV still being written: the torn last row ("0.12" of "0.1234") is not read.
    found = parse("m.csv", b"step,loss\n0,0.5\n1,0.12", kind="metrics")
    assert found == [Metric("m.csv:loss", 0.0, 0.5)]
    # A row with the wrong field count in the middle is skipped, the rest kept.
    found = parse("m.csv", b"step,loss\n0,0.5\n1,0.4,9\n2,0.3\n", kind="metrics")
    assert series(found, "m.csv:loss") == [(0.0, 0.5), (2.0, 0.3)]
    assert parse("scores.yaml", b"loss: 0.5\nacc: 0.12", kind="metrics") == [
        Metric("scores.yaml:loss", None, 0.5)]
    assert parse("metrics.json", b"\x00\x01garbage", kind="metrics") == []
    assert parse("metrics.csv", b"", kind="metrics") == []


@pytest.mark.parametrize(("rel", "kind"), FILES)
def test_every_prefix_gives_a_subset_of_the_whole(rel, kind):
    """A file read while it is written never yields a number the finished file lacks."""
    data = read(rel)
    whole = set(parse(rel, data, kind=kind))
    assert whole
    for cut in range(len(data)):
        assert set(parse(rel, data[:cut], kind=kind)) <= whole, cut


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400),
       rel=st.sampled_from(["m.csv", "m.tsv", "metrics.json", "s.yaml", "trainer_state.json",
                            "metrics/x", "train.log", "out.json", EVENTS]),
       kind=st.sampled_from(["metrics", "log", "other", "dataset"]))
def test_never_raises_on_garbage(data, rel, kind):
    for m in parse(rel, data, kind=kind):
        assert (m.value is None) != (m.text is None)


def test_content_decides_for_files_not_named_as_metrics():
    assert parse("out.json", b'{"f1": 0.8, "acc": {"top1": 0.7}}', kind="other") == [
        Metric("out.json:f1", None, 0.8), Metric("out.json:acc.top1", None, 0.7)]
    assert parse("out.json", b'{"f1": 0.8, "name": "bert"}', kind="other") == []
    # A dataset of numbers is not metrics; a training log with an epoch column is.
    assert parse("data.csv", b"x,y\n1,2\n3,4\n", kind="dataset") == []
    assert parse("hist.csv", b"epoch,loss\n0,0.5\n", kind="dataset") == [
        Metric("hist.csv:loss", 0.0, 0.5)]
    assert parse("hist.csv", b"epoch,loss\n0,0.5\n", kind="dataset",
                 limits=Limits(sniff=False)) == []
    assert parse("model.pkl", b"epoch,loss\n0,0.5\n", kind="model") == []


def test_huge_files_are_not_parsed():
    data = b"step,loss\n" + b"".join(b"%d,0.5\n" % i for i in range(1000))
    assert parse("m.csv", data, kind="metrics", limits=Limits(max_bytes=1000)) == []
    assert len(parse("m.csv", data, kind="metrics")) == 1000


def test_tensorboard_without_the_package_says_so(monkeypatch, caplog):
    monkeypatch.setattr(tfevents, "_event_class", lambda: None)
    monkeypatch.setattr(tfevents, "_warned", False)
    assert parse(EVENTS, read(EVENTS), kind="metrics") == []
    assert parse(EVENTS, read(EVENTS), kind="metrics") == []
    assert metrics.note_for(EVENTS, "metrics") == tfevents.MISSING_NOTE
    assert sum("were seen but not read" in r.message for r in caplog.records) == 1


def test_tensorboard_scalars_when_the_package_is_there():
    pytest.importorskip("tensorboard.compat.proto.event_pb2")
    found = parse(EVENTS, read(EVENTS), kind="metrics")
    assert series(found, "runs/exp1:train/loss") == [(0.0, 0.9), (1.0, 0.5), (2.0, 0.25)]
    assert series(found, "runs/exp1:val/acc") == [(0.0, 0.7), (1.0, 0.8), (2.0, 0.875)]
    assert {m.key for m in found} == {"runs/exp1:train/loss", "runs/exp1:val/acc"}
    assert found[0].wall == 1700000001.0
    data = read(EVENTS)
    whole = set(found)
    for cut in range(0, len(data), 7):
        assert set(parse(EVENTS, data[:cut], kind="metrics")) <= whole


def test_tfrecord_framing_stops_at_a_damaged_length():
    data = bytearray(read(EVENTS))
    assert len(tfevents.records(bytes(data))) == 8
    data[0] ^= 0xFF
    assert tfevents.records(bytes(data)) == []
