"""The transformer engine on a tiny random RoBERTa built on disk (tests/fixtures/tiny_model.py)."""

from __future__ import annotations

import logging
import math

import pytest

from pipeline.engines import make_engine
from pipeline.engines.preprocess import preprocess
from pipeline.engines.transformer import TransformerEngine, map_labels
from pipeline.engines.vader import VaderEngine
from pipeline.errors import EngineUnavailable
from tests.fixtures.tiny_model import MAX_LENGTH, build_tiny_model

TEXTS = [
    "I love this airline, the crew was great!",
    "@united worst service ever, two hours on hold http://t.co/xyz",
    "",
    "   ",
    "😂😂🔥💯",
    "ok",
    "Flight 123 from Boston to Denver departs at 9:30 tomorrow morning. " * 3,
    "meh",
    "So excited for the weekend!!! can't wait @user",
    "x" * 5000,
    "not happy at all with the delay, cancelled again :( #fail " * 90,  # ~5,000 chars of words
]


def _direct(model_dir, texts):
    """Softmax rows straight from the model, one text per forward pass (the reference)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, local_files_only=True).eval()
    rows = []
    with torch.inference_mode():
        for text in texts:
            enc = tokenizer(preprocess(text), truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
            rows.append(torch.softmax(model(**enc).logits, dim=-1)[0].tolist())
    return rows, model.config.id2label


def _assert_contract(s):
    assert s.label in ("negative", "neutral", "positive")
    assert all(0.0 <= p <= 1.0 for p in (s.p_neg, s.p_neu, s.p_pos))
    assert math.isclose(s.p_neg + s.p_neu + s.p_pos, 1.0, abs_tol=1e-5)
    probs = {"negative": s.p_neg, "neutral": s.p_neu, "positive": s.p_pos}
    assert s.label == max(probs, key=probs.get)
    assert s.score == pytest.approx(s.p_pos - s.p_neg, abs=1e-9)


# --- preprocessing ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("@united my bag is lost", "@user my bag is lost"),
    ("thanks @JetBlue! see https://t.co/abc and http://x.y", "thanks @user see http and http"),
    ("line one\n@bob line two\thttp://a.b", "line one\n@user line two\thttp"),
    ("mail me at a@b.com", "mail me at a@b.com"),  # not at the start of a token: not a mention
    ("@ alone stays", "@ alone stays"),
    ("httpfoo counts as a link, as on the model card", "http counts as a link, as on the model card"),
    ("", ""),
])
def test_preprocess_follows_the_model_card(text, expected):
    assert preprocess(text) == expected


# --- the tiny model itself -------------------------------------------------------------------------

def test_tiny_tokenizer_encodes_real_tokens(tiny_model_dir):
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(tiny_model_dir)("the flight was great")["input_ids"]
    assert len(ids) > 2  # <s> ... </s> with real tokens between, not the empty <s></s>


# --- loading and the output contract ---------------------------------------------------------------

def test_loads_offline_through_make_engine_and_matches_a_direct_forward_pass(
    hf_offline, tiny_model_dir, make_settings
):
    engine = make_engine(make_settings(sentiment_engine="transformer", model_name=str(tiny_model_dir)))
    assert isinstance(engine, TransformerEngine)
    assert engine.name == f"transformer:{tiny_model_dir}"
    assert engine.labels == ["negative", "neutral", "positive"]
    results = engine.classify(TEXTS)
    assert len(results) == len(TEXTS)
    reference, _ = _direct(tiny_model_dir, TEXTS)
    for s, (neg, neu, pos) in zip(results, reference, strict=True):
        _assert_contract(s)
        assert (s.p_neg, s.p_neu, s.p_pos) == pytest.approx((neg, neu, pos), abs=1e-5)
    assert len({round(s.p_pos, 4) for s in results}) > 3  # the outputs depend on the text


def test_from_settings_loads_once_per_process(tiny_model_dir, make_settings):
    settings = make_settings(sentiment_engine="transformer", model_name=str(tiny_model_dir))
    assert TransformerEngine.from_settings(settings) is TransformerEngine.from_settings(settings)


def test_empty_input_gives_empty_output(tiny_model_dir):
    assert TransformerEngine(str(tiny_model_dir)).classify([]) == []


def test_edge_texts_are_scored(tiny_model_dir):
    # max_position_embeddings is 130, so an untruncated 5,000-character text would fail the forward pass.
    engine = TransformerEngine(str(tiny_model_dir))
    for text in ("", "   ", "\n\n", "😂", "🔥💯😡", "x" * 5000, "word " * 1000):
        [s] = engine.classify([text])
        _assert_contract(s)


# --- labels come from id2label ---------------------------------------------------------------------

def test_permuted_id2label_gives_the_same_sentiments(tmp_path, tiny_model_dir):
    # Output j of the permuted model is output perm[j] of the base one, and is named accordingly,
    # so an engine reading id2label must score both models identically.
    base_names = ["negative", "neutral", "positive"]
    perm = [2, 0, 1]
    spelled = {"negative": "NEG", "neutral": "Neutral", "positive": "Positive"}  # names vary in case
    id2label = {j: spelled[base_names[perm[j]]] for j in range(3)}
    permuted_dir = build_tiny_model(tmp_path / "permuted", id2label=id2label, permutation=perm)

    permuted = TransformerEngine(str(permuted_dir))
    assert permuted.labels == ["positive", "negative", "neutral"]
    base = TransformerEngine(str(tiny_model_dir)).classify(TEXTS)
    for a, b in zip(base, permuted.classify(TEXTS), strict=True):
        assert a.label == b.label
        assert (a.p_neg, a.p_neu, a.p_pos) == pytest.approx((b.p_neg, b.p_neu, b.p_pos), abs=1e-6)

    # And against the raw model: its output 0 is what the engine calls positive.
    rows, raw_id2label = _direct(permuted_dir, TEXTS[:3])
    assert raw_id2label[0] == "Positive"
    for s, row in zip(permuted.classify(TEXTS[:3]), rows, strict=True):
        assert s.p_pos == pytest.approx(row[0], abs=1e-5)
        assert s.p_neg == pytest.approx(row[1], abs=1e-5)


def test_known_output_with_a_forced_bias(tmp_path):
    # Output 0 is named positive and its bias dominates: every text must come out positive.
    model_dir = build_tiny_model(tmp_path / "forced", id2label={0: "positive", 1: "negative", 2: "neutral"},
                                 bias=[3.0, 1.0, 0.0])
    [s] = TransformerEngine(str(model_dir)).classify(["Terrible, awful, never again."])
    z = math.exp(3.0) + math.exp(1.0) + 1.0
    assert s.label == "positive"
    assert s.p_pos == pytest.approx(math.exp(3.0) / z, abs=1e-5)
    assert s.p_neg == pytest.approx(math.exp(1.0) / z, abs=1e-5)
    assert s.p_neu == pytest.approx(1.0 / z, abs=1e-5)
    assert s.score == pytest.approx((math.exp(3.0) - math.exp(1.0)) / z, abs=1e-5)


def test_unmappable_labels_are_a_clear_error(tmp_path):
    model_dir = build_tiny_model(tmp_path / "generic", id2label={0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"})
    with pytest.raises(EngineUnavailable, match="LABEL_0.*cannot be mapped to negative/neutral/positive"):
        TransformerEngine(str(model_dir))


@pytest.mark.parametrize("id2label", [
    {0: "negative", 1: "positive"},
    {0: "negative", 1: "negative", 2: "positive"},
    {0: "negative", 1: "neutral", 2: "positive", 3: "mixed"},
])
def test_map_labels_needs_exactly_the_three_labels(id2label):
    with pytest.raises(EngineUnavailable):
        map_labels(id2label)


def test_map_labels_accepts_string_ids_and_aliases():
    assert map_labels({"0": "Neg", "1": " NEUTRAL ", "2": "pos"}) == ["negative", "neutral", "positive"]


# --- batching --------------------------------------------------------------------------------------

def test_batched_results_equal_one_by_one(tiny_model_dir):
    # A small sub-batch so the length-sorted texts span several padded forward passes.
    engine = TransformerEngine(str(tiny_model_dir), sub_batch=4)
    texts = TEXTS + [f"tweet number {i} " + "great " * (i % 7) + "bad " * (i % 3) for i in range(20)]
    batched = engine.classify(texts)
    single = [engine.classify([t])[0] for t in texts]
    for b, s in zip(batched, single, strict=True):
        assert b.label == s.label
        assert (b.p_neg, b.p_neu, b.p_pos, b.score) == pytest.approx((s.p_neg, s.p_neu, s.p_pos, s.score),
                                                                     abs=1e-5)


# --- runtime options -------------------------------------------------------------------------------

def test_int8_dynamic_quantisation_on_cpu(tiny_model_dir):
    import torch

    fp32 = TransformerEngine(str(tiny_model_dir), device="cpu")
    int8 = TransformerEngine(str(tiny_model_dir), device="cpu", quantize="int8")
    assert int8.name == f"transformer:{tiny_model_dir}+int8"
    assert any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in int8._model.modules())
    assert not any(isinstance(m, torch.nn.Linear) and type(m) is torch.nn.Linear
                   for m in int8._model.modules())
    diffs = []
    for a, b in zip(fp32.classify(TEXTS), int8.classify(TEXTS), strict=True):
        _assert_contract(b)
        diffs.append(abs(a.p_pos - b.p_pos))
    assert max(diffs) < 0.1  # the same model, approximately


def test_gpu_dtype_is_ignored_on_cpu_with_a_warning(tiny_model_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="pipeline.engines.transformer"):
        engine = TransformerEngine(str(tiny_model_dir), device="cpu", dtype="fp16")
    assert engine.name == f"transformer:{tiny_model_dir}"
    assert "CUDA only" in caplog.text


def test_cuda_requested_without_cuda_is_a_clear_error(tiny_model_dir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(EngineUnavailable, match="MODEL_DEVICE=cuda"):
        TransformerEngine(str(tiny_model_dir), device="cuda")


def test_torch_threads_setting_is_applied(tiny_model_dir, make_settings):
    import torch

    before = torch.get_num_threads()
    try:
        TransformerEngine.from_settings(make_settings(model_name=str(tiny_model_dir), torch_threads=1))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


# --- loading failures and the VADER fallback -------------------------------------------------------

def test_missing_directory_transformer_raises_naming_the_setting(tmp_path, make_settings):
    settings = make_settings(sentiment_engine="transformer", model_name=str(tmp_path / "missing"))
    with pytest.raises(EngineUnavailable, match="MODEL_NAME"):
        make_engine(settings)


def test_missing_directory_auto_falls_back_to_vader_with_a_warning(tmp_path, make_settings, caplog):
    settings = make_settings(sentiment_engine="auto", model_name=str(tmp_path / "missing"))
    with caplog.at_level(logging.WARNING):
        engine = make_engine(settings)
    assert isinstance(engine, VaderEngine)
    assert engine.name == "vader"
    warning = next(r for r in caplog.records if r.levelno == logging.WARNING)
    assert "falling back to VADER" in warning.getMessage()
    assert "missing" in warning.getMessage()


def test_directory_without_model_files_is_unavailable(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(EngineUnavailable, match="cannot load MODEL_NAME"):
        TransformerEngine(str(tmp_path / "empty"))


def test_hub_model_offline_and_not_cached(hf_offline, make_settings, caplog):
    name = "streampulse-tests/no-such-model"
    with pytest.raises(EngineUnavailable, match="no-such-model"):
        make_engine(make_settings(sentiment_engine="transformer", model_name=name))
    with caplog.at_level(logging.WARNING):
        assert isinstance(make_engine(make_settings(sentiment_engine="auto", model_name=name)), VaderEngine)
    assert "SENTIMENT_ENGINE=auto" in caplog.text


def test_unreachable_hub_fails_fast_without_retries(monkeypatch, tmp_path):
    # Not offline, but the hub endpoint refuses connections: the probe must answer before
    # huggingface_hub's ~50 s of retries per file.
    import time

    from huggingface_hub import constants

    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    started = time.monotonic()
    with pytest.raises(EngineUnavailable, match="unreachable"):
        TransformerEngine("streampulse-tests/no-such-model")
    assert time.monotonic() - started < 20


def test_max_length_never_exceeds_the_models_own_limit(tiny_model_dir, make_settings):
    # MODEL_MAX_LENGTH=512 on a model trained for 128 tokens (130 positions) must still truncate at 128.
    engine = TransformerEngine(str(tiny_model_dir), max_length=512)
    assert engine.max_length == MAX_LENGTH
    [s] = engine.classify(["word " * 1000])
    _assert_contract(s)
    assert TransformerEngine(str(tiny_model_dir), max_length=16).max_length == 16


def test_results_fit_the_analyzed_tweet_contract(tiny_model_dir):
    from datetime import UTC, datetime

    from pipeline.contracts import AnalyzedTweet, decode_analyzed, encode

    engine = TransformerEngine(str(tiny_model_dir))
    now = datetime.now(UTC)
    for i, s in enumerate(engine.classify(TEXTS)):
        row = AnalyzedTweet(id=str(i), text=TEXTS[i], created_at=now, keyword="United", source="replay",
                            label=s.label, p_neg=s.p_neg, p_neu=s.p_neu, p_pos=s.p_pos, score=s.score,
                            engine=engine.name, processed_at=now)
        assert decode_analyzed(encode(row)).engine == f"transformer:{tiny_model_dir}"
