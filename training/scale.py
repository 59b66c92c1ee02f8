"""Batch work past one process: `predict --out`, data health's embeddings and `evaluate --engine ray`.

Two engines (`Engine`): local, in this process as before, and ray, on a Ray cluster (Ray Data
`map_batches` with a callable class: one model copy per worker actor, a GPU each where the cluster has
GPUs). Ray is an optional install (requirements-ray.txt), imported only when the ray engine runs.

`predict --out DIR` writes the records of `predict --json` (FilePrediction.as_json) as Parquet parts,
one per chunk of PART_SIZE input paths, named by the chunk's position and a digest of its paths
(`Part.name`): a part is written under a temporary name and renamed, so a part that exists is
complete, and a job stopped half way and started again skips the parts it finds. A photo that cannot
be read is a record with its error, never a failed job. `summary.json` beside the parts says what
ran (run, checkpoint, engine, cluster) and how far it got, rewritten as parts finish.

Data health and evaluation map cached photos (core.images.cache) through a model on the workers
(`map_cached`): the cache folder must be on storage every node reads (one machine, NFS).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.choices import Choice

if TYPE_CHECKING:
    import pyarrow as pa
    import torch

    from core.health.embedder import EmbeddingModel
    from core.model.predictor import Predictor
    from training.acceptance import Acceptance

PART_SIZE = 1000  # input paths per Parquet part: what a restarted job may redo at most, per worker
PATH_LISTS = ("txt", "lst")  # a SRC file with one of these extensions lists photo paths, one a line
SUMMARY_FILE = "summary.json"
REPO_ROOT = Path(__file__).resolve().parents[1]
RAY_ADDRESS_ENV = "FASHION_TAGGER_RAY_ADDRESS"  # the dashboard's evaluations and health run there (training.launcher)
CACHED_BATCH = 64  # cached photos per map_batches call at least: enough to amortise Ray's per-batch cost
BLOCKS_BATCHES = 8  # map_batches calls per block of ids: blocks spread over the workers


class Engine(Choice):
    LOCAL = "local"
    RAY = "ray"


class JobState(Choice):
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(frozen=True)
class RayCluster:
    """Where and how wide the ray engine runs. address: a running cluster's (`ray start --head`
    prints it; "auto" finds the one on this machine), None: RAY_ADDRESS when set, else a cluster
    started for this process alone. workers: model actors (None: one per GPU of the cluster, or one
    without GPUs); cpus_per_worker: CPUs each actor holds (its torch threads)."""

    address: str | None = None
    workers: int | None = None
    cpus_per_worker: int = 1

    def __post_init__(self) -> None:
        for name in ("workers", "cpus_per_worker"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")

    def connect(self) -> None:
        """Join the cluster (once per process); ValueError saying what to do when Ray is not installed."""
        try:
            import ray
            import ray.data
        except ImportError:
            raise ValueError("--engine ray needs Ray: pip install -r requirements-ray.txt") from None
        if not ray.is_initialized():
            ray.init(address=self.address, runtime_env=job_runtime_env(), include_dashboard=False,
                     logging_level="WARNING", log_to_driver=False)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # progress is ours: ProgressLines, summary.json
        context.execution_options.preserve_order = True  # results in input order, as the local engine's

    def gpus(self) -> int:
        import ray

        return int(ray.cluster_resources().get("GPU", 0))

    def actors(self) -> int:
        return self.workers or max(1, self.gpus())

    def remote_args(self) -> dict:
        """map_batches' arguments for the model actors: how many, and what each holds."""
        return {"concurrency": self.actors(), "num_gpus": 1 if self.gpus() else 0, "num_cpus": self.cpus_per_worker,
                "runtime_env": {"env_vars": {"OMP_NUM_THREADS": str(self.cpus_per_worker)}}}

    def describe(self) -> str:
        """Which engine and cluster, in words (after `connect`)."""
        import ray

        address = self.address or os.environ.get("RAY_ADDRESS") or "a local cluster"
        resources = ray.cluster_resources()
        workers = self.actors()
        return (f"ray at {address}: {workers} worker{'s' * (workers > 1)} of {self.cpus_per_worker} CPU"
                f"{' and 1 GPU' if self.gpus() else ''} on {len(ray.nodes())} nodes "
                f"({int(resources.get('CPU', 0))} CPUs, {self.gpus()} GPUs)")


