"""Start, cancel and resume training runs, and run evaluations and data-health computations, as
processes of their own.

A launched run is `python -m training fit --run-id <id> --config <folder>/launch_config.json`
(a resumed one `fit --resume <id> --run-id <id>`) in its own process session: it outlives page
reloads, closed browsers and dashboard restarts, and cancelling it leaves nothing of its process
group behind. The registry records the child as the run's process (`RunRegistry.hand_over`), so
a child that dies before reporting anything is marked failed by the registry's reconciliation,
with its exit and the end of its run.log.

Each is asked by an `actor` (core.access.roles.Actor) who must be allowed to (Permission.TRAIN for runs,
Permission.EVALUATE for evaluations and data health: an admin), on a dataset folder under their roots; otherwise
core.access.roles.AccessDenied (FolderRefused), and nothing starts. The registry records who launched,
cancelled or resumed a run.

With FASHION_TAGGER_RAY_ADDRESS set (training.scale.RAY_ADDRESS_ENV), evaluations and data-health
computations run with `--engine ray --address <it>` (their progress lines and logs as a local one's).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
from pathlib import Path

from core import workspace
from core.access.database import DB_URL_ENV
from core.access.roles import Actor, Permission, require, require_folder
from core.data.catalogue import Catalogue
from training import health
from training.config import TrainConfig
from training.processes import BackgroundJob, end, is_alive, leads_group, read_job, start_detached, start_job
from training.registry import ACTIVE, RESUMABLE, RunRecord, RunRegistry
from training.run_folder import RunFolder, evaluation_name
from training.scale import RAY_ADDRESS_ENV, Engine

CANCEL_TIMEOUT_S = 30.0  # SIGTERM lets Lightning finish the batch and save last.ckpt; then SIGKILL


class LaunchError(RuntimeError):
    """A run could not be launched; the message says why."""


class RunBusyError(LaunchError):
    """Another run is queued or running (one run at a time, unless allow_concurrent)."""


def launch_run(cfg: TrainConfig, actor: Actor, registry: RunRegistry | None = None,
               allow_concurrent: bool = False) -> RunRecord:
    """Register `cfg` as a queued run launched by `actor` and start its training process; returns
    the queued record, its pid the training process's.

    Raises RunBusyError naming the active run when one is queued or running (unless
    allow_concurrent), LaunchError (after marking the run failed) when the process cannot start.
    """
    require_folder(actor, Permission.TRAIN, cfg.data)
    registry = registry or RunRegistry()
    _refuse_when_busy(registry, allow_concurrent)
    record = registry.create(cfg.to_dict(), actor.identity)
    run = RunFolder(record.folder)
    run.path.mkdir(parents=True, exist_ok=True)
    cfg.save(run.launch_config)
    return _start_training_process(record, ["--run-id", record.id, "--config", str(run.launch_config)], registry)


def resume_run(run_id: str, actor: Actor, registry: RunRegistry | None = None,
               allow_concurrent: bool = False) -> RunRecord:
    """Queue a failed or cancelled run again, resumed by `actor`, and continue it in a new training
    process, from its last checkpoint (from the first epoch when it has none), with its own config and id.

    Raises ValueError when the run is not failed or cancelled, RunBusyError and LaunchError as
    launch_run does.
    """
    require(actor, Permission.TRAIN)
    registry = registry or RunRegistry()
    record = registry.get(run_id)
    if record.status not in RESUMABLE:
        raise ValueError(f"run {run_id} is {record.status}; only a failed or cancelled run can be resumed")
    _refuse_when_busy(registry, allow_concurrent)
    RunFolder(record.folder).resume_checkpoint()  # ValueError when its checkpoints are all damaged
    # queued at once, so the page shows it and a second click is refused
    record = registry.reopen(run_id, actor.identity)
    return _start_training_process(record, ["--resume", run_id, "--run-id", run_id], registry)


def _refuse_when_busy(registry: RunRegistry, allow_concurrent: bool) -> None:
    active = registry.running()
    if active is not None and not allow_concurrent:
        raise RunBusyError(f"run {active.id} is {active.status}; cancel it or wait for it to end "
                           "before starting another")


def engine_arguments() -> list[str]:
    """The command-line options of the engine background evaluations and health computations run on."""
    address = os.environ.get(RAY_ADDRESS_ENV)
    return ["--engine", Engine.RAY, "--address", address] if address else []


def _environment(**extra: str) -> dict[str, str]:
    """This process's environment for a child that must use this workspace (and `extra`)."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", workspace.HOME_ENV: str(workspace.workspace_dir()), **extra}


