"""The admin API of `apinode serve --data-dir` through dataikuapi.APINodeAdminClient, and its effect
on what the public API serves: services, generations, switches under load, mappings, preload,
keys, pool overrides, metrics and the query log. One node for the module; each test uses
services of its own."""

from __future__ import annotations

import concurrent.futures
import io
import json
import os
import threading
import time
import zipfile

import dataikuapi
import pytest
import requests
from dataikuapi.utils import DataikuException
from support import SERVICES, NodeProcess, apinode, eventually, make_admin_key, make_bundle

from apinode.packaging.bundles import write_bundle
from apinode.packaging.staging import stage_directory


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("node") / "data"


@pytest.fixture(scope="module")
def key(data_dir):
    return make_admin_key(data_dir)


@pytest.fixture(scope="module")
def node(data_dir, key):
    node = NodeProcess("serve", "--data-dir", str(data_dir))
    yield node
    assert node.stop() == 0
    assert node.pipelines() == []


@pytest.fixture
def admin(node, key):
    return dataikuapi.APINodeAdminClient(node.url, key)


@pytest.fixture
def bundles(tmp_path):
    return tmp_path


def deploy(admin, bundles, service_id, *generations, **options):
    """Create a service, import its generations (built here) and switch to the last one."""
    admin.create_service(service_id)
    for generation in generations:
        admin.service(service_id).import_generation_from_archive(
            str(make_bundle(bundles, service_id, generation, **options))
        )
    admin.service(service_id).switch_to_newest()


def call(node, service_id, body=None, **kwargs):
    return requests.post(f"{node.url}/public/api/v1/{service_id}/which/run", json=body or {}, timeout=30, **kwargs)


def generation_of(node, service_id, body=None):
    response = call(node, service_id, body)
    assert response.status_code == 200, response.text
    return response.json()["response"]["generation"]


def assert_error(response, status, error_type, *fragments):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"errorType", "message", "detailedMessage"}
    assert body["errorType"] == error_type, body
    for fragment in fragments:
        assert fragment in body["message"], body
    return body


def test_admin_calls_need_a_valid_key(node, key):
    for auth in (None, ("not-a-key", "")):
        for method, path in (
            ("GET", "services"),
            ("POST", "services"),
            ("GET", "metrics"),
            ("GET", "no/such/thing"),
            ("POST", "services/x/generations/actions/upload"),
        ):
            response = requests.request(method, f"{node.url}/admin/api/{path}", auth=auth, timeout=10)
            assert_error(response, 401, "Unauthorized", "admin key", "admin-key-create")
    assert_error(requests.get(f"{node.url}/admin/api/no/such/thing", auth=(key, ""), timeout=10), 404, "NotFound")
    with pytest.raises(DataikuException, match="Unauthorized"):
        dataikuapi.APINodeAdminClient(node.url, "wrong").list_services()


def test_service_lifecycle(node, admin, bundles, data_dir):
    admin.create_service("life")
    with pytest.raises(DataikuException, match="Conflict: service 'life' already exists"):
        admin.create_service("life")
    assert_error(
        requests.post(
            f"{node.url}/admin/api/services", json={"serviceId": "bad id"}, auth=(admin.api_key, ""), timeout=10
        ),
        400,
        "BadRequest",
        "serviceId",
    )
    listed = {service["id"]: service for service in admin.list_services()}
    assert listed["life"]["enabled"] is True and listed["life"]["activeGeneration"] is None
    assert_error(call(node, "life"), 404, "NotFound", "no active generation")

    admin.service("life").import_generation_from_archive(str(make_bundle(bundles, "life", "g1")))
    assert admin.service("life").switch_to_newest()["activeGeneration"] == "g1"
    answer = dataikuapi.APINodeClient(node.url, "life").run_function("which")
    assert answer["response"]["generation"] == "g1"
    assert answer["apiContext"] == {"serviceId": "life", "endpointId": "which", "serviceGeneration": "g1"}
    described = {service["id"]: service for service in admin.list_services()}["life"]
    assert described["endpoints"] == {"g1": {"which": {"start": "fork", "loadFailed": False}}}

    admin.service("life").disable()
    assert_error(call(node, "life"), 404, "NotFound", "disabled")
    assert node.pipelines("life/which") == []
    admin.service("life").enable()
    assert generation_of(node, "life") == "g1"

    query_log = data_dir / "logs" / "queries" / "life.log"
    eventually(query_log.exists)
    admin.service("life").delete()
    assert_error(call(node, "life"), 404, "NotFound", "no service 'life'")
    assert "life" not in {service["id"] for service in admin.list_services()}
    assert not (data_dir / "services" / "life").exists()
    assert node.pipelines("life/which") == []
    eventually(lambda: not query_log.exists())  # its query log goes too


