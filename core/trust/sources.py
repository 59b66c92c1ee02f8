"""Trust per source: photos arrive in sources (an upload batch, a folder, the catalogue), and a
promise certified on one kind of photo says nothing of another. Three pieces, all torch-free:

- **Certification from people's decisions** (`source_selection`, `more_rows_needed`): the heads a
  person decided on photos of a source, with the model's proposal and confidence logged beside
  them, are that source's calibration rows. They are counted per threshold as the run's own
  SELECTION rows are (core.trust.abstention.Selection), and tested in the same fixed sequence, whose
  start the run's own guide rows set (ordered before these rows are counted, as the guarantee
  needs). A source certified so needs no typicality gate: its thresholds were certified on its own
  kind of photo. The guarantee holds when the decisions counted are exchangeable with the source's
  later photos: true of a source reviewed whole before it is certified. Where an uncertified
  source was bulk-accepted under the run's rule meanwhile, its decisions are a censored sample:
  the heads the run accepted reach people only through the audit share, so the counts above the
  run's threshold are fewer (the projection of rows needed is pessimistic) and the sample is not
  exchangeable in that band; the bias there is usually conservative (what people see is what the
  model was less sure of), not guaranteed. Hence the default below: a source is reviewed whole
  until it is certified, and its decisions are then an uncensored sample.
- **Reviewed whole until certified** (NEW_SOURCE_AUDIT_SHARE = 1): the run's thresholds and its
  typicality gate were certified on the run's own kind of photo, and on photos of another kind the
  gate alone let wrong tags through (34 of 341 external photos accepted, 4 wrong: an upper bound
  of 24.9 %, RESULTS.md). So no photo of a new source is accepted without a person until its own
  reviewed photos certify its heads: every photo the run's rule would have accepted is an audit,
  which shows on the Trust view how that rule would have done there. An admin who trusts a source
  to be like the catalogue lowers its audit share (20 % caught a bad kind of photo in every
  replay), and the run's gated rule then accepts its typical photos with that share audited.
- **Audits** (`audit_draw`): a share of the photos whose heads would be accepted (by default
  NEW_SOURCE_AUDIT_SHARE until the source is certified on its own photos, AUDIT_SHARE after; an
  admin sets a source's own) is drawn by a hash of the item and left for a person instead,
  unannounced: the queue shows it like any other photo. The person's decision on each head that
  would have been accepted is an audit outcome.
- **The alarm** (`watch`): a test of "the accepted tags' error is at most the target" on the audit
  outcomes as they arrive, which may be looked at after every decision. Its statistic is a mixture
  of betting martingales (Waudby-Smith and Ramdas 2023; Shafer and Vovk's testing by betting): for
  each lambda in BETS, prod_t (1 + lambda (x_t - E)), x_t = 1 when the audited tag was wrong,
  mixed over start times too (`watch`), so that a source that turns bad after a long good run is
  caught as soon as one that starts bad. Under the null (error <= E) each factor has expectation
  <= 1, so the mixture is a nonnegative supermartingale starting at 1 and, by Ville's inequality,
  it ever reaches 1 / ALARM_FALSE_RATE with probability at most ALARM_FALSE_RATE, however long the
  stream and however often it is checked. When it does, the head stops auto-accepting for that
  source until an admin recalibrates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from core.data.split import id_uniform
from core.trust.abstention import DELTA, Selection, check_target, clopper_pearson

AUDIT_SHARE = 0.05  # the share of accepted photos a person sees anyway, of a source certified on its own photos
# ... and of a source not yet certified: all of them (the module docstring). An admin may lower it: 5 % caught
# a bad new kind of photo in 41 % of replays within 341 photos, 20 % in all of them (RESULTS.md, bench_sources.py).
NEW_SOURCE_AUDIT_SHARE = 1.0
ALARM_FALSE_RATE = 0.05  # the alarm fires on a source whose accepted error is within target at most this often
# The mixture's bets, as lambda * E: from a small excess of errors (patient) to a large one (quick).
BETS = (0.02, 0.05, 0.1, 0.2, 0.4)
_AUDIT_SALT = 0x61756474  # "audt": audit draws independent of the split's and the trust roles' hashes
MAX_EXTRA_ROWS = 100_000  # more_rows_needed looks no further


def check_share(share: float) -> float:
    """An audit share: a rate in [0, 1]; ValueError naming the value otherwise."""
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
        raise ValueError(f"the audit share must be a rate between 0 and 1 (0.05 = 5 %), got {share!r}")
    return float(share)


def check_source(name: str) -> str:
    """A source's name as people type it: 1 to 100 characters after trimming."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a source needs a name, got {name!r}")
    if len(name.strip()) > 100:
        raise ValueError(f"a source's name has at most 100 characters, got {len(name.strip())}")
    return name.strip()


