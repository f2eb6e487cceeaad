"""A baseline of bench_front.py: FastAPI on uvicorn (httptools, uvloop), N worker processes, the
same functions called in-process with the same answer shape. Picks a free port (with `--port
0`), writes its URL in the ready file as the node does, serves until killed. (uvicorn's `fd=`
takes a Unix socket: a TCP socket passed that way loses TCP_NODELAY, and every answer waits
40 ms for a delayed ACK.)

    python bench/fastapi_app.py --workers 2 --port 0 --ready-file PATH
"""

import argparse
import socket
import sys
import time
from pathlib import Path

import orjson
import uvicorn
from fastapi import FastAPI, Request, Response

sys.path.insert(0, str(Path(__file__).parent))
from functions import identity, predict

from apinode.localnode import READY_FILE_OPTION, write_ready_file

FUNCTIONS = {"identity": identity, "predict": predict}
app = FastAPI()


@app.post("/public/api/v1/{service_id}/{endpoint_id}/run")
async def run(service_id: str, endpoint_id: str, request: Request) -> Response:
    started = time.perf_counter()
    result = FUNCTIONS[endpoint_id](**orjson.loads(await request.body()))
    execution = (time.perf_counter() - started) * 1000
    answer = {
        "response": result,
        "timing": {"wait": 0.0, "execution": execution, "total": execution},
        "apiContext": {"serviceId": service_id, "endpointId": endpoint_id, "serviceGeneration": "fastapi"},
    }
    return Response(orjson.dumps(answer), media_type="application/json")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(READY_FILE_OPTION, type=Path, required=True)
    args = parser.parse_args()
    with socket.create_server(("127.0.0.1", args.port)) as probe:
        port = probe.getsockname()[1]
    write_ready_file(args.ready_file, f"http://127.0.0.1:{port}")  # bench_front waits until it accepts
    uvicorn.run(
        "fastapi_app:app",
        host="127.0.0.1",
        port=port,
        workers=args.workers,
        app_dir=str(Path(__file__).parent),
        log_level="warning",
        access_log=False,
    )
