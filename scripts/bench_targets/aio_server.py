"""asyncio target for scripts/bench_asyncio.py: uvicorn + Starlette, started with `dynupdate run`.

argv: MODULE_DIR N. Creates N `aiobench.Session` instances, then serves
/ping (touches no updated code), /session?i=K (touches an updated class: lazy
transfers happen here, on the loop thread), /slow (awaits
aiobench.slow(): a coroutine of the updated module, suspended until /release).
Prints `READY PORT`.
"""
import asyncio
import socket
import sys

from _common import say, setup_path

setup_path()
import uvicorn  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

import aiobench  # noqa: E402

aiobench.make(int(sys.argv[2]))
GATE = {}


async def ping(request):
    return JSONResponse({"pong": True})


async def session(request):
    return JSONResponse({"hits": aiobench.SESSIONS[int(request.query_params["i"])].touch()})


async def slow(request):
    GATE["event"] = asyncio.Event()
    return JSONResponse({"version": await aiobench.slow(GATE["event"])})


async def release(request):
    GATE.pop("event").set()
    return JSONResponse({"released": True})


app = Starlette(routes=[Route("/ping", ping), Route("/session", session), Route("/slow", slow),
                        Route("/release", release)])
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by accepted sockets on Linux
sock.bind(("127.0.0.1", 0))
sock.listen(256)
server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
say("READY", sock.getsockname()[1])
asyncio.run(server.serve(sockets=[sock]))
