"""``GET /openapi.json`` documents every route, and real responses match the document."""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from flask import Flask

from ledger.models import Base
from ledger.services import rules
from ledger.testing import UNKNOWN_ID, LedgerClient

METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}


def _routes(app: Flask) -> set[tuple[str, str]]:
    routes: set[tuple[str, str]] = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        routes.update((path, method) for method in (rule.methods or set()) & METHODS)
    return routes


def _documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (path, method.upper())
        for path, operations in document["paths"].items()
        for method in operations
    }


def _resolve(schema: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = document
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def _check(instance: Any, schema: dict[str, Any], document: dict[str, Any], at: str) -> None:
    """A small JSON Schema check covering the keywords the ledger's document uses."""
    schema = _resolve(schema, document)
    kind = schema.get("type")
    if kind == "object":
        assert isinstance(instance, dict), at
        properties = schema.get("properties", {})
        assert set(schema.get("required", [])) <= set(instance), at
        if schema.get("additionalProperties") is False:
            assert set(instance) <= set(properties), f"{at}: {set(instance) - set(properties)}"
        for key, value in instance.items():
            if key in properties:
                _check(value, properties[key], document, f"{at}.{key}")
    elif kind == "array":
        assert isinstance(instance, list), at
        for index, item in enumerate(instance):
            _check(item, schema["items"], document, f"{at}[{index}]")
    elif kind == "integer":
        assert type(instance) is int, at
        assert schema.get("minimum", instance) <= instance <= schema.get("maximum", instance), at
    elif kind == "string":
        assert isinstance(instance, str), at
        assert schema.get("minLength", 0) <= len(instance), at
        assert len(instance) <= schema.get("maxLength", len(instance)), at
    if "enum" in schema:
        assert instance in schema["enum"], at


def test_the_document_is_openapi_3_and_every_reference_resolves(api: LedgerClient) -> None:
    response = api.get("/openapi.json")

    assert response.status_code == 200
    document = response.get_json()
    assert document["openapi"].startswith("3.")
    text = response.get_data(as_text=True)
    for ref in re.findall(r'"\$ref":\s*"([^"]+)"', text):
        _resolve({"$ref": ref}, document)


def test_the_document_lists_every_route_and_method_of_the_app(
    app: Flask, api: LedgerClient
) -> None:
    document = api.get("/openapi.json").get_json()

    assert _documented(document) == _routes(app)


def test_every_documented_operation_documents_its_error_responses(api: LedgerClient) -> None:
    document = api.get("/openapi.json").get_json()

    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            statuses = set(operation["responses"])
            if "{" in path:
                assert "404" in statuses, (method, path)
            if method == "post":
                assert {"400", "422"} <= statuses, (method, path)
            for status, response in operation["responses"].items():
                assert "application/json" in response["content"], (method, path, status)


ID_FIELDS = {"id", "customer_id", "account_id", "transfer_id", "from_account", "to_account"}


def _id_schemas(node: object, name: str = "") -> list[tuple[str, Any]]:
    """Every schema in ``node`` that describes an id: properties and path parameters."""
    found: list[tuple[str, Any]] = []
    if isinstance(node, dict):
        if node.get("in") == "path" and node.get("name") in ID_FIELDS:
            found.append((node["name"], node["schema"]))
        for key, value in node.get("properties", {}).items():
            if key in ID_FIELDS:
                found.append((key, value))
        for key, value in node.items():
            found.extend(_id_schemas(value, key))
    elif isinstance(node, list):
        for item in node:
            found.extend(_id_schemas(item, name))
    return found


def test_every_id_is_described_as_the_32_bit_integer_its_column_is(api: LedgerClient) -> None:
    document = api.get("/openapi.json").get_json()
    ids = _id_schemas(document)
    columns = [
        column
        for table in Base.metadata.sorted_tables
        if not table.name.startswith("flask_uow_")  # the outbox's: message ids are UUIDs
        for column in table.columns
        if column.primary_key or column.foreign_keys
    ]

    assert {name for name, _ in ids} == ID_FIELDS
    for name, schema in ids:
        assert schema["type"] == "integer", name
        assert schema["format"] == "int32", name
        assert (schema["minimum"], schema["maximum"]) == (1, 2**31 - 1), name
    assert rules.MAX_ID == UNKNOWN_ID == 2**31 - 1
    for column in columns:
        assert type(column.type) is sa.Integer, f"{column} is {column.type!r}, not INTEGER"


def test_real_responses_match_the_documented_schemas(api: LedgerClient) -> None:
    document = api.get("/openapi.json").get_json()
    seen: list[tuple[str, str, Any]] = []

    def call(method: str, template: str, path: str, **kwargs: Any) -> Any:
        if method == "GET":
            response = api.get(path)
        else:
            response = api.post(
                path, kwargs.get("body"), raw=kwargs.get("raw"), headers=kwargs.get("headers")
            )
        operation = document["paths"][template][method.lower()]
        status = str(response.status_code)
        assert status in operation["responses"], (method, path, status)
        documented = operation["responses"][status]
        schema = documented["content"]["application/json"]["schema"]
        _check(response.get_json(), schema, document, f"{method} {path} {status}")
        for header in response.headers.keys():
            if header.lower() in ("location", "idempotent-replayed"):
                assert header in documented.get("headers", {}), (method, path, header)
        seen.append((method, template, status))
        return response.get_json()

    alice = call("POST", "/customers", "/customers", body={"name": "A", "email": "a@example.com"})
    bob = call("POST", "/customers", "/customers", body={"name": "B", "email": "b@example.com"})
    a, b = alice["account"]["id"], bob["account"]["id"]
    call("POST", "/customers", "/customers", body={"name": "A", "email": "a@example.com"})
    call("POST", "/customers", "/customers", body={"name": "", "email": "a@example.com"})
    call("POST", "/customers", "/customers", raw=b"[")
    call("GET", "/customers", "/customers?per_page=1")
    call("GET", "/customers", "/customers?page=0")
    call("GET", "/customers/{customer_id}", f"/customers/{alice['id']}")
    call("GET", "/customers/{customer_id}", f"/customers/{UNKNOWN_ID}")
    call("GET", "/accounts/{account_id}", f"/accounts/{a}")
    call("GET", "/accounts/{account_id}", f"/accounts/{UNKNOWN_ID}")
    deposits = "/accounts/{account_id}/deposits"
    call("POST", deposits, f"/accounts/{a}/deposits", body={"amount": 100})
    call("POST", deposits, f"/accounts/{UNKNOWN_ID}/deposits", body={"amount": 100})
    call("POST", deposits, f"/accounts/{a}/deposits", body={"amount": -1})
    call("POST", deposits, f"/accounts/{a}/deposits", raw=b"nope")
    call("POST", deposits, f"/accounts/{b}/deposits", body={"amount": 2**63 - 1})
    call("POST", deposits, f"/accounts/{b}/deposits", body={"amount": 1})
    move = {"from_account": a, "to_account": b, "amount": 60}
    key = {"Idempotency-Key": "k1"}
    call(
        "POST",
        "/transfers",
        "/transfers",
        body={**move, "amount": 1},
        headers={"Idempotency-Key": "k0"},
    )
    back = {"from_account": b, "to_account": a, "amount": 1}
    moved = call("POST", "/transfers", "/transfers", body=back)
    call("POST", "/transfers", "/transfers", body=move, headers=key)
    call("POST", "/transfers", "/transfers", body=move, headers=key)
    call("POST", "/transfers", "/transfers", body={**move, "amount": 61}, headers=key)
    call("POST", "/transfers", "/transfers", body={**move, "to_account": a})
    call("POST", "/transfers", "/transfers", body={**move, "to_account": UNKNOWN_ID})
    call("POST", "/transfers", "/transfers", body={**move, "amount": 10_000})
    call("POST", "/transfers", "/transfers", raw=b"{}")
    call("POST", "/transfers", "/transfers", raw=b"}")
    call("GET", "/accounts/{account_id}/transfers", f"/accounts/{a}/transfers")
    call("GET", "/accounts/{account_id}/transfers", f"/accounts/{UNKNOWN_ID}/transfers")
    sent = "/transfers/{transfer_id}/notifications"
    call("GET", sent, f"/transfers/{moved['id']}/notifications")
    call("GET", sent, f"/transfers/{UNKNOWN_ID}/notifications")
    call("GET", "/health", "/health")
    call("GET", "/openapi.json", "/openapi.json")

    documented = {
        (method.upper(), path, status)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        for status in operation["responses"]
    }
    untested = documented - set(seen) - {("GET", "/health", "503")}
    untested = {entry for entry in untested if entry[2] not in ("411", "413")}  # http_errors
    assert untested == set(), "documented responses this test never saw"
