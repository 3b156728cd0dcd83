"""Target for the agent's resource bounds, runnable by any interpreter and any uid.

`python sec_threads.py AGENT_DIR MSGPACK_DIR [nproc=N | nofile=N]`: loads the agent from AGENT_DIR
through its bootstrap (as `dynupdate run` and injection do), starts it, prints
`READY <pid>`, then idles. Nothing else runs in it, so every thread beyond the
main one and the agent's accept thread is a connection thread of the agent.
With nproc=N, RLIMIT_NPROC is set to N once the agent runs (a thread limit for
this uid: run it as a uid of its own); with nofile=N, RLIMIT_NOFILE is set to
the number of descriptors open then plus N.
"""
import os
import sys
import time


def main():
    agent_dir, msgpack_dir = sys.argv[1], sys.argv[2]
    path = os.path.join(agent_dir, "bootstrap.py")
    with open(path) as fh:
        code = compile(fh.read(), path, "exec")
    namespace = {"__name__": "__dynupdate_test__", "__file__": path}
    exec(code, namespace)
    if namespace["run"](msgpack_dir) is None:
        print("AGENT FAILED", flush=True)
        return 1
    if len(sys.argv) > 3:
        import resource

        kind, _, value = sys.argv[3].partition("=")
        if kind == "nproc":
            resource.setrlimit(resource.RLIMIT_NPROC, (int(value), int(value)))
        else:
            limit = len(os.listdir("/proc/self/fd")) + int(value)
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    print(f"READY {os.getpid()}", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