def test_generations_import_upload_and_switch(node, admin, bundles):
    service = admin.service("gens")
    admin.create_service("gens")
    service.import_generation_from_archive(str(make_bundle(bundles, "gens", "g1")))
    upload = requests.post(
        f"{node.url}/admin/api/services/gens/generations/actions/upload",
        data=make_bundle(bundles, "gens", "g2").read_bytes(),
        auth=(admin.api_key, ""),
        headers={"Content-Type": "application/zip"},
        timeout=30,
    )
    assert upload.status_code == 200 and upload.json() == {"generation": "g2"}
    assert service.list_generations() == ["g1", "g2"]
    with pytest.raises(DataikuException, match="Conflict: service 'gens' already has generation 'g1'"):
        service.import_generation_from_archive(str(bundles / "gens-g1.zip"))

    assert service.switch_to_newest()["activeGeneration"] == "g2"
    assert generation_of(node, "gens") == "g2"
    service.switch_to_single_generation("g1")
    assert generation_of(node, "gens") == "g1"
    with pytest.raises(DataikuException, match="NotFound: service 'gens' has no generation 'g9'"):
        service.switch_to_single_generation("g9")
    generations = {
        generation["id"]: generation
        for generation in next(s for s in admin.list_services() if s["id"] == "gens")["generations"]
    }
    assert generations["g1"]["serving"] and not generations["g2"]["serving"]
    assert not generations["g2"]["loaded"]  # switched away from: drained and stopped


def zip_of(entries):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


GOOD_SERVICE = {"id": "safe", "endpoints": [{"id": "which", "code": "which.py", "function": "which"}]}
BROKEN_BUNDLES = {
    "zip-slip": (zip_of({"service.json": json.dumps(GOOD_SERVICE), "which.py": "", "../evil.py": "x"}), "'..' in path"),
    "bad service.json": (
        zip_of({"service.json": '{"id": "safe", "endpoints": [], "extra": 1}'}),
        'unknown field "extra"',
    ),
    "not JSON": (zip_of({"service.json": "{nope"}), "not valid JSON"),
    "another service": (
        zip_of({"service.json": json.dumps({**GOOD_SERVICE, "id": "other"}), "which.py": ""}),
        "it holds service 'other', not 'safe'",
    ),
    "not a zip": (b"PK but not really", "not a bundle (zip) file"),
}


def tree(directory):
    return sorted(
        (str(path.relative_to(directory)), path.stat().st_size if path.is_file() else None)
        for path in directory.rglob("*")
        if "logs" not in path.parts
    )


@pytest.mark.parametrize("case", sorted(BROKEN_BUNDLES))
@pytest.mark.parametrize("route", ["upload", "importFromArchive"])
def test_a_broken_bundle_changes_nothing(node, admin, bundles, data_dir, case, route):
    if "safe" not in {service["id"] for service in admin.list_services()}:
        deploy(admin, bundles, "safe", "g1")
    before, generations = tree(data_dir), admin.service("safe").list_generations()
    content, fragment = BROKEN_BUNDLES[case]
    url = f"{node.url}/admin/api/services/safe/generations/actions/{route}"
    if route == "upload":
        response = requests.post(url, data=content, auth=(admin.api_key, ""), timeout=30)
    else:
        (bundles / "broken.zip").write_bytes(content)
        response = requests.post(
            url, params={"filePath": str(bundles / "broken.zip")}, auth=(admin.api_key, ""), timeout=30
        )
    assert_error(response, 400, "BadRequest", "refused", fragment)
    assert tree(data_dir) == before
    assert admin.service("safe").list_generations() == generations
    assert generation_of(node, "safe") == "g1"


