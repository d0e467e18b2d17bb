"""Core metadata read out of wheels by random reads (pypicache/wheelmeta.py), on the suite's wheels,
unusual ones and damaged ones, against what zipfile reads of the sound wheel."""
import io
import os
import struct
import zipfile

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pypicache import wheelmeta
from pypicache.errors import UpstreamError
from pypicache.wheelmeta import BadWheel, core_metadata

from .wheels import (
    central_entry, local_header_at, make_wheel, metadata_from_wheel, short_zip64_extra,
    wheel_metadata_text,
)


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


def test_a_small_wheel_costs_one_read():
    filename, data = make_wheel("demo", "1.0")
    source = Bytes(data)
    assert core_metadata(source, filename) == metadata_from_wheel(data)
    assert source.reads == [(0, len(data))]


def test_a_long_comment_costs_a_second_read_of_what_the_tail_lacks():
    """zipfile looks for the end record in the last 64 KiB when the archive has a comment; only
    the part before the tail already read is asked for."""
    filename, data = make_wheel("demo", "1.0", comment=b"c" * 40_000)
    source = Bytes(data)
    assert core_metadata(source, filename) == wheel_metadata_text("demo", "1.0")
    tail = len(data) - wheelmeta.TAIL
    assert source.reads == [(tail, wheelmeta.TAIL), (0, tail)]


def test_a_comment_that_holds_an_end_record_signature_is_refused_as_pip_refuses_it():
    """zipfile takes the last signature for the end record, so pip cannot read this wheel
    either: a 502, as for any zip it cannot read."""
    filename, data = make_wheel("demo", "1.0", comment=b"PK\x05\x06 looks like an end record")
    with pytest.raises(BadWheel):
        core_metadata(Bytes(data), filename)


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


def many_files(comment: bytes = b"") -> tuple[str, bytes]:
    """A wheel whose directory and METADATA lie before its last 16 KiB."""
    filename, data = make_wheel("many", "1.0", payload=1 << 20)
    buf = io.BytesIO(data)
    with zipfile.ZipFile(buf, "a") as zf:
        for index in range(2000):
            zf.writestr(f"many/module_with_a_long_name_{index:05d}.py", b"")
        zf.comment = comment
    return filename, buf.getvalue()


def test_a_big_directory_is_read_in_one_range():
    filename, data = many_files()
    source = Bytes(data)
    assert core_metadata(source, filename) == metadata_from_wheel(data)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        member = zf.getinfo("many-1.0.dist-info/METADATA")
        directory = len(data) - 22 - zf.start_dir
    tail, rest = source.reads[0], source.reads[1:]
    assert tail == (len(data) - wheelmeta.TAIL, wheelmeta.TAIL)
    assert len(rest) == 2  # the directory before the tail, then the member with its header
    assert rest[0] == (zf.start_dir, tail[0] - zf.start_dir)
    assert rest[1][0] == member.header_offset
    assert sum(length for _, length in source.reads) <= (
        wheelmeta.TAIL + directory + 30 + len(member.filename) + 1024 + member.compress_size)


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


# --- malformed records: BadWheel (a 502), never another exception --------------------------
METADATA = "demo-1.0.dist-info/METADATA"


@pytest.mark.parametrize("damage", ["short zip64 extra field", "local header past the end",
                                    "local header inside the directory", "local header before 0"])
def test_a_malformed_record_is_a_bad_wheel(damage):
    if damage == "short zip64 extra field":
        filename, data = make_wheel("demo", "1.0", zip64=True)
        data = short_zip64_extra(data, METADATA)
    else:
        filename, data = make_wheel("demo", "1.0", prefix=b"stub" * 4)
        offset = {"local header past the end": len(data) - 10,
                  "local header inside the directory": central_entry(data, METADATA) - 16,
                  "local header before 0": 0}[damage]
        data = local_header_at(data, METADATA, offset)  # 0: before the zip's own start
    with pytest.raises(BadWheel):
        core_metadata(Bytes(data), filename)


