"""Processes on this host, as /proc tells them: whether a recorded process is still the same live
one, its process group, how to start one that outlives the dashboard, and how to end one cleanly.

A process started here (`start_detached`) is kept until it ends, then reaped by `reap` or
`reap_ended` with its exit code: no zombie stays behind, and the registry can say how a run's
process ended when it ended without reporting.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
LOG_TAIL_LINES = 20
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # tqdm moves the cursor between its bars
_PROC = Path("/proc")
_children: dict[int, subprocess.Popen] = {}  # started here and not reaped yet, by pid
_exit_codes: dict[int, int] = {}  # reaped by reap_ended, until `reap` asks for them


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state letter, process group, start time in clock ticks after boot) of `pid`, None when absent."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # Fields after the parenthesised command name (which may hold spaces): state is field 3, pgrp
    # field 5, starttime field 22 (proc(5)).
    fields = text.rpartition(")")[2].split()
    return fields[0], int(fields[2]), int(fields[19])


def process_start(pid: int) -> int | None:
    """The start time of process `pid`, None when unknown (no /proc)."""
    stat = _proc_stat(pid)
    return None if stat is None else stat[2]


def is_alive(pid: int, pid_start: int | None) -> bool:
    """Whether `pid` is a live process (not a zombie) and, when `pid_start` is known, the same
    process that was recorded rather than a new one reusing the pid."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        pass
    stat = _proc_stat(pid)
    if stat is None:  # without /proc, os.kill is all there is to tell; with it, the process just ended
        return not (_PROC / "self").exists()
    state, _, started = stat
    return state not in ("Z", "X") and (pid_start is None or started == pid_start)


def group_alive(pgid: int) -> bool:
    """Whether any live (not zombie) process is in process group `pgid`."""
    for stat in _PROC.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # ended while we looked
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def leads_group(pid: int) -> bool:
    """Whether `pid` leads its own process group (a process `start_detached` started does)."""
    stat = _proc_stat(pid)
    return stat is not None and stat[1] == pid


def start_detached(command: Sequence[str], log: Path, env: Mapping[str, str], append: bool = True) -> subprocess.Popen:
    """Start `command` in the repository root in a session of its own (it outlives page reloads and
    the dashboard, and its process group can be ended as one), its output to `log`. OSError when
    it cannot start."""
    reap_ended()
    with log.open("ab" if append else "wb") as output:
        process = subprocess.Popen(list(command), cwd=REPO_ROOT, env=dict(env), stdin=subprocess.DEVNULL,
                                   stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    _children[process.pid] = process
    return process


@dataclasses.dataclass(frozen=True)
class BackgroundJob:
    """A process `start_job` started, as its launch file tells: whether it runs, when it started
    (time.time(); None when never launched), and its output."""

    running: bool
    started: float | None
    log: Path

    def wrote_since_launch(self, result: Path) -> bool:
        """Whether `result` (what the job writes last) was written after this launch, or exists
        and the job was never launched from here."""
        return result.is_file() and (self.started is None or result.stat().st_mtime >= self.started)


def start_job(command: Sequence[str], log: Path, launch: Path, env: Mapping[str, str]) -> BackgroundJob:
    """`start_detached(command)` with a fresh `log`, recorded in the launch file `launch`
    ({"pid", "pid_start", "started"}) so that any later process can tell whether it still runs."""
    process = start_detached(command, log, env, append=False)
    started = time.time()
    launch.write_text(json.dumps({"pid": process.pid, "pid_start": process_start(process.pid), "started": started}))
    return BackgroundJob(True, started, log)


def read_job(launch: Path, log: Path) -> BackgroundJob:
    """The job recorded in `launch` (never launched: not running, started None)."""
    try:
        record = json.loads(launch.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return BackgroundJob(False, None, log)
    return BackgroundJob(is_alive(record["pid"], record["pid_start"]), record["started"], log)


def _collect(pid: int, timeout: float) -> None:
    """Reap `pid` when it is a child `start_detached` started and it ends within `timeout` s,
    keeping its exit code for `reap`."""
    process = _children.get(pid)
    if process is None:
        return
    try:
        _exit_codes[pid] = process.wait(timeout)
    except subprocess.TimeoutExpired:
        return
    del _children[pid]


def reap(pid: int, timeout: float = 2.0) -> int | None:
    """The exit code of `pid` when it is a child `start_detached` started that ended (negative:
    the signal that killed it), else None; asked once per child. A process whose main thread
    ended shows as a zombie while its other threads still exit, and can only be reaped after
    them: this waits up to `timeout` s for that."""
    _collect(pid, timeout)
    return _exit_codes.pop(pid, None)


def reap_ended() -> None:
    """Reap every child `start_detached` started that has ended, keeping its exit code for `reap`."""
    for pid in list(_children):
        _collect(pid, 0)


def describe_exit(code: int) -> str:
    """How an exit code reads: "was killed by SIGKILL", "exited with code 1"."""
    return f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"


def end(pid: int, timeout: float, group: bool) -> None:
    """SIGTERM to `pid` alone; if it (with `group`: anything left in its process group) still lives
    after `timeout` s, SIGKILL to it (to the group) and wait up to 5 s more.

    SIGTERM goes to the leader only: DataLoader workers share the group, and killing them first
    turns a clean stop into a crash."""
    start = process_start(pid)
    alive: Callable[[], bool] = (lambda: group_alive(pid)) if group else (lambda: is_alive(pid, start))
    kill: Callable[[], None] = (lambda: os.killpg(pid, signal.SIGKILL)) if group else (
        lambda: os.kill(pid, signal.SIGKILL))
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:  # already gone; what it left in its group still gets SIGKILL
        pass
    if not _wait_until(lambda: not alive(), timeout):
        try:
            kill()
        except ProcessLookupError:
            pass
        _wait_until(lambda: not alive(), 5.0)
    _collect(pid, 5.0)  # our own child: no zombie left behind


def _wait_until(done: Callable[[], bool], seconds: float) -> bool:
    """Poll done() every 0.1 s until it holds (True) or `seconds` pass (False)."""
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines of a log as a terminal shows them (a progress bar's carriage-return
    updates collapse to their latest); "" when there is no log."""
    try:
        with path.open("rb") as file:
            file.seek(max(0, file.seek(0, os.SEEK_END) - 64 * 1024))
            text = file.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    text = ANSI_ESCAPE.sub("", text)
    shown = [line.rstrip("\r").rpartition("\r")[2].rstrip() for line in text.split("\n")]
    return "\n".join([line for line in shown if line][-lines:])