@pytest.mark.parametrize("kind", ["device", "fifo"])
def test_import_reads_only_a_regular_file(node, admin, bundles, kind):
    """/dev/zero would be read forever, a FIFO would hang the import holding the service's lock."""
    service_id = f"regular-{kind}"
    deploy(admin, bundles, service_id, "g1")
    path = "/dev/zero" if kind == "device" else str(bundles / "fifo.zip")
    if kind == "fifo":
        os.mkfifo(path)
    response = requests.post(
        f"{node.url}/admin/api/services/{service_id}/generations/actions/importFromArchive",
        params={"filePath": path},
        auth=(admin.api_key, ""),
        timeout=10,
    )
    assert_error(response, 400, "BadRequest", f"{path}: not a regular file")
    admin.service(service_id).import_generation_from_archive(str(make_bundle(bundles, service_id, "g2")))
    admin.service(service_id).switch_to_newest()  # the service's lock was not kept
    assert generation_of(node, service_id) == "g2"


def test_switch_under_load_loses_no_request(node, admin, bundles):
    pool = {"floor": 4, "cruise": 4, "ceil": 4}
    deploy(admin, bundles, "busy", "g1", pool=pool)
    admin.service("busy").import_generation_from_archive(str(make_bundle(bundles, "busy", "g2", pool=pool)))
    stop = threading.Event()
    calls: list[tuple[float, float, str]] = []  # (start, end, generation or the error)

    def client():
        api = dataikuapi.APINodeClient(node.url, "busy")
        while not stop.is_set():
            started = time.perf_counter()
            try:
                outcome = api.run_function("which", delay=0.002)["response"]["generation"]
            except Exception as error:
                outcome = f"FAILED: {error}"
            calls.append((started, time.perf_counter(), outcome))

    with concurrent.futures.ThreadPoolExecutor(4) as threads:
        running = [threads.submit(client) for _ in range(4)]
        try:
            eventually(lambda: len(calls) >= 40)
            switches = []
            for generation in ("g2", "g1", "g2"):
                switch_started = time.perf_counter()
                admin.service("busy").switch_to_single_generation(generation)
                switches.append((switch_started, time.perf_counter()))
                seen = len(calls)
                eventually(lambda seen=seen: len(calls) >= seen + 40)
        finally:
            stop.set()
            for future in running:
                future.result()

    failures = [outcome for _, _, outcome in calls if outcome.startswith("FAILED")]
    assert failures == []
    during = [
        end - start
        for start, end, _ in calls
        if any(start < switch_end and end > switch_start for switch_start, switch_end in switches)
    ]
    print(
        f"\nswitch under load: {len(calls)} requests by 4 clients, 3 switches, 0 failed; "
        f"{len(during)} requests overlapped a switch, the longest took {max(during) * 1000:.1f} ms; "
        f"switches took {', '.join(f'{(end - start) * 1000:.0f} ms' for start, end in switches)}"
    )
    assert {outcome for _, _, outcome in calls} == {"g1", "g2"}
    assert calls[-1][2] == "g2"
    assert len(node.pipelines("busy/which")) == 4  # the retired generation's pipelines are gone


def test_a_generation_that_does_not_load_is_refused(node, admin, bundles):
    deploy(admin, bundles, "sturdy", "g1")
    admin.service("sturdy").import_generation_from_archive(
        str(make_bundle(bundles, "sturdy", "g2", "raise RuntimeError('bad model file')\n"))
    )
    with pytest.raises(
        DataikuException,
        match="EndpointLoadFailed: generation 'g2' of service 'sturdy' did "
        "not load, so nothing was switched: .*bad model file",
    ):
        admin.service("sturdy").switch_to_newest()
    assert generation_of(node, "sturdy") == "g1"
    assert {service["id"]: service for service in admin.list_services()}["sturdy"]["activeGeneration"] == "g1"
    node.wait_for_output("RuntimeError: bad model file")  # the traceback is in the log, for the author


