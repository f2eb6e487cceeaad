"""A baseline of the benchmarks: one Tornado process that parses the same JSON, calls the same
function in-process and answers the same shape. Prints its URL, then serves until killed."""

import argparse
import asyncio
import json
import time

import tornado.web
from functions import identity, predict

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


async def main(port: int) -> None:
    app = tornado.web.Application([(r"/public/api/v1/([^/]+)/([^/]+)/run", RunHandler)])
    server = app.listen(port, "127.0.0.1")
    bound = next(iter(server._sockets.values())).getsockname()[1]
    print(f"apinode: serving bare at http://127.0.0.1:{bound}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(main(parser.parse_args().port))
