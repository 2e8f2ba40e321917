"""The transformer engine: a Hugging Face sequence-classification model (cardiffnlp RoBERTa by default).

Label and score: the model's three softmax probabilities, mapped to negative/neutral/positive through
the model's own `id2label` (models order their labels differently, so positions are never assumed);
`label` is the argmax and `score = p_pos - p_neg`.

Speed on CPU comes from batching: each `classify` call tokenizes its texts once, sorts them by token
count and runs them in sub-batches padded only to their own longest text (dynamic padding), so short
tweets do not pay for long ones; results are returned in the caller's order.

A model is loaded once per process (`from_settings` caches it by model and runtime options).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from pipeline.contracts import LABELS, Label
from pipeline.engines.base import Sentiment
from pipeline.engines.preprocess import preprocess
from pipeline.errors import EngineUnavailable

if TYPE_CHECKING:
    from pipeline.settings import Settings

logger = logging.getLogger(__name__)

#: Texts per forward pass. Measured on 2 idle CPU cores with a roberta-base-sized model
#: (bench/bench_transformer.py, 2026-12-03): 16 gave 37.5 tweets/s fp32 and 83.6 int8, against
#: 32.9 / 69.8 at 32 and 25.9 / 48.3 at 64: bigger groups pad more and only add latency.
DEFAULT_SUB_BATCH = 16

#: Label names models use, lower-cased, for each of our labels.
_LABEL_ALIASES: dict[str, Label] = {
    "negative": "negative", "neg": "negative",
    "neutral": "neutral", "neu": "neutral",
    "positive": "positive", "pos": "positive",
}

# Errors transformers / huggingface_hub / torch raise when a model cannot be loaded: missing files
# and unreachable hub (OSError), bad ids or configs (ValueError), missing tokenizer extras
# (ImportError), weights that do not fit the config (RuntimeError), odd configs (KeyError).
_LOAD_ERRORS = (OSError, ValueError, ImportError, RuntimeError, KeyError)

_cache: dict[tuple[Any, ...], TransformerEngine] = {}
_cache_lock = threading.Lock()


def map_labels(id2label: dict[Any, str]) -> list[Label]:
    """Our label for each output index of a model, from its `id2label`; EngineUnavailable if unmappable."""
    found = {int(i): str(name) for i, name in id2label.items()}
    mapped = [_LABEL_ALIASES.get(found.get(i, "").strip().lower()) for i in range(len(found))]
    if len(found) != 3 or None in mapped or set(mapped) != set(LABELS):
        raise EngineUnavailable(
            f"the model's labels {found} cannot be mapped to negative/neutral/positive: the model must "
            "have exactly three outputs named negative/neutral/positive (any case; neg/neu/pos too) in "
            "its config's id2label. Set MODEL_NAME to a 3-class sentiment model, or fix its config.json."
        )
    return mapped  # type: ignore[return-value]


def _is_local_path(name: str) -> bool:
    """A directory, or something only a path can look like (a hub id is `name` or `owner/name`)."""
    return (name.startswith((".", "/", "~")) or name.count("/") > 1 or (os.sep != "/" and os.sep in name)
            or Path(name).expanduser().is_dir())


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP probe of the hub, so an offline box falls back in seconds, not after ~50 s of retries.

    Skipped (assumed reachable) behind an HTTP(S) proxy, where only the proxy knows the answer.
    """
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")):
        return True
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


