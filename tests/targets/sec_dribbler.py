"""A hostile "agent" for the CLI's tests: listens on its own socket path
(<runtime dir>/dynupdate-<uid>/<pid>.sock, so the peer pid matches).

Default mode: answers every connection with a frame header announcing 1000
bytes, then one byte every 0.2 s, forever. With `--junk` as first argument:
answers hello correctly (protocol 1) but with escape sequences and markup in
every string, and status with malformed parts (wrong types everywhere).
The rest of argv carries terminal escape sequences and rich markup.
"""
import os
import socket
import struct
import sys
import threading
import time


def dribble(conn):
    try:
        conn.sendall(struct.pack(">I", 1000))
        while True:
            conn.sendall(b"\x81")
            time.sleep(0.2)
    except OSError:
        pass
    finally:
        conn.close()


EVIL = "\x1b]0;pwned\x07\x1b[31m[/]\u202e"
HELLO = {"ok": True, "protocol_version": 1, "agent_version": EVIL, "python": EVIL, "socket": EVIL,
         "pid": 0, "signed_bundles_required": False}
STATUS = {"ok": True, "pid": EVIL, "version": EVIL, "generation": [EVIL], "history": [1, EVIL, {"name": 5}],
          "threads": EVIL, "factories": [None, {"class": EVIL, "instances": EVIL}], "agent": [EVIL]}


def junk(conn):
    import msgpack

    try:
        while True:
            header = conn.recv(4, socket.MSG_WAITALL)
            if len(header) < 4:
                return
            (n,) = struct.unpack(">I", header)
            request = msgpack.unpackb(conn.recv(n, socket.MSG_WAITALL), raw=False)
            reply = dict(STATUS if request.get("type") == "status" else HELLO, id=request.get("id"))
            reply["pid"] = os.getpid() if request.get("type") == "hello" else reply["pid"]
            payload = msgpack.packb(reply, use_bin_type=True)
            conn.sendall(struct.pack(">I", len(payload)) + payload)
    except OSError:
        pass
    finally:
        conn.close()


def main():
    base = os.environ.get("DYNUPDATE_RUNTIME_DIR") or "/tmp"
    folder = os.path.join(base, f"dynupdate-{os.getuid()}")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    path = os.path.join(folder, f"{os.getpid()}.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(64)
    print("READY", flush=True)
    while True:
        conn, _ = server.accept()
        handler = junk if sys.argv[1:2] == ["--junk"] else dribble
        threading.Thread(target=handler, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
