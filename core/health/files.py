"""A catalogue's data health under one embedding model: computed once (`compute_health`), kept in
the workspace, read (`load_health`) and summarised (`health_summary`).

On the photos' embeddings (core.health.embeddings, cached on their own): each photo's nearest neighbours
(core.health.similarity), a 2-D map of them (UMAP), cleanvision's image-quality issues and exact duplicates
(core.health.image_quality); beside them, each photo's perceptual hash (core.health.hashes), which finds the
re-encoded copies embeddings miss. From those, at a similarity threshold a person can move: near-duplicate
groups (each saying which method found it: DuplicateMethod),
the groups a train/validation split cuts in two (leakage), the groups whose members disagree on a
label, and outliers.

A health folder, `<workspace>/health/<dataset folder name>-<hash of its path>/<model key>/`, holds:
    neighbours.npz          ids int64 [n]; rows int32 [n, k] (-1: none) and similarities float32 [n, k]
    projection.npz          ids int64 [n]; xy float32 [n, 2], the map
    hashes.npz              ids int64 [n]; hashes uint8 [n, 32] (perceptual, packed); pairs int64 [p, 2],
                            the rows whose hashes are at most HASH_DISTANCE bits apart
    image_issues.parquet    core.health.image_quality.image_issues
    exact_duplicates.json   [[id, ...], ...]
    health.json             written last: what was computed, from what, how long each step took, and
                            the photos that could not be read (id -> why), left out of everything
    health.log, health.launch.json   a background computation's output and process (training.launcher)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from core.choices import Choice
from core.data.catalogue import Catalogue, catalogue_stamp
from core.health.embeddings import Embeddings, ModelIdentity
from core.health.hashes import hash_pairs, perceptual_hashes
from core.health.image_quality import exact_duplicates, image_issues, issue_ids
from core.health.similarity import (
    DEFAULT_THRESHOLD,
    NEIGHBOURS,
    Neighbours,
    SimilarityIndex,
    groups_of_pairs,
    nearest_neighbours,
    outlier_rows,
    outlier_scores,
    similar_pairs,
)
from core.images.cache import build_image_cache, cache_folder, open_cached

MAP_NEIGHBOURS = 15  # UMAP's n_neighbors: the local structure the map keeps
MAP_MIN_DIST = 0.3  # UMAP's min_dist: above its 0.1 default, clusters spread enough to select photos in them
MAP_CLASSES = 15  # values the map gives a colour of their own; the rarer ones share OTHER
OTHER, MISSING = "other", "missing"
FORMAT_VERSION = 3  # 2: health.json names the unreadable photos; 3: hashes.npz
HEALTH_FILE = "health.json"

Progress = Callable[[str, int, int], None]  # (step, done, total)

if TYPE_CHECKING:
    from core.health.embedder import CachedEmbedder, EmbeddingModel


class HealthFolder:
    """The files of one health folder (module docstring), by name; nothing is created by asking."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"HealthFolder({str(self.path)!r})"

    neighbours = property(lambda self: self.path / "neighbours.npz")
    projection = property(lambda self: self.path / "projection.npz")
    hashes = property(lambda self: self.path / "hashes.npz")
    issues = property(lambda self: self.path / "image_issues.parquet")
    exact_duplicates = property(lambda self: self.path / "exact_duplicates.json")
    info = property(lambda self: self.path / HEALTH_FILE)
    log = property(lambda self: self.path / "health.log")
    launch = property(lambda self: self.path / "health.launch.json")

    def version(self) -> int:
        """Changes whenever a computation completes (health.json's mtime); 0 before the first."""
        try:
            return self.info.stat().st_mtime_ns
        except FileNotFoundError:
            return 0

    def is_complete(self) -> bool:
        return self.version() != 0


def health_folder(workspace: Path, dataset_root: Path, model_key: str) -> HealthFolder:
    """Where the health of a dataset under one model (`ModelIdentity.key`) is kept."""
    root = Path(dataset_root).expanduser().resolve()
    digest = hashlib.sha1(str(root).encode()).hexdigest()[:10]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", root.name) or "dataset"
    return HealthFolder(Path(workspace) / "health" / f"{name}-{digest}" / model_key)


class DuplicateMethod(Choice):
    """What found a near-duplicate pair: the same bytes, embeddings at least the threshold similar,
    or perceptual hashes at most HASH_DISTANCE bits apart. A group names each method that found one
    of its pairs, in this order."""

    EXACT = "exact"
    EMBEDDING = "embedding"
    HASH = "hash"