def job_runtime_env() -> dict:
    """ray.init's runtime_env: the workers import this repository's packages from a copy Ray ships to
    every node (py_modules; the nodes install requirements.txt themselves)."""
    return {"py_modules": [str(REPO_ROOT / "core"), str(REPO_ROOT / "training")]}


def engine_of(name: str, address: str | None, workers: int | None, cpus_per_worker: int = 1) -> RayCluster | None:
    """The cluster the command-line options name (None: the local engine); ValueError for Ray's
    options without --engine ray."""
    if Engine.parse(name, "engine") == Engine.LOCAL:
        if address is not None or workers is not None:
            raise ValueError("--address and --workers are for --engine ray")
        return None
    return RayCluster(address, workers, cpus_per_worker)


def source_paths(sources: Sequence[str | Path]) -> list[Path]:
    """The photos SRC names, in order: a catalogue folder (styles.csv + images/) gives the photo of
    each of its rows, a .txt/.lst file the paths it lists (one a line, relative to its folder), any
    other folder its image files (core.model.predictor.expand_paths), a file itself."""
    from core.data.catalogue import load_catalogue
    from core.images.reading import expand_paths

    paths: list[Path] = []
    for source in map(Path, sources):
        if source.is_dir() and (source / "styles.csv").is_file():
            catalogue = load_catalogue(source)
            paths.extend(catalogue.image_path(product_id) for product_id in catalogue.frame["id"].tolist())
        elif source.is_file() and source.suffix.lower().lstrip(".") in PATH_LISTS:
            lines = (line.strip() for line in source.read_text().splitlines())
            paths.extend(source.parent / line for line in lines if line)
        else:
            paths.extend(expand_paths([source]))
    return paths


@dataclass(frozen=True)
class Part:
    """One chunk of a job's input paths and the Parquet file its records go to."""

    index: int
    paths: tuple[str, ...]

    @property
    def name(self) -> str:
        digest = hashlib.sha1("\n".join(self.paths).encode()).hexdigest()[:12]  # other inputs, another part
        return f"part-{self.index:06d}-{digest}.parquet"


def plan_parts(paths: Sequence[str | Path], part_size: int = PART_SIZE) -> list[Part]:
    if part_size < 1:
        raise ValueError(f"--part-size must be at least 1, got {part_size}")
    names = [str(path) for path in paths]
    return [Part(index, tuple(names[start:start + part_size]))
            for index, start in enumerate(range(0, len(names), part_size))]


def record_schema(heads: Sequence[str]) -> pa.Schema:
    """The Parquet columns of a part: FilePrediction.as_json's keys, null where a record lacks one."""
    import pyarrow as pa

    guess = pa.struct([("label", pa.string()), ("p", pa.float64())])
    rule = pa.struct([("threshold", pa.float64()), ("gated", pa.bool_()), ("why", pa.string())])
    return pa.schema([("path", pa.string()),
                      ("predictions", pa.struct([(head, pa.list_(guess)) for head in heads])),
                      ("accepted", pa.struct([(head, pa.string()) for head in heads])),
                      ("source", pa.string()), ("rules", pa.struct([(head, rule) for head in heads])),
                      ("typicality", pa.float64()), ("typical", pa.bool_()), ("note", pa.string()),
                      ("error", pa.string())])


