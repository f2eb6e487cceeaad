"""The node's end of a pipeline's channel (apinode.node.process.Channel): frames of any size,
split anywhere by the socket, each delivered whole to the exchange that waits for it."""

from __future__ import annotations

import asyncio
import socket

import pytest

from apinode.node.pipeline import ProcessPipeline
from apinode.node.process import SCRATCH, PipelineSpec, ProcessDied, connect
from apinode.runtime import framing


async def answered(frames: list[bytes], chunk: int) -> list[tuple[int, bytes]]:
    """Send `frames` from the far end `chunk` bytes at a time; what the channel delivers."""
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    channel = await connect(ours)
    data = b"".join(frames)
    got = []
    try:
        for index in range(len(frames)):
            reply = channel.expect()
            if index == 0:
                for start in range(0, len(data), chunk):
                    await asyncio.get_running_loop().sock_sendall(theirs, data[start : start + chunk])
            result = await asyncio.wait_for(reply, 10)
            got.append((result.kind, bytes(result.payload)))
    finally:
        channel.close()
        theirs.close()
    return got


@pytest.mark.parametrize("chunk", [1, 7, 4096, 1 << 20])
async def test_small_and_large_frames_arrive_whole_however_split(chunk):
    large = bytes(range(256)) * ((3 * SCRATCH) // 256 + 3)  # several scratch buffers long
    frames = [framing.pack(framing.RESULT, b'{"a":1}'), framing.pack(framing.ERROR, large, status=500)]
    if chunk == 1:  # byte by byte: keep it short
        frames = [framing.pack(framing.RESULT, b"x" * 100), framing.pack(framing.RESULT, b"")]
    got = await answered(frames, chunk)
    expected = [(frame[0], frame[framing.HEADER.size :]) for frame in frames]
    assert got == expected


async def test_a_frame_that_comes_before_it_is_expected_is_kept():
    ours, theirs = socket.socketpair()
    theirs.sendall(framing.pack(framing.READY, b"schema"))
    channel = await connect(ours)
    await asyncio.sleep(0.05)
    reply = await asyncio.wait_for(channel.expect(), 5)
    assert (reply.kind, reply.payload) == (framing.READY, b"schema")
    theirs.close()
    with pytest.raises(ProcessDied):
        await asyncio.wait_for(channel.expect(), 5)


class _Taker:
    """Takes every streamed item (an ItemSink that never pushes back)."""

    def __init__(self) -> None:
        self.items: list[bytes] = []

    def item(self, payload: bytes | bytearray) -> bool:
        self.items.append(bytes(payload))
        return True

    def writable(self) -> asyncio.Future[None]:
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


async def test_a_cancel_that_comes_after_its_stream_ended_is_ignored_by_the_pipeline(tmp_path):
    """A caller that leaves on a stream's last item makes the node send CANCEL after the
    pipeline has sent END: the pipeline must not take it for a call, or every later caller
    would get the answer meant for the one before."""
    code = tmp_path / "count.py"
    code.write_text("def count(n=2):\n    yield from range(n)\n")
    pipeline = await ProcessPipeline.spawn(PipelineSpec(name="t/count", code=code, function="count"))
    try:
        taker = _Taker()
        end = await asyncio.wait_for(pipeline.call(b'{"n": 2}', taker), 30)
        assert (end.kind, taker.items) == (framing.END, [b"0", b"1"])
        assert pipeline.channel.transport is not None
        pipeline.channel.transport.write(framing.pack(framing.CANCEL))  # late: the stream is over
        reply = await asyncio.wait_for(pipeline.call(b'{"n": 3}'), 30)
        assert (reply.kind, bytes(reply.payload)) == (framing.RESULT, b"[0,1,2]")
    finally:
        await pipeline.stop()


async def test_calls_sent_ahead_are_answered_in_order_and_a_departed_caller_s_answer_is_dropped(tmp_path):
    """The pool sends a call ahead while another runs: each reply settles the oldest waiting
    future, and the reply meant for a caller that left does not go to the next one."""
    code = tmp_path / "echo.py"
    code.write_text("import time\ndef echo(n, pause=0):\n    time.sleep(pause)\n    return n\n")
    pipeline = await ProcessPipeline.spawn(PipelineSpec(name="t/echo", code=code, function="echo"))
    try:
        first = asyncio.ensure_future(pipeline.call(b'{"n": 1, "pause": 0.2}'))
        await asyncio.sleep(0)  # sent: the next ones wait behind it in the pipeline's socket
        left = asyncio.ensure_future(pipeline.call(b'{"n": 2}'))
        await asyncio.sleep(0)
        last = asyncio.ensure_future(pipeline.call(b'{"n": 3}'))
        await asyncio.sleep(0)
        left.cancel()
        replies = await asyncio.wait_for(asyncio.gather(first, last), 30)
        assert [bytes(reply.payload) for reply in replies] == [b"1", b"3"]
        assert left.cancelled()
        reply = await asyncio.wait_for(pipeline.call(b'{"n": 4}'), 30)
        assert bytes(reply.payload) == b"4"
    finally:
        await pipeline.stop()
