"""Which generation answers: the mapping's validation, the split's picks, and that the single
generation path never looks at the body."""

from __future__ import annotations

import pytest

from apinode.node.errors import BadRequest, NotFound
from apinode.node.traffic import GenerationMapping, TrafficSplit

LOADED = {"g1": "generation one", "g2": "generation two"}  # the split only hands these back


def mapping(*entries, hash_based=False):
    return GenerationMapping.from_json(
        {"entries": [{"generation": g, "proba": p} for g, p in entries], "hashBased": hash_based}
    )


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"entries": []}, "expected"),
        ({"entries": [{"generation": "g1", "proba": 1}], "other": 1}, "expected"),
        ({"entries": [{"generation": "g1"}]}, "entries[0]"),
        ({"entries": [{"generation": "g 1", "proba": 1}]}, "entries[0].generation"),
        ({"entries": [{"generation": "g1", "proba": 1.5}]}, "entries[0].proba"),
        ({"entries": [{"generation": "g1", "proba": True}]}, "entries[0].proba"),
        ({"entries": [{"generation": "g1", "proba": 0.5}, {"generation": "g1", "proba": 0.5}]}, "more than one entry"),
        ({"entries": [{"generation": "g1", "proba": 0.3}, {"generation": "g2", "proba": 0.3}]}, "add up to 0.6"),
        ({"entries": [{"generation": "g1", "proba": 1}], "hashBased": "yes"}, "expected"),
    ],
)
def test_bad_mappings_are_refused_with_what_is_wrong(body, fragment):
    with pytest.raises(BadRequest, match="mapping") as refused:
        GenerationMapping.from_json(body)
    assert fragment in refused.value.message


def test_mapping_round_trips_through_json():
    split = mapping(("g1", 0.1), ("g2", 0.9), hash_based=True)
    assert GenerationMapping.from_json(split.to_json()) == split
    assert split.generations == ("g1", "g2")


def test_one_loaded_generation_is_picked_without_reading_the_body():
    split = TrafficSplit("svc", {"g1": LOADED["g1"]}, active="g1")
    assert split.pick(b'{"dispatch": {"forcedGeneration": "g9"}}') == "generation one"
    assert split.pick(b"not json at all") == "generation one"


def test_no_selection_picks_nothing():
    assert TrafficSplit("svc", {}).pick(b"{}") is None


def test_forced_generation_picks_any_loaded_one():
    split = TrafficSplit("svc", LOADED, active="g1")  # g2 is loaded (preloaded), not active
    assert split.pick(b"{}") == "generation one"
    assert split.pick(b'{"x": 1, "dispatch": {"forcedGeneration": "g2"}}') == "generation two"
    with pytest.raises(NotFound, match="'g3' of service 'svc' is not loaded"):
        split.pick(b'{"dispatch": {"forcedGeneration": "g3"}}')
    assert split.pick(b'{"dispatch": broken') == "generation one"  # the pipeline will say 400


def test_probabilities_choose(monkeypatch):
    split = TrafficSplit("svc", LOADED, mapping=mapping(("g1", 0.25), ("g2", 0.75)))
    for draw, expected in [
        (0.0, "generation one"),
        (0.2499, "generation one"),
        (0.25, "generation two"),
        (0.9999, "generation two"),
    ]:
        monkeypatch.setattr("random.random", lambda draw=draw: draw)
        assert split.pick(b"{}") == expected


def test_hash_based_mapping_keeps_a_key_on_one_generation(monkeypatch):
    split = TrafficSplit("svc", LOADED, mapping=mapping(("g1", 0.5), ("g2", 0.5), hash_based=True))
    monkeypatch.setattr("random.random", lambda: pytest.fail("a dispatch key must not draw at random"))
    picks = {key: split.pick(b'{"dispatch": {"dispatchKey": "%s"}}' % key.encode()) for key in map(str, range(50))}
    assert set(picks.values()) == {"generation one", "generation two"}
    again = TrafficSplit("svc", LOADED, mapping=mapping(("g1", 0.5), ("g2", 0.5), hash_based=True))
    assert all(
        again.pick(b'{"dispatch": {"dispatchKey": "%s"}}' % key.encode()) == pick for key, pick in picks.items()
    )  # stable across routers, hence across restarts
