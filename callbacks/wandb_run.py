"""A W&B run that never stops or stalls training, and a metrics logger keyed by global step.

Compute nodes rarely reach the internet. An online run whose server cannot be
reached made `wandb.init` wait a minute and then raise; here the server is
probed for a few seconds first (and an online run without an API key is told
what to do instead of prompting for one), and any failure to start online
falls back to an offline run (files under the output directory, uploaded
later with `wandb sync`), with one line saying so. Only rank 0 calls
`start_run`.
"""

import os
import socket
import threading
import urllib.parse

PROBE_SECONDS = 3.0


def _base_url():
    return os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")


def _server():
    """(host, port) of the W&B server this process would talk to."""
    url = urllib.parse.urlsplit(_base_url())
    return url.hostname or "api.wandb.ai", url.port or (80 if url.scheme == "http" else 443)


NO_KEY = ("no W&B API key: set WANDB_API_KEY, or run `wandb login` once (it keeps the key in "
          "~/.netrc)")


def has_api_key():
    """False when W&B would find no API key for its server (WANDB_API_KEY, ~/.netrc, settings).

    Asks wandb's own lookup without its interactive prompt: a run started
    from a terminal would otherwise wait at that prompt, and one without a
    terminal raise `UsageError`. True when that cannot be told (another
    wandb version): then `wandb.init` decides.
    """
    try:
        from wandb.sdk.lib.wbauth import authenticate_session
    except ImportError:
        return True
    try:
        return authenticate_session(host=_base_url(), source="climseg", prompt=False,
                                    update_session=False) is not None
    except Exception:  # noqa: BLE001  (e.g. a malformed key: wandb.init says which)
        return True


def reachable(timeout=PROBE_SECONDS):
    """None if the W&B server accepts a TCP connection within `timeout` s, else why not.

    Name resolution runs in a thread too, so a resolver that hangs costs no
    more than `timeout` either.
    """
    host, port = _server()
    result = {}

    def connect():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result["ok"] = True
        except OSError as e:
            result["error"] = e.strerror or type(e).__name__

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    if result.get("ok"):
        return None
    return f"{host}:{port} {result.get('error', f'did not answer within {timeout:g} s')}"


def start_run(*, mode, directory, run_id, say, **init_kwargs):
    """Starts (or resumes) the W&B run `run_id`; offline when online is not possible.

    Args:
        mode: "online", "offline" or "disabled".
        directory: where W&B writes (its `wandb/` folder goes there).
        run_id: the run's id; the same id resumes the same run.
        say: a function that prints one line to the user.
        **init_kwargs: passed on to `wandb.init` (project, entity, name, config).

    Returns:
        The run, or None when disabled or when not even an offline run starts.
    """
    if mode == "disabled":
        return None
    import wandb

    def init(mode, timeout):
        return wandb.init(mode=mode, dir=directory, id=run_id, resume="allow",
                          settings=wandb.Settings(silent=True, init_timeout=timeout),
                          **init_kwargs)

    if mode == "online":
        problem = reachable() if has_api_key() else NO_KEY
        if problem is None:
            try:
                return init("online", 15)
            except Exception as e:  # noqa: BLE001  (tracking must not stop training)
                problem = " ".join(f"{type(e).__name__}: {e}".split())[:200]
        say(f"W&B: cannot log online ({problem}); logging offline instead. Upload later "
            f"with: wandb sync {os.path.join(directory, 'wandb', 'offline-run-*')}")
    try:
        return init("offline", 30)
    except Exception as e:  # noqa: BLE001
        say(f"W&B: not logging ({type(e).__name__}: {' '.join(str(e).split())[:200]}); "
            "training goes on")
        return None


def metrics_logger(initial_step=0, every=1):
    """W&B's `WandbMetricsLogger`, logging every `every`-th batch and every epoch at the global
    step.

    A resumed run goes on from `initial_step` (the checkpoint's global step),
    so its history continues the interrupted one: W&B's step is the global
    step, and `batch/batch_step` too. Keras hands the batch logs over as
    tensors, read from the device only on the batches logged: with `every`
    > 1 the other steps never wait for it. Call after the run has started.
    """
    import numpy as np
    import wandb
    from wandb.integration.keras import WandbMetricsLogger

    class GlobalStepLogger(WandbMetricsLogger):
        def __init__(self):
            super().__init__(log_freq=1, initial_global_step=initial_step)
            self.global_batch = initial_step
            self._supports_tf_logs = True

        def on_train_batch_end(self, batch, logs=None):
            self.global_step += 1
            if self.global_step % every:
                return
            logs = {f"batch/{k}": np.asarray(v).tolist() for k, v in (logs or {}).items()}
            logs["batch/batch_step"] = self.global_step
            lr = self._get_lr()
            if lr is not None:
                logs["batch/learning_rate"] = lr
            wandb.log(logs, step=self.global_step)

        def on_epoch_end(self, epoch, logs=None):
            logs = {f"epoch/{k}": v for k, v in (logs or {}).items()}
            logs["epoch/epoch"] = epoch
            lr = self._get_lr()
            if lr is not None:
                logs["epoch/learning_rate"] = lr
            wandb.log(logs, step=self.global_step)

    return GlobalStepLogger()


def run_id(directory):
    """The W&B run id of the run in `directory`: kept in a file, so a resume continues it."""
    import uuid

    path = os.path.join(directory, "wandb_run_id")
    if os.path.exists(path):
        with open(path) as f:
            return f.read().strip()
    value = uuid.uuid4().hex[:8]
    with open(path, "w") as f:
        f.write(value)
    return value


def finish_run(run, checkpoint_dir):
    """Logs the best checkpoint as a model artifact and closes the run."""
    import json

    import wandb

    best = os.path.join(checkpoint_dir, "best")
    if os.path.isdir(best):
        with open(os.path.join(best, "meta.json")) as f:
            metadata = json.load(f)
        artifact = wandb.Artifact(f"{run.name}-best", type="model", metadata=metadata)
        artifact.add_dir(best)
        run.log_artifact(artifact)
    run.finish()
