"""A hostile "agent" for `dynupdate ps` tests: listens on its own socket path
(<runtime dir>/dynupdate-<uid>/<pid>.sock, so the peer pid matches) and answers
every connection with a frame header announcing 1000 bytes, then one byte every
0.2 s, forever. argv carries terminal escape sequences and rich markup.
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
        threading.Thread(target=dribble, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
