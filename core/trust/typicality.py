"""The typicality gate: a proposal is accepted with no person only for a photo like the rows its
thresholds were certified on. A threshold's guarantee holds for photos exchangeable with those rows
and says nothing about a photo of another kind (a street photo against studio shots), where a
confident model can be wrong a fifth of the time.

A photo's score is its distance to its K-th nearest reference row, in the run's own embedding (its
backbone's pooled features, L2-normalised; cosine distance, 1 - similarity): the k-NN
out-of-distribution score of Sun et al. 2022 ("Out-of-distribution detection with deep nearest
neighbors", arXiv 2204.06507), which needs no labels and no assumption on the features' shape.

The cut is a conformal quantile. The reference rows are the validation rows that fitted the
temperatures; each one's score is taken leaving itself out, and the cut is the ceil((n + 1)(1 -
REFUSED))-th smallest of those n scores. A new photo exchangeable with them then scores at most the
cut with probability at least 1 - REFUSED (Vovk et al. 2005; Angelopoulos and Bates 2021, section
1): so the gate refuses at most about a tenth of the photos the thresholds speak for, and it was fitted
apart from the rows that certify the thresholds, which are counted as the gate lets them through
(core.trust.layer.fit_calibration). What it refuses goes to a person, marked "unlike the calibration
photos".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

# K: the neighbour whose distance is the score. Sun et al. use up to 50 of 50,000 rows; a run calibrates on a
# few hundred to a thousand, where the nearest one separates best: on 402 reference rows of the real sample,
# studio (test part) against external photos, AUROC 0.96 at K=1, 0.89 at 10, 0.58 at 50 (RESULTS.md).
NEIGHBOURS = 1
REFUSED = 0.1  # the share of photos like the reference ones the gate may refuse
FORMAT_VERSION = 1
UNLIKE_CALIBRATION = "unlike the calibration photos: a person decides every tag"  # what the gate's refusal says


def normalise(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, float32 [n, d] (an all-zero row stays zero)."""
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2:
        raise ValueError(f"features must be [n, d], got shape {features.shape}")
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.where(norms > 0, norms, 1)


@dataclass(frozen=True, eq=False)  # eq below: the arrays compared by value
class Typicality:
    """A fitted gate: the reference rows' features and the cut on the score."""

    ids: np.ndarray  # int64 [n], the reference rows' product ids
    reference: np.ndarray  # float32 [n, d], L2-normalised
    cut: float  # a photo scoring above it is unlike the reference rows
    neighbours: int = NEIGHBOURS
    refused: float = REFUSED

    @classmethod
    def fit(cls, ids: np.ndarray, features: np.ndarray, neighbours: int = NEIGHBOURS,
            refused: float = REFUSED) -> Typicality:
        """The gate over reference rows `ids` int [n] with `features` float [n, d] (module docstring);
        ValueError for fewer rows than `fits` needs."""
        if not 0 < refused < 1 or neighbours < 1:
            raise ValueError(f"need 0 < refused < 1 and neighbours >= 1, got {refused!r} and {neighbours!r}")
        # At the precision it is stored in (half: a run keeps ~1,000 rows of ~1,280 features), so a
        # gate read back is the gate that was fitted.
        ids, reference = np.asarray(ids, dtype=np.int64), normalise(features).astype(np.float16).astype(np.float32)
        if len(ids) != len(reference):
            raise ValueError(f"{len(ids)} ids for {len(reference)} rows of features")
        if not fits(len(ids), neighbours, refused):
            raise ValueError(f"{len(ids)} reference rows are too few for a gate (K={neighbours}, "
                             f"refusing {refused:.0%})")
        left_out = cls(ids, reference, math.inf, neighbours, refused).scores(reference, ids)
        rank = math.ceil((len(ids) + 1) * (1 - refused))
        return cls(ids, reference, float(np.sort(left_out)[rank - 1]), neighbours, refused)

    def scores(self, features: np.ndarray, ids: np.ndarray | None = None) -> np.ndarray:
        """float32 [m]: each row's cosine distance to its K-th nearest reference row. A row given with
        the id of a reference row is scored leaving that row out, as the cut was."""
        features = normalise(features)
        distances = _distances(self.reference, features, self.neighbours + 1)
        member = np.zeros(len(features), dtype=bool) if ids is None else np.isin(np.asarray(ids), self.ids)
        return np.where(member, distances[:, self.neighbours], distances[:, self.neighbours - 1])

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Typicality) and np.array_equal(self.ids, other.ids)
                and np.array_equal(self.reference, other.reference)
                and (self.cut, self.neighbours, self.refused) == (other.cut, other.neighbours, other.refused))

    __hash__ = None

    def typical(self, scores: np.ndarray) -> np.ndarray:
        """bool [m]: the rows the gate lets through."""
        return np.asarray(scores) <= self.cut

    def to_dict(self) -> dict:
        """JSON values but the reference (float16 [n, d] numpy), which a caller stores as it can."""
        return {"format_version": FORMAT_VERSION, "cut": self.cut, "neighbours": self.neighbours,
                "refused": self.refused, "ids": [int(i) for i in self.ids],
                "reference": self.reference.astype(np.float16)}

    @classmethod
    def from_dict(cls, values: Mapping) -> Typicality:
        version = values.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(f"unsupported typicality format_version {version!r}; expected {FORMAT_VERSION}")
        return cls(np.asarray(values["ids"], dtype=np.int64), np.asarray(values["reference"], dtype=np.float32),
                   float(values["cut"]), int(values["neighbours"]), float(values["refused"]))


def fits(rows: int, neighbours: int = NEIGHBOURS, refused: float = REFUSED) -> bool:
    """Whether `rows` reference rows can fit a gate: K neighbours besides each, and the conformal
    quantile within them (rows >= 1 / refused - 1)."""
    return rows > neighbours and math.ceil((rows + 1) * (1 - refused)) <= rows


def _distances(reference: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """float32 [m, k]: 1 - cosine similarity of each query to its k most similar reference rows,
    nearest first (both normalised)."""
    import faiss  # here: the control path reads calibrations without building an index

    index = faiss.IndexFlatIP(reference.shape[1])
    index.add(np.ascontiguousarray(reference, dtype=np.float32))
    similarity, _ = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return (1 - similarity).astype(np.float32)
