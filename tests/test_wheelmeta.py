"""Core metadata read out of wheels by byte ranges (app/wheelmeta.py), on the suite's wheels
and unusual ones, against what zipfile reads."""
import io
import struct
import zipfile

import pytest

from app import wheelmeta
from app.wheelmeta import BadWheel, core_metadata

from .wheels import make_wheel, metadata_from_wheel, wheel_metadata_text


class Bytes:
    """A wheelmeta.Source over bytes in memory that records what was read."""

    def __init__(self, data: bytes):
        self.data, self.size, self.reads = data, len(data), []

    def read(self, offset, length):
        self.reads.append((offset, length))
        return self.data[offset:offset + length]


KINDS = {
    "plain": {},
    "requirements": {"requires": ["beta>=1", "gamma; python_version>'3'"],
                     "requires_python": ">=3.8"},
    "stored": {"stored_metadata": True},
    "data directory": {"data_dir": True},
    "other case": {"info_name": "Odd_Name"},
    "other punctuation": {"info_name": "odd.name"},
    "zip64": {"zip64": True},
    "zip64, data and comment": {"zip64": True, "data_dir": True, "comment": b"c" * 300},
    "appended to a stub": {"prefix": b"#!/bin/sh\n" * 30},
    "comment": {"comment": b"built by a tool that signs its archives"},
    "big": {"payload": 3 << 20},
}


@pytest.mark.parametrize("kind", KINDS)
def test_extracted_metadata_is_the_wheels_own_bytes(kind):
    filename, data = make_wheel("Odd-Name", "1.0", **KINDS[kind])
    source = Bytes(data)
    assert core_metadata(source, filename) == metadata_from_wheel(data)
    # Only the tail and the member are read, not the wheel's body.
    assert sum(length for _, length in source.reads) <= wheelmeta.TAIL + 4096


def test_a_long_comment_costs_a_second_read_from_the_end():
    filename, data = make_wheel("demo", "1.0", comment=b"c" * 40_000)
    source = Bytes(data)
    assert core_metadata(source, filename) == wheel_metadata_text("demo", "1.0")
    assert source.reads[:2] == [(len(data) - wheelmeta.TAIL, wheelmeta.TAIL), (0, len(data))]


def test_a_comment_that_holds_an_end_record_signature():
    """zipfile itself gives up on this one; the end record is the one the comment ends."""
    filename, data = make_wheel("demo", "1.0", comment=b"PK\x05\x06 looks like an end record")
    assert core_metadata(Bytes(data), filename) == wheel_metadata_text("demo", "1.0")


def test_zip64_records_are_what_is_read():
    filename, data = make_wheel("odd-name", "1.0", zip64=True)
    assert b"PK\x06\x06" in data and b"PK\x06\x07" in data
    with zipfile.ZipFile(io.BytesIO(data)) as zf:  # offsets past the (lowered) limit: extras
        assert any(info.extra[:2] == b"\x01\x00" for info in zf.infolist())
    assert core_metadata(Bytes(data), filename) == metadata_from_wheel(data)


def test_bytes_prepended_after_the_zip_was_made():
    """Offsets inside the zip then count from its own start (zipfile's 'concat')."""
    filename, data = make_wheel("odd-name", "1.0", data_dir=True)
    shifted = b"\x7fELF stub" * 100 + data
    assert core_metadata(Bytes(shifted), filename) == metadata_from_wheel(data)


def test_a_big_directory_is_read_in_one_range():
    filename, data = make_wheel("many", "1.0", payload=1 << 20)
    buf = io.BytesIO(data)
    with zipfile.ZipFile(buf, "a") as zf:  # directory entries past the tail's 64 KiB
        for index in range(2000):
            zf.writestr(f"many/module_with_a_long_name_{index:05d}.py", b"")
    data = buf.getvalue()
    source = Bytes(data)
    assert core_metadata(source, filename) == metadata_from_wheel(data)
    assert len(source.reads) == 3  # tail, directory, member


def _flip(data: bytes, needle: bytes) -> bytes:
    at = data.index(needle)
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]


@pytest.mark.parametrize("damage", ["truncated", "not a zip", "metadata corrupt",
                                    "directory corrupt", "no dist-info", "wrong project"])
def test_damaged_wheels_are_refused(damage):
    filename, data = make_wheel("demo", "1.0", stored_metadata=True)
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "not a zip":
        data = b"<html>not found</html>" * 10
    elif damage == "metadata corrupt":
        data = _flip(data, b"Summary: fixture")
    elif damage == "directory corrupt":
        data = _flip(data, b"PK\x01\x02")
    elif damage == "no dist-info":
        filename, data = make_wheel("demo", "1.0", info_name="demo-1.0.data/x")
    elif damage == "wrong project":
        filename = "other-1.0-py3-none-any.whl"
    with pytest.raises(BadWheel) as raised:
        core_metadata(Bytes(data), filename)
    assert raised.value.status == 502


def test_deflated_metadata_corrupt():
    filename, data = make_wheel("demo", "1.0", requires=["x" * 200] * 20)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        info = zf.getinfo("demo-1.0.dist-info/METADATA")
    start = info.header_offset + 30 + len(info.filename)
    body = data[start + 5:start + 6]
    data = data[:start + 5] + bytes([body[0] ^ 0x55]) + data[start + 6:]
    with pytest.raises(BadWheel):
        core_metadata(Bytes(data), filename)


def test_an_end_record_pointing_outside_the_file():
    filename, data = make_wheel("demo", "1.0")
    end = data.rindex(b"PK\x05\x06")
    data = data[:end + 16] + struct.pack("<L", 10 ** 9) + data[end + 20:]
    with pytest.raises(BadWheel):
        core_metadata(Bytes(data), filename)