@dataclass(frozen=True, eq=False)
class Health:
    """A computed health folder, read.

    info: health.json ({"model", "stamp", "description", "data", "catalogue_stamp", "photos",
    "unreadable", "index", "computed", "seconds", "engine"}: engine says where the embeddings were computed,
    absent in folders from before there were engines); ids: int64 [n], the photos with an embedding; neighbours: over
    rows of ids; projection: float32 [n, 2]; issues: core.health.image_quality.image_issues' frame;
    exact_duplicates: groups of ids; hash_pairs: int64 [p, 2], rows of ids whose perceptual
    hashes are near (core.health.hashes).
    """

    folder: HealthFolder
    info: dict
    ids: np.ndarray
    neighbours: Neighbours
    projection: np.ndarray
    issues: pd.DataFrame
    exact_duplicates: list[list[int]]
    hash_pairs: np.ndarray

    @property
    def unreadable(self) -> dict[int, str]:
        """The catalogue photos that could not be read, id -> why (the image cache's reason, naming
        the file), by id: they have no embedding and are in no finding."""
        return {int(product_id): why for product_id, why in self.info.get("unreadable", {}).items()}

    def is_stale(self, catalogue: Catalogue, identity: ModelIdentity) -> bool:
        """Whether the catalogue or the model changed since this was computed."""
        return (self.info["catalogue_stamp"] != list(catalogue_stamp(catalogue.root))
                or self.info["stamp"] != identity.stamp)

    def near_duplicates(self, threshold: float = DEFAULT_THRESHOLD) -> list[list[int]]:
        """Groups of ids whose photos are at least `threshold` similar to another member, or whose
        perceptual hashes are near (chains included), exact duplicates always among them: largest
        group first, ids sorted within."""
        return [list(group) for group in self.near_duplicates_found_by(threshold)]

    def near_duplicates_found_by(self, threshold: float = DEFAULT_THRESHOLD) -> dict[tuple[int, ...], str]:
        """near_duplicates(threshold), in that order, each with the methods that found one of its
        pairs (DuplicateMethod values joined by " + ", e.g. "hash" for a copy embeddings missed)."""
        rows = {int(product_id): row for row, product_id in enumerate(self.ids.tolist())}
        exact = [[rows[i] for i in group if i in rows] for group in self.exact_duplicates]
        found = {
            DuplicateMethod.EXACT: np.array([(group[0], other) for group in exact for other in group[1:]],
                                            dtype=np.int64).reshape(-1, 2),
            DuplicateMethod.EMBEDDING: similar_pairs(self.neighbours, threshold),
            DuplicateMethod.HASH: self.hash_pairs,
        }
        groups = groups_of_pairs(len(self.ids), np.concatenate(list(found.values())))
        group_of = np.full(len(self.ids), -1)
        for number, members in enumerate(groups):
            group_of[members] = number
        methods = [[] for _ in groups]
        for method, pairs in found.items():
            for number in np.unique(group_of[pairs[:, 0]]).tolist():
                methods[number].append(method)
        return {tuple(sorted(self.ids[members].tolist())): " + ".join(by)
                for members, by in zip(groups, methods)}

    def outliers(self) -> list[int]:
        """Ids of photos unlike the others (core.health.similarity.outlier_rows), most isolated first."""
        return self.ids[outlier_rows(outlier_scores(self.neighbours))].tolist()

    def outlier_scores(self) -> pd.Series:
        """Each photo's outlier score (distance to its OUTLIER_K-th neighbour), by id."""
        return pd.Series(outlier_scores(self.neighbours), index=self.ids, name="outlier_score")

    def similar(self, product_id: int, k: int = NEIGHBOURS) -> pd.DataFrame:
        """The k photos most similar to catalogue photo `product_id`: columns id, similarity, most
        similar first. KeyError when it has no embedding."""
        rows = np.flatnonzero(self.ids == product_id)
        if not len(rows):
            raise KeyError(f"photo {product_id} has no embedding in this health folder")
        row = rows[0]
        found = self.neighbours.rows[row, :k] >= 0
        return pd.DataFrame({"id": self.ids[self.neighbours.rows[row, :k][found]],
                             "similarity": self.neighbours.similarities[row, :k][found].astype(float)})


