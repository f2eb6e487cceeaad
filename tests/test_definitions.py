"""service.json: defaults, canonical JSON, and a message naming file and field for each rule."""

import copy
import json

import pytest

from apinode.packaging.definitions import (
    NO_EXPECTED,
    DefinitionError,
    PoolSettings,
    ServiceDef,
    dump_service,
    load_service_file,
    parse_service,
)


def minimal():
    return {"id": "churn", "endpoints": [{"id": "score", "code": "score.py", "function": "f"}]}


def with_endpoint(**fields):
    obj = minimal()
    obj["endpoints"][0].update(fields)
    return obj


def test_defaults():
    service = parse_service(minimal(), "service.json")
    assert service.public_access is True and service.api_keys == () and service.generation is None
    endpoint = service.endpoint("score")
    assert endpoint.type == "python-function"
    assert endpoint.folders == () and endpoint.code_env is None and endpoint.test_queries == ()
    assert endpoint.pool == PoolSettings(floor=1, ceil=8, cruise=2, queue=16, timeout_ms=10000)
    with pytest.raises(KeyError):
        service.endpoint("nope")


def test_full_definition_round_trips_through_canonical_json():
    obj = {
        "id": "churn",
        "publicAccess": False,
        "apiKeys": ["k-123"],
        "generation": "v1",
        "endpoints": [
            {
                "id": "score",
                "type": "python-function",
                "code": "score.py",
                "function": "f",
                "folders": ["models", "lookup"],
                "codeEnv": {"requirements": ["scikit-learn==1.5.2"]},
                "pool": {"floor": 2, "ceil": 4, "cruise": 3, "queue": 0, "timeout": 500},
                "testQueries": [
                    {"name": "adult", "query": {"age": 35}, "expected": 0.42},
                    {"name": "none", "query": {}, "expected": None},
                    {"name": "free", "query": {}},
                ],
            }
        ],
    }
    service = parse_service(obj, "service.json")
    assert service.to_json() == obj
    queries = service.endpoint("score").test_queries
    assert [q.has_expected for q in queries] == [True, True, False]
    assert queries[2].expected is NO_EXPECTED and copy.deepcopy(queries[2]).expected is NO_EXPECTED
    assert parse_service(json.loads(dump_service(service)), "x") == service
    assert dump_service(service).endswith(b"}\n")


def test_generation_only_in_json_when_set():
    assert "generation" not in parse_service(minimal(), "s").to_json()


