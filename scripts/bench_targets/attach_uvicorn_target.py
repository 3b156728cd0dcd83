"""Attach-stall target on asyncio: uvicorn serving a tiny ASGI app (no agent). Prints READY PORT.

Every request is served by the main thread's event loop, so the injection's call in
that thread is on the request path: the measure of issue #14 for uvicorn-like servers.
"""
import socket

import uvicorn


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", 0))
print("READY", sock.getsockname()[1], flush=True)
uvicorn.Server(uvicorn.Config(app, fd=sock.fileno(), log_level="warning", lifespan="off")).run()