def compute_health(catalogue: Catalogue, model: EmbeddingModel, workspace: Path, device: str = "cpu",
                   progress: Progress | None = None, embed: CachedEmbedder | None = None,
                   engine: str = "local") -> Health:
    """Compute every photo's embedding (reusing cached ones), neighbours, map position, image issues
    and exact duplicates, and write the health folder; returns it, read. A folder computed from this
    catalogue and model as they are now is read, not computed again.

    embed: where the embeddings are computed (core.health.embedder.catalogue_embeddings; None: here,
    on `device`); engine: that, in words, kept in health.json."""
    # Here, not at the top: reading and summarising health folders (the launcher, the pages' first
    # view) needs no torch; computing embeddings does.
    from core.health.embedder import catalogue_embeddings

    report = progress or (lambda step, done, total: None)
    folder = health_folder(workspace, catalogue.root, model.identity.key)
    if folder.is_complete():
        existing = load_health(folder.path)
        if existing.info.get("format_version") == FORMAT_VERSION and not existing.is_stale(catalogue, model.identity):
            return existing
    folder.path.mkdir(parents=True, exist_ok=True)
    seconds, ids = {}, catalogue.frame["id"].tolist()
    stamp = catalogue_stamp(catalogue.root)  # before: a change while this runs makes the result stale

    start = time.perf_counter()
    embeddings = catalogue_embeddings(catalogue, model, workspace, device=device, embed=embed,
                                      progress=lambda done, total: report("embeddings", done, total))
    seconds["embeddings"] = time.perf_counter() - start
    unreadable = unreadable_photos(catalogue, sorted(set(ids) - set(embeddings.ids.tolist())), workspace,
                                   model.image_size)

    start = time.perf_counter()
    report("neighbours", 0, 1)
    index = SimilarityIndex(embeddings.features)
    neighbours = nearest_neighbours(index, embeddings.features)
    _save_npz(folder.neighbours, ids=embeddings.ids, rows=neighbours.rows.astype(np.int32),
              similarities=neighbours.similarities)
    seconds["neighbours"] = time.perf_counter() - start

    start = time.perf_counter()
    report("hashes", 0, 1)
    hashes = photo_hashes(catalogue, embeddings.ids.tolist(), workspace, model.image_size)
    _save_npz(folder.hashes, ids=embeddings.ids, hashes=hashes, pairs=hash_pairs(hashes))
    seconds["hashes"] = time.perf_counter() - start

    start = time.perf_counter()
    report("map", 0, 1)
    _save_npz(folder.projection, ids=embeddings.ids, xy=project(embeddings, neighbours))
    seconds["map"] = time.perf_counter() - start

    start = time.perf_counter()
    issues = image_issues(catalogue, ids, workspace, model.image_size,
                          progress=lambda done, total: report("image quality", done, total))
    _atomic_write(folder.issues, lambda path: issues.to_parquet(path, index=False))
    seconds["image_quality"] = time.perf_counter() - start

    start = time.perf_counter()
    report("exact duplicates", 0, 1)
    duplicates = exact_duplicates(catalogue, ids)
    _atomic_write(folder.exact_duplicates, lambda path: path.write_text(json.dumps(duplicates)))
    seconds["exact_duplicates"] = time.perf_counter() - start

    info = {
        "format_version": FORMAT_VERSION, "model": model.identity.key, "stamp": model.identity.stamp,
        "description": model.identity.description, "data": str(catalogue.root),
        "catalogue_stamp": list(stamp), "photos": len(embeddings),
        "unreadable": {str(product_id): why for product_id, why in unreadable.items()},
        "rows": len(ids), "index": str(index.kind), "computed": time.time(), "seconds": seconds, "engine": engine,
    }
    _atomic_write(folder.info, lambda path: path.write_text(json.dumps(info, indent=1)))  # last: `version` follows it
    return load_health(folder.path)


def photo_hashes(catalogue: Catalogue, ids: Sequence[int], workspace: Path, image_size: int) -> np.ndarray:
    """The perceptual hashes (core.health.hashes) of catalogue photos `ids`, readable ones (those with
    an embedding), from their copies in the image cache at `image_size` (reused, or made again)."""
    folder = cache_folder(workspace, catalogue.root, image_size)
    build_image_cache(catalogue, ids, image_size, folder)
    return perceptual_hashes(open_cached(folder, product_id) for product_id in ids)


def unreadable_photos(catalogue: Catalogue, ids: Sequence[int], workspace: Path, image_size: int) -> dict[int, str]:
    """Why each of catalogue `ids` (photos left without an embedding) could not be read: the image
    cache's reason ("ExceptionName: message", naming the file), by id."""
    if not ids:
        return {}
    failed = build_image_cache(catalogue, ids, image_size, cache_folder(workspace, catalogue.root, image_size)).failed
    return {int(product_id): failed.get(product_id, "the photo could not be read") for product_id in sorted(ids)}


