"""Tag new photos with a trained model: per head, the top-k labels and their probabilities, and
which heads need no person.

A `Predictor` wraps a TaggerModule, the label schema it was trained with and, for a run with one,
its trust layer (core.trust.layer): proposals follow the taxonomy, carry calibrated confidence, and a
head is accepted when its confidence reaches the head's threshold at the target error. It
preprocesses exactly as evaluation does: `core.images.transforms.eval_transform` of the backbone's data
config to uint8, then the module's own `normalise` on the module's device. Files a user brings
(paths, or `Upload`s: bytes from an HTTP request) go through `core.images.reading.read_image_checked`: a
bad file becomes a `FilePrediction` with an error naming it and the problem, and the rest of the
batch goes on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.data.schema import LabelSchema
from core.images.reading import ImageRejected, read_image_checked
from core.images.transforms import data_config, eval_transform
from core.model.module import TaggerModule
from core.trust.abstention import TARGET_ERROR, check_target
from core.trust.layer import Trust
from core.trust.sources import HeadRule
from core.trust.typicality import UNLIKE_CALIBRATION

# Files are decoded to at most this many times the model's input side (JPEGs by DCT scaling,
# much faster than a full decode): enough detail for the final resize, whatever the photo's size.
DECODE_SCALE = 2
# On the CPU a forward pass over a few images costs less per image than one over many: their
# activations stay in cache (lite0, 224 px, channels_last, quiet 2-core dev machine: 15.4 ms per
# image 4 at a time, 23.5 ms 32 at a time; tests/benchmarks/RESULTS.md). A GPU takes the batch.
CPU_FORWARD_BATCH = 4


def bucket_size(rows: int) -> int:
    """The batch a forward pass of `rows` images is padded to on a GPU: the next power of two.
    Each new batch shape costs a GPU seconds of kernel selection (an H200 under a server's varying
    batches: p99 4.9 s, tests/benchmarks/RESULTS.md); powers of two bound the shapes a server sees,
    and `Predictor.warm_up` pays for them before the first request."""
    return 1 << max(rows - 1, 0).bit_length()


@contextlib.contextmanager
def exact_convolutions(device: torch.device) -> Iterator[None]:
    """Convolutions in full float32 on a GPU within (cuDNN's default is TF32, whose rounding
    depends on the batch: the same photo got other labels alone than in a batch of 32)."""
    if device.type != "cuda":
        yield
        return
    conv = torch.backends.cudnn.conv
    before, conv.fp32_precision = conv.fp32_precision, "ieee"
    try:
        yield
    finally:
        conv.fp32_precision = before


@dataclass(frozen=True)
class Guess:
    """One candidate label of a head and its probability."""

    label: str
    p: float


@dataclass(frozen=True)
class ImagePrediction:
    """One image's proposals: per head the top-k guesses (the proposal first), and per head the
    accepted label (the proposal, when it needs no person) or None; accepted is None altogether
    for a model without a trust layer. typicality: the gate's score and whether it let the photo
    through (core.trust.typicality), None without a gate."""

    guesses: dict[str, list[Guess]]
    accepted: dict[str, str | None] | None = None
    typicality: tuple[float, bool] | None = None


@dataclass(frozen=True)
class Upload:
    """A photo that came as bytes (an HTTP request), never opened as a path: `name` only names it."""

    name: str
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class FilePrediction:
    """The result for one input file: per head the top-k guesses and the accepted labels, or why
    the file could not be read. `rules`: per head the rule `accepted` follows, and `source` the
    photo's source whose rules they are (None: the run's own rule), once a caller has applied them
    (training.acceptance); None before."""

    path: str
    predictions: dict[str, list[Guess]] | None = None
    accepted: dict[str, str | None] | None = None
    error: str | None = None
    typicality: tuple[float, bool] | None = None  # (score, typical), as ImagePrediction's
    source: str | None = None
    rules: Mapping[str, HeadRule] | None = None

    @property
    def typical(self) -> bool:
        """Whether the run's gate let the photo through (True without a gate)."""
        return self.typicality is None or self.typicality[1]

    def as_json(self) -> dict:
        """{"path", "predictions": {head: [{"label", "p"}, ...]}, "accepted": {head: label | null}}
        ("accepted" only with a trust layer); with rules, "source" (null: the run's rule) and
        "rules": {head: {"threshold", "gated", "why"}}; with a typicality gate, "typicality" (the
        score), "typical" (the gate let it through) and, where it did not, "note":
        UNLIKE_CALIBRATION; or {"path", "error"}."""
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        answer = {"path": self.path, "predictions": {
            head: [{"label": guess.label, "p": guess.p} for guess in guesses]
            for head, guesses in (self.predictions or {}).items()}}
        if self.accepted is not None:
            answer["accepted"] = dict(self.accepted)
        if self.rules is not None:
            answer["source"] = self.source
            answer["rules"] = {head: {"threshold": rule.threshold, "gated": rule.gated, "why": rule.why}
                               for head, rule in self.rules.items()}
        if self.typicality is not None:
            score, typical = self.typicality
            answer.update({"typicality": score, "typical": typical})
            if not typical:
                answer["note"] = UNLIKE_CALIBRATION
        return answer

    def as_row(self, heads: Sequence[str]) -> dict[str, str | float]:
        """One flat row (`row_columns(heads)`): the path, each head's top label, its p and the
        accepted label ("" for all when the file was not read, and for accepted when the head
        needs a person), and the error ("" when it was read)."""
        row: dict[str, str | float] = {"path": self.path}
        for head in heads:
            guesses = (self.predictions or {}).get(head)
            row[head], row[f"{head}_p"] = (guesses[0].label, guesses[0].p) if guesses else ("", "")
            row[f"{head}_accepted"] = (self.accepted or {}).get(head) or ""
        row["error"] = self.error or ""
        return row


