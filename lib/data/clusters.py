"""Where preprocessing's chunks run when not in this process: a Dask LocalCluster (processes or threads)
or dask-jobqueue SLURM jobs. Chunks are submitted a bounded window at a time and retried on a dying
worker; a chunk whose worker dies repeatedly ends the run with ``WorkerDied`` (finished chunks are kept).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import dask
from dask_jobqueue import SLURMCluster
from distributed import Client, LocalCluster, as_completed
from distributed.client import FutureCancelledError
from distributed.scheduler import KilledWorker


class WorkerDied(RuntimeError):
    """A chunk's Dask worker died more often than retries allow; finished chunks are kept."""


def slurm_cluster(spec: dict):
    """dask-jobqueue SLURMCluster from a parameter mapping (papermill_params/cluster/
    02_preprocessing.yaml)."""
    keys = (
        "cores",
        "memory",
        "processes",
        "queue",
        "account",
        "walltime",
        "job_extra_directives",
        "job_script_prologue",
        "local_directory",
        "log_directory",
        "interface",
    )
    return SLURMCluster(**{k: spec[k] for k in keys if spec.get(k) is not None})


def _cluster(backend: str, workers: int, slurm: dict | None):
    if backend == "dask-processes":
        # Dask's nanny gives workers MALLOC_TRIM_THRESHOLD_=64 KiB; that freezes glibc's mmap threshold, so
        # every ~200 KB image buffer is mmap'd and page-faulted afresh (sequential loop with it: 815 -> 474
        # img/s here). Chunks already bound memory, so workers keep glibc's defaults.
        environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ"))
        environ.pop("MALLOC_TRIM_THRESHOLD_", None)
        with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
            return LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
            )
    if backend == "dask-threads":  # OpenCV releases the GIL, so threads scale without pickling pixels
        return LocalCluster(n_workers=1, threads_per_worker=workers, processes=False, dashboard_address=None)
    cluster = slurm_cluster(slurm or {})
    cluster.scale(jobs=workers)
    return cluster


def run_on_dask(backend, workers, slurm, jobs: Iterator, task, bar, timings: dict, warm) -> list[dict]:
    """Run ``task(*job)`` for every job on the backend's cluster, a bounded window at a time, in
    completion order; ``warm`` runs on every worker first (imports), before the clock starts."""
    results = []
    start = time.perf_counter()
    with _cluster(backend, workers, slurm) as cluster, Client(cluster) as client:
        if backend == "dask-slurm":  # jobs queue; start once the first worker is up
            client.wait_for_workers(1)
        client.run(warm)
        timings["cluster_start_s"] = time.perf_counter() - start
        in_flight = as_completed()

        def submit_next() -> bool:
            nxt = next(jobs, None)
            if nxt is None:
                return False
            # pure=False: a retried chunk must run again; retries: a chunk on a dying worker is redone,
            # not lost
            in_flight.add(client.submit(task, *nxt, key=f"chunk-{nxt[0]:05d}", retries=2, pure=False))
            return True

        for _ in range(2 * max(1, workers)):  # a bounded window: memory follows chunk size, not dataset size
            submit_next()
        for fut in in_flight:
            try:
                results.append(fut.result())
            except (KilledWorker, FutureCancelledError) as e:
                raise WorkerDied(
                    f"{fut.key}: the Dask worker running it died repeatedly ({type(e).__name__}); completed "
                    f"chunks are kept, re-run the same command to resume"
                ) from e
            bar.update()
            submit_next()
        timings["process_s"] = time.perf_counter() - start - timings["cluster_start_s"]
    return results