def project(embeddings: Embeddings, neighbours: Neighbours, seed: int = 0) -> np.ndarray:
    """A 2-D map of the photos, float32 [n, 2]: UMAP (cosine) on the neighbour graph already found,
    so UMAP spends no time searching neighbours again. Fewer photos than UMAP needs get a line."""
    n = len(embeddings)
    if n <= MAP_NEIGHBOURS + 1:  # UMAP needs more points than neighbours; a handful is shown in a row
        return np.stack([np.arange(n), np.zeros(n)], axis=1).astype(np.float32)
    import umap  # imported here: it compiles with numba on first use, seconds the other steps never pay

    k = MAP_NEIGHBOURS - 1
    knn_rows = np.concatenate([np.arange(n)[:, None], neighbours.rows[:, :k]], axis=1)  # UMAP wants itself first
    knn_distances = np.concatenate([np.zeros((n, 1)), 1 - neighbours.similarities[:, :k]], axis=1)
    knn_distances = np.where(knn_rows >= 0, np.maximum(knn_distances, 0), np.inf).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns that a map without its search index cannot transform new photos
        reducer = umap.UMAP(n_neighbors=MAP_NEIGHBOURS, min_dist=MAP_MIN_DIST, metric="cosine", random_state=seed,
                            precomputed_knn=(knn_rows, knn_distances))
        return reducer.fit_transform(embeddings.features).astype(np.float32)


def map_frame(health: Health, values: pd.Series, labels: pd.Series, order: Sequence[str] | None = None,
              top: int = MAP_CLASSES) -> pd.DataFrame:
    """The map's points: id, x, y, colour and label, one row per photo on the map.

    values: what colours each photo, by id (an id it lacks is MISSING); colour is categorical: the
    values in `order` when given, else the `top` most frequent, each its own category, the rest
    OTHER, then MISSING. labels: the hover text by id ("" where missing)."""
    ids = pd.Index(health.ids)
    value = values.reindex(ids).astype(object).where(lambda found: found.notna(), MISSING).astype(str)
    if order is None:
        counts = value[value != MISSING].value_counts()
        order = sorted(counts.index[:top], key=lambda name: (-counts[name], name))
    order = list(order)
    value = value.where(value.isin(order + [MISSING]), OTHER)
    categories = order + [name for name in (OTHER, MISSING) if name not in order and (value == name).any()]
    return pd.DataFrame({
        "id": health.ids, "x": health.projection[:, 0], "y": health.projection[:, 1],
        "colour": pd.Categorical(value.to_numpy(), categories=categories),
        "label": labels.reindex(ids).fillna("").astype(str).to_numpy(),
    })


def load_health(path: str | Path) -> Health:
    """The health folder at `path`, read; FileNotFoundError when it was never completed."""
    folder = HealthFolder(path)
    if not folder.is_complete():
        raise FileNotFoundError(f"no data health computed in {folder.path} (python -m training health DIR)")
    info = json.loads(folder.info.read_text())
    with np.load(folder.neighbours) as neighbours, np.load(folder.projection) as projection:
        ids = neighbours["ids"]
        found = Neighbours(neighbours["rows"].astype(np.int64), neighbours["similarities"].astype(np.float32))
        xy = projection["xy"]
    pairs = np.zeros((0, 2), dtype=np.int64)
    if folder.hashes.exists():  # a folder computed before hashes has none
        with np.load(folder.hashes) as hashes:
            pairs = hashes["pairs"].astype(np.int64).reshape(-1, 2)
    return Health(folder, info, ids, found, xy, pd.read_parquet(folder.issues),
                  json.loads(folder.exact_duplicates.read_text()), pairs)


def near_duplicate_groups(catalogue: Catalogue, workspace: Path, threshold: float = DEFAULT_THRESHOLD,
                          ids: Sequence[int] | None = None, device: str = "cpu") -> list[list[int]]:
    """Near-duplicate groups of catalogue `ids` (default: every row) under the offline pretrained
    backbone (embeddings cached in the workspace) or their perceptual hashes, as Health.near_duplicates
    finds them: what a group-aware split keeps together, the same whatever run asks."""
    from core.health.embedder import catalogue_embeddings, pretrained_model  # torch: see compute_health

    model = pretrained_model()
    embeddings = catalogue_embeddings(catalogue, model, workspace, ids=ids, device=device)
    neighbours = nearest_neighbours(SimilarityIndex(embeddings.features), embeddings.features)
    hashes = photo_hashes(catalogue, embeddings.ids.tolist(), workspace, model.image_size)
    pairs = np.concatenate([similar_pairs(neighbours, threshold), hash_pairs(hashes)])
    return [sorted(embeddings.ids[group].tolist()) for group in groups_of_pairs(len(embeddings), pairs)]


