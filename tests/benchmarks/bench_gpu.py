"""The GPU check of issue 3: training images/s end to end next to model-only, for both recipes,
and the image cache's build rate. Prepare the data here, carry it, run it there:

    python tests/benchmarks/bench_gpu.py subset ../shared/data/fashion-sample gpu-subset --mib 48
    python tests/benchmarks/bench_gpu.py run gpu-subset [--steps 80] [--batch 128] [--workers 12]
    python tests/benchmarks/bench_gpu.py loader DATA [--max-samples 2000] [--workers 2] [--batch 64] [--steps 20]

`subset` copies real sample photos (a uniform sample, by id hash) and their styles.csv rows
until `--mib` of photos, small enough to travel with the code (the device tool carries 64 MiB).

`run`, on one device, offline tf_efficientnet_lite0 weights at 224 px (the seed's B3 needs the hub):
  1. the image cache built from nothing, images/s;
  2. per recipe (the recipe's own precision: default = bf16-mixed and channels_last on a GPU,
     seed = fp32, frozen backbone): the run's DataLoader alone (what it can feed), then `--steps`
     training steps through Lightning's Trainer:
     end to end (the run's DataLoader: cached JPEGs decoded, augmented, collated as uint8, copied,
     normalised on the device) and model-only (the same module and Trainer fed one uint8 batch
     already on the device, normalised there each step as in training); images/s over the steps
     after the first `--warmup`, and their ratio (target >= 0.90 for `default`);
  3. prediction (`python -m training predict`'s path, on the device): files -> top-3, images/s.
`--accelerator cpu` runs the same on the CPU, to check the script itself.

`loader`, on any machine (no device needed): the default recipe's training DataLoader alone, at
224 px, over the training part of a fixed sample of `--max-samples` rows of DATA (a run's
max_samples: the same rows every time), after the image cache is built (untimed, in
`--workspace` or a temporary one), twice with the same workers and rows: as it is (uint8 batches,
normalised later on the device) and with the float tail the workers ran before (ToDtype + Normalize
in every worker), each with its images/s after `--warmup` batches and its bytes per batch.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import lightning as L  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from torchvision.transforms import v2  # noqa: E402

from core.data.catalogue import IMAGES_DIR, STYLES_FILE, load_catalogue  # noqa: E402
from core.data.schema import LabelSchema  # noqa: E402
from core.data.split import id_uniform  # noqa: E402
from core.images.cache import build_image_cache  # noqa: E402
from core.images.transforms import data_config  # noqa: E402
from core.model.predictor import Predictor  # noqa: E402
from training.builders import build_datamodule, build_module  # noqa: E402
from training.config import TrainConfig, resolve_precision, resolve_rare_min_count  # noqa: E402
from training.rows import class_counts, decide_split, run_rows  # noqa: E402

IMAGE_SIZE = 224


def make_subset(source: Path, out: Path, mib: float) -> None:
    catalogue = load_catalogue(source)
    frame = catalogue.frame
    order = np.argsort(id_uniform(frame["id"].to_numpy(), 0), kind="stable")
    budget, kept = mib * 2**20, []
    for index in order:
        size = catalogue.image_path(int(frame["id"].iloc[index])).stat().st_size
        if budget - size < 0:
            break
        budget -= size
        kept.append(index)
    (out / IMAGES_DIR).mkdir(parents=True, exist_ok=False)
    rows = frame.iloc[sorted(kept)]
    for product_id in rows["id"]:
        shutil.copyfile(catalogue.image_path(int(product_id)), out / IMAGES_DIR / f"{product_id}.jpg")
    rows.to_csv(out / STYLES_FILE, index=False)
    print(f"{len(rows):,} products, {(mib * 2**20 - budget) / 2**20:.1f} MiB of photos in {out}")


class StepClock(L.Callback):
    """Wall time of the training steps after the first `warmup` (synchronised with the device)."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.started, self.steps, self.seconds = warmup, None, 0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            _sync(pl_module.device)
            self.started = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        _sync(pl_module.device)
        self.steps = trainer.global_step - self.warmup
        self.seconds = time.perf_counter() - self.started


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_s(cfg: TrainConfig, module, loader, args) -> float:
    clock = StepClock(args.warmup)
    trainer = L.Trainer(accelerator=args.accelerator, devices=1, precision=resolve_precision(cfg),
                        max_steps=args.warmup + args.steps, limit_val_batches=0, num_sanity_val_steps=0,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[clock])
    trainer.fit(module, train_dataloaders=loader)
    return clock.steps * cfg.batch_size / clock.seconds