def test_mapping_splits_traffic_and_dispatch_picks(node, admin, bundles):
    deploy(admin, bundles, "split", "g1", "g2")
    service = admin.service("split")
    service.set_generations_mapping(
        {"entries": [{"generation": "g1", "proba": 0.5}, {"generation": "g2", "proba": 0.5}], "hashBased": False}
    )
    assert {generation_of(node, "split") for _ in range(60)} == {"g1", "g2"}
    assert {generation_of(node, "split", {"dispatch": {"forcedGeneration": "g2"}}) for _ in range(10)} == {"g2"}
    assert_error(
        call(node, "split", {"dispatch": {"forcedGeneration": "g7"}}), 404, "NotFound", "forcedGeneration", "'g7'"
    )

    service.set_generations_mapping(
        {"entries": [{"generation": "g1", "proba": 0.5}, {"generation": "g2", "proba": 0.5}], "hashBased": True}
    )
    by_key = {
        key: {generation_of(node, "split", {"dispatch": {"dispatchKey": key}}) for _ in range(5)}
        for key in map(str, range(30))
    }
    assert all(len(generations) == 1 for generations in by_key.values())  # one key, one generation
    assert set().union(*by_key.values()) == {"g1", "g2"}

    for mapping, fragment in [
        ({"entries": [{"generation": "g1", "proba": 0.5}]}, "add up to 0.5"),
        ({"entries": [{"generation": "g9", "proba": 1}]}, "no generation 'g9'"),
        ({"entries": "g1"}, "expected"),
    ]:
        with pytest.raises(DataikuException, match=f"BadRequest: .*{fragment}"):
            service.set_generations_mapping(mapping)
    described = {s["id"]: s for s in admin.list_services()}["split"]
    assert described["mapping"]["hashBased"] is True and described["activeGeneration"] is None


def test_preload_starts_a_generation_without_traffic(node, admin, bundles):
    deploy(admin, bundles, "warm", "g1")
    admin.service("warm").import_generation_from_archive(str(make_bundle(bundles, "warm", "g2")))
    admin.service("warm").preload_generation("g2")
    assert len(node.pipelines("warm/which")) == 2
    assert {generation_of(node, "warm") for _ in range(10)} == {"g1"}
    assert generation_of(node, "warm", {"dispatch": {"forcedGeneration": "g2"}}) == "g2"
    pid = call(node, "warm", {"dispatch": {"forcedGeneration": "g2"}}).json()["response"]["pid"]
    admin.service("warm").switch_to_single_generation("g2")
    assert call(node, "warm").json()["response"]["pid"] == pid  # the preloaded pipeline, no cold start
    assert len(node.pipelines("warm/which")) == 1


def test_private_service_needs_its_key(node, admin, bundles):
    admin.create_service("private")
    built = apinode("build", str(SERVICES / "private"), "-o", str(bundles / "private.zip"))
    assert "generation" in built.stdout
    admin.service("private").import_generation_from_archive(str(bundles / "private.zip"))
    admin.service("private").switch_to_newest()
    with pytest.raises(DataikuException, match="Unauthorized"):
        dataikuapi.APINodeClient(node.url, "private").run_function("hello")
    with pytest.raises(DataikuException, match="Unauthorized"):
        dataikuapi.APINodeClient(node.url, "private", api_key="secret-key-9").run_function("hello")
    answer = dataikuapi.APINodeClient(node.url, "private", api_key="secret-key-2").run_function("hello", name="you")
    assert answer["response"] == "hello you"


def test_admin_keys_through_the_api(node, admin):
    made = admin.auth().add_key(label="ci", description="for the pipeline", created_by="tests")
    assert made["label"] == "ci" and len(made["key"]) >= 40
    listed = {key["id"]: key for key in admin.auth().list_keys()}
    assert listed[made["id"]]["description"] == "for the pipeline"
    assert all("key" not in key and "hash" not in key for key in listed.values())
    other = dataikuapi.APINodeAdminClient(node.url, made["key"])
    assert isinstance(other.list_services(), list)
    admin.auth().delete_key(made["key"])
    with pytest.raises(DataikuException, match="Unauthorized"):
        other.list_services()

    by_id = admin.auth().add_key(label="by id")
    admin.auth().delete_key_by_id(by_id["id"])
    with pytest.raises(DataikuException, match="Unauthorized"):
        dataikuapi.APINodeAdminClient(node.url, by_id["key"]).list_services()
    expired = admin.auth().add_key(expiry="2001-01-01T00:00:00Z")
    with pytest.raises(DataikuException, match="Unauthorized"):
        dataikuapi.APINodeAdminClient(node.url, expired["key"]).list_services()
    with pytest.raises(DataikuException, match="BadRequest: expiry"):
        admin.auth().add_key(expiry="next tuesday")


