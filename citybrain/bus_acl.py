"""Bus credentials for RSUs: a Redis ACL user per RSU that can only append to its own stream.

``rsu.<rsu_id>`` may XADD to ``st:{pK}:rsu:<rsu_id>`` and nothing else, may add members to
its partition's index set (a selector: SADD, on that key only), may PING, and may read the
Cluster slot map and command table that a Cluster client needs.  It cannot read
any key, so a stolen RSU password reveals nothing and can only add data under that RSU's
name: ingest dead-letters a message whose rsu_id is not its stream's.

ACL changes are applied to every node of a Redis Cluster, and saved with ``ACL SAVE`` when
the server runs with an ``aclfile`` (otherwise they last until the server restarts: keep the
file, or re-issue).
"""

from __future__ import annotations

import secrets

import redis

from common.bus import index_key, partition_of, stream_key

USER_PREFIX = "rsu."  # URL-safe: the user name goes into redis://user:password@host


def rsu_user(rsu_id: str) -> str:
    return f"{USER_PREFIX}{rsu_id}"


def rsu_rules(rsu_id: str, partitions: int, password: str) -> list[str]:
    stream = stream_key(rsu_id, partitions)
    index = index_key(partition_of(rsu_id, partitions))
    return [
        "reset", "on", f">{password}", "resetchannels",
        f"~{stream}", "+xadd", "+ping", "+client|setinfo",
        "+time",  # rsu check compares the RSU's clock with the server's
        # What a Cluster client asks on connecting: the slot map and the command table.
        "+cluster|slots", "+cluster|shards", "+cluster|nodes", "+command",
        f"(~{index} +sadd)",
    ]  # fmt: skip


def _each_node(client: redis.Redis, *command: str) -> list[object]:
    """Run an ACL command on every node (all of a Cluster's, or the one server)."""
    if isinstance(client, redis.RedisCluster):
        replies = client.execute_command(*command, target_nodes=redis.RedisCluster.ALL_NODES)
        return list(replies.values()) if isinstance(replies, dict) else [replies]
    return [client.execute_command(*command)]


def _save(client: redis.Redis) -> None:
    try:
        _each_node(client, "ACL", "SAVE")
    except redis.ResponseError as exc:  # no aclfile configured: nothing to save to
        if "acl file" not in str(exc).lower() and "aclfile" not in str(exc).lower():
            raise


def issue_rsu_credentials(client: redis.Redis, rsu_id: str, partitions: int) -> str:
    """Create or reset the RSU's user with a new password; returns ``user:password``."""
    password = secrets.token_urlsafe(24)
    _each_node(client, "ACL", "SETUSER", rsu_user(rsu_id), *rsu_rules(rsu_id, partitions, password))
    _save(client)
    # The stream's index entry exists from the start, so ingest finds the RSU at once.
    client.sadd(index_key(partition_of(rsu_id, partitions)), stream_key(rsu_id, partitions))
    return f"{rsu_user(rsu_id)}:{password}"


def revoke_rsu_credentials(client: redis.Redis, rsu_id: str) -> bool:
    deleted = _each_node(client, "ACL", "DELUSER", rsu_user(rsu_id))
    _save(client)
    return any(int(n) for n in deleted)  # type: ignore[call-overload]


def with_credentials(url: str, credentials: str) -> str:
    """``redis://host:port/0`` with ``user:password@`` put in."""
    scheme, rest = url.split("://", 1)
    rest = rest.rsplit("@", 1)[-1]
    return f"{scheme}://{credentials}@{rest}"
