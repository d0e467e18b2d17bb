"""The bodies of a cached page: each made from our document the first time a client asks for
it and kept beside it (pypicache/pagefiles.py), and the one a miss's client wanted made in the
background after that client has its answer.

A page miss is answered from the document in memory, uncompressed (a client that accepts
gzip also accepts identity, RFC 9110 12.5.3): compressing a page of thousands of files at once
cost that client more than the upstream took to send the page. Only the body it asked for is
then made in the background, for the clients that come next; every other body waits for its
first request, as before. The queue is bounded: past it the body is made by its first request.
"""
from __future__ import annotations

import dataclasses
import gzip
import logging
import os
import queue
import threading
from typing import BinaryIO, Callable

from . import provenance, render
from .errors import ProxyError
from .pagefiles import Body, Page, PageGone
from .pagemodel import Project
from .perprocess import Once

log = logging.getLogger(__name__)
GZIP_LEVEL = 1  # a tenth of level 6's time for a page 20 % larger; one level, so one ETag
BASES_KEPT = 8  # host names (link bases) a page version keeps bodies for; past it, made per request
ROOT = "_root"  # not a project name: those start with a letter or digit
LATER_KEPT = 64  # bodies waiting to be made in the background, per worker


class Bodies:
    def __init__(self, settings, cachedir, record_size: Callable[[str], None],
                 model: Callable[[Page], Project]):
        self.settings, self.cachedir = settings, cachedir
        self.record_size, self.model = record_size, model
        self._later: queue.Queue[tuple[Page, Body]] = queue.Queue(LATER_KEPT)
        self._start = Once(self._start_thread)

    def get(self, page: Page, want: Body) -> BinaryIO | bytes:
        """The body as a file when it is on disk; else made (one worker at a time per body),
        kept, and returned as bytes."""
        path = page.path(want)
        try:
            return open(path, "rb")
        except FileNotFoundError:
            if page.name == ROOT or want == Body():  # written by the refresh
                raise PageGone(page.name) from None
        with self.cachedir.lock(f"page-body:{path}", timeout=self.settings.read_timeout):
            try:
                return open(path, "rb")
            except FileNotFoundError:
                pass
            data = self._make(page, want)
            if want.base and self._bases(page) >= BASES_KEPT:
                return data  # a flood of made-up host names must not fill the disk
            try:
                self.cachedir.write_atomic(path, data)
                self.record_size(page.name)
            except ProxyError as error:  # the client still gets its page; the next makes it
                log.warning("could not keep a body of the page of %s: %s", page.name, error.message)
            return data

    def first(self, page: Page, want: Body) -> tuple[BinaryIO | bytes, Body]:
        """The body a miss's client gets, and which body it is: its JSON from the document in
        memory, uncompressed; the body it asked for is made in the background."""
        served = dataclasses.replace(want, compressed=False)
        if want.fmt == "json":
            data = served.linked(provenance.point(page.document, served, self.settings))
        else:
            data = self.get(page, served)
        if want != served:
            self.later(page, want)
        return data, served

    def later(self, page: Page, want: Body) -> None:
        """Make `want` in this worker's background thread (dropped when too many wait)."""
        self._start()
        try:  # the document is read again from disk there: the queue holds no page's bytes
            self._later.put_nowait((dataclasses.replace(page, document=None), want))
        except queue.Full:
            pass

    def _start_thread(self) -> None:
        threading.Thread(target=self._run, name="page bodies", daemon=True).start()

    def _run(self) -> None:
        while True:
            page, want = self._later.get()
            try:
                found = self.get(page, want)
                if not isinstance(found, bytes):
                    found.close()
            except PageGone:  # a newer version replaced it meanwhile: its clients make theirs
                pass
            except Exception:  # the thread must live on; the next request makes the body
                log.exception("could not make a body of the page of %s", page.name)

    def _make(self, page: Page, want: Body) -> bytes:
        if want.base or want.provenance:  # the relative body's links made absolute
            relative = Body(want.fmt)  # (see views/simple.py, provenance.py)
            found = page.document if relative == Body() else None
            if found is None:
                found = self.get(page, relative)
            if not isinstance(found, bytes):
                with found:
                    found = found.read()
            data = want.linked(provenance.point(found, want, self.settings))
        elif want.fmt == "json":
            data = page.document
            if data is None:
                try:
                    data = page.path(Body()).read_bytes()
                except FileNotFoundError:
                    raise PageGone(page.name) from None
        else:
            data = render.project_html(self.model(page)).encode()
        return gzip.compress(data, GZIP_LEVEL, mtime=0) if want.compressed else data

    def _bases(self, page: Page) -> int:
        """How many link bases the page's current version has bodies for."""
        stems = (name.split(".") for name in os.listdir(page.directory))
        return len({parts[1] for parts in stems if parts[0] == page.version
                    and len(parts) > 2 and parts[1] not in ("json", "html")})
