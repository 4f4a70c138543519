"""kdcore.sweep.make_storage on a real PostgreSQL server: workers that start together on a fresh database all get
the study's storage (Optuna creates its schema on first use; without a lock two creators collide)."""

from __future__ import annotations

import multiprocessing

from tests.postgres import postgres_url  # noqa: F401 - fixture

WORKERS = 6


def _open(url: str, barrier, results) -> None:
    from kdcore.sweep import make_storage

    barrier.wait()  # all at once, as workers launched by one job script
    try:
        make_storage(url, heartbeat=5)
        results.put("ok")
    except Exception as exc:  # noqa: BLE001 - the test reports what each worker met
        results.put(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")


def test_workers_opening_a_fresh_postgres_study_together_all_get_the_storage(postgres_url):  # noqa: F811
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(WORKERS), context.Queue()
    workers = [context.Process(target=_open, args=(postgres_url, barrier, results)) for _ in range(WORKERS)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    assert outcomes == ["ok"] * WORKERS, outcomes