def audit_draw(items: Sequence[int], share: float) -> np.ndarray:
    """bool [n]: which of `items` (label store item ids) are audited at `share`: a hash of the id,
    so the draw is the same whoever asks and whenever, and about `share` of any set of items."""
    share = check_share(share)
    return id_uniform(np.asarray(items, dtype=np.int64), _AUDIT_SALT) < share


def source_selection(confidence: np.ndarray, correct: np.ndarray, run_selection: Selection) -> Selection:
    """A head's Selection on a source's decisions: confidence float [n] of the proposals people
    saw, correct bool [n] (their decision kept the proposal), tested in the fixed sequence whose
    start the run's own guide rows set (`run_selection.guide`; None keeps Bonferroni)."""
    counted = Selection.count(confidence, correct)
    return Selection(counted.accepted, counted.errors, counted.rows, run_selection.guide, run_selection.guide_rows)


def more_rows_needed(selection: Selection, target_error: float, delta: float = DELTA) -> int | None:
    """How many more decided photos of the source would certify the head at `target_error`, if they
    go as those so far did (per threshold, the same share accepted and the same error among them;
    before any, as the run's own rows guide); 0 when it is certified, None when no number of rows
    like these would do (their error is above the target)."""
    check_target(target_error)
    if selection.threshold(target_error, delta) is not None:
        return 0
    accepted, errors = np.array(selection.accepted, dtype=np.float64), np.array(selection.errors, dtype=np.float64)
    if selection.rows:
        share, error = accepted / selection.rows, np.divide(errors, accepted, out=np.zeros_like(errors),
                                                          where=accepted > 0)
    elif selection.guide is not None and selection.guide_rows:
        share, error = np.array(selection.guide, dtype=np.float64) / selection.guide_rows, np.zeros_like(errors)
    else:
        return None

    def certified(rows: int) -> bool:
        taken = np.round(share * rows)
        projected = Selection(tuple(int(n) for n in taken), tuple(int(k) for k in np.round(taken * error)), rows,
                              selection.guide, selection.guide_rows)
        return projected.threshold(target_error, delta) is not None

    # More rows need not always help: the guide moves the sequence's start to stricter thresholds as
    # rows grow. So look up by doubling for the first count that certifies, then narrow inside it.
    low, step = selection.rows, 1
    while step <= MAX_EXTRA_ROWS and not certified(selection.rows + step):
        low, step = selection.rows + step, step * 2
    if step > MAX_EXTRA_ROWS:
        return None
    high = selection.rows + step
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if certified(middle) else (middle, high)
    return high - selection.rows


@dataclass(frozen=True)
class Alarm:
    """The alarm's state on one source's and head's audit outcomes, oldest first."""

    audited: int
    wrong: int
    wealth: float  # the test statistic now: evidence against "error <= target", 1 at the start
    fired_at: int | None  # how many audits it took to fire; None: it has not
    target: float
    false_rate: float = ALARM_FALSE_RATE

    @property
    def fired(self) -> bool:
        return self.fired_at is not None

    @property
    def error(self) -> float | None:
        """The realised error among the audited tags; None before any."""
        return self.wrong / self.audited if self.audited else None

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        """Two-sided Clopper-Pearson interval of the accepted tags' error at `level`; (0, 1) before any."""
        return clopper_pearson(self.wrong, self.audited, level)


