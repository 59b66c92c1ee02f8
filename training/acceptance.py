"""Which heads of a predicted photo need no person, for `predict` and the server (training.serve):
under the rules of the photo's source in the workspace's label store (core.labels.sources.source_policy:
the source's own certification or the run's, stopped where an alarm fired), or, without a source,
under the run's gated rule (its thresholds at the target error, of photos the typicality gate lets
through). Applied as bulk acceptance on the Review page applies them (core.labels.queues.sure_heads),
so that a tag `predict` or the server accepts is one the Review page would accept too.

The store changes while a server runs: people decide, audits come back, an admin recalibrates. A
source's rules are read again once they are RULES_TTL seconds old, so a fired alarm stops acceptance
within that time, and a busy server reads the store at most once per source in that time.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Collection
from pathlib import Path

from core.data.catalogue import DatasetKey
from core.labels.queues import PhotoProposal, Rules, gated_rules, sure_heads
from core.labels.sources import source_policy, sources
from core.labels.store import LabelStore
from core.model.predictor import FilePrediction
from core.trust.abstention import check_target
from core.trust.layer import Trust
from core.trust.sources import check_source
from core.workspace import workspace_dir
from training.config import TrainConfig
from training.run_folder import RunFolder

RULES_TTL = 5.0  # seconds a source's rules (and the list of sources) are used before they are read again
SHOWN_SOURCES = 10  # the known sources an unknown one's message names at most


def rules_dataset(run_folder: str | Path, dataset: str | Path | None = None) -> DatasetKey:
    """The dataset whose photos' sources the rules are read for: `dataset`, else the run's own (its config's data)."""
    return DatasetKey.of(dataset if dataset is not None else TrainConfig.from_file(RunFolder(run_folder).config).data)


def check_known(name: str, known: Collection[str], dataset: DatasetKey) -> str:
    """`name` as core.trust.sources.check_source takes it, and a source of `dataset`'s photos in the
    label store (`known`); ValueError naming the sources there are otherwise (a misspelt source would
    silently get another source's rules)."""
    name = check_source(name)
    if name not in known:
        listed = sorted(known, key=str.casefold)
        shown = ", ".join(map(repr, listed[:SHOWN_SOURCES])) or "none yet"
        if len(listed) > SHOWN_SOURCES:
            shown += f" and {len(listed) - SHOWN_SOURCES:,} more"
        raise ValueError(f"unknown source {name!r}: the label store has no photo of it in the dataset "
                         f"{Path(dataset).name!r}; its sources: {shown}")
    return name


def open_store(workspace: str | Path | None = None) -> LabelStore:
    """The label store of `workspace` (None: core.workspace.workspace_dir())."""
    return LabelStore(workspace=Path(workspace) if workspace is not None else workspace_dir())


def check_source_now(name: str, dataset: DatasetKey, workspace: str | Path | None = None) -> str:
    """`check_known` against the sources the label store holds now: for a command line, before its
    model loads, so that a misspelt source fails at once."""
    return check_known(name, sources(open_store(workspace), dataset), dataset)


class Acceptance:
    """The rules a run's predictions are accepted under, per source, for `predict` and the server.

    trust, target_error, run_id: the run's trust layer (its predictor's; None: nothing is accepted)
    and the error an accepted tag may have. dataset: the DatasetKey whose sources are meant.
    workspace: the label store's (None: core.workspace.workspace_dir()), opened only once a source
    is named. ttl: seconds the rules read are kept (RULES_TTL); clock: seconds, monotonic."""

    def __init__(self, trust: Trust | None, target_error: float, run_id: str, dataset: DatasetKey,
                 workspace: str | Path | None = None, ttl: float = RULES_TTL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.trust, self.target_error, self.run_id, self.dataset = trust, check_target(target_error), run_id, dataset
        self.workspace, self.ttl, self.clock = workspace, ttl, clock
        self.run_rules: Rules = {} if trust is None else gated_rules(trust.thresholds(self.target_error))
        self._store: LabelStore | None = None
        self._read: dict[tuple[str, ...], tuple[float, object]] = {}  # what -> (read at, value)

    @property
    def store(self) -> LabelStore:
        if self._store is None:
            self._store = open_store(self.workspace)
        return self._store

    def _fresh(self, key: tuple[str, ...], read: Callable[[], object]) -> object:
        """The value `read` gave for `key` within the last `ttl` seconds, else read again."""
        now = self.clock()
        if key not in self._read or now - self._read[key][0] >= self.ttl:
            self._read[key] = (now, read())
        return self._read[key][1]

    def check(self, source: str) -> str:
        """`source` checked (`check_known`) against the sources the store holds now (within `ttl`);
        ValueError too where no source's rules can hold (`_certified`)."""
        self._certified()
        return check_known(source, self._fresh(("sources",), lambda: sources(self.store, self.dataset)), self.dataset)

    def _certified(self) -> None:
        """ValueError unless these proposals are the ones the run's and its sources' thresholds were
        certified on: a checkpoint other than the calibrated one (Predictor: no calibration) proposes
        otherwise, so a source's certification says nothing of it."""
        if self.trust is None or self.trust.calibration is None:
            raise ValueError(f"run {self.run_id}: this checkpoint has no calibration (a run's is fitted on its best "
                             "checkpoint), so no source's rules hold for its proposals; use the best checkpoint, or "
                             f"calibrate the run: python -m training calibrate {self.run_id}")

    def rules(self, source: str | None) -> Rules:
        """Per head, the rule a photo of `source` (`check`ed; None: no source, the run's gated rule)
        is accepted under now."""
        if source is None:
            return self.run_rules
        self._certified()

        def read() -> Rules:
            policy, _ = source_policy(self.store, self.dataset, [source], self.run_id, self.trust, self.target_error)
            return policy.rules_for(source)

        return self._fresh(("rules", source), read)

    def accept(self, result: FilePrediction, source: str | None) -> FilePrediction:
        """`result` with `accepted` under `source`'s rules (core.labels.queues.sure_heads, as bulk
        acceptance) and those rules in it; unchanged when the file was not read or the run has no
        trust layer (nothing accepted)."""
        if result.error is not None or result.accepted is None or self.trust is None:
            return result
        rules = self.rules(source)
        proposal = PhotoProposal({head: (guesses[0].label, guesses[0].p)
                                  for head, guesses in result.predictions.items()}, result.typical)
        sure = sure_heads(proposal, rules)
        return dataclasses.replace(result, accepted={head: sure[head][0] if head in sure else None
                                                     for head in result.predictions}, source=source, rules=rules)