def measure(recipe: str, data: Path, workspace: Path, args) -> tuple[float, float, float]:
    cfg = TrainConfig.from_recipe(recipe).with_overrides([
        f"data={data}", "backbone=tf_efficientnet_lite0", "pretrained=offline", f"image_size={IMAGE_SIZE}",
        f"batch_size={args.batch}", f"num_workers={args.workers}", f"accelerator={args.accelerator}",
        "rare_policy=keep" if recipe == "default" else "rare_min_count=0",  # a subset: every class learnable
    ])
    whole = load_catalogue(data)
    catalogue, split = run_rows(whole, decide_split(cfg, whole))
    train_rows = catalogue.frame[(split == "train").to_numpy()]
    schema = LabelSchema.fit(train_rows, rare_policy=cfg.rare_policy,
                             rare_min_count=resolve_rare_min_count(cfg, len(train_rows)), heads=cfg.heads)
    module, _ = build_module(cfg, schema, class_counts(schema, train_rows))  # channels_last as the recipe resolves
    os.environ["FASHION_TAGGER_HOME"] = str(workspace)  # the cache, built by step 1, is reused
    datamodule = build_datamodule(cfg, catalogue, schema, split, module)
    datamodule.setup("fit")
    loader = loader_rate(datamodule.train_dataloader(), args)
    end_to_end = images_per_s(cfg, module, datamodule.train_dataloader(), args)
    device = torch.device("cuda" if args.accelerator == "gpu" else "cpu")
    batch = {key: value.to(device) for key, value in next(iter(datamodule.train_dataloader())).items()}
    # batch_size=None: the one batch as it is, every step, no collation or copy.
    repeated = DataLoader([batch] * (args.warmup + args.steps), batch_size=None)
    model_only = images_per_s(cfg, module, repeated, args)
    return loader, end_to_end, model_only


def loader_rate(loader: DataLoader, args) -> float:
    """The run's DataLoader alone (workers decode, augment, collate; pinned), images/s over the
    batches after the first `--warmup`: what it can feed whatever the model's speed."""
    batches = (batch for _ in iter(int, 1) for batch in loader)  # epoch after epoch, as the Trainer goes on
    for _ in range(args.warmup):
        next(batches)
    started, images = time.perf_counter(), 0
    for _ in range(args.steps):
        images += len(next(batches)["image"])
    return images / (time.perf_counter() - started)


def loader_comparison(args) -> None:
    """`loader`: the training DataLoader alone, uint8 batches next to the float ones it replaced."""
    data = Path(args.data)
    workspace = Path(args.workspace or tempfile.mkdtemp(prefix="bench-loader-"))
    os.environ["FASHION_TAGGER_HOME"] = str(workspace)
    cfg = TrainConfig.from_recipe("default").with_overrides([
        f"data={data}", "backbone=tf_efficientnet_lite0", "pretrained=none", f"image_size={IMAGE_SIZE}",
        f"batch_size={args.batch}", f"num_workers={args.workers}", f"max_samples={args.max_samples}",
        "rare_policy=keep"])
    whole = load_catalogue(data)
    catalogue, split = run_rows(whole, decide_split(cfg, whole))
    schema = LabelSchema.fit(catalogue.frame, rare_policy="keep", rare_min_count=0, heads=cfg.heads)
    module, _ = build_module(cfg, schema, class_counts(schema, catalogue.frame))  # only its data config is used
    datamodule = build_datamodule(cfg, catalogue, schema, split, module)
    started = time.perf_counter()
    datamodule.setup("fit")  # the cache, untimed below
    data_cfg = data_config(module.net.backbone, IMAGE_SIZE)
    print(f"\n{len(datamodule.train_ids):,} training photos of {data}; image cache ready in "
          f"{time.perf_counter() - started:.0f} s ({workspace}); {os.cpu_count()} cores, torch {torch.__version__}")
    print(f"{'batches':38s} {'images/s':>9s} {'MB per batch':>13s}  (batch {args.batch}, {args.workers} workers, "
          f"pin_memory {datamodule.train_dataloader().pin_memory}, {args.steps} batches after {args.warmup})")
    uint8_transform = datamodule.train_set.transform
    float_tail = v2.Compose([uint8_transform, v2.ToDtype(torch.float32, scale=True),
                             v2.Normalize(list(data_cfg["mean"]), list(data_cfg["std"]))])
    rates = {}
    for name, transform in (("uint8 (now)", uint8_transform), ("float, normalised in workers (before)", float_tail)):
        datamodule.train_set.transform = transform  # the same rows, order and loader settings
        loader = datamodule.train_dataloader()
        batch = next(iter(loader))
        megabytes = sum(value.nbytes for value in batch.values()) / 1e6
        rates[name] = loader_rate(loader, args)
        print(f"{name:38s} {rates[name]:9,.0f} {megabytes:13.1f}  image {batch['image'].dtype} "
              f"{list(batch['image'].shape)}")
    now, before = rates.values()
    print(f"uint8 / float images/s: {now / before:.2f}")
    if not args.workspace:
        shutil.rmtree(workspace, ignore_errors=True)


