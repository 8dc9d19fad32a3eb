"""CPU per request of the fake fleet's HTTP layer: ours (h11) against aiohttp's web server.

Both servers answer with the same handler (``FakeServer.handle``: parsing, answers, counters);
only the HTTP layer differs. Each runs in its own process; the server process's CPU time per
request is read from ``/proc`` (so a busy machine inflates wall time, not this figure), best of
three runs, for one-prompt and 64-prompt ``/v1/completions`` requests over 8 connections.

Needs aiohttp, which aurora_swarm does not depend on: ``pip install aiohttp``, or point
``AIOHTTP_PATH`` at a ``pip install --target`` folder. Linux only (``/proc``). About 20 s::

    python -m benchmarks.fake_fleet_http
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys

import httpx2 as httpx

SERVER_H11 = """
import asyncio, sys
from aurora_swarm.testing import FakeFleet

async def main():
    async with FakeFleet(1, ports=[int(sys.argv[1])]):
        print("ready", flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""

SERVER_AIOHTTP = """
import asyncio, sys, time
from aiohttp import web
from aurora_swarm.testing._behavior import ActionPicker, EndpointBehavior
from aurora_swarm.testing._counters import FleetGauge
from aurora_swarm.testing._http import ReplyKind
from aurora_swarm.testing._latency import LatencyModel, SlotSchedule
from aurora_swarm.testing._server import FakeServer, ServerConfig

config = ServerConfig(model="fake-model", root="fake-model", max_model_len=4096,
                      latency=LatencyModel(), chat_batch=False, gauge=FleetGauge(),
                      created=int(time.time()))
fake = FakeServer(0, "127.0.0.1", 0, config, EndpointBehavior())
fake._picker = ActionPicker(fake._behavior, 0)
fake._slots = SlotSchedule(config.latency.max_concurrent_seqs)
fake.alive = True

class Peer:  # instant latency: never asked to wait
    early = []

async def handle(request):
    reply = await fake.handle(request.method, request.path, await request.read(), Peer())
    if reply.kind is not ReplyKind.ANSWER:
        request.transport.close()
        raise web.HTTPServiceUnavailable()
    headers = {k.decode(): v.decode() for k, v in reply.headers}
    return web.Response(status=reply.status, body=reply.body, headers=headers,
                        content_type=reply.content_type.decode())

async def main():
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", int(sys.argv[1])).start()
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def cpu(pid: int) -> float:
    """User + system CPU seconds of process ``pid``."""
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


async def drive(port: int, n: int, prompts_per_request: int, concurrency: int = 8) -> None:
    body = {"model": "fake-model", "max_tokens": 16,
            "prompt": [f"prompt {i} about proteins" for i in range(prompts_per_request)]}
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency)) as client:
        slots = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with slots:
                r = await client.post(f"http://127.0.0.1:{port}/v1/completions", json=body)
                assert r.status_code == 200, r.text
                assert len(r.json()["choices"]) == prompts_per_request

        await asyncio.gather(*(one() for _ in range(n)))


def bench(name: str, code: str, extra_path: str) -> None:
    port = _free_port()
    paths = [os.environ.get("PYTHONPATH", ""), extra_path]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    proc = subprocess.Popen([sys.executable, "-c", code, str(port)], stdout=subprocess.PIPE,
                            env=env, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready", f"the {name} server did not start"
    try:
        for per_request, n in ((1, 3000), (64, 1000)):
            asyncio.run(drive(port, 200, per_request))  # warm up
            best = float("inf")
            for _ in range(3):
                before = cpu(proc.pid)
                asyncio.run(drive(port, n, per_request))
                best = min(best, cpu(proc.pid) - before)
            print(f"{name:8} {per_request:3} prompts/request: server CPU "
                  f"{best / n * 1e6:5.0f} us/request (best of 3 x {n})")
    finally:
        proc.terminate()
        proc.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def main() -> None:
    bench("h11", SERVER_H11, "")
    bench("aiohttp", SERVER_AIOHTTP, os.environ.get("AIOHTTP_PATH", ""))


if __name__ == "__main__":
    main()
