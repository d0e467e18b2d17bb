"""moto's S3 server with its buckets made before it is reported healthy.

The server keeps everything in memory: a new task starts with empty buckets, and a node
that finds no bucket works alone. So the buckets named in S3_BUCKETS (comma-separated) are
created through a first server on the loopback before the server on S3_PORT listens (both
serve the same memory): whoever can connect finds them. The HEALTHCHECK (`serve.py --check`)
passes while each of them answers.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import urllib.error
import urllib.request

PORT = int(os.environ.get("S3_PORT", "5000"))
BUCKETS = [name.strip() for name in os.environ.get("S3_BUCKETS", "pypicache").split(",")
           if name.strip()]


def ask(method: str, bucket: str, port: int = PORT) -> int:
    """The status of an unsigned request for `bucket` (moto checks no signature)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/{bucket}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=4) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def check() -> int:
    """0 when every bucket answers a HEAD with 200 (the HEALTHCHECK), else 1."""
    try:
        return 0 if all(ask("HEAD", bucket) == 200 for bucket in BUCKETS) else 1
    except OSError:
        return 1


def serve() -> None:
    from moto.server import ThreadedMotoServer

    private = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    private.start()
    for bucket in BUCKETS:
        status = ask("PUT", bucket, private.get_host_and_port()[1])
        if status != 200:
            sys.exit(f"moto: could not create bucket {bucket!r}: HTTP {status}")
    private.stop()
    server = ThreadedMotoServer(ip_address="0.0.0.0", port=PORT, verbose=False)
    server.start()
    print(f"moto: S3 on port {PORT}, buckets {', '.join(BUCKETS)}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop()


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        sys.exit(check())
    serve()
