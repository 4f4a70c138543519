"""Workers sharing one study: two processes on a real PostgreSQL server run exactly the trials asked for, each
once; a worker killed with SIGKILL leaves a trial that the heartbeat fails and a rerun retries."""

import signal
import time

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from tests.medkd.sweep_tiny import start_worker, sweep_command, write_sweep_inputs
from tests.postgres import postgres_url  # noqa: F401 - fixture

STUDY = "two-workers"


def _finish(worker, timeout=600):
    out, _ = worker.communicate(timeout=timeout)
    assert worker.returncode == 0, out.decode()[-3000:]


def test_two_workers_on_postgres_run_the_exact_trial_count_each_trial_once(tmp_path, postgres_url):  # noqa: F811
    recipe, space = write_sweep_inputs(tmp_path)
    trials = 4
    outs = [tmp_path / "machine_a", tmp_path / "machine_b"]  # as on two machines: each its own folder
    workers = [start_worker(sweep_command(recipe, space, out, trials, "--storage", postgres_url, "--study", STUDY,
                                          "--no-prune", "--heartbeat", "5")) for out in outs]
    for worker in workers:
        _finish(worker)
    study = optuna.load_study(study_name=STUDY, storage=postgres_url)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == trials
    others = [t for t in study.trials if t.state != TrialState.COMPLETE]
    assert all(t.state == TrialState.FAIL and t.user_attrs.get("surplus") for t in others), others
    folders = [f.name for out in outs for f in (out / "trials").glob("trial_*")]
    assert sorted(folders) == sorted(f"trial_{t.number:04d}" for t in complete), "every trial ran once, in one worker"
    for out in outs:  # both workers wrote the outputs of the whole study
        assert len((out / "trials.csv").read_text().splitlines()) == 1 + len(study.trials)


def test_a_worker_killed_mid_trial_is_failed_by_its_heartbeat_and_a_rerun_completes_the_study(tmp_path):
    recipe, space = write_sweep_inputs(tmp_path, student_epochs=6)
    out = tmp_path / "sweep"
    command = sweep_command(recipe, space, out, 2, "--no-prune", "--heartbeat", "1")
    worker = start_worker(command)
    log = out / "trials" / "trial_0000" / "log.jsonl"
    deadline = time.time() + 300
    while not (log.exists() and log.read_text().count("\n") >= 1):
        assert worker.poll() is None, worker.stdout.read().decode()[-3000:]
        assert time.time() < deadline, "the first trial never reached its first epoch"
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    storage = f"sqlite:///{out / 'study.db'}"
    assert optuna.load_study(study_name="kd_oct_demo-sweep", storage=storage).trials[0].state == TrialState.RUNNING

    _finish(start_worker(command))
    trials = optuna.load_study(study_name="kd_oct_demo-sweep", storage=storage).trials
    assert trials[0].state == TrialState.FAIL
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == 2
    retried = [t for t in trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == 0]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    assert retried[0].params == trials[0].params
    assert (out / "recommended.yaml").exists()