def write_part(predictor: Predictor, acceptance: Acceptance, source: str | None, folder: Path, part: Part, top_k: int,
               batch_size: int) -> tuple[int, int]:
    """Predict the part's paths, accept their heads under `source`'s rules (training.acceptance) and
    write its Parquet file (complete, or not at all); -> (records, read)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = [acceptance.accept(result, source).as_json()
               for result in predictor.iter_predict_files(part.paths, top_k, batch_size)]
    table = pa.Table.from_pylist(records, schema=record_schema(predictor.heads))
    target = folder / part.name
    temporary = folder / f".{part.name}.{uuid.uuid4().hex}.tmp"  # unique: two writers never share one
    pq.write_table(table, temporary)
    os.replace(temporary, target)
    return len(records), sum("error" not in record for record in records)


def read_records(folder: str | Path) -> list[dict]:
    """The records of a job's parts, in input order, as `predict --json` prints them."""
    import pyarrow.parquet as pq

    return [_record(row) for part in sorted(Path(folder).glob("part-*.parquet"))
            for row in pq.read_table(part).to_pylist()]


def _record(row: dict) -> dict:
    """A part's row as `predict --json` prints it: without the columns its record has not; "source" is
    null, not absent, where rules were applied without a source (the run's rule)."""
    return {key: value for key, value in row.items() if value is not None or (key == "source" and row["rules"])}


@dataclass(frozen=True)
class PredictJob:
    """What `predict --out` runs: the run's checkpoint and options (a resumed job must match them).
    source: whose rules the heads are accepted under (None: the run's gated rule), in the label
    store of `workspace` (None: this process's workspace) for the photos of `dataset` (None: the
    run's); training.acceptance."""

    run_id: str
    run_folder: str
    checkpoint: str
    top_k: int
    batch_size: int
    target_error: float
    source: str | None = None
    dataset: str | None = None
    workspace: str | None = None

    def identity(self) -> dict:
        """What a resumed job must match (the source and its dataset where named: a job of before has neither)."""
        named = {} if self.source is None else {"source": self.source, "dataset": str(self.dataset)}
        return {"run": self.run_id, "checkpoint": self.checkpoint, "top_k": self.top_k,
                "target_error": self.target_error, **named}

    def load(self, device: str) -> tuple[Predictor, Acceptance]:
        """The run's predictor on `device`, and the rules its heads are accepted under."""
        from training.acceptance import Acceptance, rules_dataset
        from training.checkpoints import load_predictor

        predictor = load_predictor(self.run_folder, self.checkpoint, run_id=self.run_id, device=device,
                                   target_error=self.target_error)
        return predictor, Acceptance(predictor.trust, self.target_error, self.run_id,
                                     rules_dataset(self.run_folder, self.dataset), self.workspace)


def read_summary(folder: str | Path) -> dict | None:
    """A job folder's summary.json (None when there is none)."""
    try:
        return json.loads((Path(folder) / SUMMARY_FILE).read_text())
    except FileNotFoundError:
        return None


def _write_summary(folder: Path, summary: dict) -> None:
    temporary = folder / f".{SUMMARY_FILE}.{uuid.uuid4().hex}.tmp"
    temporary.write_text(json.dumps(summary, indent=1))
    os.replace(temporary, folder / SUMMARY_FILE)


