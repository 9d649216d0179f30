"""Dead letters: an operator reads them, fixes the cause, sends them through ingest again
(counted once), drops what is junk; none disappears without being counted."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from citybrain import cli
from citybrain.config import CitybrainConfig, load_citybrain_config
from citybrain.ingest import IngestStats, IngestWorker
from citybrain.state import TrafficState
from common.bus import BusConfig, StreamProducer, dead_letter_key, partition_of
from common.schemas import encode_message
from tests.conftest import api_client
from tests.test_ingest_exactly_once import T0, make_frames


def config_for(url: str, tmp_path: Path, max_bytes: int) -> tuple[CitybrainConfig, Path]:
    path = tmp_path / f"citybrain-{max_bytes}.yaml"
    path.write_text(
        f"bus:\n  redis_url: {url}\n  partitions: 4\n"
        f"ingest:\n  consumer: w1\n  block_ms: 100\n  max_message_bytes: {max_bytes}\n"
        "history:\n  enabled: false\n"
    )
    return load_citybrain_config(str(path)), path


def ingest(config: CitybrainConfig) -> IngestStats:
    return IngestWorker(config, redis.Redis.from_url(config.bus.redis_url)).run(idle_exit_s=0.3)


def test_resent_after_the_cause_is_fixed_applied_once_junk_dropped(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    strict, _ = config_for(redis_url, tmp_path, 1024)
    big = next(f for f in make_frames("dl-a", 50, seed=3) if len(encode_message(f)) > 1024)
    producer = StreamProducer(redis_client, BusConfig(partitions=4))
    huge = b'{"v":1,"kind":"frame","pad":"' + b"x" * 70_000 + b'"}'
    producer.publish(
        [("dl-a", encode_message(big)), ("dl-a", encode_message(big)),  # re-sent by the RSU
         ("dl-b", b"not json"), ("dl-b", huge)]
    )  # fmt: skip
    assert ingest(strict).dead_lettered == 4

    operator = api_client(strict, "operator", redis_client)
    page = operator.get("/dead-letters").json()
    assert (page["total"], page["complete"]) == (4, True)
    assert sorted(d["rsu_id"] for d in page["items"]) == ["dl-a", "dl-a", "dl-b", "dl-b"]
    order = [tuple(map(int, d["id"].split("-")[1:])) for d in page["items"]]
    assert order == sorted(order, reverse=True)  # newest first, by the dead-letter stream's ids
    oversized = operator.get("/dead-letters", params={"reason": "EXCEEDS 1024"}).json()["items"]
    assert len(oversized) == 3 and {d["truncated"] for d in oversized} == {False, True}
    (truncated,) = [d for d in oversized if d["truncated"]]
    assert truncated["size"] == len(huge) and not truncated["resendable"]
    resendable = next(d for d in page["items"] if d["rsu_id"] == "dl-a")
    first = operator.get(f"/dead-letters/{resendable['id']}").json()
    assert first["payload"] == encode_message(big).decode()  # kept whole: it can be resent
    assert operator.get("/dead-letters", params={"rsu_id": "dl-b"}).json()["total"] == 2
    viewer = api_client(strict, "viewer", redis_client)
    assert viewer.get("/dead-letters").status_code == 403

    # The limit was too strict: raise it and send everything through ingest again.
    relaxed, _ = config_for(redis_url, tmp_path, 1 << 20)
    ids = [d["id"] for d in page["items"]]
    outcome = operator.post("/dead-letters/resend", json={"ids": ids}).json()
    assert len(outcome["sent"]) == 3 and outcome["gone"] == []
    assert [r["id"] for r in outcome["refused"]] == [truncated["id"]]
    assert "first 65536 of its 70031 bytes" in outcome["refused"][0]["reason"]
    stats = ingest(relaxed)
    assert (stats.applied, stats.duplicates, stats.dead_lettered) == (1, 1, 1)  # "not json"
    state = TrafficState(redis_client, relaxed)
    frames = state.counts("dl-a", T0 - 3_600_000, T0 + 3_600_000, 3600, lane_id="*")[0].frames
    assert frames == 1  # the frame sent twice is counted once
    again = operator.post("/dead-letters/resend", json={"ids": ids[2:]}).json()
    assert sorted(again["gone"]) == sorted(ids[2:])

    # Junk goes for good, by an admin only.
    junk = [d["id"] for d in operator.get("/dead-letters").json()["items"]]
    assert len(junk) == 2  # the truncated one, and "not json" dead-lettered anew
    assert operator.delete(f"/dead-letters/{junk[0]}").status_code == 403
    admin = api_client(strict, "admin", redis_client)
    assert [admin.delete(f"/dead-letters/{i}").status_code for i in junk] == [204, 204]
    assert admin.delete(f"/dead-letters/{junk[0]}").status_code == 404
    assert admin.get("/dead-letters/99-1-0").status_code == 404  # no partition 99
    assert admin.get("/dead-letters/nonsense").status_code == 422
    health = viewer.get("/health").json()
    assert (health["dead_letters"], health["dead_letters_trimmed"]) == (0, 0)


def test_dead_letters_trimmed_by_the_cap_are_counted_not_lost_silently(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    config, _ = config_for(redis_url, tmp_path, 1024)
    producer = StreamProducer(redis_client, BusConfig(partitions=4))
    producer.publish([("dl-c", b"junk %d" % i) for i in range(5)])
    assert ingest(config).dead_lettered == 5
    api = api_client(config, "admin", redis_client)
    first = api.get("/dead-letters").json()["items"][-1]["id"]
    assert api.delete(f"/dead-letters/{first}").status_code == 204  # dropped: not "trimmed"
    dead = dead_letter_key(partition_of("dl-c", 4))
    redis_client.xtrim(dead, maxlen=2, approximate=False)  # as the cap does
    health = api.get("/health").json()
    assert (health["dead_letters"], health["dead_letters_trimmed"]) == (2, 2)
    assert any("2 dead letters were trimmed" in p for p in health["problems"])


def test_the_command_line_lists_resends_and_drops(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config, path = config_for(redis_url, tmp_path, 1024)
    producer = StreamProducer(redis_client, BusConfig(partitions=4))
    producer.publish([("dl-d", b"junk"), ("dl-e", b"[1, 2]")])
    ingest(config)
    base = ["--config", str(path)]
    assert cli.main(["dead-letters", "list", "--rsu", "dl-d", *base]) == 0
    out, err = capsys.readouterr()
    assert "dl-d" in out and "dl-e" not in out and "1 of 1 shown" in err
    letter_id = out.split()[0]
    assert cli.main(["dead-letters", "show", letter_id, *base]) == 0
    assert capsys.readouterr().out.endswith("payload:\njunk\n")
    assert cli.main(["dead-letters", "resend", "--all", "--dry-run", *base]) == 0
    assert "would send 2 of 2" in capsys.readouterr().out
    assert cli.main(["dead-letters", "drop", "--all", *base]) == 2  # needs --yes
    assert "add --yes" in capsys.readouterr().err
    assert cli.main(["dead-letters", "drop", "--all", "--reason", "NOT VALID JSON", "--yes",
                     *base]) == 0  # fmt: skip
    assert "dropped" in capsys.readouterr().out
    assert cli.main(["dead-letters", "show", "0-1-1", *base]) == 1
