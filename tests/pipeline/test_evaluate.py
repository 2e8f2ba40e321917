"""The evaluation command: metric arithmetic, file reading, the CLI, and VADER's standard figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pipeline.evaluate import (
    LabelledDataError,
    confusion_matrix,
    main,
    metrics,
    normalise_label,
    read_labelled,
)
from tests.conftest import ROOT

JSON_KEYS = {"n", "accuracy", "macro_recall", "macro_f1", "recall", "confusion", "tweets_per_s", "engine"}
ORDER = ["negative", "neutral", "positive"]


def test_metrics_match_a_hand_computed_confusion_matrix():
    gold = ["negative"] * 3 + ["neutral"] * 2 + ["positive"] * 5
    pred = ["negative", "neutral", "positive", "neutral", "neutral",
            "positive", "positive", "negative", "positive", "neutral"]
    matrix = confusion_matrix(gold, pred)
    assert matrix == {
        "negative": {"negative": 1, "neutral": 1, "positive": 1},
        "neutral": {"negative": 0, "neutral": 2, "positive": 0},
        "positive": {"negative": 1, "neutral": 1, "positive": 3},
    }
    m = metrics(matrix)
    assert m["n"] == 10
    assert m["accuracy"] == pytest.approx(0.6)
    # recall: 1/3, 2/2, 3/5; precision: 1/2, 2/4, 3/4
    assert m["recall"] == pytest.approx({"negative": 1 / 3, "neutral": 1.0, "positive": 0.6})
    assert m["precision"] == pytest.approx({"negative": 0.5, "neutral": 0.5, "positive": 0.75})
    assert m["macro_recall"] == pytest.approx((1 / 3 + 1 + 0.6) / 3)  # 0.6444
    # F1: 2*.5*(1/3)/(.5+1/3) = 0.4; 2*.5*1/1.5 = 2/3; 2*.75*.6/1.35 = 2/3
    assert m["f1"] == pytest.approx({"negative": 0.4, "neutral": 2 / 3, "positive": 2 / 3})
    assert m["macro_f1"] == pytest.approx((0.4 + 2 / 3 + 2 / 3) / 3)  # 0.5778


def test_a_class_never_seen_counts_as_zero():
    m = metrics(confusion_matrix(["negative", "negative"], ["negative", "positive"]))
    assert m["recall"] == {"negative": 0.5, "neutral": 0.0, "positive": 0.0}
    assert m["macro_recall"] == pytest.approx(0.5 / 3)
    assert m["precision"]["positive"] == 0.0 and m["f1"]["positive"] == 0.0


def test_confusion_matrix_needs_equal_lengths():
    with pytest.raises(ValueError, match="2 gold labels but 1 predictions"):
        confusion_matrix(["negative", "neutral"], ["negative"])


@pytest.mark.parametrize(("value", "expected"), [
    ("negative", "negative"), (" Positive ", "positive"), ("NEUTRAL", "neutral"),
    (0, "negative"), (1, "neutral"), (2, "positive"), ("2", "positive"), (1.0, "neutral"),
])
def test_labels_accepted(value, expected):
    assert normalise_label(value) == expected


@pytest.mark.parametrize("value", ["pos", "3", 3, -1, None, True, "", 0.5])
def test_labels_rejected(value):
    with pytest.raises(ValueError, match="not negative/neutral/positive or 0/1/2"):
        normalise_label(value)


def test_read_csv_with_multiline_texts_and_numeric_labels(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('id,text,label\n1,"two\nlines",0\n2,plain,2\n3,"a, ""quoted"" one",neutral\n',
                    encoding="utf-8")
    texts, gold = read_labelled(path)
    assert texts == ["two\nlines", "plain", 'a, "quoted" one']
    assert gold == ["negative", "positive", "neutral"]
    assert read_labelled(path, limit=2)[1] == ["negative", "positive"]


def test_read_jsonl_and_bad_input_errors(tmp_path):
    good = tmp_path / "t.jsonl"
    good.write_text('{"text": "a", "label": 1}\n\n{"text": "b", "label": "Negative"}\n', encoding="utf-8")
    assert read_labelled(good) == (["a", "b"], ["neutral", "negative"])

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": "mixed"}\n', encoding="utf-8")
    with pytest.raises(LabelledDataError, match=r"bad\.jsonl:2: label 'mixed'"):
        read_labelled(bad)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "a", "label": 1\n', encoding="utf-8")
    with pytest.raises(LabelledDataError, match="broken.jsonl:1: not JSON"):
        read_labelled(broken)
    nocol = tmp_path / "nocol.csv"
    nocol.write_text("tweet,sentiment\nhi,0\n", encoding="utf-8")
    with pytest.raises(LabelledDataError, match=r"no column \['text', 'label'\]"):
        read_labelled(nocol)
    (tmp_path / "t.txt").write_text("text,label\na,0\n", encoding="utf-8")
    with pytest.raises(LabelledDataError, match="unknown format"):
        read_labelled(tmp_path / "t.txt")
    with pytest.raises(LabelledDataError, match="no such file"):
        read_labelled(tmp_path / "absent.csv")


@pytest.fixture
def small_jsonl(tmp_path):
    rows = [("I love this, great flight!", "positive"), ("Worst delay ever, awful service", "negative"),
            ("The flight leaves at 9", "neutral"), ("thanks so much, amazing crew", 2),
            ("terrible, bag lost again", 0), ("landed in Denver", 1)]
    path = tmp_path / "small.jsonl"
    path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows), encoding="utf-8")
    return path


def test_cli_json_is_one_line_with_the_contract_keys(small_jsonl, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no stray .env
    assert main(["--file", str(small_jsonl), "--engine", "vader", "--json", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    report = json.loads(out)
    assert JSON_KEYS <= report.keys()
    assert report["n"] == 6 and report["engine"] == "vader"
    assert list(report["confusion"]) == ORDER
    assert all(list(row) == ORDER for row in report["confusion"].values())
    assert list(report["recall"]) == ORDER
    assert sum(sum(r.values()) for r in report["confusion"].values()) == 6
    assert report["tweets_per_s"] > 0
    # VADER gets these obvious ones right except perhaps the neutral ones; check it is consistent.
    diag = sum(report["confusion"][c][c] for c in ORDER)
    assert report["accuracy"] == pytest.approx(diag / 6)


def test_cli_text_report(small_jsonl, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert main(["--file", str(small_jsonl), "--engine", "vader", "--limit", "3"]) == 0
    out = capsys.readouterr().out
    for needle in ("tweets        3", "accuracy", "macro recall", "macro F1", "confusion (rows gold",
                   "tweets/s"):
        assert needle in out


def test_cli_errors_are_clear_and_exit_2(tmp_path, capsys, monkeypatch, hf_offline):
    monkeypatch.chdir(tmp_path)
    assert main(["--file", str(tmp_path / "absent.jsonl"), "--engine", "vader"]) == 2
    assert "no such file" in capsys.readouterr().err
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "a", "label": 0}\n', encoding="utf-8")
    # The evaluation never falls back: asking for the transformer means the transformer.
    assert main(["--file", str(data), "--engine", "transformer", "--model", str(tmp_path / "nomodel")]) == 2
    assert "MODEL_NAME" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--file", str(data), "--engine", "bert"])


def test_vader_reproduces_the_standard_tweeteval_figures(tweeteval_jsonl, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert main(["--file", str(tweeteval_jsonl), "--engine", "vader", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 2000
    # An independent run of VADER with +-0.05 thresholds: macro recall 0.598, accuracy 0.573.
    assert report["macro_recall"] == pytest.approx(0.598, abs=0.002)
    assert report["accuracy"] == pytest.approx(0.573, abs=0.002)
    assert sum(report["confusion"]["neutral"].values()) == 869  # the file's 43.5 % neutral gold labels


def test_airline_csv_reads_all_rows(airline_csv):
    texts, gold = read_labelled(airline_csv)
    assert len(texts) == 14640
    assert any("\n" in t for t in texts)
    shares = {c: gold.count(c) / len(gold) for c in ORDER}
    assert shares == pytest.approx({"negative": 0.627, "neutral": 0.212, "positive": 0.161}, abs=0.001)


def test_module_cli_scores_the_tiny_transformer_offline(tiny_model_dir, small_jsonl, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.evaluate", "--file", str(small_jsonl), "--engine", "transformer",
         "--model", str(tiny_model_dir), "--json"],
        capture_output=True, text=True, timeout=180, cwd=tmp_path, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["engine"] == f"transformer:{tiny_model_dir}"
    assert report["n"] == 6
    assert JSON_KEYS <= report.keys()
