"""`apinode serve --data-dir`: what survives a restart, the admin key commands, one node per
directory, and the data directory's files."""

from __future__ import annotations

import contextlib
import json

import dataikuapi
import pytest
import requests
from dataikuapi.utils import DataikuException
from support import NodeProcess, apinode, make_admin_key, make_bundle

from apinode.localnode import NodeStartError


@contextlib.contextmanager
def serving(data_dir, key):
    """A node on `data_dir`, and an admin client of it; stopped cleanly at the end."""
    node = NodeProcess("serve", "--data-dir", str(data_dir))
    try:
        yield node, dataikuapi.APINodeAdminClient(node.url, key)
    finally:
        assert node.stop() == 0


def run_generation(node, service_id):
    response = requests.post(f"{node.url}/public/api/v1/{service_id}/which/run", json={}, timeout=30)
    return response.status_code, response.json()


def test_admin_key_commands(tmp_path):
    data_dir = str(tmp_path / "data")
    first = make_admin_key(data_dir)
    second = apinode("admin-key-create", "--data-dir", data_dir, "--label", "deploys").stdout.strip()
    listed = json.loads(apinode("admin-keys-list", "--data-dir", data_dir).stdout)
    assert [key["label"] for key in listed] == [None, "deploys"]
    stored = (tmp_path / "data" / "config" / "admin-keys.json").read_text()
    assert first not in stored and second not in stored  # digests only
    apinode("admin-key-delete", "--data-dir", data_dir, listed[1]["id"])
    apinode("admin-key-delete", "--data-dir", data_dir, first)
    assert json.loads(apinode("admin-keys-list", "--data-dir", data_dir).stdout) == []
    missing = apinode("admin-key-delete", "--data-dir", data_dir, "nope", check=False)
    assert missing.returncode == 1 and "no such admin key" in missing.stderr


def test_everything_survives_a_restart(tmp_path):
    data_dir = tmp_path / "data"
    key = make_admin_key(data_dir)
    with serving(data_dir, key) as (node, admin):
        for service_id in ("kept", "mapped", "off"):
            admin.create_service(service_id)
            for generation in ("g1", "g2"):
                admin.service(service_id).import_generation_from_archive(
                    str(make_bundle(tmp_path, service_id, generation))
                )
        admin.service("kept").switch_to_single_generation("g1")
        admin.service("kept").switch_to_newest()
        admin.service("mapped").set_generations_mapping(
            {"entries": [{"generation": "g1", "proba": 0.5}, {"generation": "g2", "proba": 0.5}]}
        )
        admin.service("off").switch_to_newest()
        admin.service("off").disable()
        api_key = admin.auth().add_key(label="made through the API")["key"]
        services = admin.list_services()
        generations = {s: admin.service(s).list_generations() for s in ("kept", "mapped", "off")}

    with serving(data_dir, key) as (node, _):
        for admin_key in (key, api_key):
            admin = dataikuapi.APINodeAdminClient(node.url, admin_key)
            assert admin.list_services() == services
            assert {s: admin.service(s).list_generations() for s in generations} == generations
        assert run_generation(node, "kept")[1]["response"]["generation"] == "g2"
        assert {run_generation(node, "mapped")[1]["response"]["generation"] for _ in range(40)} == {"g1", "g2"}
        status, body = run_generation(node, "off")
        assert status == 404 and "disabled" in body["message"]
        assert not list(data_dir.rglob("*.tmp"))  # every state write went through a rename
        assert json.loads((data_dir / "services" / "kept" / "service-state.json").read_text())["active"] == "g2"


def test_one_node_per_data_directory(tmp_path):
    first = NodeProcess("serve", "--data-dir", str(tmp_path))
    try:
        with pytest.raises(NodeStartError, match="another node is serving this data directory"):
            NodeProcess("serve", "--data-dir", str(tmp_path))
    finally:
        assert first.stop() == 0


