"""End-to-end demo: embedded bus server, ingest worker, API and an RSU replaying a clip.

Each part runs as its own process, exactly as deployed; this module only supervises them and
stops them (by PID) on exit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import httpx

from citybrain.auth import KeyStore, Role
from common.bus import connect
from common.redis_server import LocalRedisServer, free_port, redis_url_from_env


class DemoError(RuntimeError):
    """A part of the demo failed to start or finish; the message says which."""


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DemoError(f"the API process exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise DemoError(f"the API did not answer at {url}")


def _wait_ingested(
    base: str, ingest: subprocess.Popen[bytes], timeout_s: float = 60.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    health: dict[str, Any] = {}
    while time.monotonic() < deadline:
        if ingest.poll() is not None:
            raise DemoError(f"the ingest worker exited with {ingest.returncode}")
        health = httpx.get(f"{base}/health", timeout=5.0).json()  # no key needed
        if health.get("ingest_unread") == 0 and health.get("ingest_pending") == 0:
            return health
        time.sleep(0.2)
    return health


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def summarise(base: str, headers: dict[str, str]) -> str:
    rsus = httpx.get(f"{base}/rsus", headers=headers, timeout=5.0).json()
    lines = [f"RSUs reporting: {rsus['total']}"]
    for item in rsus["items"]:
        rsu_id = item["rsu_id"]
        state = httpx.get(f"{base}/rsus/{rsu_id}/state", headers=headers, timeout=5.0).json()
        counts = httpx.get(
            f"{base}/rsus/{rsu_id}/counts", params={"lane_id": "*"}, headers=headers, timeout=5.0
        )
        frames, observed = 0, Counter[str]()
        for b in counts.json()["bins"]:
            frames += b["frames"]
            observed.update(b["observations"])
        for camera in state["cameras"]:
            frame = camera.get("frame") or {}
            latest = Counter(o["category"] for o in frame.get("objects", []))
            latency = camera.get("latency") or {}
            lines.append(
                f"  {rsu_id}/{camera['camera_id']}: status {camera['status']}, "
                f"{camera.get('frames_processed')} frames at {camera.get('fps')} fps, "
                f"latency p50 {latency.get('p50_ms', 0):.1f} ms"
                f" / p99 {latency.get('p99_ms', 0):.1f} ms"
                + (f" ({camera['detail']})" if camera.get("detail") else "")
            )
            lines.append(
                f"    latest frame #{frame.get('seq')}: {len(frame.get('objects', []))} road users "
                + ", ".join(f"{k} {v}" for k, v in sorted(latest.items()))
            )
        mean = {k: round(v / frames, 1) for k, v in sorted(observed.items())} if frames else {}
        lines.append(
            f"    counted over the last hour: {frames} frames; mean road users per frame {mean}"
        )
    return "\n".join(lines)


def _register_intersection(base: str, scene_path: str, headers: dict[str, str]) -> str | None:
    """The replayed scene's lanes, grouped by approach, as an intersection (operator call)."""
    from rsu.replay import load_scene

    scene = load_scene(scene_path)
    approaches: dict[str, list[dict[str, str]]] = {}
    rsu_id = scene.rsu_id or scene.name
    for lane in scene.lanes:
        approaches.setdefault(lane.approach or "main", []).append(
            {"rsu_id": rsu_id, "camera_id": scene.camera_id, "lane_id": lane.id}
        )
    if not approaches:
        return None
    body = {
        "id": scene.name,
        "name": scene.description,
        "approaches": [{"name": name, "lanes": lanes} for name, lanes in approaches.items()],
    }
    reply = httpx.put(f"{base}/intersections/{scene.name}", json=body, headers=headers)
    if reply.status_code not in (200, 201):
        raise DemoError(f"registering the intersection failed: {reply.text}")
    return scene.name


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_demo(
    scene: str, port: int, exit_after: bool, realtime: bool, max_frames: int | None = None
) -> int:
    # kill/hang-up stop the demo like Ctrl-C does, so its processes are always stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    server: LocalRedisServer | None = None
    url = redis_url_from_env()
    if url is None:
        server = LocalRedisServer().start()
        url = server.url
        print(f"started {server.binary.name} on {url} (pid {server.process.pid})", flush=True)  # type: ignore[union-attr]
    else:
        print(f"using the Redis server at {url}", flush=True)
    env = dict(os.environ, REDIS_URL=url)
    if port == 0 or not _port_free(port):
        port = free_port()
    base = f"http://127.0.0.1:{port}"
    procs: list[subprocess.Popen[bytes]] = []
    py = sys.executable
    try:
        ingest = subprocess.Popen([py, "-m", "citybrain.cli", "ingest"], env=env)
        procs.append(ingest)
        api = subprocess.Popen([py, "-m", "citybrain.cli", "api", "--port", str(port)], env=env)
        procs.append(api)
        _wait_http(f"{base}/health", api)
        keys = KeyStore(connect(url))
        _, viewer_key = keys.create("demo viewer", Role.viewer)
        _, admin_key = keys.create("demo admin", Role.admin)
        viewer = {"Authorization": f"Bearer {viewer_key}"}
        intersection_id = _register_intersection(
            base, scene, {"Authorization": f"Bearer {admin_key}"}
        )
        replay_cmd = [py, "-m", "rsu.cli", "replay", "--scene", scene]
        if realtime:
            replay_cmd.append("--realtime")
        if max_frames:
            replay_cmd += ["--max-frames", str(max_frames)]
        replay = subprocess.run(replay_cmd, env=env, check=False)
        if replay.returncode != 0:
            print(f"demo: the RSU replay failed (exit {replay.returncode})", file=sys.stderr)
            return replay.returncode
        health = _wait_ingested(base, ingest)
        print()
        print(f"API: {base}   (interactive docs: {base}/docs)")
        print(
            f"ingest: {health.get('ingest_unread')} unread, "
            f"{health.get('ingest_pending')} pending, "
            f"{health.get('dead_letters')} dead letters"
        )
        print(summarise(base, viewer))
        print()
        print(f"API keys made for this demo: viewer {viewer_key}")
        print(f"                             admin  {admin_key}")
        print("Try:")
        auth = f'-H "Authorization: Bearer {viewer_key}"'
        print(f"  curl {auth} {base}/rsus")
        rsus = httpx.get(f"{base}/rsus", headers=viewer, timeout=5.0).json()["items"]
        if rsus:
            rsu_id = rsus[0]["rsu_id"]
            print(f"  curl {auth} {base}/rsus/{rsu_id}/state")
            print(f"  curl {auth} {base}/rsus/{rsu_id}/lanes")
            print(f"  curl {auth} '{base}/rsus/{rsu_id}/counts?bin=60'")
            print(f"  curl {auth} '{base}/rsus/{rsu_id}/history?bin=60'")
        if intersection_id:
            print(f"  curl {auth} {base}/intersections/{intersection_id}/state")
            print(f"  curl -N {auth} {base}/intersections/{intersection_id}/feed")
        sys.stdout.flush()
        if not exit_after:
            print("\nServing until Ctrl-C.", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                while all(p.poll() is None for p in procs):
                    time.sleep(0.5)
        return 0
    finally:
        _stop(procs)
        if server is not None:
            server.stop()
