"""The committed Postman collection is the one generated from the current OpenAPI spec."""

from __future__ import annotations

import json

from api.postman import OUTPUT, build_collection, main, render


def test_committed_collection_matches_the_spec():
    assert OUTPUT.exists(), "docs/postman_collection.json missing: run `python -m api.postman`"
    assert OUTPUT.read_text(encoding="utf-8") == render(), "stale: run `python -m api.postman`"
    assert main(["--check"]) == 0


def test_collection_covers_every_operation():
    from api.main import create_app

    spec = create_app().openapi()
    collection = build_collection(spec)
    assert collection["info"]["schema"].endswith("/v2.1.0/collection.json")
    requests = {
        (r["request"]["method"], "/" + "/".join(r["request"]["url"]["path"]))
        for folder in collection["item"]
        for r in folder["item"]
    }
    expected = {
        (m.upper(), p.replace("{rule_id}", ":rule_id")) for p, item in spec["paths"].items() for m in item
    }
    assert requests == expected
    create = next(
        r
        for f in collection["item"]
        for r in f["item"]
        if r["request"]["method"] == "POST" and r["request"]["url"]["path"] == ["alerts", "rules"]
    )
    assert json.loads(create["request"]["body"]["raw"])["metric"] == "negative_share_above"
    assert {"key": "X-API-Key", "value": "{{apiKey}}"}.items() <= create["request"]["header"][1].items()


def test_check_mode_detects_a_stale_file(tmp_path):
    stale = tmp_path / "collection.json"
    stale.write_text("{}\n")
    assert main(["--check", "--output", str(stale)]) == 1
    assert main(["--output", str(stale)]) == 0
    assert main(["--check", "--output", str(stale)]) == 0