def predict_to_parts(job: PredictJob, paths: Sequence[str | Path], out: str | Path, cluster: RayCluster | None = None,
                     device: str = "auto", part_size: int = PART_SIZE,
                     progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Write the records of `paths` under `out` (created) as parts and summary.json, on this process
    (cluster None, on `device`) or on the Ray cluster; parts already there are kept, not written again.
    Returns the summary. ValueError when `out` holds another job's parts."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    before = read_summary(folder)
    if before is not None and before["job"] != job.identity():
        raise ValueError(f"--out {folder} holds the parts of another job ({before['job']}); "
                         "choose another folder or empty it")
    parts = plan_parts(paths, part_size)
    done = {path.name for path in folder.glob("part-*.parquet")}
    todo = [part for part in parts if part.name not in done]
    if cluster is not None:
        cluster.connect()
    summary = {"job": job.identity(), "engine": cluster.describe() if cluster else f"local ({device})",
               "state": JobState.RUNNING, "photos": len(paths), "parts": len(parts),
               "parts_done": len(parts) - len(todo), "skipped_parts": len(parts) - len(todo),
               "started": time.time()}
    _write_summary(folder, summary)
    start = time.perf_counter()
    report = progress or (lambda step, done, total: None)
    report("parts", summary["parts_done"], len(parts))
    written = _ray_parts(job, todo, folder, cluster) if cluster else _local_parts(job, todo, folder, device)
    for name in written:
        summary["parts_done"] += 1
        summary.setdefault("written", []).append(name)
        _write_summary(folder, summary)
        report("parts", summary["parts_done"], len(parts))
    seconds = time.perf_counter() - start
    errors = _count_errors(folder, {part.name for part in parts})
    summary.update(state=JobState.FINISHED, seconds=seconds, records=len(paths), read=len(paths) - errors,
                   errors=errors, images_per_s=sum(len(part.paths) for part in todo) / seconds if seconds else None)
    summary.setdefault("written", [])
    _write_summary(folder, summary)
    return summary


def _count_errors(folder: Path, names: set[str]) -> int:
    """Records with an error in the parts `names` (those written now and those a resumed job kept)."""
    import pyarrow.parquet as pq

    return int(sum(pq.read_table(folder / name, columns=["error"])["error"].is_valid().to_numpy().sum()
                   for name in names))


def _local_parts(job: PredictJob, parts: Sequence[Part], folder: Path, device: str) -> Iterator[str]:
    if not parts:
        return
    predictor, acceptance = job.load(device)
    for part in parts:
        write_part(predictor, acceptance, job.source, folder, part, job.top_k, job.batch_size)
        yield part.name


class _PartWriter:
    """A Ray actor: the run's predictor on this worker's GPU (or CPU), writing the parts it is given."""

    def __init__(self, job: PredictJob, folder: str) -> None:
        import torch

        self.job, self.folder = job, Path(folder)
        self.predictor, self.acceptance = job.load("cuda" if torch.cuda.is_available() else "cpu")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        parts = [Part(int(index), tuple(json.loads(paths))) for index, paths in zip(batch["index"].tolist(),
                                                                                    batch["paths"])]
        for part in parts:
            write_part(self.predictor, self.acceptance, self.job.source, self.folder, part, self.job.top_k,
                       self.job.batch_size)
        return {"name": np.array([part.name for part in parts])}


def _ray_parts(job: PredictJob, parts: Sequence[Part], folder: Path, cluster: RayCluster) -> Iterator[str]:
    import ray.data

    if not parts:
        return
    items = [{"index": part.index, "paths": json.dumps(part.paths)} for part in parts]
    dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        _PartWriter, fn_constructor_kwargs={"job": job, "folder": str(folder.resolve())}, batch_size=1,
        **cluster.remote_args())
    for row in dataset.iter_rows():
        yield str(row["name"])


# Cached photos through a model on the workers: data health's embeddings, evaluation's probabilities.

ForwardLoader = Callable[["torch.device"], Callable[["torch.Tensor"], dict[str, np.ndarray]]]


class _CachedPhotos:
    """A Ray actor: a model (`load(device)` -> uint8 images [b, 3, H, W] -> named arrays [b, ...])
    over cached photos by id, on this worker's GPU or CPU, `step` photos per forward pass (None: the
    local engine's, CPU_FORWARD_BATCH on a CPU, CACHED_BATCH on a GPU)."""

    def __init__(self, load: ForwardLoader, folder: str, data_cfg: dict, step: int | None) -> None:
        import torch

        from core.images.transforms import eval_transform
        from core.model.predictor import CPU_FORWARD_BATCH

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.forward, self.folder, self.transform = load(device), Path(folder), eval_transform(data_cfg)
        self.step = step or (CPU_FORWARD_BATCH if device.type == "cpu" else CACHED_BATCH)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        from core.images.cache import open_cached

        ids = batch["id"]
        images = torch.stack([self.transform(open_cached(self.folder, int(i))) for i in ids.tolist()])
        outputs = [self.forward(images[start:start + self.step]) for start in range(0, len(images), self.step)]
        return {"id": ids, **{key: np.concatenate([output[key] for output in outputs]) for key in outputs[0]}}


