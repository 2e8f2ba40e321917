"""`python -m pipeline evaluate`: score a labelled file with an engine and report how well it agrees.

The file is CSV (header row) or JSONL (one object a line) with a text column and a label column;
labels are negative/neutral/positive (any case) or 0/1/2 in that order (TweetEval's encoding).
Reported: accuracy, macro-averaged recall (TweetEval's official metric), macro F1, per-class recall,
precision and F1, the confusion matrix (rows gold, columns predicted) and tweets/s of classification
alone (model loading excluded). `--json` prints the same as one JSON line.

Macro averages are over all three classes; a class with no gold rows (or no predictions) counts as
0 recall (or precision), like scikit-learn's default `zero_division`.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pipeline.contracts import LABELS, Label
from pipeline.engines import SentimentEngine, make_engine
from pipeline.errors import EngineUnavailable, StreamPulseError

logger = logging.getLogger(__name__)

Confusion = dict[Label, dict[Label, int]]


class LabelledDataError(StreamPulseError):
    """The labelled file cannot be read: missing, wrong format, missing column or a bad label."""


def normalise_label(value: Any) -> Label:
    """negative/neutral/positive (any case, spaces ignored) or 0/1/2; anything else raises ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"label {value!r} is not negative/neutral/positive or 0/1/2")
    if isinstance(value, int | float) and value in (0, 1, 2):
        return LABELS[int(value)]
    if isinstance(value, str):
        text = value.strip().lower()
        if text in LABELS:
            return text  # type: ignore[return-value]
        if text in ("0", "1", "2"):
            return LABELS[int(text)]
    raise ValueError(f"label {value!r} is not negative/neutral/positive or 0/1/2")


def _rows(path: Path, text_column: str, label_column: str,
          keyword_column: str) -> Iterator[tuple[int, Any, Any, Any]]:
    """(line number, text, label, keyword or None) for each record of a CSV or JSONL file."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            missing = [c for c in (text_column, label_column) if c not in columns]
            if missing:
                raise LabelledDataError(f"{path}: no column {missing} (columns: {columns})")
            for row in reader:
                # line_num is where the record ends; texts may span lines.
                yield reader.line_num, row[text_column], row[label_column], row.get(keyword_column)
    elif suffix in (".jsonl", ".ndjson", ".json"):
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise LabelledDataError(f"{path}:{number}: not JSON ({exc})") from exc
                if not isinstance(record, dict) or text_column not in record or label_column not in record:
                    raise LabelledDataError(
                        f"{path}:{number}: expected an object with {text_column!r} and {label_column!r}"
                    )
                yield number, record[text_column], record[label_column], record.get(keyword_column)
    else:
        raise LabelledDataError(f"{path}: unknown format {suffix!r}; use .csv or .jsonl")


def read_labelled(path: Path, *, text_column: str = "text", label_column: str = "label",
                  limit: int | None = None, keyword_column: str = "keyword",
                  subjects: list[str | None] | None = None) -> tuple[list[str], list[Label]]:
    """Texts and gold labels from `path` (the first `limit` records when given). When `subjects` is
    a list, each record's keyword (or None) is appended to it, for engines that mask the brand."""
    if not path.is_file():
        raise LabelledDataError(f"{path}: no such file")
    texts: list[str] = []
    gold: list[Label] = []
    try:
        records = list(_rows(path, text_column, label_column, keyword_column))
    except UnicodeDecodeError as exc:
        raise LabelledDataError(f"{path}: not UTF-8 ({exc})") from exc
    for number, text, label, keyword in records:
        if limit is not None and len(texts) >= limit:
            break
        try:
            gold.append(normalise_label(label))
        except ValueError as exc:
            raise LabelledDataError(f"{path}:{number}: {exc}") from exc
        texts.append("" if text is None else str(text))
        if subjects is not None:
            subjects.append(keyword if isinstance(keyword, str) and keyword.strip() else None)
    if not texts:
        raise LabelledDataError(f"{path}: no labelled rows")
    return texts, gold


