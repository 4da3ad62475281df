"""SIGKILL at any moment, mid-save included, then ``--resume``: bitwise-identical weights and
per-step losses to an uninterrupted run (CPU)."""

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.unit.training.support import ROOT, env, run_script, tiny_run_config, write_config

# Runs scripts/pretrain.py, optionally SIGKILLing itself at a chosen point of the k-th save:
# "state" (trainer_state.pt half written in the temporary directory), "weights" (after the
# weights, before anything else), "latest" (directory renamed, pointer not yet updated).
BOOTSTRAP = """
import os, runpy, signal, sys

import torch
import zmaj_lm.training.checkpoint as ck
import zmaj_lm.training.loop as lp

spec = os.environ.get("ZMAJ_TEST_KILL")
if spec:
    nth, phase = int(spec.split(":")[0]), spec.split(":")[1]
    saves = [0]

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def counting(fn):
        def wrapper(*a, **k):
            saves[0] += 1
            return fn(*a, **k)
        return wrapper

    lp.write_checkpoint = counting(ck.write_checkpoint)
    if phase == "state":
        real_save = torch.save

        def save(obj, f, *a, **k):
            if saves[0] == nth:
                with open(f, "wb") as fh:
                    fh.write(b"partial")
                die()
            return real_save(obj, f, *a, **k)

        torch.save = save
    elif phase == "weights":
        real_save_model = ck.save_model

        def save_model(*a, **k):
            real_save_model(*a, **k)
            if saves[0] == nth:
                die()

        ck.save_model = save_model
    elif phase == "latest":
        real_write = ck.atomic_write_text

        def write(dest, text):
            if str(dest).endswith("latest") and saves[0] == nth:
                die()
            return real_write(dest, text)

        ck.atomic_write_text = write
sys.argv = ["pretrain.py", *sys.argv[1:]]
runpy.run_path(os.path.join(os.getcwd(), "scripts", "pretrain.py"), run_name="__main__")
"""


def _launch(config: Path, out: Path, kill: str | None) -> subprocess.Popen[str]:
    e = env()
    if kill:
        e["ZMAJ_TEST_KILL"] = kill
    return subprocess.Popen(
        [sys.executable, "-c", BOOTSTRAP, "--config", str(config), "--out", str(out), "--resume"],
        cwd=ROOT,
        env=e,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _losses(out: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r["kind"] == "train"]
    assert len(steps) == len(set(steps)), "a step was logged twice"
    return {r["step"]: r["loss"] for r in records if r["kind"] == "train"}


@pytest.mark.slow
def test_sigkill_anywhere_then_resume_is_bitwise_identical(tmp_path: Path) -> None:
    cfg = tiny_run_config(
        tmp_path / "data",
        max_steps=10,
        save_every=2,
        checkpoint={"keep_last": 2},
        optimizer={"name": "muon", "lr": 0.01, "muon_lr": 0.02},
        ema_decay=0.9,
    )
    config = write_config(tmp_path / "run.yaml", cfg)
    ref = tmp_path / "ref"
    proc = run_script("pretrain.py", "--config", str(config), "--out", str(ref))
    assert proc.returncode == 0, proc.stderr[-2000:]

    out = tmp_path / "killed"
    rng = random.Random(0)
    kills = ["2:state", "1:latest", "3:weights", None]
    for kill in kills:
        p = _launch(config, out, kill)
        if kill is None:
            time.sleep(rng.uniform(2.0, 6.0))
            p.send_signal(signal.SIGKILL)
        _, err = p.communicate(timeout=300)
        if kill is None:
            assert p.returncode in (-signal.SIGKILL, 0), err[-2000:]
        else:
            assert p.returncode == -signal.SIGKILL, (
                f"kill point {kill} never reached: {err[-2000:]}"
            )
    final = _launch(config, out, None)
    _, err = final.communicate(timeout=300)
    assert final.returncode == 0, err[-2000:]

    a = load_file(str(ref / "checkpoints" / "step_10" / "model.safetensors"))
    b = load_file(str(out / "checkpoints" / "step_10" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all((a[k] == b[k]).all() for k in a), "weights differ after kill/resume"
    assert _losses(ref) == _losses(out)
    leftovers = [p.name for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
    assert leftovers == []