def map_cached(cluster: RayCluster, load: ForwardLoader, folder: Path, ids: np.ndarray, data_cfg: dict,
               step: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Batches {"id": int64 [b], name: array [b, ...]} of cached photos `ids` through the model
    `load` gives, in `ids` order, `step` photos per forward pass (see _CachedPhotos). Forward passes
    take the same photos together as the local engine's (batches and blocks are multiples of `step`,
    from the first id): on a CPU, another grouping moves a probability by about 1e-6."""
    import pyarrow as pa
    import ray.data

    cluster.connect()
    if not len(ids):
        return
    # In-memory blocks: no read task competes with the actors for the cluster's CPUs (with every CPU
    # held by an actor, a task upstream of them never ran and the job waited for ever).
    column = np.asarray(ids, dtype=np.int64)
    batch = -(-CACHED_BATCH // (step or CACHED_BATCH)) * (step or CACHED_BATCH)  # a multiple of CPU_FORWARD_BATCH too
    rows = BLOCKS_BATCHES * batch
    blocks = [pa.table({"id": column[start:start + rows]}) for start in range(0, len(column), rows)]
    dataset = ray.data.from_arrow(blocks).map_batches(
        _CachedPhotos, fn_constructor_kwargs={"load": load, "folder": str(Path(folder).resolve()),
                                              "data_cfg": data_cfg, "step": step},
        batch_size=batch, **cluster.remote_args())
    yield from dataset.iter_batches(batch_size=None, batch_format="numpy")


def _embedding_forward(model: EmbeddingModel, device: torch.device) -> Callable[[torch.Tensor], dict[str, np.ndarray]]:
    from core.health.embedder import feature_extractor

    extract = feature_extractor(model, device)
    return lambda images: {"features": extract(images)}


def ray_embedder(cluster: RayCluster) -> Callable[..., Iterator[tuple[np.ndarray, np.ndarray]]]:
    """core.health.embedder.catalogue_embeddings' `embed` on the cluster: (ids, normalised features) per batch."""

    def embed(model: EmbeddingModel, folder: Path, ids: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for batch in map_cached(cluster, partial(_embedding_forward, model), folder, ids, model.data_cfg):
            yield batch["id"], batch["features"]

    return embed


def _evaluation_forward(run_folder: str, which: str,
                        device: torch.device) -> Callable[[torch.Tensor], dict[str, np.ndarray]]:
    """The run's module as `evaluate` predicts with it (predict_step on a normalised batch): each
    head's probabilities as "p:<head>", and the pooled features at half precision as "features"."""
    import torch

    from training.checkpoints import load_run_module

    module = load_run_module(run_folder, which)[0].to(device)

    def forward(images: torch.Tensor) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            images = module.normalise(images.to(device), module.input_format)
            out = module.predict_step({"id": None, "image": images}, 0)
        return {**{f"p:{head}": out["probs"][head].float().cpu().numpy() for head in module.heads},
                "features": out["features"].half().float().cpu().numpy()}

    return forward


def ray_evaluation(cluster: RayCluster, run_folder: str | Path, which: str, folder: Path, ids: np.ndarray,
                   data_cfg: dict, heads: Sequence[str], batch_size: int,
                   ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """training.evaluate.predict's (ids, head -> probs, features) of cached photos `ids`, on the
    cluster, `batch_size` photos per forward pass (the run's, as its loader gives them locally)."""
    batches = list(map_cached(cluster, partial(_evaluation_forward, str(run_folder), which), folder, ids, data_cfg,
                              step=batch_size))
    if not batches:
        raise ValueError("no photo of the catalogue could be read")
    joined = {key: np.concatenate([batch[key] for batch in batches]) for key in batches[0]}
    return joined["id"], {head: joined[f"p:{head}"] for head in heads}, joined["features"]

