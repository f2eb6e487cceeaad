"""The data directory: imports that are all or nothing, service state, operator overrides."""

from __future__ import annotations

import pytest
from support import make_bundle

from apinode.node.errors import BadRequest, Conflict
from apinode.node.store import DataDir, ServiceState
from apinode.node.traffic import GenerationMapping


@pytest.fixture
def store(tmp_path):
    store = DataDir(tmp_path / "data")
    store.prepare()
    store.create_service("svc")
    return store


def test_state_round_trips(store):
    mapping = GenerationMapping((("g1", 0.5), ("g2", 0.5)), hash_based=True)
    state = ServiceState(enabled=False, mapping=mapping, imported={"g1": 1.0, "g2": 2.0})
    store.write_state("svc", state)
    assert store.read_state("svc") == state
    assert state.newest() == "g2" and state.selected() == ("g1", "g2")
    with pytest.raises(Conflict, match="already exists"):
        store.create_service("svc")
    with pytest.raises(BadRequest, match="serviceId"):
        store.create_service("../up")


def test_a_refused_import_leaves_no_trace(store, tmp_path):
    before = sorted(store.root.rglob("*"))
    with pytest.raises(BadRequest, match="holds service 'other', not 'svc'"):
        store.import_bundle("svc", make_bundle(tmp_path, "other", "g1"), ())
    assert sorted(store.root.rglob("*")) == before


def test_an_interrupted_import_is_replaced(store, tmp_path):
    leftover = store.generation_dir("svc", "g1")
    leftover.mkdir(parents=True)
    (leftover / "half-written").write_text("")
    definition = store.import_bundle("svc", make_bundle(tmp_path, "svc", "g1"), imported=())
    assert definition.generation == "g1"
    assert sorted(path.name for path in leftover.iterdir()) == ["endpoints", "service.json"]
    with pytest.raises(Conflict, match="already has generation 'g1'"):
        store.import_bundle("svc", tmp_path / "svc-g1.zip", imported=("g1",))


def test_pool_overrides(store, tmp_path):
    definition = store.import_bundle("svc", make_bundle(tmp_path, "svc", "g1", pool={"ceil": 4}), ())
    endpoint = definition.endpoints[0]
    assert store.pool_settings("svc", endpoint) == endpoint.pool
    override = store.config / "services" / "svc" / "which.json"
    override.parent.mkdir(parents=True)
    override.write_text('{"pool": {"queue": 2}}')
    assert store.pool_settings("svc", endpoint).queue == 2 and store.pool_settings("svc", endpoint).ceil == 4
    for text, fragment in [
        ('{"queue": 2}', 'expected {"pool"'),
        ("{", "not valid JSON"),
        ('{"pool": {"queue": -1}}', "pool.queue"),
    ]:
        override.write_text(text)
        with pytest.raises(BadRequest, match="pool override refused") as refused:
            store.pool_settings("svc", endpoint)
        assert str(override) in refused.value.message and fragment in refused.value.message