def confusion_matrix(gold: Sequence[Label], predicted: Sequence[Label]) -> Confusion:
    """{gold: {predicted: count}} over all three labels, in LABELS order."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold labels but {len(predicted)} predictions")
    matrix: Confusion = {g: dict.fromkeys(LABELS, 0) for g in LABELS}
    for g, p in zip(gold, predicted, strict=True):
        matrix[g][p] += 1
    return matrix


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


def metrics(matrix: Confusion) -> dict[str, Any]:
    """Accuracy, per-class and macro recall / precision / F1 from a confusion matrix."""
    n = sum(sum(row.values()) for row in matrix.values())
    correct = sum(matrix[label][label] for label in LABELS)
    recall = {c: _ratio(matrix[c][c], sum(matrix[c].values())) for c in LABELS}
    precision = {c: _ratio(matrix[c][c], sum(matrix[g][c] for g in LABELS)) for c in LABELS}
    f1 = {c: _ratio(2 * precision[c] * recall[c], precision[c] + recall[c]) for c in LABELS}
    return {
        "n": n,
        "accuracy": _ratio(correct, n),
        "macro_recall": sum(recall.values()) / len(LABELS),
        "macro_f1": sum(f1.values()) / len(LABELS),
        "recall": recall,
        "precision": precision,
        "f1": f1,
        "confusion": matrix,
    }


def evaluate(engine: SentimentEngine, texts: Sequence[str], gold: Sequence[Label], *,
             batch_size: int = 64, subjects: Sequence[str | None] | None = None) -> dict[str, Any]:
    """Score `texts` in batches of `batch_size` and compare with `gold`. `subjects` are the tracked
    keywords of the texts (as the processor passes them), when the file has a keyword column."""
    predicted: list[Label] = []
    started = time.perf_counter()
    for start in range(0, len(texts), batch_size):
        batch_subjects = None if subjects is None else subjects[start:start + batch_size]
        predicted.extend(s.label for s in engine.classify(texts[start:start + batch_size],
                                                          subjects=batch_subjects))
    seconds = time.perf_counter() - started
    report = metrics(confusion_matrix(gold, predicted))
    report["seconds"] = seconds
    report["tweets_per_s"] = _ratio(len(texts), seconds)
    report["engine"] = engine.name
    return report


def format_report(report: dict[str, Any], *, file: str) -> str:
    width = max(len(label) for label in LABELS) + 2
    lines = [
        f"file          {file}",
        f"engine        {report['engine']}",
        f"tweets        {report['n']}",
        f"accuracy      {report['accuracy']:.3f}",
        f"macro recall  {report['macro_recall']:.3f}   (TweetEval's official metric)",
        f"macro F1      {report['macro_f1']:.3f}",
        "",
        f"{'':{width}}" + "".join(f"{h:>10}" for h in ("recall", "precision", "F1", "gold n")),
    ]
    for c in LABELS:
        lines.append(f"{c:{width}}{report['recall'][c]:>10.3f}{report['precision'][c]:>10.3f}"
                     f"{report['f1'][c]:>10.3f}{sum(report['confusion'][c].values()):>10}")
    lines += ["", "confusion (rows gold, columns predicted)",
              f"{'':{width}}" + "".join(f"{p:>10}" for p in LABELS)]
    for g in LABELS:
        lines.append(f"{g:{width}}" + "".join(f"{report['confusion'][g][p]:>10}" for p in LABELS))
    lines += ["", f"tweets/s      {report['tweets_per_s']:.1f}   ({report['seconds']:.2f} s classifying)"]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline evaluate",
        description="Score a labelled CSV/JSONL file (text, label) with a sentiment engine.",
    )
    parser.add_argument("--file", required=True, type=Path, help="labelled .csv or .jsonl file")
    parser.add_argument("--engine", required=True, choices=("vader", "transformer"))
    parser.add_argument("--model", help="MODEL_NAME for the transformer (hub id or local directory)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line")
    parser.add_argument("--batch-size", type=int, default=None, help="texts per classify call (BATCH_SIZE)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N rows")
    parser.add_argument("--quantize", choices=("none", "int8"), help="MODEL_QUANTIZE (CPU)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="MODEL_DEVICE")
    parser.add_argument("--dtype", choices=("auto", "fp32", "fp16", "bf16"), help="MODEL_DTYPE (CUDA)")
    parser.add_argument("--threads", type=int, help="TORCH_THREADS")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--keyword-column", default="keyword",
                        help="tracked keyword of each row, if any (VADER masks it, as in the processor)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_size is not None and args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from pipeline.settings import get_settings

    overrides: dict[str, Any] = {"sentiment_engine": args.engine}
    for option, setting in (("model", "model_name"), ("quantize", "model_quantize"),
                            ("device", "model_device"), ("dtype", "model_dtype"),
                            ("threads", "torch_threads"), ("batch_size", "batch_size")):
        if getattr(args, option) is not None:
            overrides[setting] = getattr(args, option)
    try:
        subjects: list[str | None] = []
        texts, gold = read_labelled(args.file, text_column=args.text_column,
                                    label_column=args.label_column, limit=args.limit,
                                    keyword_column=args.keyword_column, subjects=subjects)
        settings = get_settings(**overrides)
        started = time.perf_counter()
        engine = make_engine(settings)
        load_s = time.perf_counter() - started
    except (LabelledDataError, EngineUnavailable) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    report = evaluate(engine, texts, gold, batch_size=settings.batch_size,
                      subjects=subjects if any(subjects) else None)
    report["load_s"] = load_s
    report["file"] = str(args.file)
    # CLI output goes to stdout (logs go to stderr), so `--json | jq` sees the JSON line alone.
    if args.json:
        out = json.dumps(report, separators=(",", ":"))
    else:
        out = format_report(report, file=str(args.file))
    sys.stdout.write(out + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
