"""W&B online without an API key: one line saying what to do, and training goes on offline."""

import glob

import pytest
from conftest import TESTS_DIR, run_python

import data
from callbacks import wandb_run

TRAIN = str(TESTS_DIR.parent / "train.py")
KEY = "0" * 40
SERVER = "http://127.0.0.1:9"  # nothing listens: a key check must not need the network


@pytest.mark.parametrize("key, netrc_machine, found", [
    (None, None, False),                 # nothing at all
    (None, "api.wandb.ai", False),       # a key for another server
    (None, "127.0.0.1:9", True),         # wandb login's ~/.netrc entry for this server
    (KEY, None, True),                   # WANDB_API_KEY
])
def test_the_api_key_is_found_where_wandb_looks(tmp_path, monkeypatch, key, netrc_machine,
                                                 found):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("NETRC", raising=False)
    monkeypatch.setenv("WANDB_BASE_URL", SERVER)
    if key is None:
        monkeypatch.delenv("WANDB_API_KEY", raising=False)
    else:
        monkeypatch.setenv("WANDB_API_KEY", key)
    if netrc_machine:
        netrc = tmp_path / ".netrc"
        netrc.write_text(f"machine {netrc_machine}\n  login user\n  password {KEY}\n")
        netrc.chmod(0o600)
    assert wandb_run.has_api_key() is found


@pytest.mark.slow
@pytest.mark.parametrize("mode", [["--wandb-mode", "online"], []])
def test_online_without_a_key_says_what_to_do_and_trains_offline(tmp_path, mode):
    data.generate(tmp_path / "train", 2, 32, 48, seed=1)
    out = tmp_path / "run"
    proc = run_python([TRAIN, "--model", "tiramisu", "--model-option", "blocks=[1,1]",
                       "--model-option", "growth_rate=4", "--model-option", "initial_filters=8",
                       "--model-option", "kernel_size=3", "--model-option", "dropout=0",
                       "--data-train", tmp_path / "train", "--output-dir", out, "--epochs", "1",
                       "--steps-per-epoch", "1", *mode],
                      env_overrides={"WANDB_API_KEY": None, "WANDB_MODE": None, "NETRC": None,
                                     "HOME": str(tmp_path), "WANDB_BASE_URL": SERVER})
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stdout.splitlines() if "W&B" in line]
    if not mode:  # without a key the default is offline, silently
        assert lines == []
    else:
        assert lines == [
            f"climseg: W&B: cannot log online ({wandb_run.NO_KEY}); logging offline instead. "
            f"Upload later with: wandb sync {out}/wandb/offline-run-*"]
    assert len(glob.glob(str(out / "wandb" / "offline-run-*" / "run-*.wandb"))) == 1
