"""The output relay (apinode.node.output): pipelines' prints reach the log from a thread of its
own, cut when too long, dropped (and counted) past the rate, and read for a bounded time."""

from __future__ import annotations

import asyncio
import logging
import os
import time

from apinode.node.output import BURST, MAX_LINE, RELAY


def logged(caplog, name: str) -> list[str]:
    return [record.getMessage() for record in caplog.records if f"[{name}]" in record.getMessage()]


async def relay(data: bytes, name: str) -> None:
    read_end, write_end = os.pipe()
    source = RELAY.add(read_end, name)
    with os.fdopen(write_end, "wb") as pipe:
        pipe.write(data)
    await source.finished(10)


async def test_lines_are_logged_and_long_ones_cut(caplog):
    caplog.set_level(logging.INFO, "apinode.pipeline")
    await relay(b"hello\n" + b"y" * (MAX_LINE + 100) + b"\ntail without newline", "cut")
    lines = logged(caplog, "cut")
    assert lines[0] == "[cut] hello"
    assert lines[1].endswith("y [... 100 more bytes cut]") and len(lines[1]) < MAX_LINE + 100
    assert lines[2] == "[cut] tail without newline"


async def test_output_past_the_rate_is_dropped_and_counted(caplog):
    caplog.set_level(logging.INFO, "apinode.pipeline")
    line = b"z" * 99 + b"\n"
    await relay(line * (4 * BURST // len(line)), "flood")
    lines = logged(caplog, "flood")
    kept = sum(len(text) - len("[flood] ") + 1 for text in lines if text.endswith("z"))
    assert kept <= BURST * 1.5  # the burst, and what the rate refilled meanwhile
    notes = [text for text in lines if "of output dropped: over 256 KiB a second" in text]
    dropped = sum(int(note.split("] ")[1].split()[0]) for note in notes)
    assert notes and dropped + kept == 4 * BURST // len(line) * len(line)


async def test_reading_stops_soon_after_the_process_if_someone_holds_the_pipe():
    read_end, write_end = os.pipe()  # our write end stands for a grandchild that kept it open
    source = RELAY.add(read_end, "held")
    started = time.monotonic()
    await asyncio.wait_for(source.finished(0.2), 5)
    assert time.monotonic() - started < 2
    os.close(write_end)
