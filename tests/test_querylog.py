"""The query log: lines written off the event loop, parameters only when asked, rotation."""

from __future__ import annotations

import asyncio
import datetime
import json

import orjson

from apinode.node.querylog import QueryLog, _parameters


def write(log: QueryLog, entries) -> None:
    async def main():
        log.start()
        for entry in entries:
            log.record(*entry)
        log.close()

    asyncio.run(main())


def test_lines_hold_the_request_and_its_parameters_when_given(tmp_path):
    write(
        QueryLog(tmp_path),
        [
            ("svc", "score", "g1", 200, 1.23456, b'{"age": 3}'),
            ("svc", "score", "g1", 400, 0.5, b"not json"),
            ("svc", "score", None, 404, 0.1, None),
            ("other", "e", "g2", 200, 2.0, b""),
        ],
    )
    lines = [json.loads(line) for line in (tmp_path / "svc.log").read_text().splitlines()]
    assert [(line["endpoint"], line["generation"], line["status"]) for line in lines] == [
        ("score", "g1", 200),
        ("score", "g1", 400),
        ("score", None, 404),
    ]
    assert lines[0]["timing"] == {"total": 1.235} and lines[0]["parameters"] == {"age": 3}
    assert lines[1]["parameters"] == "not json" and "parameters" not in lines[2]
    assert json.loads((tmp_path / "other.log").read_text())["parameters"] == {}


def test_files_rotate_by_size(tmp_path):
    for _ in range(4):  # each run writes one batch of about 1.4 kB, past the 1 kB limit
        write(QueryLog(tmp_path, max_bytes=1000, backups=2), [("svc", "score", "g1", 200, 1.0, None)] * 10)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["svc.log", "svc.log.1", "svc.log.2"]
    assert all(len(path.read_text().splitlines()) == 10 for path in tmp_path.iterdir())


def test_times_are_iso_8601_in_utc_to_the_millisecond(tmp_path):
    log = QueryLog(tmp_path)
    for at in (1_700_000_000.0, 1_700_000_000.9996, 1_700_000_001.0421, 1_700_000_000.5, 86_399.999):
        expected = datetime.datetime.fromtimestamp(at, datetime.timezone.utc).isoformat(timespec="milliseconds")
        assert log._timestamp(at).decode() == expected


def test_a_disabled_log_writes_nothing(tmp_path):
    write(QueryLog(tmp_path, enabled=False), [("svc", "score", "g1", 200, 1.0, b"{}")])
    assert list(tmp_path.iterdir()) == []


def test_a_line_is_the_compact_json_of_its_fields_in_their_order(tmp_path):
    entries = [
        ("svc", 'sc"ore', "g1", 200, 1.23456, b'{"age": 3, "name": "\xc3\xa9"}'),
        ("svc", "\u00e9t\u00e9", None, 499, 12345.0, None),
        ("svc", "score", "g1", 400, 0.0004, b"\xff not json"),
    ]
    write(QueryLog(tmp_path), entries)
    raw_lines = (tmp_path / "svc.log").read_bytes().split(b"\n")
    assert raw_lines[-1] == b""
    for raw, (service, endpoint, generation, status, total_ms, parameters) in zip(raw_lines, entries, strict=False):
        expected = {
            "time": orjson.loads(raw)["time"],
            "service": service,
            "endpoint": endpoint,
            "generation": generation,
            "status": status,
            "timing": {"total": round(total_ms, 3)},
        }
        if parameters is not None:
            expected["parameters"] = _parameters(parameters)
        assert raw == orjson.dumps(expected)


def test_a_log_that_cannot_be_written_loses_its_lines_not_the_others(tmp_path, caplog):
    (tmp_path / "svc.log").mkdir()  # opening it for writing fails
    write(QueryLog(tmp_path), [("svc", "score", "g1", 200, 1.0, None), ("other", "e", "g2", 200, 2.0, None)])
    assert json.loads((tmp_path / "other.log").read_text())["endpoint"] == "e"
    assert "could not write the query log of svc" in caplog.text
