"""A fresh redis-server under `valgrind --tool=callgrind` on a free loopback port, for the
scripts that count the instructions Redis spends (redis-admit-instructions.py,
redis-settle-instructions.py).

    with counted_redis() as (r, total):
        ...                      # r: a redis.Redis client of the server
    total()                      # instructions the server ran, once it has shut down
"""
import contextlib
import re
import socket
import subprocess
import tempfile
import time

import redis


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@contextlib.contextmanager
def counted_redis():
    """Starts the server, yields a client and a function that returns the instruction count
    (valid after the block); shuts the server down at the end of the block."""
    port = free_port()
    count = {}
    with tempfile.NamedTemporaryFile(suffix=".callgrind") as out:
        proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out.name}",
             "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--hz", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            r = redis.Redis(port=port)
            for _ in range(300):
                try:
                    r.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.1)
            yield r, lambda: count["total"]
            r.shutdown(nosave=True)
            err = proc.communicate(timeout=120)[1].decode()
        finally:
            if proc.poll() is None:
                proc.kill()
        found = re.search(r"Collected : (\d+)", err)
        if not found:
            raise SystemExit(f"no instruction count from callgrind:\n{err[-2000:]}")
        count["total"] = int(found.group(1))