def row_columns(heads: Sequence[str]) -> list[str]:
    """The columns of FilePrediction.as_row: path, <head>, <head>_p, <head>_accepted for each head, error."""
    return ["path", *[column for head in heads for column in (head, f"{head}_p", f"{head}_accepted")], "error"]


class Predictor:
    """A trained TaggerModule and its label schema, ready to tag images.

    image_size: the side of the model input the run was trained at. run_id, checkpoint: where the
    weights came from, for display. channels_last: the memory format the module and its inputs
    take (the caller's choice, like the trainer's for training). trust: the run's trust layer
    (None: each head's argmax and raw probability, nothing accepted); target_error: the error
    rate a head's accepted proposals may have. The module is put in eval mode; inputs go to its device.
    """

    def __init__(self, module: TaggerModule, schema: LabelSchema, image_size: int,
                 run_id: str | None = None, checkpoint: str | None = None, channels_last: bool = False,
                 trust: Trust | None = None, target_error: float = TARGET_ERROR) -> None:
        if tuple(module.heads) != tuple(schema.heads):
            raise ValueError(f"the module's heads {list(module.heads)} differ from the schema's {list(schema.heads)}")
        counts = getattr(module.hparams, "class_counts", None)
        if counts is not None:
            mismatched = {head: (len(counts[head]), len(schema.classes[head]))
                          for head in schema.heads if len(counts[head]) != len(schema.classes[head])}
            if mismatched:  # indices would map to the wrong names
                raise ValueError(f"module and schema disagree on class counts (module, schema): {mismatched}")
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.module = module.eval().to(memory_format=self.memory_format)
        self.schema = schema
        self.heads = tuple(schema.heads)
        self.image_size = image_size
        self.run_id = run_id
        self.checkpoint = checkpoint
        config = data_config(module.net.backbone, image_size)
        self.transform = eval_transform(config)  # PIL -> uint8; the module normalises on its device
        self.input_shape = tuple(config["input_size"])  # (channels, height, width) of one preprocessed image
        self.trust, self.target_error = trust, check_target(target_error)
        self.pad_batches = self.device.type != "cpu"  # a CPU pays for padding rows, not for new shapes

    @property
    def device(self) -> torch.device:
        """Where the module's weights are; inputs go there."""
        return next(self.module.parameters()).device

    @property
    def decode_side(self) -> int:
        """Longest side files are decoded to before preprocessing."""
        return DECODE_SCALE * self.image_size

    def probabilities(self, images: Sequence[Image.Image], batch_size: int = 32) -> dict[str, np.ndarray]:
        """head -> float32 [n, C_head]: each head's softmax, rows in `images` order, classes in schema order.

        batch_size: images per forward pass; on the CPU at most CPU_FORWARD_BATCH.
        """
        return self.outputs(images, batch_size)[0]

    def outputs(self, images: Sequence[Image.Image], batch_size: int = 32) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """(`probabilities`, the backbone's pooled features float32 [n, D]), from one forward pass."""
        _check_positive("batch_size", batch_size)
        for index, image in enumerate(images):
            if not isinstance(image, Image.Image):
                raise TypeError(f"images[{index}] is a {type(image).__name__}, not a PIL image")
        chunks: dict[str, list[np.ndarray]] = {head: [] for head in self.heads}
        features = []
        step = min(batch_size, CPU_FORWARD_BATCH) if self.device.type == "cpu" else batch_size
        for start in range(0, len(images), step):
            logits, pooled = self._forward(torch.stack([self.transform(image) for image in images[start:start + step]]))
            for head in self.heads:
                chunks[head].append(logits[head].float().softmax(dim=-1).cpu().numpy())
            features.append(pooled.float().cpu().numpy())
        probs = {head: np.concatenate(chunks[head]) if chunks[head]
                 else np.zeros((0, len(self.schema.classes[head])), dtype=np.float32) for head in self.heads}
        return probs, np.concatenate(features) if features else np.zeros((0, 0), dtype=np.float32)

    def _forward(self, batch: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """(head -> logits [n, C], pooled features [n, D]) of a preprocessed uint8 batch [n, 3, H, W],
        normalised on the module's device; on a GPU (or when `pad_batches` is set) through a batch
        padded to `bucket_size(n)` with blank images."""
        rows = len(batch)
        if self.pad_batches and bucket_size(rows) > rows:
            batch = torch.cat([batch, batch.new_zeros((bucket_size(rows) - rows, *batch.shape[1:]))])
        with torch.inference_mode(), exact_convolutions(self.device):
            logits, features = self.module.predict_with_features(
                self.module.normalise(batch.to(self.device), self.memory_format))
        return {head: values[:rows] for head, values in logits.items()}, features[:rows]

    def warm_up(self, max_batch: int) -> None:
        """One forward pass at each batch shape up to `max_batch` that predictions can take, so
        that no request pays for a shape's first use (a server calls this before it serves)."""
        _check_positive("max_batch", max_batch)
        for rows in sorted({bucket_size(rows) for rows in range(1, max_batch + 1)}):
            self._forward(torch.zeros((rows, *self.input_shape), dtype=torch.uint8))

    def predict_images(self, images: Sequence[Image.Image], top_k: int = 3,
                       batch_size: int = 32) -> list[ImagePrediction]:
        """Per image: per head the proposal, then the next most probable labels, top_k in all (fewer
        when a head has fewer classes; ties in class order), and the accepted labels."""
        _check_positive("top_k", top_k)
        if not images:
            return []
        probs, features = self.outputs(images, batch_size)
        if self.trust is None:
            return [ImagePrediction(guesses) for guesses in self._top(probs, None, len(images), top_k)]
        proposals = self.trust.propose(probs, features=features)
        accepted = self.trust.accepted(proposals, self.target_error)
        names = self.schema.classes
        gated = self.trust.gate is not None
        return [ImagePrediction(guesses, {head: names[head][proposals.labels[head][row]] if accepted[head][row]
                                          else None for head in self.heads},
                                (float(proposals.typicality[row]), bool(proposals.typical[row])) if gated else None)
                for row, guesses in enumerate(self._top(proposals.probs, proposals.labels, len(images), top_k))]

    def predict_files(self, paths: Iterable[str | Path], top_k: int = 3, batch_size: int = 32) -> list[FilePrediction]:
        """One FilePrediction per path, in order: predictions, or the error of a file that cannot be read."""
        return list(self.iter_predict_files(paths, top_k, batch_size))

    def iter_predict_files(self, paths: Iterable[str | Path], top_k: int = 3,
                           batch_size: int = 32) -> Iterator[FilePrediction]:
        """`predict_files`, yielded batch by batch (a folder of thousands shows results as it goes);
        batch_size: files decoded and predicted together."""
        _check_positive("top_k", top_k)
        _check_positive("batch_size", batch_size)
        batch: list[str] = []
        for path in paths:
            batch.append(str(path))
            if len(batch) == batch_size:
                yield from self.predict_batch(batch, top_k)
                batch = []
        if batch:
            yield from self.predict_batch(batch, top_k)

    def predict_batch(self, sources: Sequence[str | Path | Upload], top_k: int = 3) -> list[FilePrediction]:
        """One FilePrediction per source, in order, from one forward pass over those that decode: the
        batch function of `iter_predict_files` (paths) and of the server (`Upload`s), so both answer
        alike. A path's result is named by the path, an upload's by its name."""
        decoded: dict[int, Image.Image] = {}
        errors: dict[int, str] = {}
        for index, source in enumerate(sources):
            try:
                decoded[index] = self.read_upload(source) if isinstance(source, Upload) else self.read_file(source)
            except ImageRejected as err:
                errors[index] = str(err)
        predicted = iter(self.predict_images(list(decoded.values()), top_k, batch_size=max(1, len(decoded))))
        names = [source.name if isinstance(source, Upload) else str(source) for source in sources]
        return [FilePrediction(name, error=errors[index]) if index in errors
                else _file_prediction(name, next(predicted)) for index, name in enumerate(names)]

    def read_file(self, path: str | Path) -> Image.Image:
        """A file decoded as `predict_files` decodes it: checked (`read_image_checked`), RGB, longer
        side at most `decode_side`; ImageRejected naming the file and the problem otherwise."""
        if not Path(path).exists():
            raise ImageRejected(f"{path}: no such file or folder")
        if Path(path).is_dir():
            raise ImageRejected(f"{path}: a folder, not an image file")
        return self._decode(path)

    def read_upload(self, upload: Upload) -> Image.Image:
        """An upload's bytes decoded as `read_file` decodes a file's; ImageRejected naming the upload."""
        return self._decode(upload.data, upload.name)

    def _decode(self, source: str | Path | bytes, name: str | None = None) -> Image.Image:
        image = read_image_checked(source, name=name, max_side=self.decode_side)
        image.thumbnail((self.decode_side, self.decode_side))  # never enlarges; bounds the preprocessing cost
        return image

    def _top(self, probs: dict[str, np.ndarray], proposed: dict[str, np.ndarray] | None, n: int,
             top_k: int) -> list[dict[str, list[Guess]]]:
        """Per row and head, the proposed class (default: the most probable) then the most probable
        others, top_k in all."""
        results: list[dict[str, list[Guess]]] = [{} for _ in range(n)]
        for head in self.heads:
            names = self.schema.classes[head]
            # Stable sort on -p: equal probabilities keep class order.
            order = np.argsort(-probs[head], axis=1, kind="stable")
            for row, indices in enumerate(order):
                first = int(indices[0]) if proposed is None else int(proposed[head][row])
                chosen = [first, *(int(i) for i in indices[:top_k] if i != first)][:top_k]
                results[row][head] = [Guess(names[i], float(probs[head][row, i])) for i in chosen]
        return results


def _file_prediction(path: str, predicted: ImagePrediction) -> FilePrediction:
    return FilePrediction(path, predictions=predicted.guesses, accepted=predicted.accepted,
                          typicality=predicted.typicality)


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
