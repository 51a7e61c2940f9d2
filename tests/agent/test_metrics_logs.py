"""Scalars from console output: the lines that look like metrics, and only those."""

from __future__ import annotations

from pathlib import Path

from onlooker.agent.metrics import Metric, parse, parse_log

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "metrics"


def by_key(found: list[Metric]) -> dict[str, list[tuple[float | None, float | None]]]:
    out: dict[str, list[tuple[float | None, float | None]]] = {}
    for m in found:
        out.setdefault(m.key, []).append((m.step, m.value if m.text is None else m.text))
    return out


def test_keras_fit_output_numbers_each_epoch():
    found = by_key(parse_log((FIXTURES / "keras_fit_stdout.txt").read_bytes()))
    assert found["val_loss"] == [(1.0, 0.2404), (2.0, 0.1622), (3.0, 0.1302)]
    # `evaluate` and the final print come after the epochs: the key's final value.
    assert found["accuracy"][-1] == (None, 0.9610000252723694)
    assert set(found) == {"accuracy", "loss", "val_accuracy", "val_loss"}


def test_pytorch_mnist_example_output():
    found = by_key(parse_log((FIXTURES / "mnist_stdout.txt").read_bytes()))
    assert found["Loss"] == [(1.0, 2.299825), (1.0, 1.725426), (2.0, 0.132311)]
    assert found["loss"] == [(0.0, 0.049), (1.0, 0.0351)]  # no step: order of appearance
    assert "Accuracy" not in found  # 9836/10000 is not a number


def test_hugging_face_printed_dicts_and_progress_bars():
    found = by_key(parse_log((FIXTURES / "hf_trainer_stdout.txt").read_bytes()))
    assert found["loss"] == [(0.5, 0.6932), (1.0, 0.5511)]
    assert found["grad_norm"] == [(0.5, 3.14), (1.0, "nan")]
    assert found["train_loss"] == [(2.0, 0.5515)]
    assert "epoch" not in found


def test_forms_steps_and_noise():
    text = (b"step=1 loss=0.5 acc=0.7\n"
            b"step: 2, loss: 0.4\n"
            b"\x1b[32mstep=3 loss=0.3\x1b[0m\n"
            b"f1 0.88\n"
            b"INFO: 3 files\n"
            b"listening on host:8080 at 12:30:45\n"
            b"Downloading model version 2 of 3\n"
            b"url=http://x/y?a=1\n"
            b"torn=0.12")
    assert by_key(parse_log(text)) == {
        "loss": [(1.0, 0.5), (2.0, 0.4), (3.0, 0.3)],
        "acc": [(1.0, 0.7)],
        "f1": [(None, 0.88)],
    }


def test_log_kind_goes_through_parse():
    assert parse("logs/train.log", b"loss=0.5\n", kind="log") == [Metric("loss", None, 0.5)]
    assert parse_log(b"\xff\xfe garbage \x00\n") == []
