"""Generate the Postman collection (v2.1) from the app's OpenAPI spec.

    python -m api.postman            # write docs/postman_collection.json
    python -m api.postman --check    # exit 1 if the committed file is out of date

Requests are grouped by tag; query parameters carry their example (optional ones disabled); bodies
carry the first OpenAPI example; writes send `X-API-Key: {{apiKey}}`. Set the `baseUrl` and `apiKey`
collection variables in Postman. The output is deterministic so the committed file can be diffed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "postman_collection.json"
SCHEMA_URL = "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"
METHODS = ("get", "post", "put", "patch", "delete")
WS_NOTE = (
    "\n\nWebSocket feeds (open them in a Postman WebSocket request):\n"
    "- `{{wsUrl}}/ws/tweets?keyword=United`: every newly stored tweet, batched frames "
    '`{"type":"tweets","dropped":0,"data":[...]}`; idle sockets get `{"type":"ping"}`.\n'
    "- `{{wsUrl}}/ws/sentiment?keyword=United`: the current minute's aggregate when it changes."
)


def _resolve(spec: dict, node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        node = spec["components"]["schemas"][name]
    return node


def _example(spec: dict, param: dict) -> Any:
    schema = _resolve(spec, param.get("schema", {}))
    for source in (param, schema):
        if "example" in source:
            return source["example"]
        if source.get("examples"):
            examples = source["examples"]
            return examples[0] if isinstance(examples, list) else next(iter(examples.values())).get("value")
    if "default" in schema and schema["default"] is not None:
        return schema["default"]
    for option in schema.get("anyOf", []):
        option = _resolve(spec, option)
        if option.get("enum"):
            return option["enum"][0]
        if option.get("type") == "array":
            return _example(spec, {"schema": option.get("items", {})})
    if schema.get("enum"):
        return schema["enum"][0]
    return ""


def _has_example(param: dict) -> bool:
    return bool(param.get("example") or param.get("examples") or param.get("schema", {}).get("examples"))


def _body(spec: dict, operation: dict) -> dict | None:
    content = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if content is None:
        return None
    value: Any = None
    if content.get("examples"):
        value = next(iter(content["examples"].values())).get("value")
    else:
        schema = _resolve(spec, content.get("schema", {}))
        options = [schema, *[_resolve(spec, o) for o in schema.get("anyOf", [])]]
        for option in options:
            if option.get("examples"):
                value = option["examples"][0]
                break
    if value is None:
        value = {}
    return {"mode": "raw", "raw": json.dumps(value, indent=2), "options": {"raw": {"language": "json"}}}


def _writes_need_key(operation: dict) -> bool:
    return any("APIKeyHeader" in req for req in operation.get("security", []))


def _request(spec: dict, path: str, method: str, operation: dict) -> dict:
    segments = [(":" + s[1:-1]) if s.startswith("{") else s for s in path.strip("/").split("/")]
    query, variables = [], []
    for param in operation.get("parameters", []):
        value = _example(spec, param)
        text = value if isinstance(value, str) else json.dumps(value)
        if param["in"] == "query":
            query.append(
                {
                    "key": param["name"],
                    "value": text,
                    "description": param.get("description", ""),
                    # Optional parameters are sent only where the spec gives an example.
                    "disabled": not param.get("required", False) and not _has_example(param),
                }
            )
        elif param["in"] == "path":
            variables.append(
                {"key": param["name"], "value": text or "1", "description": param.get("description", "")}
            )
    enabled = [q for q in query if not q["disabled"]]
    raw = "{{baseUrl}}/" + "/".join(segments)
    if enabled:
        raw += "?" + "&".join(f"{q['key']}={q['value']}" for q in enabled)
    url: dict[str, Any] = {"raw": raw, "host": ["{{baseUrl}}"], "path": segments}
    if query:
        url["query"] = query
    if variables:
        url["variable"] = variables
    headers = [{"key": "Accept", "value": "application/json"}]
    if _writes_need_key(operation):
        headers.append(
            {
                "key": "X-API-Key",
                "value": "{{apiKey}}",
                "description": "Needed when API_KEY is set (writes; reads with API_READ_REQUIRES_KEY).",
            }
        )
    request: dict[str, Any] = {
        "method": method.upper(),
        "header": headers,
        "url": url,
        "description": operation.get("description") or operation.get("summary", ""),
    }
    body = _body(spec, operation)
    if body is not None:
        headers.append({"key": "Content-Type", "value": "application/json"})
        request["body"] = body
    return {
        "name": operation.get("summary") or f"{method.upper()} {path}",
        "request": request,
        "response": [],
    }


def build_collection(spec: dict) -> dict:
    folders: dict[str, list[dict]] = {t["name"]: [] for t in spec.get("tags", [])}
    for path, item in spec["paths"].items():
        for method in METHODS:
            if method in item:
                operation = item[method]
                tag = (operation.get("tags") or ["other"])[0]
                folders.setdefault(tag, []).append(_request(spec, path, method, operation))
    descriptions = {t["name"]: t.get("description", "") for t in spec.get("tags", [])}
    return {
        "info": {
            "name": spec["info"]["title"],
            "description": spec["info"].get("description", "") + WS_NOTE,
            "version": spec["info"].get("version", ""),
            "schema": SCHEMA_URL,
        },
        "variable": [
            {"key": "baseUrl", "value": "http://localhost:8000"},
            {"key": "wsUrl", "value": "ws://localhost:8000"},
            {"key": "apiKey", "value": ""},
        ],
        "item": [
            {"name": tag, "description": descriptions.get(tag, ""), "item": items}
            for tag, items in folders.items()
            if items
        ],
    }


def render() -> str:
    from api.main import create_app

    return json.dumps(build_collection(create_app().openapi()), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api.postman", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed collection is stale")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            sys.stderr.write(f"{args.output} is out of date: run `python -m api.postman`\n")
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    sys.stdout.write(f"wrote {args.output}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
