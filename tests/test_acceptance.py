"""Which heads `predict` and the server accept (training.acceptance): the run's gated rule without a
source, a source's own rules from the label store with one (its certification, its fired alarm),
read again once they are older than the TTL; a source the store does not know, or no name, refused.
On the shared tiny run, with labels in a copy of its workspace database."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from core.access.database import DB_URL_ENV
from core.data.catalogue import DatasetKey
from core.data.schema import OTHER_CLASS
from core.labels.queues import gated_rules
from core.labels.store import LabelStore
from core.model.predictor import FilePrediction, Guess
from core.trust.layer import Trust
from core.trust.sources import HeadRule
from training.__main__ import main as cli
from training.acceptance import Acceptance, check_known, rules_dataset
from training.checkpoints import load_predictor

from conftest import copy_database
from source_support import HEAD, certified_source, fire_alarm, new_photos

TTL = 5.0


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeTrust:
    """The run's thresholds, all Acceptance reads of a trust layer without a source."""

    def __init__(self, thresholds: dict[str, float | None]) -> None:
        self.values = thresholds

    def thresholds(self, target_error: float) -> dict[str, float | None]:
        return self.values


@pytest.fixture(scope="module")
def labels(in_tiny_run, tmp_path_factory):
    """The shared tiny run with its labels in a copy of its database (what the tests write stays
    theirs): the environment (the command line's too) points at the copy; (run, store, predictor)."""
    database = copy_database(in_tiny_run.home, tmp_path_factory.mktemp("labels"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(DB_URL_ENV, f"sqlite:///{database}")
        yield (in_tiny_run, LabelStore(workspace=in_tiny_run.home),
               load_predictor(in_tiny_run.record.folder, run_id=in_tiny_run.record.id))


def acceptance_of(labels, clock=None) -> Acceptance:
    run, _, predictor = labels
    return Acceptance(predictor.trust, 0.02, run.record.id, rules_dataset(run.record.folder),
                      clock=clock or Clock(), ttl=TTL)


def demo_photos(run, n: int = 8) -> list[Path]:
    return sorted((run.demo / "images").glob("*.jpg"))[:n]


def test_without_a_source_the_runs_gated_rule_applies_as_bulk_acceptance_applies_it():
    """A head is accepted at or above its threshold, of a photo the gate lets through, never as the
    rare-class bucket; no label store is read."""
    acceptance = Acceptance(FakeTrust({"gender": 0.5, "usage": None}), 0.02, "run", DatasetKey.of("/no-dataset"))

    def accepted(label: str, p: float, typical: bool) -> dict:
        result = FilePrediction("a.jpg", {"gender": [Guess(label, p)], "usage": [Guess("Casual", 0.99)]},
                                accepted={"gender": None, "usage": None}, typicality=(0.3, typical))
        return acceptance.accept(result, None).as_json()

    answer = accepted("Men", 0.6, True)
    assert answer["accepted"] == {"gender": "Men", "usage": None} and answer["source"] is None
    assert answer["rules"] == {
        "gender": {"threshold": 0.5, "gated": True, "why": "certified on the run's validation photos; only photos "
                                                          "like them"},
        "usage": {"threshold": None, "gated": True, "why": "not certified on the run's validation photos: a person "
                                                          "decides"}}
    assert accepted("Men", 0.49, True)["accepted"]["gender"] is None
    assert accepted("Men", 0.6, False)["accepted"]["gender"] is None  # unlike the calibration photos
    assert accepted(OTHER_CLASS, 0.9, True)["accepted"]["gender"] is None
    unread = FilePrediction("b.jpg", error="b.jpg: not an image")
    assert acceptance.accept(unread, None) is unread and acceptance._store is None


def test_a_source_is_named_and_known_to_the_store_or_refused_saying_which_there_are(labels, tmp_path):
    run, store, _ = labels
    clock = Clock()
    acceptance = acceptance_of(labels, clock)
    with pytest.raises(ValueError, match="a source needs a name, got ' '"):
        acceptance.check(" ")
    with pytest.raises(ValueError, match="a source's name has at most 100 characters, got 101"):
        acceptance.check("x" * 101)
    with pytest.raises(ValueError) as refused:
        acceptance.check("spring-drop")
    assert str(refused.value).startswith("unknown source 'spring-drop': the label store has no photo of it in the "
                                         f"dataset {run.demo.name!r}; its sources: ")
    new_photos(store, run.demo, tmp_path / "spring-drop", 2)
    with pytest.raises(ValueError, match="unknown source 'spring-drop'"):
        acceptance.check("spring-drop")  # the list of sources read a moment ago is still in use
    clock.now += TTL
    assert acceptance.check("  spring-drop ") == "spring-drop"
    with pytest.raises(ValueError, match=r"its sources: 'a', 'b', 'C', 'd', .* and 2 more$"):
        check_known("z", list("abCdefghijkl"), rules_dataset(run.record.folder))


def test_a_certified_source_accepts_under_its_own_rule_until_its_alarm_fires(labels, tmp_path):
    """The source's own threshold, with no gate (photos unlike the run's calibration photos too);
    the other heads go to a person; once its audits fire the alarm, the head stops, after the TTL."""
    run, store, predictor = labels
    items = certified_source(store, run.demo, tmp_path / "lookbook", run.record.id, predictor.trust)
    clock = Clock()
    acceptance = acceptance_of(labels, clock)
    results = predictor.predict_files(demo_photos(run))
    assert {result.typical for result in results} == {True, False}  # both kinds of photo
    rule = acceptance.rules("lookbook")[HEAD]
    assert rule.threshold is not None and not rule.gated and rule.why == "certified on this source's reviewed photos"
    for result in results:
        answer = acceptance.accept(result, "lookbook")
        proposal = result.predictions[HEAD][0]
        assert answer.source == "lookbook"
        assert answer.accepted[HEAD] == (proposal.label if proposal.p >= rule.threshold else None)
        assert all(answer.accepted[head] is None for head in answer.accepted if head != HEAD)
        assert answer.rules["usage"] == HeadRule(None, False, "not certified on this source's reviewed photos: a "
                                                              "person decides")
        assert acceptance.accept(result, None).accepted == result.accepted  # the run's rule, as the predictor's
    assert sum(acceptance.accept(result, "lookbook").accepted[HEAD] is not None for result in results) > 0

    fire_alarm(store, items, run.record.id)
    assert acceptance.accept(results[0], "lookbook").accepted[HEAD] is not None  # read less than the TTL ago
    clock.now += TTL
    stopped = acceptance.accept(results[0], "lookbook")
    assert stopped.accepted[HEAD] is None
    assert stopped.rules[HEAD] == HeadRule(None, True, "stopped: 4 of 4 audited tags were wrong, above the 2% "
                                                       "promised; an admin recalibrates it")
    assert acceptance.rules(None) == gated_rules(predictor.trust.thresholds(0.02))


def test_no_source_holds_for_a_checkpoint_other_than_the_calibrated_one(labels, tmp_path):
    """Another checkpoint proposes otherwise than the one the run and its sources were certified on:
    its predictor has no calibration, and a source is refused rather than its certification applied."""
    run, store, predictor = labels
    certified_source(store, run.demo, tmp_path / "showroom", run.record.id, predictor.trust)
    other = Acceptance(Trust(predictor.trust.schema, predictor.trust.taxonomy), 0.02, run.record.id,
                       rules_dataset(run.record.folder))
    for attempt in (other.check, other.rules):
        with pytest.raises(ValueError, match="this checkpoint has no calibration .* so no source's rules hold"):
            attempt("showroom")
    assert all(rule.threshold is None for rule in other.rules(None).values())
    assert acceptance_of(labels).rules("showroom")[HEAD].threshold is not None  # the calibrated one's


def test_cli_predict_accepts_under_the_named_sources_rules(labels, tmp_path, capsys):
    run, store, predictor = labels
    certified_source(store, run.demo, tmp_path / "catalogue-b", run.record.id, predictor.trust)
    photos = [shutil.copy(photo, tmp_path / f"p{index}.jpg") for index, photo in enumerate(demo_photos(run, 4))]
    assert cli(["predict", run.record.id, *map(str, photos), "--json", "--source", "catalogue-b"]) == 0
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    threshold = acceptance_of(labels).rules("catalogue-b")[HEAD].threshold
    for line in lines:
        proposal = line["predictions"][HEAD][0]
        assert line["source"] == "catalogue-b"
        assert line["rules"][HEAD] == {"threshold": threshold, "gated": False,
                                       "why": "certified on this source's reviewed photos"}
        assert line["accepted"][HEAD] == (proposal["label"] if proposal["p"] >= threshold else None)
    assert any(line["accepted"][HEAD] for line in lines)
    assert "accepted under the rules of the source 'catalogue-b'" in captured.err

    assert cli(["predict", run.record.id, str(photos[0]), "--json"]) == 0
    captured = capsys.readouterr()
    (line,) = [json.loads(text) for text in captured.out.splitlines()]
    assert line["source"] is None and line["rules"][HEAD]["gated"] and line["accepted"][HEAD] is None
    assert "accepted under the run's rule (no --source)" in captured.err


@pytest.mark.parametrize("options, message", [
    (["--source", "no-such-source"], "error: unknown source 'no-such-source': the label store has no photo of it "
                                     "in the dataset"),
    (["--source", ""], "error: a source needs a name, got ''"),
    (["--dataset", "/elsewhere"], "error: --dataset goes with --source"),
])
def test_cli_predict_refuses_a_source_before_loading_the_model(labels, tmp_path, capsys, monkeypatch, options,
                                                               message):
    run = labels[0]
    monkeypatch.setattr("training.checkpoints.load_predictor", lambda *args, **kwargs: pytest.fail("loaded"))
    assert cli(["predict", run.record.id, str(tmp_path), *options]) == 2
    assert capsys.readouterr().err.startswith(message)
