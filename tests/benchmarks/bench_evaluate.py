"""Evaluate page on a run over the real sample's validation split: each section's first render and
cached rerun for the articleType head.

    python tests/benchmarks/bench_evaluate.py [DATASET_DIR]

No model is trained: two runs are registered whose evaluation files are fabricated on the real
validation rows (tests/test_evaluation.py's `fake_evaluation`: the same writer as training, ~70%
and ~75% right), with a 10-epoch metrics.csv. Renders through Streamlit's AppTest (script run and
element serialisation, no browser): the server-side time a user waits for. Target (Evaluate
issue): the articleType head renders in <= 2 s.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "fashion-sample"
TARGET_S = 2.0
HEAD = "articleType"


def fabricated_run(registry, catalogue, accuracy: float, seed: int) -> str:
    """Register a finished run whose evaluation of the validation split is fabricated; its id."""
    from test_evaluation import fake_evaluation

    from core.data.schema import LabelSchema
    from core.data.split import split_catalogue
    from core.evaluation.files import head_summary, mean_macro_f1
    from training.config import TrainConfig, resolve_rare_min_count
    from training.run_folder import RunFolder

    cfg = TrainConfig.from_recipe("default", {"data": str(catalogue.root), "rare_policy": "keep"})
    record = registry.create(cfg.to_dict(), "tester")
    run = RunFolder(record.folder)
    split = split_catalogue(catalogue.frame, val_fraction=cfg.val_fraction, seed=cfg.seed)
    train_rows = catalogue.frame[(split == "train").to_numpy()]
    schema = LabelSchema.fit(train_rows, rare_policy=cfg.rare_policy,
                             rare_min_count=resolve_rare_min_count(cfg, len(train_rows)))
    val_ids = catalogue.frame["id"].to_numpy()[(split == "val").to_numpy()]
    report = fake_evaluation(catalogue, schema, val_ids, run.evaluation(), accuracy=accuracy, seed=seed)
    summary = head_summary(report)
    epochs = np.arange(10)
    curves = {"epoch": epochs, "step": (epochs + 1) * 300 - 1, "train/loss": 3 * np.exp(-epochs / 4),
              "val/loss": 3.2 * np.exp(-epochs / 5), "val/mean_macro_f1": accuracy * (1 - np.exp(-epochs / 3))}
    for head in cfg.heads:
        curves[f"val/{head}/acc"] = summary[head]["accuracy"] * (1 - np.exp(-(epochs + 1) / 3))
        curves[f"val/{head}/macro_f1"] = summary[head]["macro_f1"] * (1 - np.exp(-(epochs + 1) / 3))
    pd.DataFrame(curves).to_csv(run.metrics, index=False)
    registry.mark_running(record.id, os.getpid(), device="fabricated", weights="none")
    registry.mark_finished(record.id, mean_macro_f1(report["heads"]), cfg.monitor,
                           {"heads": summary, "mean_macro_f1": mean_macro_f1(report["heads"])}, {})
    print(f"run {record.id}: {len(val_ids):,} val rows, {len(schema.classes[HEAD])} {HEAD} classes")
    return record.id


def timed(runner) -> float:
    """Seconds of one script run: `runner` is the AppTest, or a widget whose new value it sends."""
    start = time.perf_counter()
    runner.run()
    return time.perf_counter() - start


def main() -> None:
    data = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DATA
    os.environ.update(FASHION_TAGGER_DATA=str(data), FASHION_TAGGER_HOME=tempfile.mkdtemp(), HF_HUB_OFFLINE="1")
    from streamlit.testing.v1 import AppTest

    from core.data.catalogue import load_catalogue
    from core.evaluation.files import load_evaluation
    from core.evaluation.views import top_n_confusion
    from training.registry import RunRegistry
    from training.run_folder import RunFolder

    registry, catalogue = RunRegistry(), load_catalogue(data)
    fabricated_run(registry, catalogue, 0.70, seed=1)
    newest = fabricated_run(registry, catalogue, 0.75, seed=2)

    at = AppTest.from_file(str(REPO / "dashboard" / "Home.py"), default_timeout=120)
    at.run()
    at.switch_page("../pages/evaluate.py")
    rows = [("Summary (page first render)", timed(at))]
    assert not at.exception, at.exception
    assert at.segmented_control(key="evaluate.head").value == HEAD
    reruns = {}
    for section in ("Summary", "Classes", "Confusion", "Misclassified", "Curves", "Compare"):
        at.session_state["evaluate.section"] = section
        first = timed(at)
        assert not at.exception, at.exception
        if section != "Summary":
            rows.append((f"{section} first render", first))
        reruns[section] = statistics.median(timed(at) for _ in range(3))

    evaluation = load_evaluation(RunFolder(registry.get(newest).folder).evaluation())
    view = top_n_confusion(evaluation.classes(HEAD), evaluation.matrix(HEAD), 20)
    i, j = np.unravel_index(np.argmax(view.counts - np.diag(np.diag(view.counts))), view.counts.shape)
    at.session_state["evaluate.section"] = "Confusion"
    at.run()
    at.selectbox(key=f"evaluate.true.{HEAD}.20").set_value(view.classes[i])
    rows.append((f"cell drill-down ({view.counts[i, j]} photos)",
                 timed(at.selectbox(key=f"evaluate.pred.{HEAD}.20").set_value(view.classes[j]))))
    rows.append(("top-N 20 -> 60 classes", timed(at.slider(key=f"evaluate.top_n.{HEAD}").set_value(60))))
    assert not at.exception, at.exception

    print(f"dataset: {data} ({os.cpu_count()} cores); head {HEAD}")
    print(f"{'step':40s} {'seconds':>8s} {'target':>7s} {'ratio':>6s}")
    for name, seconds in rows + [(f"{section} cached rerun (median of 3)", s) for section, s in reruns.items()]:
        print(f"{name:40s} {seconds:8.3f} {TARGET_S:7.1f} {seconds / TARGET_S:6.2f}")


if __name__ == "__main__":
    main()