class TransformerEngine:
    """Sentiment from a sequence-classification model. Use `from_settings` (cached) in stages."""

    def __init__(self, model_name: str, *, device: str = "auto", dtype: str = "auto",
                 quantize: str = "none", max_length: int = 128, threads: int | None = None,
                 sub_batch: int = DEFAULT_SUB_BATCH) -> None:
        self.model_name = model_name
        self.max_length = max_length
        self.sub_batch = sub_batch
        try:
            import torch
            import transformers  # noqa: F401  (fail here, with the setting named, if absent)
        except ImportError as exc:
            raise EngineUnavailable(
                f"SENTIMENT_ENGINE=transformer needs torch and transformers installed: {exc}"
            ) from exc
        self._torch = torch
        if threads:
            torch.set_num_threads(threads)
        self.device = self._pick_device(device)
        tokenizer, model = self._load(model_name)
        self.labels = map_labels(model.config.id2label)
        self._index = {label: self.labels.index(label) for label in LABELS}

        suffix = ""
        if self.device.type == "cuda":
            torch_dtype = {"auto": torch.float16, "fp16": torch.float16, "bf16": torch.bfloat16,
                           "fp32": torch.float32}[dtype]
            model = model.to(device=self.device, dtype=torch_dtype)
            suffix = {torch.float16: "+fp16", torch.bfloat16: "+bf16"}.get(torch_dtype, "")
            if quantize == "int8":
                logger.warning("MODEL_QUANTIZE=int8 is dynamic quantisation for the CPU; ignored on CUDA")
        else:
            if dtype in ("fp16", "bf16"):
                logger.warning("MODEL_DTYPE=%s applies on CUDA only; the CPU runs fp32", dtype)
            if quantize == "int8":
                # Linear layers hold nearly all of RoBERTa's compute; their weights become int8 and
                # activations are quantised on the fly, which needs no calibration data.
                with warnings.catch_warnings():
                    # torch.ao's eager quantisation is deprecated in favour of torchao, but still ships
                    # in the pinned torch and is the CPU path with fused int8 Linear kernels.
                    warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated")
                    warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor")
                    model = torch.ao.quantization.quantize_dynamic(
                        model, {torch.nn.Linear}, dtype=torch.qint8
                    )
                suffix = "+int8"
        model.eval()
        self._tokenizer = tokenizer
        self._model = model
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        # Never past what the model was trained for (tokenizers without a limit report ~1e30).
        self.max_length = min(max_length, int(min(tokenizer.model_max_length, 1_000_000)))
        self.name = f"transformer:{model_name}{suffix}"
        logger.info("loaded %s on %s (%d threads, max %d tokens, sub-batch %d)", self.name,
                    self.device, torch.get_num_threads(), self.max_length, sub_batch)

    @classmethod
    def from_settings(cls, settings: Settings) -> TransformerEngine:
        """The process-wide engine for these settings, loaded on first use."""
        key = (settings.model_name, settings.model_device, settings.model_dtype,
               settings.model_quantize, settings.model_max_length, settings.torch_threads)
        with _cache_lock:
            engine = _cache.get(key)
            if engine is None:
                engine = cls(settings.model_name, device=settings.model_device,
                             dtype=settings.model_dtype, quantize=settings.model_quantize,
                             max_length=settings.model_max_length, threads=settings.torch_threads)
                _cache[key] = engine
            return engine

    def _pick_device(self, device: str) -> Any:
        torch = self._torch
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device == "cuda" and not torch.cuda.is_available():
            raise EngineUnavailable("MODEL_DEVICE=cuda but torch sees no CUDA device; use auto or cpu")
        return torch.device(device)

    def _load(self, name: str) -> tuple[Any, Any]:
        from huggingface_hub import constants
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        from transformers.utils import logging as hf_logging

        # A stage logs lines, not terminal progress bars (they would land in the logs as \r-noise).
        hf_logging.disable_progress_bar()

        local = _is_local_path(name)
        if local and not Path(name).expanduser().is_dir():
            raise EngineUnavailable(
                f"MODEL_NAME={name!r} looks like a local path but no such directory exists; set MODEL_NAME "
                "to a directory saved with save_pretrained or to a Hugging Face model id"
            )
        path = str(Path(name).expanduser()) if local else name
        started = time.perf_counter()
        try:
            # The local directory or the hub cache first: no network, so a cached model loads offline.
            return self._from_pretrained(AutoTokenizer, AutoModelForSequenceClassification, path, True)
        except _LOAD_ERRORS as exc:
            if local or constants.is_offline_mode():
                raise self._unavailable(name, exc) from exc
            cached_error = exc
        if not _hub_reachable():
            raise self._unavailable(
                name, OSError(f"{constants.ENDPOINT} is unreachable and the model is not in the local "
                              f"cache ({cached_error})")
            ) from cached_error
        try:
            loaded = self._from_pretrained(AutoTokenizer, AutoModelForSequenceClassification, path, False)
        except _LOAD_ERRORS as exc:
            raise self._unavailable(name, exc) from exc
        logger.info("downloaded %s in %.1f s", name, time.perf_counter() - started)
        return loaded

    @staticmethod
    def _from_pretrained(tok_cls: Any, model_cls: Any, path: str, local_only: bool) -> tuple[Any, Any]:
        tokenizer = tok_cls.from_pretrained(path, local_files_only=local_only)
        model = model_cls.from_pretrained(path, local_files_only=local_only)
        return tokenizer, model

    @staticmethod
    def _unavailable(name: str, exc: BaseException) -> EngineUnavailable:
        return EngineUnavailable(
            f"cannot load MODEL_NAME={name!r} ({type(exc).__name__}: {str(exc).strip()[:500]}). "
            "Set MODEL_NAME to a Hugging Face model id reachable from here (or already in the HF cache, "
            "HF_HOME) or to a local directory saved with save_pretrained; or set SENTIMENT_ENGINE=vader."
        )

    def classify(self, texts: Sequence[str], *,
                 subjects: Sequence[str | None] | None = None) -> list[Sentiment]:
        # `subjects` is not used: the model read brand names in context during training, and
        # masking them would take its input away from what it learned on (handles are already
        # `@user` by the model card's preprocessing).
        if not texts:
            return []
        torch = self._torch
        encoded = self._tokenizer(
            [preprocess(t) for t in texts], truncation=True, max_length=self.max_length,
            padding=False, return_attention_mask=False,
        )["input_ids"]
        # Longest first, so the first sub-batch shows the peak memory at once; ties keep input order.
        order = sorted(range(len(texts)), key=lambda i: -len(encoded[i]))
        results: list[Sentiment | None] = [None] * len(texts)
        with torch.inference_mode():
            for start in range(0, len(order), self.sub_batch):
                chunk = order[start:start + self.sub_batch]
                input_ids, attention_mask = self._pad([encoded[i] for i in chunk])
                logits = self._model(input_ids=input_ids, attention_mask=attention_mask).logits
                probs = torch.softmax(logits.float(), dim=-1).cpu().tolist()
                for i, row in zip(chunk, probs, strict=True):
                    results[i] = self._sentiment(row)
        return results  # type: ignore[return-value]

    def _pad(self, rows: list[list[int]]) -> tuple[Any, Any]:
        """Right-pad to the longest row of this sub-batch (dynamic padding), with its attention mask."""
        torch = self._torch
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self._pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for n, row in enumerate(rows):
            input_ids[n, :len(row)] = torch.tensor(row, dtype=torch.long)
            attention_mask[n, :len(row)] = 1
        return input_ids.to(self.device), attention_mask.to(self.device)

    def _sentiment(self, row: list[float]) -> Sentiment:
        p_neg, p_neu, p_pos = (row[self._index[label]] for label in LABELS)
        best = max(range(3), key=row.__getitem__)
        return Sentiment(label=self.labels[best], p_neg=p_neg, p_neu=p_neu, p_pos=p_pos,
                         score=max(-1.0, min(1.0, p_pos - p_neg)))