def watch(wrong: Sequence[bool], target_error: float, false_rate: float = ALARM_FALSE_RATE) -> Alarm:
    """The alarm on audit outcomes `wrong` (bool, oldest first: the audited tag was wrong), testing
    "the accepted tags' error is at most `target_error`" (module docstring); it fires once the
    wealth reaches 1 / `false_rate`, and stays fired.

    The wealth is a mixture over bets (BETS) and over start times: the bettor starting at audit j
    has the weight 1 / (j (j + 1)) (they sum to 1), kept as cash until then. A long run of good
    audits makes a bettor who started at the beginning poor; one who starts at the change is
    not, so a source that turns bad is caught in about as many audits whatever its history (at
    the cost of log j(j + 1) in wealth). Each bettor's wealth is a test supermartingale under the
    null, so the mixture is one too, and Ville's inequality holds for it as for each."""
    target = check_target(target_error)
    if not 0 < false_rate < 1:
        raise ValueError(f"the alarm's false-alarm rate must be between 0 and 1, got {false_rate!r}")
    outcomes = np.asarray(wrong, dtype=np.float64)
    bets = np.asarray(BETS) / target  # lambda; each < 1 / E keeps every factor positive
    started, wealth, fired_at = np.zeros(len(bets)), 1.0, None
    for audit, outcome in enumerate(outcomes, 1):
        started = (started + 1 / (audit * (audit + 1))) * (1 + bets * (outcome - target))
        wealth = float(started.mean()) + 1 / (audit + 1)  # the cash of the bettors yet to start: sum_{j>t} w_j
        if fired_at is None and wealth >= 1 / false_rate:
            fired_at = audit
    return Alarm(len(outcomes), int(outcomes.sum()), wealth, fired_at, target, false_rate)


@dataclass(frozen=True)
class HeadRule:
    """How a head of one source's photos is accepted with no person: at `threshold` (None: never),
    only of photos the typicality gate lets through when `gated`; `why` says where the rule comes
    from, for the page."""

    threshold: float | None
    gated: bool
    why: str


def head_rules(run_thresholds: Mapping[str, float | None], source_thresholds: Mapping[str, float | None] | None,
               alarms: Mapping[str, Alarm]) -> dict[str, HeadRule]:
    """Per head of `run_thresholds` (the run's, certified on its validation rows, gated): the rule
    for one source. Once the source is certified on its own decisions (`source_thresholds`, None
    before), its thresholds replace the run's, ungated, and a head they do not certify goes to a
    person; a fired alarm stops a head whatever certified it."""
    rules = {}
    for head, threshold in run_thresholds.items():
        alarm = alarms.get(head)
        if alarm is not None and alarm.fired:
            rules[head] = HeadRule(None, True, f"stopped: {alarm.wrong} of {alarm.audited} audited tags were wrong, "
                                               f"above the {alarm.target:.0%} promised; an admin recalibrates it")
        elif source_thresholds is not None:
            own = source_thresholds.get(head)
            rules[head] = (HeadRule(own, False, "certified on this source's reviewed photos") if own is not None else
                           HeadRule(None, False, "not certified on this source's reviewed photos: a person decides"))
        elif threshold is not None:
            rules[head] = HeadRule(threshold, True, "certified on the run's validation photos; "
                                                    "only photos like them")
        else:
            rules[head] = HeadRule(None, True, "not certified: a person decides")
    return rules


def reviewed_whole(rules: Mapping[str, HeadRule], certified: bool) -> dict[str, HeadRule]:
    """The rules of a source whose every photo goes to a person (an audit share of 100 %): no head
    is accepted. `rules`, what would hold otherwise, are still tried on its photos as audits."""
    until = "" if certified else " until its own reviewed photos certify it"
    return {head: HeadRule(None, rule.gated, f"a person decides every photo of this source{until} (audit share "
                                             f"100 %)" + ("" if rule.threshold is not None else f"; {rule.why}"))
            for head, rule in rules.items()}
