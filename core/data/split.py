"""The train/val split: stratified, reproducible from a seed, stable per product id; and every
dataset's fixed test part.

The test part (`in_test_part`) is the rows whose id_uniform(id, TEST_SEED) is below TEST_SHARE: about
10 % of any catalogue, a pure function of the product id, the same whatever a run's seed, split
strategy, cap or row order. A run leaves it out of training and validation and is scored on it
(training.rows), so every run of a dataset is scored on the same rows; the benchmarks carve the same
part from the real sample (tests/benchmarks/sample_parts.py). TEST_SEED and TEST_SHARE never change:
they name the part every earlier score was measured on.

Each id gets a uniform number in [0, 1) from an integer hash of (seed, id); nothing depends
on row order, so shuffling the catalogue gives every id the same split, and adding rows
moves few existing ids. Within each stratum (a value of `stratify_on`; a missing value is
a stratum of its own) the round-half-up(val_fraction * n) ids with the smallest numbers go to val.
A stratum too small to put a row in each split (val_fraction * n < 1 or
(1 - val_fraction) * n < 1, e.g. a class of one row) is decided row by row by the hash
threshold instead: val when the id's number is below val_fraction, so such rows still
reach val in the right proportion overall.

`capped_selection` picks the rows a run capped by max_samples uses, each split's share kept.

`split_catalogue_grouped` keeps groups of ids (near-duplicate photos, core.health.files) on one side:
each group follows its smallest id, so a group lands in val about as often as a single row does
(following the member with the smallest hash would favour val, which takes the smallest hashes),
and an id in no group keeps the split it would have had anyway.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from core.data.schema import require_columns

SPLITS = ("train", "val")
TEST = "test"  # a row of the dataset's fixed test part: in neither split
TEST_SEED = 20261129  # never change (module docstring)
TEST_SHARE = 0.10
MIN_TEST_ROWS = 30  # a smaller test part could hardly tell two runs apart, and a catalogue that small needs its rows
_MASK64 = (1 << 64) - 1
_SAMPLE_SALT = 0x6D61785F73616D70  # "max_samp": capped_selection's hash apart from the split's


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser, elementwise on uint64 (wrapping arithmetic): a well-mixed hash."""
    values = values + np.uint64(0x9E3779B97F4A7C15)
    values = (values ^ (values >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    values = (values ^ (values >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))


def id_uniform(ids: np.ndarray, seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per id, a pure function of (seed, id). float64 [n]."""
    seed_hash = _splitmix64(np.array([seed & _MASK64], dtype=np.uint64))
    hashed = _splitmix64(np.asarray(ids, dtype=np.int64).astype(np.uint64) ^ seed_hash)
    return (hashed >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def in_test_part(ids: np.ndarray) -> np.ndarray:
    """Whether each product id is in its dataset's fixed test part, bool [n] (module docstring)."""
    return id_uniform(ids, TEST_SEED) < TEST_SHARE


def catalogue_test_rows(frame: pd.DataFrame, added: np.ndarray) -> np.ndarray:
    """The rows of `frame` in the dataset's fixed test part, bool [n]; `added` rows (reviewed new
    photos, bool [n]) never are: they always train."""
    return ~np.asarray(added, dtype=bool) & in_test_part(frame["id"].to_numpy())


def carved_test_rows(frame: pd.DataFrame, added: np.ndarray, test_part: bool) -> np.ndarray:
    """The rows a new run leaves out as the dataset's test part, bool [n]: `catalogue_test_rows`, or
    none with `test_part` off or fewer than MIN_TEST_ROWS of them (they train and validate instead)."""
    rows = catalogue_test_rows(frame, added)
    return rows if test_part and rows.sum() >= MIN_TEST_ROWS else np.zeros(len(rows), dtype=bool)


def new_run_parts(frame: pd.DataFrame, added: np.ndarray, val_fraction: float, seed: int, test_part: bool,
                  groups: Iterable[Sequence[int]] | None = None) -> pd.Series:
    """Each row's part in a new run before a max_samples cap (index = frame.index): TEST for the
    `carved_test_rows`, the `added` rows (bool [n]) "train", the others `split_catalogue`'s
    "train"/"val"; or, given near-duplicate `groups` (a grouped run), `split_catalogue_grouped`'s, and
    None for a row left out as a near-duplicate of a test-part photo (so that the test part never
    scores a near-copy of a training photo)."""
    added = np.asarray(added, dtype=bool)
    test = carved_test_rows(frame, added, test_part)
    parts = pd.Series("train", index=frame.index, dtype=object)
    parts[test] = TEST
    rest = ~added & ~test
    if groups is None:
        parts[rest] = split_catalogue(frame[rest], val_fraction=val_fraction, seed=seed)
        return parts
    groups = [list(group) for group in groups]
    test_ids = set(frame["id"][test].tolist())
    near_test = frame["id"].isin([i for group in groups if test_ids.intersection(group) for i in group]).to_numpy()
    parts[rest & near_test] = None
    rest &= ~near_test
    parts[rest] = split_catalogue_grouped(frame[rest], groups, val_fraction=val_fraction, seed=seed)
    return parts


def split_catalogue(
    frame: pd.DataFrame, val_fraction: float = 0.2, seed: int = 0, stratify_on: str = "articleType"
) -> pd.Series:
    """"train" or "val" per row, index = frame.index (see the module docstring for the rule)."""
    if not isinstance(val_fraction, numbers.Real) or not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    require_columns(frame, ("id", stratify_on))

    ids = frame["id"].to_numpy(dtype=np.int64)
    uniform = id_uniform(ids, int(seed))
    stratum, _ = pd.factorize(frame[stratify_on], use_na_sentinel=False)
    # Rank within each stratum by (uniform, id): the id breaks exact ties without row order.
    order = np.lexsort((ids, uniform, stratum))
    sizes = np.bincount(stratum)
    starts = np.cumsum(sizes) - sizes
    rank = np.empty(len(frame), dtype=np.int64)
    rank[order] = np.arange(len(frame)) - starts[stratum[order]]

    row_sizes = sizes[stratum]
    n_val = np.floor(row_sizes * val_fraction + 0.5)
    stratifiable = (row_sizes * val_fraction >= 1) & (row_sizes * (1 - val_fraction) >= 1)
    is_val = np.where(stratifiable, rank < n_val, uniform < val_fraction)
    return pd.Series(np.where(is_val, "val", "train"), index=frame.index, name="split")


def split_catalogue_grouped(
    frame: pd.DataFrame, groups: Iterable[Sequence[int]], val_fraction: float = 0.2, seed: int = 0,
    stratify_on: str = "articleType",
) -> pd.Series:
    """`split_catalogue`, then every group's rows moved to the side of its smallest id in the frame;
    ids a group names that the frame lacks are ignored. Groups must not overlap."""
    split = split_catalogue(frame, val_fraction=val_fraction, seed=seed, stratify_on=stratify_on)
    by_id = pd.Series(split.to_numpy(), index=frame["id"].to_numpy())
    seen: set[int] = set()
    for group in groups:
        members = sorted({int(product_id) for product_id in group} & set(by_id.index))
        if seen.intersection(members):
            raise ValueError(f"groups overlap on id(s) {sorted(seen.intersection(members))[:5]}")
        seen.update(members)
        if members:
            by_id[members] = by_id[members[0]]
    return pd.Series(by_id.to_numpy(), index=frame.index, name="split")


def split_distribution(frame: pd.DataFrame, split: pd.Series, head: str) -> pd.DataFrame:
    """Class counts of `head` in each split, labelled rows only; rows in neither (TEST, or None: a
    row a run leaves out) are not counted.

    Index = class (by total count descending, then name); columns train, val (rows),
    train_share, val_share (each class's share of its split's labelled rows; NaN for an
    empty split).
    """
    require_columns(frame, (head,))
    if not split.index.equals(frame.index):
        raise ValueError("split must have the frame's index (as returned by split_catalogue(frame))")
    unknown = sorted(set(split.dropna().unique()) - {*SPLITS, TEST})
    if unknown:
        raise ValueError(f"split holds unknown values {unknown}; valid: {', '.join((*SPLITS, TEST))}")
    labelled = frame[head].notna() & split.isin(SPLITS)
    counts = pd.crosstab(frame[head][labelled], split[labelled]).reindex(columns=list(SPLITS), fill_value=0)
    total = counts.sum(axis=1)
    order = sorted(counts.index, key=lambda name: (-total[name], name))
    counts = counts.loc[order].rename_axis(index="class", columns=None)
    totals = counts.sum()
    for name in SPLITS:
        counts[f"{name}_share"] = counts[name] / totals[name] if totals[name] else float("nan")
    return counts


def capped_selection(ids: np.ndarray, split: np.ndarray, max_samples: int | None, seed: int) -> np.ndarray:
    """Which rows a run uses, bool [n]: all of them, or `max_samples` rows with each split's share kept.

    Within each split the rows with the smallest hash of (seed ^ _SAMPLE_SALT, id) are kept: a
    uniform sample (so each class keeps about its share), the same for the same seed whatever
    the row order, and nested (a larger cap keeps every row of a smaller one).
    """
    keep = np.ones(len(ids), dtype=bool)
    if max_samples is None or max_samples >= len(ids):
        return keep
    keep[:] = False
    order_key = id_uniform(ids, seed ^ _SAMPLE_SALT)
    val = np.flatnonzero(split == "val")
    n_val = round(max_samples * len(val) / len(ids))
    for members, quota in ((val, n_val), (np.flatnonzero(split == "train"), max_samples - n_val)):
        keep[members[np.argsort(order_key[members], kind="stable")[:quota]]] = True
    return keep