def test_a_service_that_cannot_load_at_start_says_why(tmp_path):
    data_dir = tmp_path / "data"
    key = make_admin_key(data_dir)
    with serving(data_dir, key) as (_, admin):
        admin.create_service("fragile")
        admin.service("fragile").import_generation_from_archive(str(make_bundle(tmp_path, "fragile", "g1")))
        admin.service("fragile").switch_to_newest()
    override = data_dir / "config" / "services" / "fragile" / "which.json"
    override.parent.mkdir(parents=True)
    override.write_text('{"pool": {"ceil": "many"}}')  # an operator's typo, made while the node was down
    with serving(data_dir, key) as (node, admin):
        status, body = run_generation(node, "fragile")
        assert status == 500 and body["errorType"] == "EndpointLoadFailed"
        assert "did not load when the node started" in body["message"] and "pool.ceil" in body["message"]
        override.unlink()
        admin.service("fragile").switch_to_newest()
        assert run_generation(node, "fragile")[0] == 200
        with pytest.raises(DataikuException, match="Unauthorized"):
            dataikuapi.APINodeAdminClient(node.url, "").list_services()


def test_a_damaged_data_directory_quarantines_what_it_must_and_serves_the_rest(tmp_path):
    data_dir = tmp_path / "data"
    key = make_admin_key(data_dir)
    damage = {
        "empty": "",
        "truncated": '{"enabled": true, "act',
        "active-5": '{"enabled": true, "active": 5, "imported": {"g1": 1.0}, "mapping": null}',
        "unknown-active": '{"enabled": true, "active": "g9", "imported": {"g1": 1.0}}',
        "bad-mapping": '{"enabled": true, "active": null, "imported": {"g1": 1.0}, "mapping": {"entries": 3}}',
        "bad-imported": '{"enabled": true, "active": null, "imported": {"g1": "yesterday"}}',
        "not-an-object": "[]",
    }
    with serving(data_dir, key) as (_, admin):
        for service_id in ("good", "bad-definition", *damage):
            admin.create_service(service_id)
            admin.service(service_id).import_generation_from_archive(str(make_bundle(tmp_path, service_id, "g1")))
            admin.service(service_id).switch_to_newest()
    services = data_dir / "services"
    for service_id, text in damage.items():
        (services / service_id / "service-state.json").write_text(text)
    (services / "bad-definition" / "generations" / "g1" / "service.json").write_text('{"id": "bad-definition"')
    keys_file = data_dir / "config" / "admin-keys.json"
    keys = keys_file.read_text()
    keys_file.write_text('{"keys": [{"id": 1}]}')

    node = NodeProcess("serve", "--data-dir", str(data_dir))
    try:
        assert run_generation(node, "good")[1]["response"]["generation"] == "g1"
        for service_id in ("bad-definition", *damage):
            status, body = run_generation(node, service_id)
            assert status == 500 and body["errorType"] == "EndpointLoadFailed", (service_id, body)
            if service_id in damage:  # callers learn that it is down, not the data directory's files
                assert "out of service" in body["message"] and str(data_dir) not in body["message"]
        for service_id in damage:
            assert (
                f"ERROR apinode.service_manager: service {service_id} quarantined: {services / service_id}"
                in node.output
            )
        assert "the admin API refuses every call until its key file is repaired" in node.output
        refused = requests.get(f"{node.url}/admin/api/services", auth=(key, ""), timeout=10)
        assert refused.status_code == 503 and refused.json()["errorType"] == "AdminUnavailable"
        assert "good" in requests.get(f"{node.url}/metrics", timeout=10).text  # public series still served

        keys_file.write_text(keys)  # repaired while the node runs: read again at once
        admin = dataikuapi.APINodeAdminClient(node.url, key)
        problems = {service["id"]: service["problem"] for service in admin.list_services()}
        assert problems.pop("good") is None
        assert "bad-definition" in problems.pop("bad-definition") and "not valid JSON" in problems["empty"]
        expected = {
            "active-5": "active: expected null or one of the imported generations, got 5",
            "unknown-active": "active: expected null or one of the imported generations, got 'g9'",
            "bad-mapping": "mapping: expected",
            "bad-imported": "imported: expected",
            "not-an-object": "expected an object with fields",
        }
        for service_id, problem in problems.items():
            assert problem.startswith(f"{services / service_id / 'service-state.json'}: "), problem
            assert expected.get(service_id, "") in problem and "repair or remove the file" in problem
        with pytest.raises(DataikuException, match="Conflict.*quarantined"):
            admin.service("active-5").switch_to_newest()
        admin.service("active-5").delete()
        assert not (services / "active-5").exists()
        assert "active-5" not in [service["id"] for service in admin.list_services()]
    finally:
        assert node.stop() == 0
