"""Dead letters: the messages ingest set aside as invalid, for operators to read, send
again or drop.

Each partition has a dead-letter stream (``st:{p3}:dead``, see :mod:`common.bus`).  An entry
keeps the stream the message came from, its entry id there, the reason, when, and the
payload: whole, unless the message was over ingest's size limit.

Sending one again appends its payload to its RSU's stream, where ingest validates it anew:
applied once the cause is fixed (a limit raised, the center upgraded to a newer schema),
dead-lettered again otherwise.  De-duplication keeps a message that was applied after all
from counting twice.  Sending again and dropping remove the entry and count the removal,
so that entries the stream's cap trimmed can be told apart, and reported.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import redis

from common.bus import PAYLOAD_FIELD, dead_letter_key, index_key, parse_stream, partition_tag

SCAN_CHUNK = 200

# KEYS: the dead-letter stream, the source stream, the removal counter, the partition's
# stream index; ARGV: the dead letter's entry id.  Atomic: the payload is on one of the
# two streams, never both or neither.
_REDRIVE = """
local entry = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #entry == 0 then return 0 end
local fields, payload = entry[1][2], nil
for i = 1, #fields, 2 do
  if fields[i] == 'm' then payload = fields[i + 1] end
end
redis.call('XADD', KEYS[2], '*', 'm', payload)
redis.call('SADD', KEYS[4], KEYS[2])
redis.call('XDEL', KEYS[1], ARGV[1])
redis.call('INCR', KEYS[3])
return 1
"""

_DROP = """
local n = redis.call('XDEL', KEYS[1], ARGV[1])
if n > 0 then redis.call('INCR', KEYS[2]) end
return n
"""


class DeadLetterError(ValueError):
    """A dead-letter id that is malformed, or names a partition that does not exist."""


@dataclass(frozen=True)
class DeadLetter:
    id: str  # "<partition>-<entry id in the dead-letter stream>", e.g. "3-1700000000000-0"
    source: str  # the RSU stream it was read from
    rsu_id: str | None  # that stream's RSU
    source_entry_id: str
    reason: str
    at_ms: int
    payload: bytes
    size: int  # of the message as it was sent
    truncated: bool  # only the first part of an oversized message was kept
    has_payload: bool  # False: the entry had no payload field at all

    @property
    def resendable(self) -> str | None:
        """Why it cannot be sent again, or None when it can."""
        if not self.has_payload:
            return "the entry had no payload"
        if self.truncated:
            return f"only the first {len(self.payload)} of its {self.size} bytes were kept"
        return None


@dataclass(frozen=True)
class Scan:
    items: list[DeadLetter]  # matching ones, newest first
    scanned: int
    complete: bool  # every dead letter was looked at


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


class DeadLetters:
    def __init__(self, client: redis.Redis, partitions: int) -> None:
        self.client = client
        self.partitions = partitions
        self._redrive = client.register_script(_REDRIVE)
        self._drop = client.register_script(_DROP)

    @staticmethod
    def _removed_key(partition: int) -> str:
        return f"cb:dead-removed:{partition_tag(partition)}"

    def count(self) -> int:
        pipe = self.client.pipeline(transaction=False)
        for p in range(self.partitions):
            pipe.xlen(dead_letter_key(p))
        return sum(pipe.execute())

    def trimmed(self) -> int:
        """Dead letters the stream's cap removed (neither sent again nor dropped)."""
        pipe = self.client.pipeline(transaction=False)
        for p in range(self.partitions):
            pipe.xinfo_stream(dead_letter_key(p))
            pipe.get(self._removed_key(p))
        replies = pipe.execute(raise_on_error=False)
        total = 0
        for info, removed in zip(replies[::2], replies[1::2], strict=True):
            if isinstance(info, Exception):
                continue  # no dead letters in that partition yet
            total += info["entries-added"] - info["length"] - int(removed or 0)
        return total

    def scan(
        self, rsu_id: str | None = None, reason: str | None = None, most: int = 10_000
    ) -> Scan:
        """The dead letters of ``rsu_id`` whose reason holds ``reason`` (case-insensitive),
        newest first, looking at ``most`` of them at most (they can be large)."""
        needle = reason.lower() if reason else None
        found, scanned, complete = [], 0, True
        for letter in self._newest_first():
            if scanned >= most:
                complete = False
                break
            scanned += 1
            if rsu_id is not None and letter.rsu_id != rsu_id:
                continue
            if needle is not None and needle not in letter.reason.lower():
                continue
            found.append(letter)
        found.sort(key=lambda d: _order(d.id), reverse=True)
        return Scan(found, scanned, complete)

    def _newest_first(self) -> Iterator[DeadLetter]:
        """Every partition's dead letters, newest first within each, partitions in turn."""
        cursors: dict[int, str] = {p: "+" for p in range(self.partitions)}
        while cursors:
            for p in list(cursors):
                entries = self.client.xrevrange(
                    dead_letter_key(p), max=cursors[p], min="-", count=SCAN_CHUNK
                )
                for entry_id, fields in entries:
                    yield _parse(p, _text(entry_id), fields)
                if len(entries) < SCAN_CHUNK:
                    del cursors[p]
                else:
                    cursors[p] = "(" + _text(entries[-1][0])

    def get(self, letter_id: str) -> DeadLetter | None:
        partition, entry_id = self._split(letter_id)
        entries = self.client.xrange(dead_letter_key(partition), entry_id, entry_id)
        return _parse(partition, entry_id, entries[0][1]) if entries else None

    def resend(self, letter: DeadLetter) -> bool:
        """Append the payload to its RSU's stream again and remove the dead letter; False
        when it is gone already (someone else sent or dropped it)."""
        why_not = letter.resendable
        if why_not:
            raise DeadLetterError(f"dead letter {letter.id} cannot be sent again: {why_not}")
        partition, entry_id = self._split(letter.id)
        parsed = parse_stream(letter.source)
        if parsed is None or parsed[0] != partition:
            raise DeadLetterError(
                f"dead letter {letter.id} came from {letter.source!r}, not an RSU stream of "
                f"partition {partition}; it cannot be sent again"
            )
        keys = [
            dead_letter_key(partition),
            letter.source,
            self._removed_key(partition),
            index_key(partition),
        ]
        return bool(self._redrive(keys=keys, args=[entry_id]))

    def drop(self, letter_id: str) -> bool:
        partition, entry_id = self._split(letter_id)
        keys = [dead_letter_key(partition), self._removed_key(partition)]
        return bool(self._drop(keys=keys, args=[entry_id]))

    def _split(self, letter_id: str) -> tuple[int, str]:
        partition, _, entry_id = letter_id.partition("-")
        if not (partition.isdigit() and _is_entry_id(entry_id)):
            raise DeadLetterError(
                f"{letter_id!r} is not a dead-letter id "
                "(<partition>-<ms>-<n>, e.g. 3-1700000000000-0)"
            )
        if int(partition) >= self.partitions:
            raise DeadLetterError(
                f"dead letter {letter_id!r}: there is no partition {partition} "
                f"(bus.partitions is {self.partitions})"
            )
        return int(partition), entry_id


def _is_entry_id(text: str) -> bool:
    ms, _, n = text.partition("-")
    return ms.isdigit() and n.isdigit() and len(ms) <= 20 and len(n) <= 20


def _order(letter_id: str) -> tuple[int, int]:
    _, _, entry_id = letter_id.partition("-")
    ms, _, n = entry_id.partition("-")
    return int(ms), int(n)


def _parse(partition: int, entry_id: str, raw: dict) -> DeadLetter:
    fields = {_text(k): v for k, v in raw.items()}
    source = _text(fields.get("source", b""))
    parsed = parse_stream(source)
    payload = fields.get(_text(PAYLOAD_FIELD), b"")
    payload = payload if isinstance(payload, bytes) else payload.encode()
    truncated = fields.get("truncated")
    return DeadLetter(
        id=f"{partition}-{entry_id}",
        source=source,
        rsu_id=parsed[1] if parsed else None,
        source_entry_id=_text(fields.get("entry_id", b"")),
        reason=_text(fields.get("reason", b"")),
        at_ms=int(_text(fields.get("at_ms", b"0")) or 0),
        payload=payload,
        size=int(_text(truncated)) if truncated else len(payload),
        truncated=truncated is not None,
        has_payload="no_payload" not in fields,
    )
