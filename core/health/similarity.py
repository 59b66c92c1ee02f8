"""Similar photos over L2-normalised embeddings (core.health.embeddings), through faiss: nearest neighbours,
near-duplicate groups and outliers.

Inner product on unit vectors is cosine similarity. Up to APPROXIMATE_FROM photos the index is
exact (IndexFlatIP: every query compares with every photo); from there on it is HNSW
(IndexHNSWFlat), whose search cost grows about with log n instead of n, at a small loss of recall
(tests/benchmarks/bench_health.py measures both, their memory and the approximate one's recall).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

# From here on the all-photos neighbour search of an exact index costs minutes on a CPU (it grows
# with n squared); see tests/benchmarks/bench_health.py for the measured basis.
APPROXIMATE_FROM = 100_000
HNSW_LINKS = 32  # graph links per vector (faiss's M): more is better recall, more memory
HNSW_BUILD_DEPTH = 80  # efConstruction: candidates kept while inserting
HNSW_SEARCH_DEPTH = 128  # efSearch: candidates kept while searching (>= the k asked for)
# Photos at least this similar (cosine of their embeddings) are near-duplicates by default; the
# planted copies of tests/benchmarks/bench_health.py are the measured basis.
DEFAULT_THRESHOLD = 0.93
NEIGHBOURS = 20  # neighbours kept per photo: near-duplicate groups, outliers, "more like this", the map
OUTLIER_K = 10  # an outlier's score is its distance to its OUTLIER_K-th nearest neighbour
# outliers score above Q3 + OUTLIER_FENCE x IQR of all scores (Tukey's fence; 3.0 flagged none of 1,148 sample photos)
OUTLIER_FENCE = 1.5


class IndexKind(enum.StrEnum):
    EXACT = "exact"  # faiss.IndexFlatIP
    APPROXIMATE = "approximate"  # faiss.IndexHNSWFlat, inner product


def check_features(features: np.ndarray) -> np.ndarray:
    """`features` as float32 C-contiguous [n, dim], rows of unit length (or zero); ValueError otherwise."""
    features = np.ascontiguousarray(features, dtype=np.float32)
    if features.ndim != 2:
        raise ValueError(f"features must be [n, dim], got shape {features.shape}")
    norms = np.linalg.norm(features, axis=1)
    if len(norms) and not np.all((np.abs(norms - 1) < 1e-2) | (norms == 0)):
        raise ValueError("features must be L2-normalised (core.health.embeddings.normalise)")
    return features


class SimilarityIndex:
    """A faiss index over the rows of `features` (float32 [n, dim], L2-normalised).

    kind: IndexKind.EXACT below APPROXIMATE_FROM rows and APPROXIMATE from there, unless given.
    """

    def __init__(self, features: np.ndarray, kind: IndexKind | None = None) -> None:
        import faiss  # here, not at the top: training and the server import this module's constants only

        features = check_features(features)
        self.size, dim = features.shape
        self.kind = IndexKind(kind) if kind is not None else (
            IndexKind.APPROXIMATE if self.size >= APPROXIMATE_FROM else IndexKind.EXACT)
        if self.kind == IndexKind.EXACT:
            self.index = faiss.IndexFlatIP(dim)
        else:
            self.index = faiss.IndexHNSWFlat(dim, HNSW_LINKS, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efConstruction = HNSW_BUILD_DEPTH
            self.index.hnsw.efSearch = HNSW_SEARCH_DEPTH
        self.index.add(features)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k most similar rows to each query (float32 [m, dim], normalised), most similar first:
        (similarities float32 [m, k], rows int64 [m, k]); fewer rows than k pad with -1 (similarity -inf)."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        queries = check_features(queries)
        if self.kind == IndexKind.APPROXIMATE:
            self.index.hnsw.efSearch = max(HNSW_SEARCH_DEPTH, k)
        similarities, rows = self.index.search(queries, k)
        similarities[rows < 0] = -np.inf
        return similarities, rows.astype(np.int64)


@dataclass(frozen=True, eq=False)
class Neighbours:
    """Each row's nearest other rows, most similar first: rows int64 [n, k] (-1 where there are
    fewer), similarities float32 [n, k] (-inf there)."""

    rows: np.ndarray
    similarities: np.ndarray

    @property
    def k(self) -> int:
        return self.rows.shape[1]


def nearest_neighbours(index: SimilarityIndex, features: np.ndarray, k: int = NEIGHBOURS) -> Neighbours:
    """Every indexed row's k nearest other rows (`features`: the rows the index was built on).

    A row is never its own neighbour, even when exact copies tie with it for first place."""
    similarities, rows = index.search(features, k + 1)
    own = rows == np.arange(len(rows))[:, None]
    own[~own.any(axis=1), -1] = True  # a row not found among its own hits (ties, HNSW): drop the last
    keep = np.argsort(own, axis=1, kind="stable")[:, :k]  # the k others, in their order
    return Neighbours(np.take_along_axis(rows, keep, axis=1), np.take_along_axis(similarities, keep, axis=1))


def similar_pairs(neighbours: Neighbours, threshold: float) -> np.ndarray:
    """Pairs of rows at least `threshold` similar, int64 [p, 2], each pair once (smaller row first), sorted."""
    if not -1 <= threshold <= 1:
        raise ValueError(f"threshold is a cosine similarity in [-1, 1], got {threshold!r}")
    source, column = np.nonzero(neighbours.similarities >= threshold)
    pairs = np.stack([source, neighbours.rows[source, column]], axis=1)
    pairs = pairs[pairs[:, 1] >= 0]
    return np.unique(np.sort(pairs, axis=1), axis=0).astype(np.int64).reshape(-1, 2)


def groups_of_pairs(n: int, pairs: np.ndarray) -> list[np.ndarray]:
    """The connected components of `pairs` over rows 0..n-1 with two or more rows: sorted row
    arrays, largest group first (ties by smallest row)."""
    from scipy.sparse import coo_matrix  # not at import: training.config reads DEFAULT_THRESHOLD from here
    from scipy.sparse.csgraph import connected_components

    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    order = np.argsort(labels, kind="stable")
    sizes = np.bincount(labels)
    groups = [members for members in np.split(order, np.cumsum(sizes)[:-1]) if len(members) > 1]
    return sorted(groups, key=lambda members: (-len(members), members[0]))


def outlier_scores(neighbours: Neighbours, k: int = OUTLIER_K) -> np.ndarray:
    """Per row the cosine distance (1 - similarity) to its k-th nearest neighbour, float32 [n]:
    large for a photo unlike any other (its k-th neighbour is far)."""
    k = min(k, neighbours.k)
    similarities = neighbours.similarities[:, k - 1]
    return np.where(np.isfinite(similarities), 1 - similarities, 2.0).astype(np.float32)


def outlier_rows(scores: np.ndarray, fence: float = OUTLIER_FENCE) -> np.ndarray:
    """Rows whose score is above Q3 + fence x IQR of all scores, most isolated first (int64 [m])."""
    if len(scores) == 0:
        return np.zeros(0, dtype=np.int64)
    q1, q3 = np.percentile(scores, [25, 75])
    flagged = np.flatnonzero(scores > q3 + fence * (q3 - q1))
    return flagged[np.argsort(-scores[flagged], kind="stable")].astype(np.int64)
