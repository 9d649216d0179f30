"""``citybrain dead-letters list|show|resend|drop``: the operator's view of the messages
ingest set aside (see :mod:`citybrain.dead_letters`)."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from citybrain.dead_letters import DeadLetter, DeadLetterError, DeadLetters


def add_parser(sub: argparse._SubParsersAction, common) -> None:  # type: ignore[type-arg]
    letters = sub.add_parser(
        "dead-letters", help="messages ingest set aside as invalid: list, show, resend, drop"
    )
    actions = letters.add_subparsers(dest="action", required=True)

    def filters(p: argparse.ArgumentParser) -> None:
        p.add_argument("--rsu", help="only those from this RSU")
        p.add_argument("--reason", help="only those whose reason holds this text")
        p.add_argument("--scan", type=int, default=100_000, help="look at this many at most")

    listing = actions.add_parser("list", help="newest first, one line each")
    filters(listing)
    listing.add_argument("--limit", type=int, default=20, help="show this many (default 20)")
    show = actions.add_parser("show", help="one dead letter with its payload")
    show.add_argument("id", help="<partition>-<entry id>, as list prints it")
    resend = actions.add_parser(
        "resend",
        help="send through ingest again (after fixing the cause); applied once, or "
        "dead-lettered again",
    )
    drop = actions.add_parser("drop", help="delete for good")
    for p in (resend, drop):
        p.add_argument("ids", nargs="*", help="dead-letter ids")
        p.add_argument("--all", action="store_true", help="every one matching the filters")
        filters(p)
    drop.add_argument("--yes", action="store_true", help="needed with --all")
    resend.add_argument("--dry-run", action="store_true", help="say what would be sent")
    for p in (listing, show, resend, drop):
        common(p)
    letters.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from citybrain.cli import _config
    from common.bus import connect

    config = _config(args)
    letters = DeadLetters(connect(config.bus.redis_url, config.bus.cluster), config.bus.partitions)
    try:
        return {"list": _list, "show": _show, "resend": _resend, "drop": _drop}[args.action](
            letters, args
        )
    except DeadLetterError as exc:
        print(f"citybrain dead-letters: error: {exc}", file=sys.stderr)
        return 1


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _list(letters: DeadLetters, args: argparse.Namespace) -> int:
    found = letters.scan(args.rsu, args.reason, args.scan)
    for d in found.items[: args.limit]:
        size = f"{d.size} B" + (" (truncated)" if d.truncated else "")
        print(f"{d.id}  {_when(d.at_ms)}  {d.rsu_id or d.source}  {size}  {d.reason[:120]}")
    scanned = "" if found.complete else f" (looked at the newest {found.scanned} only)"
    print(f"{min(args.limit, len(found.items))} of {len(found.items)} shown{scanned}",
          file=sys.stderr)  # fmt: skip
    trimmed = letters.trimmed()
    if trimmed:
        print(f"{trimmed} older dead letters were trimmed by the cap", file=sys.stderr)
    return 0


def _show(letters: DeadLetters, args: argparse.Namespace) -> int:
    d = letters.get(args.id)
    if d is None:
        print(f"citybrain dead-letters: error: no dead letter {args.id!r}", file=sys.stderr)
        return 1
    print(f"id:      {d.id}\nat:      {_when(d.at_ms)} UTC\nsource:  {d.source} "
          f"(entry {d.source_entry_id})\nreason:  {d.reason}\nsize:    {d.size} bytes"
          + (f", only the first {len(d.payload)} kept" if d.truncated else ""))  # fmt: skip
    print("payload:")
    sys.stdout.flush()
    sys.stdout.buffer.write(d.payload + b"\n")
    return 0


def _chosen(letters: DeadLetters, args: argparse.Namespace, verb: str) -> list[DeadLetter] | None:
    if bool(args.ids) == args.all:
        print(f"citybrain dead-letters: error: name the ids to {verb}, or --all (with --rsu "
              "and --reason to narrow it)", file=sys.stderr)  # fmt: skip
        return None
    if args.all:
        found = letters.scan(args.rsu, args.reason, args.scan)
        if not found.complete:
            print(f"looked at the newest {found.scanned} only (--scan)", file=sys.stderr)
        return found.items
    chosen = []
    for letter_id in dict.fromkeys(args.ids):
        d = letters.get(letter_id)
        if d is None:
            print(f"no dead letter {letter_id!r}", file=sys.stderr)
        else:
            chosen.append(d)
    return chosen


def _resend(letters: DeadLetters, args: argparse.Namespace) -> int:
    chosen = _chosen(letters, args, "resend")
    if chosen is None:
        return 2
    sent = refused = 0
    for d in chosen:
        why_not = d.resendable
        if why_not:
            print(f"{d.id}: not sent: {why_not}", file=sys.stderr)
            refused += 1
        elif args.dry_run:
            print(f"{d.id}: would send {d.size} bytes to {d.source}")
        elif letters.resend(d):
            sent += 1
    verb = "would send" if args.dry_run else "sent"
    count = len(chosen) - refused if args.dry_run else sent
    print(f"{verb} {count} of {len(chosen)}; {refused} cannot be sent again")
    return 0 if not refused else 1


def _drop(letters: DeadLetters, args: argparse.Namespace) -> int:
    chosen = _chosen(letters, args, "drop")
    if chosen is None:
        return 2
    if args.all and not args.yes:
        print(f"citybrain dead-letters: error: this drops {len(chosen)} dead letters for good; "
              "add --yes", file=sys.stderr)  # fmt: skip
        return 2
    dropped = sum(letters.drop(d.id) for d in chosen)
    print(f"dropped {dropped} of {len(chosen)}")
    return 0