def test_pool_overrides_apply_when_a_generation_loads(node, admin, bundles, data_dir):
    override = data_dir / "config" / "services" / "tuned" / "which.json"
    override.parent.mkdir(parents=True)
    override.write_text('{"pool": {"floor": 3, "cruise": 3}}')
    deploy(admin, bundles, "tuned", "g1")
    assert len(node.pipelines("tuned/which")) == 3
    override.write_text('{"pool": {"floor": 0}}')
    admin.service("tuned").import_generation_from_archive(str(make_bundle(bundles, "tuned", "g2")))
    with pytest.raises(
        DataikuException,
        match=r"BadRequest: pool override refused: .*which\.json: pool.floor: "
        "expected an integer >= 1",
    ):
        admin.service("tuned").switch_to_newest()
    assert generation_of(node, "tuned") == "g1"


def test_metrics_json_and_prometheus(node, admin, bundles):
    deploy(admin, bundles, "measured", "g1")
    for _ in range(3):
        generation_of(node, "measured")
    assert call(node, "measured", {"nope": 1}).status_code == 400
    endpoint = admin.get_metrics()["services"]["measured"]["generations"]["g1"]["endpoints"]["which"]
    assert endpoint["requests"] == {"200": 3, "400": 1}
    assert endpoint["latencyMs"]["count"] == 4 and 0 < endpoint["latencyMs"]["mean"] <= endpoint["latencyMs"]["max"]
    assert endpoint["pipelines"] == {"alive": 1, "busy": 0}
    assert endpoint["queueDepth"] == 0 and endpoint["rejections"] == 0

    text = requests.get(f"{node.url}/metrics", timeout=10).text
    labels = 'endpoint="which",generation="g1",service="measured"'
    assert f'apinode_requests_total{{{labels},status="200"}} 3.0' in text
    assert f"apinode_request_duration_seconds_count{{{labels}}} 4.0" in text
    assert f"apinode_pipelines_alive{{{labels}}} 1.0" in text
    assert f"apinode_pipelines_busy{{{labels}}} 0.0" in text
    assert f"apinode_queue_depth{{{labels}}} 0.0" in text
    assert f"apinode_rejections_total{{{labels}}} 0.0" in text


def test_prometheus_shows_private_services_only_to_an_admin(node, admin, bundles, key):
    deploy(admin, bundles, "open-metrics", "g1")
    deploy(admin, bundles, "secret-metrics", "g7", publicAccess=False, apiKeys=["k-secret"])
    assert call(node, "secret-metrics", auth=("k-secret", "")).status_code == 200
    anonymous = requests.get(f"{node.url}/metrics", timeout=10).text
    assert 'service="open-metrics"' in anonymous
    assert "secret-metrics" not in anonymous and "g7" not in anonymous
    for wrong in (("k-secret", ""), ("nope", "")):  # a service's API key is not an admin key
        assert "secret-metrics" not in requests.get(f"{node.url}/metrics", auth=wrong, timeout=10).text
    operator = requests.get(f"{node.url}/metrics", auth=(key, ""), timeout=10).text
    labels = 'endpoint="which",generation="g7",service="secret-metrics"'
    assert f'apinode_requests_total{{{labels},status="200"}} 1.0' in operator
    assert 'service="open-metrics"' in operator


def test_query_log_lines(node, admin, bundles, data_dir):
    deploy(admin, bundles, "logged", "g1", logQueryParameters=True)
    deploy(admin, bundles, "quiet", "g1")
    for service in ("logged", "quiet"):
        generation_of(node, service, {"delay": 0.001})
        assert call(node, service, {"nope": 1}).status_code == 400

    def lines(service):
        path = data_dir / "logs" / "queries" / f"{service}.log"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    logged = eventually(lambda: len(lines("logged")) >= 2 and lines("logged"))
    assert [(line["endpoint"], line["generation"], line["status"]) for line in logged] == [
        ("which", "g1", 200),
        ("which", "g1", 400),
    ]
    assert [line["parameters"] for line in logged] == [{"delay": 0.001}, {"nope": 1}]
    assert logged[0]["timing"]["total"] > 0 and logged[0]["time"].endswith("+00:00")
    quiet = eventually(lambda: len(lines("quiet")) >= 2 and lines("quiet"))
    assert all("parameters" not in line for line in quiet)