@pytest.mark.parametrize(
    "obj, message",
    [
        ([], "service.json: expected a JSON object, got []"),
        ({**minimal(), "colour": 1}, 'service.json: unknown field "colour"'),
        ({"endpoints": minimal()["endpoints"]}, "service.json: id: expected an id"),
        (
            {**minimal(), "id": "a b"},
            "service.json: id: expected an id made of letters, digits, '_' or '-', got \"a b\"",
        ),
        ({**minimal(), "publicAccess": "no"}, "service.json: publicAccess: expected true or false"),
        ({**minimal(), "apiKeys": "k"}, "service.json: apiKeys: expected a list of strings"),
        ({**minimal(), "apiKeys": ["a:b"]}, "service.json: apiKeys[0]: expected a key without ':'"),
        ({**minimal(), "generation": "../x"}, "service.json: generation: expected an id"),
        ({"id": "s"}, "service.json: endpoints: expected a list, got nothing (the field is missing)"),
        ({"id": "s", "endpoints": []}, "service.json: endpoints: expected at least one endpoint"),
        ({"id": "s", "endpoints": [1]}, "service.json: endpoints[0]: expected a JSON object, got 1"),
        (
            {"id": "s", "endpoints": minimal()["endpoints"] * 2},
            'service.json: endpoints[1].id: expected an id unique in the service, got "score"',
        ),
        (with_endpoint(colde="x"), 'service.json: endpoints[0]: unknown field "colde"; expected only'),
        (with_endpoint(id="a/b"), "service.json: endpoints[0].id: expected an id"),
        (
            with_endpoint(type="r-function"),
            'service.json: endpoints[0].type: expected "python-function", got "r-function"',
        ),
        (with_endpoint(code=""), 'service.json: endpoints[0].code: expected a non-empty string, got ""'),
        (
            with_endpoint(function=3),
            "service.json: endpoints[0].function: expected the name of a Python function, got 3",
        ),
        (with_endpoint(function="not-valid"), "endpoints[0].function: expected the name"),
        (with_endpoint(function="class"), "endpoints[0].function: expected the name"),
        (with_endpoint(folders=["a", 1]), "service.json: endpoints[0].folders[1]: expected a non-empty"),
        (
            with_endpoint(codeEnv={"requirements": "x"}),
            "service.json: endpoints[0].codeEnv.requirements: expected a list of strings",
        ),
        (with_endpoint(codeEnv={"reqs": []}), 'endpoints[0].codeEnv: unknown field "reqs"'),
        (with_endpoint(pool={"ceil": "x"}), 'service.json: endpoints[0].pool.ceil: expected an integer >= 1, got "x"'),
        (with_endpoint(pool={"floor": True}), "endpoints[0].pool.floor: expected an integer >= 1, got true"),
        (with_endpoint(pool={"floor": 0}), "endpoints[0].pool.floor: expected an integer >= 1, got 0"),
        (with_endpoint(pool={"queue": -1}), "endpoints[0].pool.queue: expected an integer >= 0"),
        (with_endpoint(pool={"timeout": 0}), "endpoints[0].pool.timeout: expected an integer >= 1"),
        (with_endpoint(pool={"ciel": 3}), 'endpoints[0].pool: unknown field "ciel"'),
        (with_endpoint(pool={"start": "forkk"}), 'endpoints[0].pool.start: expected "fork" or "spawn", got "forkk"'),
        (with_endpoint(pool={"executionTimeout": -1}), "endpoints[0].pool.executionTimeout: expected an integer >= 0"),
        (with_endpoint(pool={"maxRequests": 1.5}), "endpoints[0].pool.maxRequests: expected an integer >= 0, got 1.5"),
        (
            with_endpoint(pool={"maxMemoryMb": "1G"}),
            'endpoints[0].pool.maxMemoryMb: expected an integer >= 0, got "1G"',
        ),
        (with_endpoint(pool={"scaleDownDelay": -5}), "endpoints[0].pool.scaleDownDelay: expected an integer >= 0"),
        (with_endpoint(pool={"maxResultMb": 0}), "endpoints[0].pool.maxResultMb: expected an integer >= 1, got 0"),
        (
            with_endpoint(pool={"floor": 3, "ceil": 2}),
            "endpoints[0].pool: expected floor <= cruise <= ceil, got floor 3, cruise 2, ceil 2",
        ),
        (with_endpoint(pool={"cruise": 5, "ceil": 4}), "endpoints[0].pool: expected floor <= cruise"),
        (with_endpoint(testQueries={}), "endpoints[0].testQueries: expected a list"),
        (
            with_endpoint(testQueries=[{"query": {}}]),
            "service.json: endpoints[0].testQueries[0].name: expected a non-empty string, got nothing",
        ),
        (
            with_endpoint(testQueries=[{"name": "q", "query": [1]}]),
            "endpoints[0].testQueries[0].query: expected a JSON object (the function's arguments)",
        ),
        (
            with_endpoint(testQueries=[{"name": "q", "query": {}, "expect": 1}]),
            'endpoints[0].testQueries[0]: unknown field "expect"',
        ),
    ],
)
def test_each_rule_names_file_and_field(obj, message):
    with pytest.raises(DefinitionError) as caught:
        parse_service(obj, "service.json")
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "given, expected",
    [
        ({"ceil": 1}, (1, 1, 1)),
        ({"ceil": 2, "floor": 2}, (2, 2, 2)),
        ({"floor": 4}, (4, 4, 8)),
        ({"cruise": 20}, (1, 20, 20)),
        ({"floor": 1, "cruise": 1, "ceil": 1}, (1, 1, 1)),
    ],
)
def test_pool_defaults_move_to_fit_given_values(given, expected):
    pool = PoolSettings.from_json(given, "p")
    assert (pool.floor, pool.cruise, pool.ceil) == expected


