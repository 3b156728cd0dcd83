"""Injection target: the main thread serves TCP in socket.accept(), one line per connection.

Replies PREFIX + line; the line `names` answers the sorted names of __main__,
`quit` makes it exit 0. Prints `ready PORT`.
"""
import socket

PREFIX = "echo:"
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(8)
print("ready", srv.getsockname()[1], flush=True)
while True:
    conn, _ = srv.accept()
    with conn:
        line = conn.makefile("r").readline().strip()
        if line == "names":
            conn.sendall((" ".join(sorted(globals())) + "\n").encode())
        elif line == "quit":
            conn.sendall(b"bye\n")
            break
        else:
            conn.sendall((PREFIX + line + "\n").encode())
