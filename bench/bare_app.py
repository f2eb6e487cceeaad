"""The baseline for bench_node.py: one Tornado process that parses the same JSON, calls the same
function in-process and answers the same shape. Says where it listens in its ready file, as a
node does (apinode.localnode), then serves until killed."""

import argparse
import asyncio
import json
import time
from pathlib import Path

import tornado.web
from functions import identity, predict

from apinode.localnode import READY_FILE_OPTION, write_ready_file

FUNCTIONS = {"identity": identity, "predict": predict}


class RunHandler(tornado.web.RequestHandler):
    def post(self, service_id: str, endpoint_id: str) -> None:
        started = time.perf_counter()
        result = FUNCTIONS[endpoint_id](**json.loads(self.request.body))
        execution = (time.perf_counter() - started) * 1000
        self.set_header("Content-Type", "application/json")
        self.finish(
            json.dumps(
                {
                    "response": result,
                    "timing": {"wait": 0.0, "execution": execution, "total": execution},
                    "apiContext": {"serviceId": service_id, "endpointId": endpoint_id, "serviceGeneration": "bare"},
                }
            )
        )


async def main(port: int, ready_file: Path) -> None:
    app = tornado.web.Application([(r"/public/api/v1/([^/]+)/([^/]+)/run", RunHandler)])
    server = app.listen(port, "127.0.0.1")
    bound = next(iter(server._sockets.values())).getsockname()[1]
    write_ready_file(ready_file, f"http://127.0.0.1:{bound}")
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(READY_FILE_OPTION, type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(main(args.port, args.ready_file))
