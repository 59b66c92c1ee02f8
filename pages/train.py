"""Train: configure a run on the open dataset, start it, watch it live, cancel it, compare runs."""

from pathlib import Path

import streamlit as st

from core.access.roles import Actor, Permission
from core.data import HEADS
from core.data.schema import RarePolicy
from core.model.options import HeadType, Imbalance, Loss, Pretrained, Scheduler, backbone_choices, offline_backbones
from dashboard.datasets import current_catalogue, current_split
from dashboard.identity import person
from dashboard.runs import open_run_buttons, training_curves
from dashboard.text import code
from training.config import (
    AUTO,
    MONITORS,
    RECIPE_SUMMARIES,
    RECIPES,
    Accelerator,
    Precision,
    SplitStrategy,
    TrainConfig,
)
from training.estimate import doubts, estimate, split_sizes
from training.launcher import LaunchError, cancel_run, launch_run, resume_run
from training.registry import ACTIVE, RESUMABLE, RunRegistry, RunState
from training.run_folder import RunFolder
from training.status import (
    format_duration,
    metrics_frame,
    plural,
    run_progress,
    runs_frame,
    summary_frame,
    summary_of_test_part,
)

RUN_KEY = "train_run_id"  # the run the live view shows
RECIPE_LABELS = {"default": "Default (ours)", "seed": "Seed notebook", "gpu": "GPU (B3, 288 px)"}


class Fields:
    """The form's widgets for one recipe: each pre-filled from the recipe and keyed by it, so
    switching recipes shows that recipe's values (and comes back to the user's edits)."""

    def __init__(self, recipe: str) -> None:
        self.recipe, self.base, self.values = recipe, TrainConfig.from_recipe(recipe), {}

    def key(self, name: str) -> str:
        return f"train.{self.recipe}.{name}"

    def choice(self, where, label: str, name: str, options, **kwargs) -> None:
        options = [getattr(option, "value", option) for option in options]  # a Choice's members as plain text
        value = getattr(self.base, name)
        self.values[name] = where.selectbox(label, options, index=options.index(value), key=self.key(name), **kwargs)

    def number(self, where, label: str, name: str, **kwargs) -> None:
        self.values[name] = where.number_input(label, value=getattr(self.base, name), key=self.key(name), **kwargs)

    def auto_or_int(self, where, label: str, name: str, **kwargs) -> None:
        """A text field for `auto` or a whole number; anything else goes to TrainConfig, which names it."""
        text = where.text_input(label, value=str(getattr(self.base, name)), key=self.key(name), **kwargs).strip()
        self.values[name] = int(text) if text.lstrip("-").isdigit() else text

    def toggle(self, where, label: str, name: str, **kwargs) -> None:
        self.values[name] = where.toggle(label, value=getattr(self.base, name), key=self.key(name), **kwargs)


