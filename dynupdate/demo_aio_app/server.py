"""The `dynupdate demo --async` service: a tiny asyncio HTTP server (standard library only).

GET /order?dish=D&seconds=S cooks a dish in `kitchen.cook` (a coroutine that is
suspended in `await asyncio.sleep(S)` between two recipe lookups); /ping touches
no updated code; /version reports the running version. Prints `READY <port>`.
"""
import asyncio
import json
import os
import sys
from urllib.parse import parse_qsl

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import kitchen  # noqa: E402

try:
    from dynupdate_agent import current_version
except ImportError:  # started without the agent
    def current_version():
        return "base"


async def route(path):
    name, _, query = path.partition("?")
    params = dict(parse_qsl(query))
    if name == "/ping":
        return 200, {"pong": True}
    if name == "/version":
        return 200, {"version": current_version()}
    if name == "/order":
        return 200, await kitchen.cook(params.get("dish", "soup"), float(params.get("seconds", "1.5")))
    return 404, {"error": f"no route {name}"}


async def handle(reader, writer):
    try:
        while True:
            request = await reader.readline()
            if not request:
                break
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            try:
                status, body = await route(request.split()[1].decode())
            except Exception as exc:  # shown to the client: the demo checks for it
                status, body = 500, {"error": f"{type(exc).__name__}: {exc}"}
            data = json.dumps(body).encode()
            writer.write(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                         % (status, len(data), data))
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print("READY", server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
