"""Scalars from console output: the lines that look like metrics, and only those."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from onlooker.agent.metrics import Metric, parse, parse_log
from onlooker.agent.metrics.logs import same_stream

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


# --- real output of the libraries, whole (fixtures) ----------------------------------

def test_keras3_fit_with_summary_colours_and_backspaces():
    # keras 3.15 (jax backend) model.summary() + fit(verbose=1) + evaluate, as written
    # to a redirected stdout: bold/colour codes, \b and \r redraws.
    found = by_key(parse_log((FIXTURES / "keras3_fit_stdout.txt").read_bytes()))
    assert found["val_loss"] == [(1.0, 0.7887), (2.0, 0.7437), (3.0, 0.7017)]
    assert found["loss"][:3] == [(1.0, 0.7978), (2.0, 0.7513), (3.0, 0.7107)]
    assert found["accuracy"][-1] == (None, 0.5849999785423279)
    # `Total params: 178 (712.00 B)` and the summary table are not metrics
    assert set(found) == {"accuracy", "loss", "val_accuracy", "val_loss"}


def test_keras2_progress_line_numbered_by_epoch_header():
    # tf.keras 2.15 model.summary(), then a fit line
    text = (b'Model: "sequential"\n'
            b"_________________________________________________________________\n"
            b" Layer (type)                Output Shape              Param #   \n"
            b"=================================================================\n"
            b" dense (Dense)               (None, 64)                50240     \n"
            b"                                                                 \n"
            b" dense_1 (Dense)             (None, 10)                650       \n"
            b"                                                                 \n"
            b"=================================================================\n"
            b"Total params: 50890 (198.79 KB)\n"
            b"Trainable params: 50890 (198.79 KB)\n"
            b"Non-trainable params: 0 (0.00 Byte)\n"
            b"_________________________________________________________________\n"
            b"Epoch 3/10\n"
            b"375/375 [==============================] - 2s 4ms/step - loss: 0.3100"
            b" - accuracy: 0.9000 - val_loss: 0.2900 - val_accuracy: 0.9100\n")
    assert by_key(parse_log(text)) == {"loss": [(3.0, 0.31)], "accuracy": [(3.0, 0.9)],
                                       "val_loss": [(3.0, 0.29)], "val_accuracy": [(3.0, 0.91)]}


def test_lightning_fit_one_point_per_epoch_and_no_banner():
    # Banner, model summary and warnings as Lightning 2.x prints them; the bars are
    # tqdm's bytes driven the way TQDMProgressBar drives them (one bar reset per epoch,
    # a leave=False validation bar at position 1).
    found = by_key(parse_log((FIXTURES / "lightning_fit_stdout.txt").read_bytes()))
    assert found == {"train_loss": [(0.0, 0.55), (1.0, 0.35)],
                     "val_acc": [(0.0, 0.7), (1.0, 0.8)]}


def test_lightning_banners_have_no_numbers():
    text = (b"GPU available: False, used: False\n"
            b"TPU available: False, using: 0 TPU cores\n"
            b"IPU available: False, using: 0 IPUs\n"
            b"HPU available: False, using: 0 HPUs\n"
            b"LOCAL_RANK: 0 - CUDA_VISIBLE_DEVICES: [0]\n"
            b"`Trainer.fit` stopped: `max_epochs=3` reached.\n")
    assert parse_log(text) == []


def test_tqdm_bar_per_epoch_postfix_not_rate_or_counts():
    # tqdm 4.70 bars (desc="train", set_postfix(loss=...)) to stdout, with a Python
    # UserWarning and a logging.warning record on stderr in the same file.
    found = by_key(parse_log((FIXTURES / "tqdm_epochs_stdout.txt").read_bytes()))
    assert found == {"loss": [(0.0, 0.25), (1.0, 0.125), (2.0, 0.0833)],
                     "val_loss": [(0.0, 0.9), (1.0, 0.8), (2.0, 0.7)]}


def test_lightning_bar_postfix_inline():
    bar = ("Epoch 1: 100%|██████████| 32/32 [00:01<00:00, 20.1it/s, v_num=0,"
           " train_loss=0.512, val_acc=0.81]\n").encode()
    assert by_key(parse_log(bar)) == {"train_loss": [(1.0, 0.512)], "val_acc": [(1.0, 0.81)]}


def test_hugging_face_newer_quoted_values():
    text = (b"{'loss': '0.6903', 'grad_norm': '1.2', 'learning_rate': '4e-05', 'epoch': '1'}\n"
            b"{'eval_loss': '0.4821', 'eval_accuracy': '0.8012', 'epoch': '1'}\n"
            b"{'loss': '0.5511', 'grad_norm': '0.98', 'learning_rate': '3e-05', 'epoch': '2'}\n")
    found = by_key(parse_log(text))
    assert found["loss"] == [(1.0, 0.6903), (2.0, 0.5511)]
    assert found["learning_rate"] == [(1.0, 4e-05), (2.0, 3e-05)]
    assert found["eval_accuracy"] == [(1.0, 0.8012)]
    assert "epoch" not in found


def test_wandb_offline_summary_is_final_history_is_not():
    # wandb 0.31 offline run: wandb.log() per epoch, run.summary["best_accuracy"].
    found = by_key(parse_log((FIXTURES / "wandb_offline_stdout.txt").read_bytes()))
    assert found == {"accuracy": [(None, 0.9)], "best_accuracy": [(None, 0.91)],
                     "loss": [(None, 0.2)], "train/lr": [(None, 0.01)]}


def test_word_language_model_table_lines():
    # The print statements of pytorch/examples word_language_model/main.py.
    found = by_key(parse_log((FIXTURES / "word_language_model_stdout.txt").read_bytes()))
    assert found["loss"] == [(1.0, 6.63), (1.0, 6.1), (2.0, 5.63), (2.0, 5.1)]
    assert found["valid loss"] == [(1.0, 5.28), (2.0, 4.98)]
    assert found["lr"] == [(1.0, 20.0), (1.0, 20.0), (2.0, 20.0), (2.0, 20.0)]  # 20.00: a rate
    assert found["test ppl"] == [(None, 134.29)]
    assert set(found) == {"lr", "ms/batch", "loss", "ppl", "valid loss", "valid ppl",
                          "test loss", "test ppl"}


def test_pipe_tables_take_the_step_from_the_same_line():
    text = (b"| epoch 3 | train loss 0.41 | val acc 0.87 |\n"
            b"epoch 4 | lr 0.001 | loss 2.31\n"
            # fairseq's simple log format
            b"2021-03-10 12:00:00 | INFO | train | epoch 001 | loss 7.832 | nll_loss 7.013"
            b" | ppl 129.17 | wps 15234.6 | bsz 128 | num_updates 500 | lr 0.0005\n"
            b"2021-03-10 12:01:00 | INFO | train | epoch 002 | loss 6.911 | nll_loss 6.2"
            b" | ppl 73.5 | wps 15301.2 | bsz 128 | num_updates 1000 | lr 0.0005\n")
    found = by_key(parse_log(text))
    assert found["train loss"] == [(3.0, 0.41)]
    assert found["val acc"] == [(3.0, 0.87)]
    assert found["loss"] == [(4.0, 2.31), (1.0, 7.832), (2.0, 6.911)]
    assert found["num_updates"] == [(1.0, 500.0), (2.0, 1000.0)]
    assert "bsz" not in found  # the same whole number every epoch: a setting


def test_two_cell_result_tables():
    # trainer.test() without rich, then with rich
    text = ("────────────────────────────────────────\n"
            "       Test metric             DataLoader 0\n"
            "────────────────────────────────────────\n"
            "        test_acc            0.8500000238418579\n"
            "┏━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━┓\n"
            "┃    Test metric    ┃     DataLoader 0     ┃\n"
            "┡━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━┩\n"
            "│     test_loss     │  0.3504999876022339  │\n"
            "└───────────────────┴──────────────────────┘\n").encode()
    assert by_key(parse_log(text)) == {"test_acc": [(None, 0.8500000238418579)],
                                       "test_loss": [(None, 0.3504999876022339)]}


def test_sklearn_warnings_and_data_description_are_not_metrics():
    # scikit-learn 1.9: argparse Namespace, data shape prints, a hyper-parameter dict,
    # lbfgs ConvergenceWarning (status=1, max_iter=5), MLPClassifier(verbose=True).
    found = by_key(parse_log((FIXTURES / "sklearn_stdout.txt").read_bytes()))
    assert found["loss"] == [(1.0, 0.82699117), (2.0, 0.80844396), (3.0, 0.79089421)]
    assert set(found) == {"accuracy", "loss"}


def test_config_result_dumps_and_traceback_are_not_metrics():
    # print(OmegaConf.to_yaml(cfg)), print(argparse.Namespace(...)),
    # print(scipy.optimize.minimize(..., method="L-BFGS-B")), then an uncaught error.
    found = by_key(parse_log((FIXTURES / "hydra_config_stdout.txt").read_bytes()))
    assert found == {"loss": [(1.0, 1.0), (2.0, 0.5), (3.0, 0.3333)]}


def test_printed_settings_over_several_lines():
    text = (b"{'batch_size': 32,\n 'dropout': 0.1,\n 'hidden_sizes': [256, 128],\n"
            b" 'lr': 0.001,\n 'model': 'mlp',\n 'weight_decay': 0.0001}\n"
            b"{\n  \"lr\": 0.001,\n  \"epochs\": 3,\n  \"optimizer\": \"adam\"\n}\n"
            b"TrainConfig(lr=0.01, warmup=0.1, name='base')\n"
            b"{\"split\": \"val\", \"epoch\": 1, \"loss\": 0.52}\n")
    # the last dict has a step: a tagged metrics record, not settings
    assert by_key(parse_log(text)) == {"loss": [(1.0, 0.52)]}


def test_warnings_tracebacks_and_loud_log_records():
    text = (b"/home/ana/proj/train.py:12: UserWarning: lr=0.5 is high\n"
            b"  warnings.warn(\"lr=0.5 is high\")\n"
            b"WARNING:root:grad overflow, scale=0.5\n"
            b"[2026-12-01 20:33:10,123][__main__][ERROR] - eval failed at acc=0.3\n"
            b"RuntimeError: CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; 7.79 GiB)\n"
            b"[2026-12-01 20:33:11,123][__main__][INFO] - epoch=1 val_acc=0.81\n"
            # a log format citing the caller is not a warning
            b"train.py:42: epoch=2 val_acc=0.84\n")
    assert by_key(parse_log(text)) == {"val_acc": [(1.0, 0.81), (2.0, 0.84)]}


def test_counts_and_start_up_settings_are_not_metrics():
    text = (b"rows train=480 test=120\n"
            b"n_samples: 1000\n"
            b"lr: 0.001\n"
            b"epoch=1 loss=0.5 lr=0.001\n"
            b"epoch=2 loss=0.4 lr=0.0005\n"
            b"Test accuracy: 0.91\n")
    assert by_key(parse_log(text)) == {
        "loss": [(1.0, 0.5), (2.0, 0.4)],
        "lr": [(1.0, 0.001), (2.0, 0.0005)],  # changes during training: kept
        "accuracy": [(None, 0.91)],
    }
    # with no training in the log there is no "before training": a lone number stays
    assert by_key(parse_log(b"coef: 0.53\n")) == {"coef": [(None, 0.53)]}


def test_keys_do_not_carry_per_run_folders():
    def run(day: str, clock: str, pid: int) -> bytes:
        return (f"outputs/{day}/{clock}/val_loss: 0.31\n"
                f"checkpoint-{pid % 97}/eval_accuracy=0.81\n"
                f"runs/Dec01_{clock}_host/train/loss: 0.5\n"
                f"multirun/{day}/{clock}/0/f1=0.7\n"
                f"worker-{pid}/acc=0.9\n"
                f"val_f1_{pid}: 0.66\n").encode()
    one = {m.key for m in parse_log(run("2026-12-01", "20-33-10", 41234))}
    two = {m.key for m in parse_log(run("2026-12-02", "08-01-59", 51999))}
    assert one == two == {"val_loss", "eval_accuracy", "train/loss", "f1", "acc", "val_f1"}


# --- log-record prefixes ----------------------------------------------------------------

LOSS_BY_EPOCH = {"loss": [(0.0, 1.0), (1.0, 0.8), (2.0, 0.6)]}


def test_python_logging_asctime_levelname_prefix():
    text = (b"2026-12-01 10:00:00 INFO epoch 0 loss 1.0 acc 0.5\n"
            b"2026-12-01 10:00:01 INFO epoch 1 loss 0.8 acc 0.6\n"
            b"2026-12-01 10:00:02 INFO epoch 2 loss 0.6 acc 0.7\n")
    assert by_key(parse_log(text)) == {**LOSS_BY_EPOCH,
                                       "acc": [(0.0, 0.5), (1.0, 0.6), (2.0, 0.7)]}


def test_python_logging_basic_config_prefix():
    text = (b"INFO:root:epoch 3 loss 0.5\n"
            b"INFO:root:epoch 4 loss 0.4\n"
            b"INFO:__main__:epoch 5 loss 0.3\n")
    assert by_key(parse_log(text)) == {"loss": [(3.0, 0.5), (4.0, 0.4), (5.0, 0.3)]}


def test_level_only_prefix():
    text = b"INFO epoch 0 loss 1.0\nINFO epoch 1 loss 0.8\nINFO epoch 2 loss 0.6\n"
    assert by_key(parse_log(text)) == LOSS_BY_EPOCH


def test_hydra_job_log_prefix():
    text = (b"[2026-12-01 10:00:00,123][__main__][INFO] - epoch 0 loss 1.0\n"
            b"[2026-12-01 10:00:01,456][__main__][INFO] - epoch 1 loss 0.8\n"
            b"[2026-12-01 10:00:02,789][__main__][INFO] - epoch 2 loss 0.6\n")
    assert by_key(parse_log(text)) == LOSS_BY_EPOCH


def test_loguru_prefix():
    text = (b"2026-12-01 10:00:00.123 | INFO     | train:main:42 - epoch 0 loss 1.0\n"
            b"2026-12-01 10:00:01.123 | INFO     | train:main:42 - epoch 1 loss 0.8\n"
            b"2026-12-01 10:00:02.123 | INFO     | __main__:<module>:7 - epoch 2 loss 0.6\n")
    assert by_key(parse_log(text)) == LOSS_BY_EPOCH


def test_absl_glog_prefix():
    text = (b"I1201 10:00:00.123456 1234 train.py:42] step 100 loss 0.5\n"
            b"I1201 10:00:01.123456 1234 train.py:42] step 200 loss 0.4\n"
            b"I1201 10:00:02.123456 1234 train.py:42] step 300 loss 0.3\n")
    assert by_key(parse_log(text)) == {"loss": [(100.0, 0.5), (200.0, 0.4), (300.0, 0.3)]}


def test_every_form_reads_past_the_prefix():
    text = (b"2026-12-01 10:00:00,123 - __main__ - INFO - epoch=0 loss=1.0\n"  # key=value
            b"2026-12-01T10:00:01.123Z INFO train: epoch: 1, loss: 0.8\n"  # key: value
            b"[10:00:02] INFO | epoch 2 | loss 0.6 |\n"  # a table
            b"2026-12-01 10:00:03 INFO {'loss': 0.4, 'epoch': 3.0}\n"  # a printed dict
            b"2026-12-01 10:00:04 INFO Epoch 5/10\n"  # a Keras header, then its line
            b"375/375 [==============================] - 2s 4ms/step - loss: 0.2\n"
            b"2026-12-01 10:00:05 INFO Test loss: 0.1\n")  # after the epochs: final
    assert by_key(parse_log(text)) == {"loss": [(0.0, 1.0), (1.0, 0.8), (2.0, 0.6),
                                                (3.0, 0.4), (5.0, 0.2), (None, 0.1)]}


def test_a_prefix_is_never_a_metric_or_a_step():
    assert by_key(parse_log(b"2026-12-01 10:00:00 INFO loss 0.5\n")) == {"loss": [(None, 0.5)]}
    assert by_key(parse_log(b"I1201 10:00:00.123456 1234 train.py:42] acc: 0.9\n")) == {
        "acc": [(None, 0.9)]}
    # the same prefix on every line: the series is by order, no step from the clock
    text = b"".join(b"2026-12-01 10:00:%02d,123 INFO loss=%.1f\n" % (i, 1 - i / 10)
                    for i in range(3))
    assert by_key(parse_log(text)) == {"loss": [(0.0, 1.0), (1.0, 0.9), (2.0, 0.8)]}
    # a step label inside the message is not a prefix part
    assert by_key(parse_log(b"2026-12-01 10:00:00 [epoch 3] loss=0.5\n")) == {
        "loss": [(3.0, 0.5)]}


def test_prefixed_warnings_banners_dumps_and_counts_are_not_metrics():
    text = (b"2026-12-01 10:00:00 WARNING loss 0.5 is high\n"
            b"2026-12-01 10:00:00 WARNING epoch 1 loss 0.5\n"
            b"WARNING:root:epoch 1 loss 0.5\n"
            b"[2026-12-01 10:00:00,123][__main__][WARNING] - epoch 1 loss 0.5\n"
            b"2026-12-01 10:00:00.123 | ERROR    | train:main:42 - epoch=1 loss=0.5\n"
            b"W1201 10:00:00.123456 1234 train.py:42] step 100 loss 0.5\n"
            b"[2026-12-01 10:00:00][warning] epoch=1 loss=0.5\n"
            b"2026-12-01 10:00:00.123456: W tensorflow/core/bfc.cc:42] loss 0.5\n"
            b"2026-12-01 10:00:00 INFO loaded 480 rows\n"
            b"2026-12-01 10:00:00 INFO rows 480\n"
            b"2026-12-01 10:00:01 INFO rows 480\n"
            b"2026-12-01 10:00:00 INFO Total params: 50,890\n"
            b"2026-12-01 10:00:00 INFO TPU available: False, using: 0 TPU cores\n"
            b"2026-12-01 10:00:00 INFO Namespace(lr=0.1, epochs=3)\n"
            b"2026-12-01 10:00:00 INFO {'C': 1.0, 'solver': 'lbfgs'}\n"
            b"2026-12-01 10:00:00 INFO ValueError: loss=0.5\n"
            b"[2026-12-01 10:00:00,123][__main__][INFO] - Config:\n"
            b"model:\n  lr: 0.1\n  name: mlp\ntrainer:\n  max_epochs: 3\n")
    assert parse_log(text) == []


def test_a_prefixed_record_is_not_part_of_a_dump_after_it():
    text = (b"2026-12-01 10:00:00 INFO loss: 0.5\n"
            b"model: mlp\n"
            b"optimizer: adam\n")
    assert by_key(parse_log(text)) == {"loss": [(None, 0.5)]}


def test_prefixed_log_parses_quickly():
    import time
    lines = b"".join(b"[2026-12-01 10:00:%02d,123][__main__][INFO] - step %d loss %.4f"
                     b" acc %.3f\n" % (i % 60, i, 1 / (i + 1), i / 1e5)
                     for i in range(40000))  # about 3 MB
    started = time.perf_counter()
    found = parse_log(lines)
    assert len(found) == 80000
    assert time.perf_counter() - started < 10  # generous: shared CI cores


# --- same_stream -----------------------------------------------------------------------

CONSOLE = ("train: 100%|██████████| 4/4 [00:00<00:00, 20.1it/s, loss=0.25]\n"
           "epoch=0 loss=0.7 acc=0.61\n"
           "train: 100%|██████████| 4/4 [00:00<00:00, 20.1it/s, loss=0.125]\n"
           "epoch=1 loss=0.5 acc=0.72\n"
           "epoch=2 loss=0.4 acc=0.80\n").encode()
FILE_LOG = (b"2026-12-01 20:33:10,123 INFO train: epoch=0 loss=0.7 acc=0.61\n"
            b"2026-12-01 20:33:11,456 INFO train: epoch=1 loss=0.5 acc=0.72\n"
            b"2026-12-01 20:33:12,789 INFO train: epoch=2 loss=0.4 acc=0.80\n")


def test_same_stream_through_different_prefixes():
    assert same_stream(CONSOLE, FILE_LOG)
    assert same_stream(FILE_LOG, CONSOLE)
    assert same_stream(FILE_LOG, FILE_LOG.rsplit(b"\n", 2)[0] + b"\n")  # still being written


def test_same_stream_through_a_hydra_prefix():
    hydra = FILE_LOG.replace(b"2026-12-01 ", b"[2026-12-01 ").replace(b" INFO train: ",
                                                                      b"][train][INFO] - ")
    assert hydra.startswith(b"[2026-12-01 20:33:10,123][train][INFO] - epoch=0 ")
    assert same_stream(CONSOLE, hydra)
    assert same_stream(hydra, FILE_LOG)


def test_not_the_same_stream():
    other = FILE_LOG.replace(b"loss=0.5", b"loss=0.55").replace(b"acc=0.80", b"acc=0.79")
    assert not same_stream(FILE_LOG, other.replace(b"loss=0.4", b"loss=0.41"))
    assert not same_stream(FILE_LOG, b"eval: loss=0.9 acc=0.5\n")
    assert not same_stream(b"", FILE_LOG)
    assert not same_stream(b"no numbers here\n", b"no numbers here\n")


def test_a_few_megabytes_parse_quickly():
    import time
    lines = b"".join(b"step=%d loss=%.4f acc=%.3f lr=0.001\n" % (i, 1 / (i + 1), i / 1e5)
                     for i in range(60000))
    started = time.perf_counter()
    found = parse_log(lines)
    assert len(found) == 180000  # loss, acc and lr (a constant rate, but stepped)
    assert time.perf_counter() - started < 10  # generous: shared CI cores


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400) | st.text(alphabet="ab_1.:=- |{}()'`\r\n\x1b[%", max_size=300)
       .map(str.encode))
def test_never_raises(data):
    found = parse_log(data)
    assert all(isinstance(m, Metric) for m in found)
    same_stream(data, data)