def config_form(data: Path) -> TrainConfig | None:
    """The form over TrainConfig; the config it describes, or None after showing what is wrong."""
    recipe = st.radio("Recipe", list(RECIPES), horizontal=True, key="train.recipe", format_func=RECIPE_LABELS.get,
                      help="A preset that fills the fields below.")
    st.caption(RECIPE_SUMMARIES[recipe])
    fields = Fields(recipe)
    offline = offline_backbones()
    backbones = backbone_choices()
    columns = st.columns(4)
    fields.choice(columns[0], "Backbone", "backbone", backbones,
                  format_func=lambda name: f"{name} · offline weights" if name in offline else name,
                  help="Offline, only backbones marked 'offline weights' can start from pretrained weights.")
    fields.choice(columns[1], "Pretrained weights", "pretrained", Pretrained,
                  help="auto: the hub, else the offline package; none: random weights on purpose.")
    fields.number(columns[2], "Image size (px)", "image_size", step=32)
    fields.number(columns[3], "Epochs", "epochs")
    fields.number(columns[0], "Batch size", "batch_size")
    fields.number(columns[1], "Learning rate", "lr", format="%.6f", step=1e-5)
    fields.choice(columns[2], "Imbalance", "imbalance", Imbalance)
    fields.number(columns[3], "Patience (epochs)", "patience",
                  help=f"Early stopping: epochs without a better {fields.base.monitor}.")
    fields.choice(columns[0], "Rare classes", "rare_policy", RarePolicy)
    fields.auto_or_int(columns[1], "Rare below (rows)", "rare_min_count",
                       help="auto: 0.2% of the training rows, between 10 and 500; or a number of rows.")
    max_samples = columns[2].number_input("Max samples (0 = all)", value=fields.base.max_samples or 0,
                                          key=fields.key("max_samples"), help="Cap on catalogue rows, for quick runs.")
    fields.values["max_samples"] = max_samples or None
    fields.choice(columns[3], "Precision", "precision", Precision)
    fields.auto_or_int(columns[0], "Devices", "devices", help="auto, or how many GPUs (or CPU processes).")
    fields.number(columns[1], "Loader workers", "num_workers")
    fields.number(columns[2], "Seed", "seed")
    fields.toggle(columns[3], "Train on reviewed labels", "corrections",
                  help="Apply the Review page's decisions on this dataset: corrected labels, 'not a product' rows "
                       "dropped, reviewed new photos added to training. The run keeps a snapshot of them.")
    with st.expander("Advanced"):
        advanced_fields(fields)
    try:
        return TrainConfig.from_recipe(recipe, {**fields.values, "data": str(data)})
    except ValueError as error:
        st.error(str(error))
        return None


def advanced_fields(fields: Fields) -> None:
    fields.values["heads"] = tuple(st.multiselect("Heads", HEADS, default=list(fields.base.heads),
                                                  key=fields.key("heads")))
    columns = st.columns(4)
    fields.number(columns[0], "Validation share", "val_fraction", step=0.05)
    fields.choice(columns[1], "Head", "head", HeadType,
                  help="linear: one Linear per head; conditioned: subCategory and articleType also read their parent's "
                       "probabilities; seed_mlp: the seed's shared MLP.")
    fields.choice(columns[2], "Loss", "loss", Loss,
                  help="ce: cross-entropy per head; bce: the seed's masked BCE (imbalance none).")
    fields.choice(columns[3], "Monitor", "monitor", MONITORS)
    fields.number(columns[0], "Logit adjustment τ", "tau", step=0.1)
    fields.number(columns[1], "Focal γ", "focal_gamma", step=0.5)
    fields.number(columns[2], "Weight decay", "weight_decay", format="%.4f", step=0.01)
    grad_clip = columns[3].number_input("Gradient clip (0 = none)", value=fields.base.grad_clip or 0.0,
                                        key=fields.key("grad_clip"))
    fields.values["grad_clip"] = grad_clip or None
    fields.choice(columns[0], "Scheduler", "scheduler", Scheduler)
    fields.number(columns[1], "Warmup share (cosine)", "warmup_fraction", step=0.01)
    fields.number(columns[2], "Step size (step)", "step_size")
    fields.number(columns[3], "Step γ (step)", "gamma", step=0.05)
    fields.choice(columns[0], "Accelerator", "accelerator", Accelerator)
    fields.number(columns[1], "Nodes", "num_nodes")
    strategy = columns[2].text_input("Strategy", value=fields.base.strategy, key=fields.key("strategy"))
    fields.values["strategy"] = strategy.strip()
    fields.choice(columns[3], "Channels last", "channels_last", [AUTO, True, False])
    fields.toggle(columns[0], "Freeze the backbone", "freeze_backbone")
    fields.toggle(columns[1], "Augment (crop, flip)", "augment")
    fields.choice(columns[2], "Split", "split", SplitStrategy,
                  help="grouped: each group of near-duplicate photos stays on one side (see the Data health page).")
    fields.number(columns[3], "Group similarity (grouped)", "group_similarity", step=0.01,
                  help="Photos at least this similar (cosine, pretrained backbone) are one group.")
    fields.number(columns[0], "Label smoothing", "label_smoothing", step=0.05,
                  help="Share of each target spread over the head's classes (cross-entropy only).")
    ema_decay = columns[1].number_input("Weight average decay (0 = off)", value=fields.base.ema_decay or 0.0,
                                        format="%.4f", step=0.001, key=fields.key("ema_decay"),
                                        help="Validate and predict with a moving average of the weights, e.g. 0.998.")
    fields.values["ema_decay"] = ema_decay or None
    fields.toggle(columns[2], "Flip at test time", "tta_flip",
                  help="Evaluate and predict on each photo and its mirror image: twice the inference time.")
    head_weights = columns[3].text_input("Head loss weights", value=",".join(fields.base.head_weights),
                                         key=fields.key("head_weights"), placeholder="gender:2,season:2",
                                         help="head:weight pairs, comma-separated; other heads weigh 1.")
    fields.values["head_weights"] = tuple(part.strip() for part in head_weights.split(",") if part.strip())
    fields.toggle(columns[0], "Leave the test part out", "test_part",
                  help="Keep the dataset's fixed test part (about 10 % of its rows, by product id) out of training and "
                       "validation, and score the run on it: every run of the dataset on the same rows. A catalogue "
                       "too small for one keeps it anyway.")