def leaking_groups(groups: Sequence[Sequence[int]], split: pd.Series) -> list[list[int]]:
    """The groups with members on both sides of `split` ("train"/"val" by id; ids it lacks are in neither)."""
    leaking = []
    for group in groups:
        sides = set(split.reindex(list(group)).dropna())
        if {"train", "val"} <= sides:
            leaking.append(list(group))
    return leaking


def leaked_ids(groups: Sequence[Sequence[int]], split: pd.Series) -> list[int]:
    """Validation ids with a near-duplicate in training ("train"/"val" by id): the rows whose
    validation score a leak inflates, sorted."""
    leaked = []
    for group in groups:
        sides = split.reindex(list(group))
        if (sides == "train").any():
            leaked.extend(sides.index[sides == "val"].tolist())
    return sorted(leaked)


def label_disagreements(groups: Sequence[Sequence[int]], frame: pd.DataFrame, heads: Sequence[str]) -> list[dict]:
    """The groups whose members' labels differ in at least one of `heads` (a missing label differs
    from none): [{"ids": [...], "heads": [the heads they disagree on]}], in `groups` order."""
    labels = frame.set_index("id")
    found = []
    for group in groups:
        rows = labels.reindex(list(group))
        disagree = [head for head in heads if rows[head].nunique(dropna=True) > 1]
        if disagree:
            found.append({"ids": list(group), "heads": disagree})
    return found


def group_table(groups: Sequence[Sequence[int]], split: pd.Series, frame: pd.DataFrame,
                heads: Sequence[str], found_by: Mapping[tuple[int, ...], str] | None = None) -> pd.DataFrame:
    """One row per group, in `groups` order: group (1-based), photos, found_by (what found it, from
    `found_by`: Health.near_duplicates_found_by; "" for a group it lacks), train and val (members on
    each side of `split`, by id), disagree_on (the heads among `heads` whose labels differ, joined)."""
    disagreements = {tuple(entry["ids"]): entry["heads"] for entry in label_disagreements(groups, frame, heads)}
    rows = []
    for number, group in enumerate(groups, start=1):
        sides = split.reindex(list(group))
        rows.append({"group": number, "photos": len(group), "found_by": (found_by or {}).get(tuple(group), ""),
                     "train": int((sides == "train").sum()), "val": int((sides == "val").sum()),
                     "disagree_on": ", ".join(disagreements.get(tuple(group), []))})
    return pd.DataFrame(rows, columns=["group", "photos", "found_by", "train", "val", "disagree_on"])


def health_summary(health: Health, catalogue: Catalogue, split: pd.Series, threshold: float = DEFAULT_THRESHOLD,
                   heads: Sequence[str] = ()) -> dict:
    """What `python -m training health --json` prints: {"data", "model", "photos", "threshold",
    "exact_duplicates", "near_duplicates", "near_duplicates_found_by" (per group, what found it:
    DuplicateMethod values joined by " + "), "leakage", "label_disagreements", "outliers",
    "image_issues": {type: [ids]}, "unreadable": {id: why}}, groups and lists as ids."""
    found_by = health.near_duplicates_found_by(threshold)
    groups = [list(group) for group in found_by]
    return {
        "data": health.info["data"], "model": health.info["description"], "photos": health.info["photos"],
        "threshold": threshold, "exact_duplicates": health.exact_duplicates, "near_duplicates": groups,
        "near_duplicates_found_by": list(found_by.values()),
        "leakage": leaking_groups(groups, split),
        "label_disagreements": label_disagreements(groups, catalogue.frame, heads),
        "outliers": health.outliers(), "image_issues": issue_ids(health.issues),
        "unreadable": {str(product_id): why for product_id, why in health.unreadable.items()},
    }


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    _atomic_write(path, lambda temporary: np.savez(temporary, **arrays))


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """`write(temporary path)`, then rename it into place: a reader never sees half a file."""
    temporary = path.with_name(f".{os.getpid()}.{path.name}")
    write(temporary)
    os.replace(temporary, path)