def _start_training_process(record: RunRecord, fit_arguments: list[str], registry: RunRegistry) -> RunRecord:
    """Start `python -m training fit <fit_arguments>` for the queued `record`, appending to its
    run.log, and hand the run over to it."""
    command = [sys.executable, "-m", "training", "fit", *fit_arguments]
    # The child must write to this registry, whatever its defaults would resolve to.
    env = _environment(**{DB_URL_ENV: registry.engine.url.render_as_string(hide_password=False)})
    try:
        process = start_detached(command, RunFolder(record.folder).log, env)
    except OSError as error:
        registry.mark_failed(record.id, f"could not start the training process: {error}")
        raise LaunchError(f"could not start the training process for run {record.id}: {error}") from error
    return registry.hand_over(record.id, process.pid)


def cancel_run(run_id: str, actor: Actor, registry: RunRegistry | None = None,
               timeout: float = CANCEL_TIMEOUT_S) -> RunRecord:
    """Cancel a queued or running run of this host, for `actor`; returns its (cancelled) record.

    Marks it cancelled first, so the status is right however the process ends, then ends its
    process (`processes.end`): SIGTERM (inside fit, Lightning stops at the next batch, forwards it
    to any DDP ranks and train() saves last.ckpt) and, after `timeout` seconds, SIGKILL to what is
    left of its process group (a launched run leads its own; a run started from a terminal gets
    both signals on its pid alone). ValueError when the run is not active or runs on another host.
    """
    require(actor, Permission.TRAIN)
    registry = registry or RunRegistry()
    record = registry.get(run_id)
    if record.status not in ACTIVE:
        raise ValueError(f"run {run_id} is {record.status}; only a queued or running run can be cancelled")
    if record.host != socket.gethostname():
        raise ValueError(f"run {run_id} runs on host {record.host}; cancel it there")
    registry.mark_cancelled(run_id, actor.identity)
    if record.pid != os.getpid() and is_alive(record.pid, record.pid_start):  # not a run queued by this process
        end(record.pid, timeout, group=leads_group(record.pid))
    return registry.get(run_id)


@dataclasses.dataclass(frozen=True)
class EvaluationJob(BackgroundJob):
    """A background `python -m training evaluate RUN --data DIR` (files next to the run's evaluations)."""

    name: str  # the evaluation folder's name (run_folder.evaluation_name)

    def finished_since_launch(self, run_folder: str | Path) -> bool:
        """Whether its report was written after this launch (or it was never launched from here)."""
        return self.wrote_since_launch(RunFolder(run_folder).evaluation(self.name) / "report.json")


def launch_evaluation(record: RunRecord, data: str | Path, actor: Actor) -> EvaluationJob:
    """Start evaluating the run's best checkpoint on every row of catalogue `data`, for `actor`, in
    its own process session (it outlives the page), unless that evaluation is already running;
    returns the job."""
    require_folder(actor, Permission.EVALUATE, data)
    job = evaluation_job(record, data)
    if job.running:
        return job
    command = [sys.executable, "-m", "training", "evaluate", record.id, "--data", str(data), *engine_arguments()]
    started = start_job(command, job.log, RunFolder(record.folder).evaluation_launch(job.name), _environment())
    return EvaluationJob(**dataclasses.asdict(started), name=job.name)


def evaluation_job(record: RunRecord, data: str | Path) -> EvaluationJob:
    """The background evaluation of the run on `data`: whether it runs, when it started, its log."""
    name, run = evaluation_name(data), RunFolder(record.folder)
    job = read_job(run.evaluation_launch(name), run.evaluation_log(name))
    return EvaluationJob(**dataclasses.asdict(job), name=name)


def launch_health(catalogue: Catalogue, actor: Actor, record: RunRecord | None = None) -> BackgroundJob:
    """Start computing the catalogue's data health under the run's model (None: the pretrained
    backbone), for `actor` (Permission.EVALUATE, the catalogue under their roots), in its own
    process session, unless that computation is already running; returns the job."""
    require_folder(actor, Permission.EVALUATE, catalogue.root)
    job = health_job(catalogue, record)
    if job.running:
        return job
    folder = health.folder_of(catalogue, record)
    folder.path.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "training", "health", str(catalogue.root), *engine_arguments()]
    if record is not None:
        command += ["--run", record.id]
    return start_job(command, folder.log, folder.launch, _environment())


def health_job(catalogue: Catalogue, record: RunRecord | None = None) -> BackgroundJob:
    """The background data-health computation of the catalogue under the run's model (None: the
    pretrained backbone): whether it runs, when it started, its log. Done when it wrote
    health.json since (`job.wrote_since_launch(folder.info)`)."""
    folder = health.folder_of(catalogue, record)
    return read_job(folder.launch, folder.log)