def estimate_hint(cfg: TrainConfig, catalogue, registry: RunRegistry) -> None:
    split = current_split(catalogue, cfg.val_fraction, cfg.seed, cfg.test_part)
    sizes = split_sizes(cfg, catalogue.frame["id"].to_numpy(), split.to_numpy())
    hint = estimate(cfg, *sizes, registry.list(limit=50))
    st.info(
        f"Per epoch: {hint['train_images']:,} training and {hint['val_images']:,} validation images "
        f"({hint['steps_per_epoch']:,} × batch {cfg.batch_size}). "
        f"Roughly {format_duration(hint['seconds_per_epoch'])} per epoch, "
        f"{format_duration(hint['seconds_total'])} for {plural(cfg.epochs, 'epoch')} on {hint['device'].upper()}, "
        f"~{hint['memory_gib']:.1f} GiB of memory. Rough: {hint['assumption']}.",
        icon=":material/timer:",
    )
    for doubt in doubts(cfg, hint):
        st.warning(doubt, icon=":material/warning:")


def start(cfg: TrainConfig, registry: RunRegistry, actor: Actor) -> None:
    try:
        record = launch_run(cfg, actor, registry)
    except LaunchError as error:  # RunBusyError included
        st.error(str(error))
        return
    st.session_state[RUN_KEY] = record.id
    st.success(f"Started run {record.id}.")


@st.fragment(run_every=2)
def runs_view() -> None:
    """The chosen run, live, and the table of runs; refreshed every 2 s."""
    registry = RunRegistry()
    records = registry.list(limit=100)
    if not records:
        st.info("No runs yet: start one above.")
        return
    by_id = {record.id: record for record in records}
    if st.session_state.get(RUN_KEY) not in by_id:
        st.session_state[RUN_KEY] = next((r.id for r in records if r.status in ACTIVE), records[0].id)
    run_id = st.selectbox("Run", list(by_id), key=RUN_KEY)
    live_run(by_id[run_id], registry, person())
    st.subheader("All runs")
    st.dataframe(runs_frame(records), hide_index=True,
                 column_config={"best": st.column_config.NumberColumn(format="%.4f")})