def test_production_pool_fields_parse_and_are_written_only_when_set():
    pool = PoolSettings.from_json(
        {"start": "spawn", "executionTimeout": 0, "maxRequests": 100, "maxMemoryMb": 512, "scaleDownDelay": 500}, "p"
    )
    assert (pool.start, pool.execution_timeout_ms, pool.max_requests, pool.max_memory_mb) == ("spawn", 0, 100, 512)
    assert pool.scale_down_delay_ms == 500 and pool.max_result_mb == 64
    assert pool.to_json() == {
        "floor": 1,
        "ceil": 8,
        "cruise": 2,
        "queue": 16,
        "timeout": 10000,
        "start": "spawn",
        "executionTimeout": 0,
        "maxRequests": 100,
        "maxMemoryMb": 512,
        "scaleDownDelay": 500,
    }
    assert set(PoolSettings().to_json()) == {"floor", "ceil", "cruise", "queue", "timeout"}
    assert PoolSettings().to_json(complete=True)["executionTimeout"] == 60000
    assert PoolSettings.from_json(pool.to_json(), "p") == pool
    assert pool.overridden({"start": "fork"}, "o.json: pool").start == "fork"


def test_resources_parse_round_trip_and_name_the_bad_field():
    service = minimal()
    service["endpoints"][0]["resources"] = {"cpus": 0.5, "gpus": 1, "memoryMb": 2048, "custom": {"w1": 1}}
    endpoint = parse_service(service, "s.json").endpoints[0]
    assert (endpoint.resources.cpus, endpoint.resources.gpus, endpoint.resources.memory_mb) == (0.5, 1.0, 2048)
    assert endpoint.resources.custom == (("w1", 1.0),)
    assert parse_service(json.loads(dump_service(parse_service(service, "s.json"))), "s.json") == parse_service(
        service, "s.json"
    )
    assert "resources" not in json.loads(dump_service(parse_service(minimal(), "s.json")))["endpoints"][0]
    for bad, message in (
        ({"cpus": -1}, r"endpoints\[0\]\.resources\.cpus: expected a number >= 0"),
        ({"gpus": "1"}, r"endpoints\[0\]\.resources\.gpus: expected a number >= 0"),
        ({"memoryMb": 1.5}, r"endpoints\[0\]\.resources\.memoryMb: expected an integer >= 0"),
        ({"custom": {"w1": True}}, r"endpoints\[0\]\.resources\.custom\.w1: expected a number >= 0"),
        ({"custom": []}, r"endpoints\[0\]\.resources\.custom: expected a JSON object"),
        ({"cpu": 1}, r'endpoints\[0\]\.resources: unknown field "cpu"'),
    ):
        service["endpoints"][0]["resources"] = bad
        with pytest.raises(DefinitionError, match=message):
            parse_service(service, "s.json")


def test_pool_override_merges_then_validates():
    pool = PoolSettings(floor=1, ceil=8, cruise=2, queue=16, timeout_ms=10000)
    assert pool.overridden({"ceil": 3, "timeout": 50}, "o.json: pool") == PoolSettings(
        floor=1, ceil=3, cruise=2, queue=16, timeout_ms=50
    )
    assert pool.overridden({}, "o.json: pool") == pool
    with pytest.raises(DefinitionError, match=r"^o.json: pool: expected floor <= cruise <= ceil"):
        pool.overridden({"ceil": 1}, "o.json: pool")
    with pytest.raises(DefinitionError, match=r'^o.json: pool: unknown field "max"'):
        pool.overridden({"max": 1}, "o.json: pool")
    with pytest.raises(DefinitionError, match=r"^o.json: pool: expected a JSON object"):
        pool.overridden([], "o.json: pool")


def test_load_service_file(tmp_path):
    path = tmp_path / "service.json"
    path.write_text(json.dumps(minimal()))
    assert load_service_file(path) == parse_service(minimal(), "x")


def test_load_service_file_errors(tmp_path):
    path = tmp_path / "service.json"
    with pytest.raises(DefinitionError, match="cannot read: No such file"):
        load_service_file(path)
    path.write_text('{\n  "id": "s",\n  "endpoints": [,]\n}')
    with pytest.raises(DefinitionError, match=r"service.json: not valid JSON: .*line 3, column 17"):
        load_service_file(path)
    path.write_bytes(b'{"id": "\xff"}')
    with pytest.raises(DefinitionError, match="not UTF-8"):
        load_service_file(path)
    path.write_text('{"id": "s", "endpoints": [{"id": "e"}]}')
    with pytest.raises(DefinitionError) as caught:
        load_service_file(path)
    assert str(caught.value).startswith(f"{path}: endpoints[0].code: expected")


def test_service_def_is_constructible_in_code():
    service = ServiceDef("s", parse_service(minimal(), "x").endpoints)
    assert service.to_json()["publicAccess"] is True
