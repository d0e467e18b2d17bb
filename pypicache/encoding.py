"""The Content-Encoding of upstream index pages undone as the bytes arrive, within a size limit."""
from __future__ import annotations

import zlib
from typing import Iterable, Iterator

from .errors import UpstreamError

# What we ask for and can undo with the standard library. Brotli and zstd would need
# packages we do not install, and requests only advertises what it can decode itself.
ACCEPT_ENCODING = "gzip, deflate"
_GZIP = {"gzip", "x-gzip"}


def decode(chunks: Iterable[bytes], coding: str | None, limit: int, step: int) -> Iterator[bytes]:
    """The decoded bytes of `chunks`, at most `step` bytes per item.

    Raises UpstreamError once more than `limit` decoded bytes came (a compression bomb stops
    there, holding about `step` bytes of output at a time), on a corrupt or truncated stream,
    and on an encoding we did not ask for.
    """
    codings = [c.strip().lower() for c in (coding or "").split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        decoded = iter(chunks)
    elif len(codings) == 1 and codings[0] in _GZIP | {"deflate"}:
        decoded = _inflate(chunks, gzip=codings[0] in _GZIP, step=step)
    else:
        raise UpstreamError(f"upstream sent a page in an encoding we did not ask for: {coding}")
    total = 0
    for chunk in decoded:
        total += len(chunk)
        if total > limit:
            raise UpstreamError(f"upstream page is larger than {limit} bytes once decoded")
        yield chunk


def _inflate(chunks: Iterable[bytes], gzip: bool, step: int) -> Iterator[bytes]:
    inflater = None
    for data in chunks:
        while data:
            if inflater is None or (inflater.eof and gzip):  # gzip allows several members
                inflater = zlib.decompressobj(_wbits(gzip, data))
            elif inflater.eof:
                raise UpstreamError("upstream sent bytes after the end of a deflate stream")
            try:
                out = inflater.decompress(data, step)
                # max_length leaves the rest of the input in unconsumed_tail; a full `out`
                # may also mean zlib holds more output for the same input.
                while len(out) == step and not inflater.eof:
                    yield out
                    out = inflater.decompress(inflater.unconsumed_tail, step)
                if out:
                    yield out
            except zlib.error as error:
                raise UpstreamError(f"upstream sent a corrupt compressed page: {error}") from error
            data = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
    if inflater is None or not inflater.eof:
        raise UpstreamError("upstream sent a truncated compressed page")


def _wbits(gzip: bool, first: bytes) -> int:
    if gzip:
        return 16 + zlib.MAX_WBITS
    # "deflate" is zlib-wrapped (RFC 9110 8.4.1.2), but some servers send raw deflate. A zlib
    # header's low nibble is 8; a raw stream's first block header never makes that nibble 8.
    return zlib.MAX_WBITS if first[0] & 0x0F == 8 else -zlib.MAX_WBITS