def prediction_rate(data: Path, args, photos: int = 512) -> float:
    """`python -m training predict`'s path on the device: files -> top-3 per head with the default
    recipe's network (fp32), images/s over `photos` photos after one warm-up batch."""
    cfg = TrainConfig.from_recipe("default").with_overrides([
        f"data={data}", "backbone=tf_efficientnet_lite0", "pretrained=offline", f"image_size={IMAGE_SIZE}"])
    catalogue = load_catalogue(data)
    schema = LabelSchema.fit(catalogue.frame, rare_policy="keep", rare_min_count=0, heads=cfg.heads)
    module, _ = build_module(cfg, schema, class_counts(schema, catalogue.frame))
    device = torch.device("cuda" if args.accelerator == "gpu" else "cpu")
    predictor = Predictor(module.to(device), schema, IMAGE_SIZE, channels_last=True)  # as load_predictor makes it
    paths = [catalogue.image_path(int(product_id)) for product_id in catalogue.frame["id"].iloc[:photos]]
    predictor.predict_files(paths[:args.batch], batch_size=args.batch)
    _sync(device)
    started = time.perf_counter()
    predictor.predict_files(paths, batch_size=args.batch)
    _sync(device)
    return len(paths) / (time.perf_counter() - started)


def run(args) -> None:
    data = Path(args.data)
    catalogue = load_catalogue(data)
    workspace = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    cfg = TrainConfig(data=str(data), image_size=IMAGE_SIZE)
    from core.images.cache import cache_folder

    started = time.perf_counter()
    report = build_image_cache(catalogue, catalogue.frame["id"].tolist(), IMAGE_SIZE,
                               cache_folder(workspace, data, cfg.image_size), workers=args.workers)
    build_rate = report.built / (time.perf_counter() - started)
    name = torch.cuda.get_device_name(0) if args.accelerator == "gpu" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"\n{name}; {len(catalogue.frame):,} photos; torch {torch.__version__}; {os.cpu_count()} cores")
    print(f"image cache build: {report.built:,} photos, {build_rate:,.0f} images/s ({len(report.failed)} failed)")
    print(f"\n{'recipe':8s} {'loader img/s':>13s} {'end-to-end img/s':>17s} {'model-only img/s':>17s} {'ratio':>6s}  "
          f"(batch {args.batch}, {args.workers} workers, {args.steps} steps after {args.warmup} warm-up)")
    for recipe in ("default", "seed"):
        loader, end_to_end, model_only = measure(recipe, data, workspace, args)
        print(f"{recipe:8s} {loader:13,.0f} {end_to_end:17,.0f} {model_only:17,.0f} {end_to_end / model_only:6.2f}")
    print(f"\nprediction (predict's path: files -> top-3, one process, fp32): "
          f"{prediction_rate(data, args):,.0f} images/s")
    shutil.rmtree(workspace, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    subset = commands.add_parser("subset")
    subset.add_argument("source")
    subset.add_argument("out")
    subset.add_argument("--mib", type=float, default=48)
    timing = commands.add_parser("run")
    timing.add_argument("data")
    timing.add_argument("--steps", type=int, default=80)
    timing.add_argument("--warmup", type=int, default=10)
    timing.add_argument("--batch", type=int, default=128)
    timing.add_argument("--workers", type=int, default=min(12, os.cpu_count() or 1))
    timing.add_argument("--accelerator", choices=("gpu", "cpu"), default="gpu")
    loading = commands.add_parser("loader")
    loading.add_argument("data")
    loading.add_argument("--max-samples", type=int, default=2000)
    loading.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    loading.add_argument("--batch", type=int, default=64)
    loading.add_argument("--steps", type=int, default=20)
    loading.add_argument("--warmup", type=int, default=3)
    loading.add_argument("--workspace",
                         help="keep the image cache here (reused by a later call); default: a temporary one")
    args = parser.parse_args()
    if args.command == "subset":
        make_subset(Path(args.source), Path(args.out), args.mib)
    elif args.command == "loader":
        loader_comparison(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