def live_run(record, registry: RunRegistry, actor: Actor) -> None:
    config = record.config
    st.caption(f"{config['backbone']} · {config['image_size']} px · {plural(config['epochs'], 'epoch')} · "
               f"batch {config['batch_size']} · {record.device or 'device not chosen yet'}")
    run = RunFolder(record.folder)
    has_checkpoint = run.has_checkpoint("last")  # a file cut short (a full disk) is not one
    may_train = actor.may(Permission.TRAIN)  # the launcher checks it again
    if record.status in RESUMABLE and may_train:
        record = resume_button(record, registry, run, actor)
    if record.status in ACTIVE and may_train and st.button("Cancel run", key=f"cancel.{record.id}",
                                                           icon=":material/stop:"):
        try:
            record = cancel_run(record.id, actor, registry)
        except ValueError as error:  # it ended meanwhile
            st.warning(str(error))
            record = registry.get(record.id)
    progress = run_progress(record)
    if record.status in ACTIVE:
        bar = progress.cache_fraction if progress.cache_fraction is not None else progress.fraction
        st.progress(bar, text=progress.text)
    elif record.status == RunState.FINISHED:
        st.success(progress.text, icon=":material/check_circle:")
        finished_summary(record, run)
    elif record.status == RunState.CANCELLED:
        st.warning(f"{progress.text}. " + ("Its last checkpoint is kept." if has_checkpoint
                                           else "It ended before saving a checkpoint."))
    else:
        st.error(progress.text)
        with st.expander("Details: the error and the end of run.log"):
            st.code(record.error or "", language=None)
            st.code(progress.log_tail or "(run.log is empty)", language=None)
    curves(record)
    st.caption("Every logged metric, in TensorBoard:")
    st.code(f"tensorboard --logdir {run.tensorboard}", language="bash")


def resume_button(record, registry: RunRegistry, run: RunFolder, actor: Actor):
    """Resume a failed or cancelled run; returns its record, requeued when the click launched it."""
    try:
        resume_from, _ = run.resume_checkpoint()
    except ValueError as refusal:  # every checkpoint damaged: resume_run would refuse it too
        st.error(str(refusal))
        return record
    label = ("Start again from the first epoch" if resume_from is None else "Resume from the last checkpoint"
             if resume_from == run.last else f"Resume from {resume_from.name} (last.ckpt cannot be read)")
    if not st.button(label, key=f"resume.{record.id}", icon=":material/replay:",
                     help="The same run, config and id; a new training process continues it"):
        return record
    try:
        record = resume_run(record.id, actor, registry)
    except (LaunchError, ValueError) as error:  # another run is active, or this one changed meanwhile
        st.error(str(error))
        return registry.get(record.id)
    st.success(f"Resumed run {record.id}.")
    return record


def finished_summary(record, run: RunFolder) -> None:
    if record.best_metric is not None:
        st.write(f"Best **{record.best_metric_name}** = {record.best_metric:.4f} "
                 f"({(record.metrics or {}).get('best_checkpoint', 'best checkpoint')}), "
                 "evaluated on the validation split:")
    st.dataframe(summary_frame(record), column_config={
        "accuracy": st.column_config.NumberColumn(format="%.3f"),
        "macro_f1": st.column_config.NumberColumn(format="%.3f"),
        "weighted_f1": st.column_config.NumberColumn(format="%.3f"),
    })
    test = summary_of_test_part(record)
    if test is not None:
        st.write(f"{test[:1].upper()}{test[1:]}.")
    st.caption(f"Files in {code(run.path)}: " + ", ".join(code(path.relative_to(run.path)) for path in run.files()))
    open_run_buttons(record.id)
    st.caption("Serve it to other programs over HTTP (POST /predict, one photo per request; options: `--help`):")
    st.code(f"python -m training serve {record.id}", language="bash")


def curves(record) -> None:
    epochs = metrics_frame(record.folder)
    if epochs.empty:
        if record.status in ACTIVE:
            st.caption("Curves appear after the first epoch.")
        return
    training_curves(epochs, tuple(record.config["heads"]), key="train")


def main() -> None:
    st.title("Train")
    actor = person()
    catalogue = current_catalogue()
    if catalogue is None:
        return
    rows = len(catalogue.frame)
    st.subheader("New run")
    st.caption(f"On the open dataset {code(catalogue.root)} · {rows:,} products with a photo")
    cfg = config_form(catalogue.root)
    registry = RunRegistry()
    if cfg is not None:
        estimate_hint(cfg, catalogue, registry)
    may_train = actor.may(Permission.TRAIN)  # the launcher checks it again
    if st.button("Start training", type="primary", disabled=cfg is None or not may_train, key="train.start",
                 icon=":material/play_arrow:"):
        start(cfg, registry, actor)
    if not may_train:
        st.caption(f"Starting, cancelling and resuming runs is for admins; you are a {actor.role}.")
    st.subheader("Runs")
    runs_view()


main()
