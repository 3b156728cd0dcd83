"""The asyncio test service on uvicorn + FastAPI; prints `READY <port>` once listening.

/ping touches no updated code; /slow, /act suspend a task inside aioshop.logic
until /release?gate=...; /block is a `def` endpoint (runs in the threadpool),
/executor hands the work to run_in_executor; /sync calls a plain function on
the loop thread, /coro awaits a coroutine function of aioshop.logic.
"""
import asyncio
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import uvicorn  # noqa: E402
from fastapi import FastAPI  # noqa: E402

from aioshop import gates, logic  # noqa: E402

app = FastAPI()


@app.get("/ping")
async def ping():
    return {"pong": True}


@app.get("/slow")
async def slow(gate: str):
    return await logic.slow(gate)


@app.get("/block")
def block(gate: str):
    return logic.blocking(gate)


@app.get("/executor")
async def executor(gate: str):
    return await asyncio.get_running_loop().run_in_executor(None, logic.blocking, gate)


@app.get("/sync")
async def sync(x: str):
    return {"label": logic.label(x)}


@app.get("/coro")
async def coro(x: str):
    return {"label": await logic.step(x)}


@app.get("/act")
async def act(gate: str):
    return await logic.in_activity(gate)


@app.get("/release")
async def release(gate: str):
    gates.release(gate)
    return {"released": gate}


@app.get("/waiting")
async def waiting():
    return {"waiting": gates.waiting()}


def main():
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(256)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    print("READY", sock.getsockname()[1], flush=True)
    asyncio.run(server.serve(sockets=[sock]))


if __name__ == "__main__":
    main()