def test_apinode_admin_command(node, key, bundles):
    def admin_command(*args, check=True):
        return apinode("admin", "--url", node.url, "--key", key, *args, check=check)

    assert json.loads(admin_command("service-create", "cli").stdout)["id"] == "cli"
    bundle = make_bundle(bundles, "cli", "g1")
    assert json.loads(admin_command("service-import-generation", "cli", str(bundle)).stdout) == {"generation": "g1"}
    admin_command("service-import-generation", "cli", str(make_bundle(bundles, "cli", "g2")))
    assert json.loads(admin_command("service-switch-to-generation", "cli", "g1").stdout)["activeGeneration"] == "g1"
    assert json.loads(admin_command("service-switch-to-newest", "cli").stdout)["activeGeneration"] == "g2"
    mapping = '{"entries": [{"generation": "g1", "proba": 1}], "hashBased": false}'
    assert json.loads(admin_command("service-set-mapping", "cli", mapping).stdout)["mapping"]["entries"] == [
        {"generation": "g1", "proba": 1.0}
    ]
    generations = json.loads(admin_command("service-list-generations", "cli").stdout)["generations"]
    assert generations == ["g1", "g2"]
    assert json.loads(admin_command("service-disable", "cli").stdout)["enabled"] is False
    assert json.loads(admin_command("service-enable", "cli").stdout)["enabled"] is True
    assert "cli" in {service["id"] for service in json.loads(admin_command("services-list").stdout)}
    assert "services" in json.loads(admin_command("metrics-get").stdout)
    admin_command("service-delete", "cli")

    failed = admin_command("service-delete", "cli", check=False)
    assert failed.returncode == 1 and failed.stdout == ""
    assert "NotFound (HTTP 404): no service 'cli'" in failed.stderr
    refused = apinode("admin", "--url", node.url, "--key", "wrong", "services-list", check=False)
    assert refused.returncode == 1 and "Unauthorized (HTTP 401)" in refused.stderr


def test_an_endpoint_whose_code_env_fails_fails_alone(node, admin, key, bundles):
    source = bundles / "envs"
    source.mkdir()
    (source / "f.py").write_text("def f():\n    return 1\n")
    (source / "service.json").write_text(
        json.dumps(
            {
                "id": "envs",
                "endpoints": [
                    {"id": "fine", "code": "f.py", "function": "f"},
                    {
                        "id": "broken",
                        "code": "f.py",
                        "function": "f",
                        "codeEnv": {"requirements": ["apinode-no-such-package-xyz==1.0"]},
                    },
                ],
            }
        )
    )
    bundle = bundles / "envs.zip"
    write_bundle(stage_directory(source), bundle, "g1")
    admin.create_service("envs")
    admin.service("envs").import_generation_from_archive(str(bundle))
    with pytest.raises(DataikuException, match="apinode-no-such-package-xyz"):
        admin.service("envs").switch_to_newest()  # a switch needs every endpoint to load
    check = requests.post(f"{node.url}/admin/api/services/envs/generations/g1/check", auth=(key, ""), timeout=120)
    endpoints = check.json()["endpoints"]
    assert endpoints["fine"]["loaded"] is True
    assert endpoints["broken"]["loaded"] is False and "apinode-no-such-package-xyz" in endpoints["broken"]["error"]


def test_a_private_service_says_nothing_of_its_generations_without_a_key(node, admin, bundles):
    deploy(admin, bundles, "secret", "g1", "g2", publicAccess=False, apiKeys=["k-1"])
    admin.service("secret").preload_generation("g1")  # two loaded: the node looks at dispatch
    forced = {"dispatch": {"forcedGeneration": "g9"}}
    refused = call(node, "secret", forced)
    assert_error(refused, 401, "Unauthorized", "API key")
    assert "g1" not in refused.text and "g2" not in refused.text
    assert_error(call(node, "secret", forced, auth=("k-1", "")), 404, "NotFound", "g9")
    assert call(node, "secret", {"dispatch": {"forcedGeneration": "g1"}}, auth=("k-1", "")).status_code == 200


def test_an_endpoint_that_cannot_fork_says_why_in_its_service(admin, bundles):
    code = (
        "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(3600,), name='refresher', daemon=True).start()\n\n"
        "def which():\n    return 1\n"
    )
    admin.create_service("threads")
    admin.service("threads").import_generation_from_archive(str(make_bundle(bundles, "threads", "g1", code)))
    admin.service("threads").switch_to_newest()
    state = {service["id"]: service for service in admin.list_services()}["threads"]["endpoints"]["g1"]["which"]
    assert state["start"] == "spawn"
    assert state["startFallback"].startswith("1 thread still running after the initialization (refresher)")
