"""Heavy real libraries (Lightning, Hugging Face Trainer) on tiny models built locally.

Like test_real_libraries.py, each project states what its run read, wrote and was
given, and `onlooker show --json` must say exactly that in both capture tiers. The
libraries are the `heavy` extra (torch and all: several GB), so these are marked
`heavy`: the default run leaves them out (pyproject's addopts), .ci/run installs the
extra and runs them apart (`pytest -m heavy`). Nothing is downloaded at run time: the
models are built from a config, the data is made in the script.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from . import libprojects as lp

pytestmark = [pytest.mark.e2e, pytest.mark.heavy]

LIGHTNING_TRAIN = '''
import argparse

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Model(L.LightningModule):
    def __init__(self, lr):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Linear(4, 1)

    def training_step(self, batch, _):
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


ap = argparse.ArgumentParser()
ap.add_argument("--lr", type=float, default=0.1)
args = ap.parse_args()
torch.manual_seed(0)
rows = [list(map(float, r.split(","))) for r in open("data/xy.csv").read().split()[1:]]
data = torch.tensor(rows)
loader = DataLoader(TensorDataset(data[:, :4], data[:, 4:]), batch_size=16)
trainer = L.Trainer(max_epochs=2, logger=CSVLogger("logs", name="demo"), log_every_n_steps=2,
                    enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                    devices=1)
trainer.fit(Model(args.lr), loader)
'''


def lightning_project(project: Path, outside: Path) -> lp.Spec:
    csv = lp.classes_csv(64, 4).replace("label", "y")
    lp.write(project, {"train.py": LIGHTNING_TRAIN.lstrip(), "data/xy.csv": csv,
                       ".gitignore": "logs/\n"})
    cmd = ["python", "train.py", "--lr", "0.05"]
    v = "logs/demo/version_0"
    return lp.Spec([lp.Command(cmd, project)], [lp.Want(
        cmd, inputs={"data/xy.csv"},
        outputs={f"{v}/metrics.csv", f"{v}/hparams.yaml", f"{v}/checkpoints/epoch=1-step=8.ckpt"},
        code={"train.py"}, params={"lr": 0.05},
        metrics={f"{v}/metrics.csv:train_loss"},
    )], list(lp.GIT_SETUP))


HF_TRAIN = '''
import argparse

import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

ap = argparse.ArgumentParser()
ap.add_argument("--lr", type=float, default=1e-3)
ap.add_argument("--epochs", type=int, default=1)
args = ap.parse_args()
torch.manual_seed(0)
ids = [list(map(int, line.split())) for line in open("data/tokens.txt")]


class Tokens(torch.utils.data.Dataset):
    def __len__(self):
        return len(ids)

    def __getitem__(self, i):
        t = torch.tensor(ids[i])
        return {"input_ids": t, "labels": t}


model = GPT2LMHeadModel(GPT2Config(vocab_size=32, n_positions=16, n_embd=16, n_layer=1,
                                   n_head=2, bos_token_id=0, eos_token_id=0))
targs = TrainingArguments(output_dir="out", num_train_epochs=args.epochs, learning_rate=args.lr,
                          per_device_train_batch_size=8, logging_steps=2, save_strategy="no",
                          report_to=[], use_cpu=True, disable_tqdm=True)
trainer = Trainer(model=model, args=targs, train_dataset=Tokens())
trainer.train()
trainer.save_state()
trainer.save_model("model")
'''


def hf_trainer_project(project: Path, outside: Path) -> lp.Spec:
    import random

    rnd = random.Random(2)
    tokens = "".join(" ".join(str(rnd.randrange(32)) for _ in range(16)) + "\n"
                     for _ in range(32))
    lp.write(project, {"train.py": HF_TRAIN.lstrip(), "data/tokens.txt": tokens,
                       ".gitignore": "out/\nmodel/\n"})
    cmd = ["python", "train.py", "--lr", "0.001", "--epochs", "2"]
    state = "out/trainer_state.json"
    return lp.Spec([lp.Command(cmd, project)], [lp.Want(
        cmd, inputs={"data/tokens.txt"},
        outputs={state, "model/config.json", "model/generation_config.json",
                 "model/model.safetensors", "model/training_args.bin"},
        code={"train.py"}, params={"lr": 0.001, "epochs": 2},
        # log_history as series (loss, grad_norm, learning_rate by step), the closing
        # record's train_* and total_flos, and global_step as final values
        metrics={f"{state}:{k}" for k in (
            "loss", "grad_norm", "learning_rate", "train_loss", "train_runtime",
            "train_samples_per_second", "train_steps_per_second", "total_flos", "global_step")},
    )], list(lp.GIT_SETUP))


PROJECTS = {
    "lightning": (lightning_project, ("torch", "lightning")),
    "hf_trainer": (hf_trainer_project, ("torch", "transformers", "accelerate")),
}


@pytest.mark.parametrize("tier", ["privileged", "unprivileged"])
@pytest.mark.parametrize("name", list(PROJECTS))
def test_heavy_library_run_is_captured_exactly(tmp_path, name, tier):
    build, modules = PROJECTS[name]
    if tier == "privileged" and os.geteuid() != 0:
        pytest.skip("the privileged tiers need root")
    for module in modules:
        pytest.importorskip(module)
    project, outside = tmp_path / "proj", tmp_path / "jobs"
    project.mkdir()
    outside.mkdir()
    env = lp.run_env(tmp_path)
    # no hub, no telemetry: everything these projects need is made locally
    # (HF_HUB_OFFLINE would be a param, `env:HF_HUB_OFFLINE`: nothing here reaches a hub)
    env.update(HF_HUB_DISABLE_TELEMETRY="1", HF_HOME=str(tmp_path / "home" / "hf"))
    spec = build(project, outside)
    runs = lp.capture(project, spec, tier, env)
    lp.check(name, tier, spec.wants, runs)
