"""The asyncio test service on aiohttp; prints `READY <port>` once listening.

Same endpoints as fastapi_server.py; aiohttp has no threadpool endpoints, so
/block and /executor both hand the work to run_in_executor.
"""
import asyncio
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aiohttp import web  # noqa: E402

from aioshop import gates, logic  # noqa: E402

routes = web.RouteTableDef()


def _json(data):
    return web.json_response(data)


@routes.get("/ping")
async def ping(request):
    return _json({"pong": True})


@routes.get("/slow")
async def slow(request):
    return _json(await logic.slow(request.query["gate"]))


@routes.get("/block")
@routes.get("/executor")
async def executor(request):
    loop = asyncio.get_running_loop()
    return _json(await loop.run_in_executor(None, logic.blocking, request.query["gate"]))


@routes.get("/sync")
async def sync(request):
    return _json({"label": logic.label(request.query["x"])})


@routes.get("/coro")
async def coro(request):
    return _json({"label": await logic.step(request.query["x"])})


@routes.get("/act")
async def act(request):
    return _json(await logic.in_activity(request.query["gate"]))


@routes.get("/release")
async def release(request):
    gates.release(request.query["gate"])
    return _json({"released": request.query["gate"]})


@routes.get("/waiting")
async def waiting(request):
    return _json({"waiting": gates.waiting()})


async def serve():
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(256)
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    print("READY", sock.getsockname()[1], flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(serve())
