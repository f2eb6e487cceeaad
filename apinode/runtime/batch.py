"""One call of a batched endpoint: many requests in, one function call, an answer for each.

The node packs the bodies of up to `maxSize` requests as a sequence of CALL frames in one CALL's
payload (runtime.framing); each is parsed and checked against what the function's list hint
says of an item (`batch: list[Row]`) on its own (a bad one gets its own 400, the others run),
the function is called once with the list of their parameter objects and returns a list
of as many results, in order; each result is encoded on its own. The answer is one RESULT
whose payload is a sequence of RESULT or ERROR frames, one per request, in order. An exception
fails the whole batch; a result that is not a list of the right length is a 500 naming both
lengths, for every request of the batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from . import framing
from .coroutines import resolve
from .errors import error_json
from .invoke import Invoker, ItemSink, Outcome, parse_or_refuse, raised
from .results import NotSerializable, encode
from .validation import Invalid, batch_request_check


class BatchInvoker(Invoker):
    def __init__(self, function: Callable[..., Any], max_result_bytes: int | None = None) -> None:
        super().__init__(function, max_result_bytes)
        self.check_request = batch_request_check(function)

    def __call__(self, body: bytes, on_item: ItemSink | None = None) -> Outcome:
        requests = [self._request(payload) for _, _, _, payload in framing.unpack_all(body)]
        answers: list[Outcome | None] = [params if isinstance(params, Outcome) else None for params in requests]
        batch = [params for params in requests if not isinstance(params, Outcome)]
        started = time.perf_counter()
        traceback = None
        if batch:
            for at, outcome in zip(
                (i for i, answer in enumerate(answers) if answer is None), self._run(batch, started)
            ):
                answers[at] = outcome
                traceback = traceback or outcome.traceback
        elapsed = (time.perf_counter() - started) * 1000
        frames = b"".join(
            framing.pack(
                framing.RESULT if answer.ok else framing.ERROR, answer.payload, answer.status, answer.execution_ms
            )
            for answer in answers
            if answer is not None
        )
        return Outcome(200, frames, elapsed, traceback)

    def _request(self, body: bytes) -> Any:
        """The request's item of the batch (checked against the batch's list hint), or the 400
        that refuses it."""
        params = parse_or_refuse(body)
        if isinstance(params, Outcome) or self.check_request is None:
            return params
        try:
            return self.check_request(params)
        except Invalid as exc:
            return Outcome(400, error_json("InvalidParameters", str(exc)), 0.0)

    def alone(self, body: bytes, on_item: ItemSink | None = None) -> Outcome:
        """One request as a batch of one (`%api_test`): its own outcome (a batched function
        returns lists: it has no items to stream)."""
        batch = self(framing.pack(framing.CALL, body))
        _, status, execution_ms, payload = framing.unpack_all(batch.payload)[0]
        return Outcome(status, payload, execution_ms, batch.traceback)

    def _run(self, batch: list[dict[str, Any]], started: float) -> list[Outcome]:
        try:
            results = resolve(self.function(batch))
        except Exception as exc:
            return [raised(exc, started)] * len(batch)
        elapsed = (time.perf_counter() - started) * 1000
        if not isinstance(results, Sequence) or isinstance(results, (str, bytes)) or len(results) != len(batch):
            got = _count(len(results), "result") if isinstance(results, Sequence) else f"a {type(results).__name__}"
            message = (
                f"the batched function was called with {_count(len(batch), 'request')} and returned {got}: "
                f"it must return a list of as many results, in order"
            )
            return [Outcome(500, error_json("BatchResultMismatch", message), elapsed)] * len(batch)
        return [self._encoded(result, elapsed) for result in results]

    def _encoded(self, result: Any, elapsed: float) -> Outcome:
        try:
            return self.sized(encode(result), elapsed)
        except NotSerializable as exc:
            return Outcome(500, error_json("ResultNotSerializable", str(exc)), elapsed)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
