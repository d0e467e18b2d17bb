"""moto's S3 server as a real process on 127.0.0.1, and the environment boto3 reads to reach it."""
from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from .servers import free_port, stop_group


class MotoS3:
    """`moto_server` (moto[server] from PyPI) in its own process group, with one bucket."""

    def __init__(self, log_dir: Path, bucket: str = "pypicache"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.bucket = bucket
        self.log = log_dir / f"moto-{self.port}.log"
        self.process: subprocess.Popen | None = None

    def env(self) -> dict[str, str]:
        """What boto3 reads, pointed at this server; no configuration file of this machine."""
        return {
            "AWS_ENDPOINT_URL": self.url, "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }

    def start(self) -> "MotoS3":
        moto = Path(sys.executable).with_name("moto_server")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [str(moto), "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                requests.put(f"{self.url}/{self.bucket}", timeout=2).raise_for_status()
                return self
            except (requests.ConnectionError, requests.Timeout):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto_server did not start: {self.log.read_text()[-2000:]}")

    def client(self):
        import boto3

        env = self.env()
        return boto3.session.Session(
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1",
        ).client("s3", endpoint_url=self.url)

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix)
        return sorted(entry["Key"] for page in pages for entry in page.get("Contents", []))

    def stop(self) -> None:
        stop_group(self.process, timeout=5)


class ConditionsDropped:
    """A relay in front of a real S3 server that drops If-None-Match and If-Match from every
    request, as a store that ignores conditional writes behaves (moto honours them; some
    S3-compatible stores and gateways do not). moto checks no signature, so the relayed
    requests are still accepted."""

    DROPPED = {"if-none-match", "if-match"}

    def __init__(self, target: str):
        self.target = target
        relay = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in relay.DROPPED | {"host", "content-length"}}
                answer = requests.request(self.command, relay.target + self.path, data=body,
                                          headers=headers, timeout=30)
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(answer.content)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