def test_metadata_or_directory_past_their_limits_are_not_read():
    filename, data = make_wheel("demo", "1.0")
    entry = central_entry(data, METADATA)
    claimed = data[:entry + 24] + struct.pack("<L", wheelmeta.MAX_METADATA + 1) + data[entry + 28:]
    source = Bytes(claimed)
    with pytest.raises(BadWheel, match="METADATA of"):
        core_metadata(source, filename)
    assert source.reads == [(0, len(data))]

    class Sparse(Bytes):
        """A file of 100 MiB whose end record claims a directory of 65 MiB."""

        def __init__(self):
            end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, 65 << 20, 10 << 20, 0)
            self.size, self.reads, self.end = 100 << 20, [], end

        def read(self, offset, length):
            self.reads.append((offset, length))
            tail = self.size - len(self.end)
            return bytes(max(0, min(length, tail - offset))) + self.end[max(0, offset - tail):]

    sparse = Sparse()
    with pytest.raises(BadWheel, match="zip record of"):
        core_metadata(sparse, filename)
    assert sum(length for _, length in sparse.reads) == wheelmeta.TAIL


def test_a_fault_of_the_source_stays_that_fault():
    """zipfile turns an OSError of its file into BadZipFile: a bucket or upstream that fails
    mid-read is not a bad wheel."""
    filename, data = many_files()

    class Failing(Bytes):
        def __init__(self, data, error):
            super().__init__(data)
            self.error = error

        def read(self, offset, length):
            if self.reads:
                raise self.error
            return super().read(offset, length)

    for error in (FileNotFoundError("the object went"), UpstreamError("upstream reset")):
        with pytest.raises(type(error)):
            core_metadata(Failing(data, error), filename)
    padded = many_files(comment=b"c" * 30_000)[1]
    with pytest.raises(FileNotFoundError):  # in zipfile's search for the end record
        core_metadata(Failing(padded, FileNotFoundError("gone")), filename)


# --- property: whatever the damage, BadWheel or the wheel's own METADATA -------------------
SOUND = [make_wheel("demo", "1.0", **kinds) for kinds in (
    {}, {"zip64": True, "data_dir": True}, {"stored_metadata": True, "comment": b"c" * 30},
    {"prefix": b"#!/bin/sh\n" * 4, "requires": ["beta>=1"]})]


def _end_records(data: bytearray, grown: int) -> None:
    """Keep the directory's size in the end records (APPNOTE 4.3.14, 4.3.16) coherent."""
    end = data.rfind(b"PK\x05\x06")
    if end >= 0 and end + 16 <= len(data):
        size = struct.unpack_from("<L", data, end + 12)[0]
        struct.pack_into("<L", data, end + 12, (size + grown) & 0xFFFFFFFF)
    end64 = data.rfind(b"PK\x06\x06")
    if end64 >= 0 and end64 + 48 <= len(data):
        size = struct.unpack_from("<Q", data, end64 + 40)[0]
        struct.pack_into("<Q", data, end64 + 40, (size + grown) & (2 ** 64 - 1))


# An extra field to add: random bytes, or a record that says it is ZIP64's (4.5.3).
extras = st.one_of(
    st.binary(min_size=1, max_size=64),
    st.builds(lambda length, rest: struct.pack("<2H", 1, length) + rest,
              st.integers(0, 64), st.binary(max_size=32)))


@st.composite
def damaged(draw):
    filename, sound = draw(st.sampled_from(SOUND))
    data = bytearray(sound)
    for kind in draw(st.lists(st.sampled_from(["flip", "truncate", "grow extra", "claim extra"]),
                              min_size=1, max_size=4)):
        if kind == "flip" and data:
            data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
        elif kind == "truncate":
            del data[draw(st.integers(0, len(data))):]
        elif kind in ("grow extra", "claim extra"):
            entries = [at for at in range(len(data) - 46) if data[at:at + 4] == b"PK\x01\x02"]
            if not entries:
                continue
            entry = draw(st.sampled_from(entries))
            name_length, extra_length = struct.unpack_from("<2H", data, entry + 28)
            if kind == "grow extra":  # real bytes, the directory's sizes kept coherent
                added = draw(extras)
                data[entry + 46 + name_length:entry + 46 + name_length] = added
                _end_records(data, len(added))
                more = len(added)
            else:  # a longer extra field claimed than written
                more = draw(st.integers(1, 256))
            struct.pack_into("<H", data, entry + 30, min(0xFFFF, extra_length + more))
    return filename, sound, bytes(data)


@given(damaged())
@settings(max_examples=int(os.environ.get("PYPICACHE_FUZZ_EXAMPLES", 600)), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
def test_whatever_the_damage_only_bad_wheel_or_the_right_bytes(case):
    filename, sound, data = case
    try:
        extracted = core_metadata(Bytes(data), filename)
    except BadWheel:
        return
    assert extracted == metadata_from_wheel(sound)
