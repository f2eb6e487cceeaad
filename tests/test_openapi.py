"""Every service describes itself: OpenAPI 3.1 from its functions' hints, served by a real node
under the service's key rules, printed by `apinode openapi`, browsable at /docs, and fuzzed
from itself by schemathesis without a 5xx other than the functions' own errors."""

from __future__ import annotations

import json

import hypothesis
import pytest
import requests
import schemathesis
from openapi_spec_validator import validate
from support import SERVICES, NodeProcess, apinode

SERVICE = SERVICES / "datatypes"
RUN = "/public/api/v1/datatypes/{}/run"


@pytest.fixture(scope="module")
def node(datatypes_node):
    return datatypes_node


@pytest.fixture(scope="module")
def document(node):
    response = requests.get(f"{node.url}/public/api/v1/datatypes/openapi.json", timeout=30)
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/json"
    return response.json()


def operation(document, endpoint):
    return document["paths"][RUN.format(endpoint)]["post"]


def request_schema(document, endpoint):
    return operation(document, endpoint)["requestBody"]["content"]["application/json"]["schema"]


def test_the_document_is_valid_openapi_3_1(document):
    validate(document)
    assert document["openapi"] == "3.1.0"
    assert sorted(document["paths"]) == sorted(
        RUN.format(e) for e in ("give", "score", "shapes", "order", "anything", "fails")
    )


def test_simple_hints_required_parameters_docstring_examples_and_result(document):
    score = operation(document, "score")
    assert score["summary"] == "Score a customer."
    assert "A longer description of the score." in score["description"]
    assert request_schema(document, "score") == {
        "type": "object",
        "properties": {
            "age": {"type": "integer"},
            "price": {"type": "number"},
            "name": {"type": "string"},
            "active": {"type": "boolean"},
            "plan": {"title": "Plan", "enum": ["free", "pro"]},
        },
        "required": ["age", "price", "name", "active"],
        "additionalProperties": False,
    }
    media = score["requestBody"]["content"]["application/json"]
    assert media["examples"]["adult"]["value"] == {"age": 35, "price": 2.5, "name": "ada", "active": True}
    envelope = score["responses"]["200"]["content"]["application/json"]["schema"]
    assert envelope["properties"]["response"] == {"type": "number"}
    assert {"400", "404", "413", "500", "503", "504"} <= set(score["responses"])
    assert "401" not in score["responses"]  # a public service


def test_nested_hints(document):
    properties = request_schema(document, "shapes")["properties"]
    assert properties["boxes"] == {
        "type": "array",
        "items": {
            "title": "Box",
            "type": "object",
            "properties": {"width": {"type": "number"}, "height": {"type": "number"}},
            "required": ["width"],
            "additionalProperties": False,
        },
    }
    assert properties["address"]["required"] == ["city", "zip"]
    assert properties["tags"] == {"type": "object", "additionalProperties": {"type": "integer"}}
    assert properties["unit"] == {"enum": ["cm", "in"], "default": "cm"}
    assert properties["note"] == {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}
    assert properties["weight"] == {"anyOf": [{"type": "integer"}, {"type": "string"}], "default": 0}


def test_pydantic_models_kwargs_and_unhinted_parameters(document):
    order = request_schema(document, "order")
    assert order["additionalProperties"] is True  # **extra
    assert order["properties"]["order"]["required"] == ["item", "quantity"]
    assert order["properties"]["order"]["properties"]["quantity"]["type"] == "integer"
    anything = request_schema(document, "anything")
    assert anything["properties"] == {"data": {}, "count": {"type": "integer", "default": 1}}
    assert anything["required"] == ["data"]


def test_apinode_openapi_prints_what_the_node_serves(document, tmp_path):
    printed = apinode("openapi", str(SERVICE))
    assert json.loads(printed.stdout) == document
    apinode("openapi", str(SERVICE), "-o", str(tmp_path / "api.json"))
    assert json.loads((tmp_path / "api.json").read_text()) == document


def test_apinode_openapi_fails_for_an_endpoint_that_does_not_load():
    result = apinode("openapi", str(SERVICES / "testsvc"), check=False)
    assert result.returncode == 1 and "this endpoint cannot load" in result.stderr and result.stdout == ""


def test_the_docs_page_and_its_assets_come_from_the_node(node):
    page = requests.get(f"{node.url}/public/api/v1/datatypes/docs", timeout=30)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert 'url: "openapi.json"' in page.text and "//" not in page.text.split("<body>")[1].replace('"//', "")
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        response = requests.get(f"{node.url}/public/api/v1/datatypes/docs/{asset}", timeout=30)
        assert response.status_code == 200 and len(response.content) > 1000


def test_an_unknown_service_is_404(node):
    for tail in ("openapi.json", "docs"):
        response = requests.get(f"{node.url}/public/api/v1/nope/{tail}", timeout=30)
        assert response.status_code == 404 and response.json()["errorType"] == "NotFound"


def test_a_private_service_needs_its_key():
    node = NodeProcess("run", str(SERVICES / "private"))
    try:
        for tail in ("openapi.json", "docs"):
            url = f"{node.url}/public/api/v1/private/{tail}"
            refused = requests.get(url, timeout=30)
            assert refused.status_code == 401 and refused.json()["errorType"] == "Unauthorized"
            assert requests.get(url, auth=("secret-key-2", ""), timeout=30).status_code == 200
        document = requests.get(f"{node.url}/public/api/v1/private/openapi.json", auth=("secret-key-1", ""), timeout=30)
        validate(document.json())
        assert document.json()["security"] == [{"apiKey": []}]
        assert "401" in document.json()["paths"]["/public/api/v1/private/hello/run"]["post"]["responses"]
    finally:
        assert node.stop() == 0


FUNCTION_ERRORS = {"FunctionError", "ResultNotSerializable"}


@pytest.mark.parametrize("mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE])
def test_schemathesis_finds_no_server_error_but_the_functions_own(node, document, mode):
    schema = schemathesis.openapi.from_dict(document)
    calls = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
        @hypothesis.settings(
            max_examples=15,
            deadline=None,
            database=None,
            suppress_health_check=list(hypothesis.HealthCheck),
        )
        def no_server_error(case):
            response = case.call(base_url=node.url, timeout=30)
            calls.append(response.status_code)
            if response.status_code >= 500:
                assert response.json()["errorType"] in FUNCTION_ERRORS, (case.body, response.text)
            if mode is schemathesis.GenerationMode.POSITIVE and response.status_code == 400:
                raise AssertionError(f"a valid body was refused: {case.body!r}: {response.text}")

        no_server_error()
    assert len(calls) >= 6 * 5 and (200 if mode is schemathesis.GenerationMode.POSITIVE else 400) in calls
