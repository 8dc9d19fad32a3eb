"""Endpoints anywhere: base URLs with a path, keys from the environment, TLS, proxies."""

from __future__ import annotations

import asyncio
import gc
import logging
import shutil
import socket
import ssl
import subprocess
import warnings
from pathlib import Path

import anyio
import pytest

from aurora_swarm import (
    ConfigurationError,
    ConnectError,
    Endpoint,
    HTTPStatusError,
    RetryPolicy,
    VLLMPool,
    parse_hostfile,
)
from aurora_swarm.jobs import run_job
from aurora_swarm.testing import FakeFleet, expected_answer

from .conftest import MODEL, fleet_of

KEY = "sk-site-0123456789abcdef-secret"
ONE_TRY = RetryPolicy(max_attempts=1)
_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
# TLS handshakes and proxies from the environment need real connections: loopback servers, in
# integration tests left out of the unit suite by `-m "not integration"`.
INTEGRATION = pytest.mark.integration


@pytest.fixture(autouse=True)
def _no_proxy_from_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("https://inference.example.org/site/llm/v1",
         Endpoint("inference.example.org", 443, scheme="https", path="/site/llm/v1")),
        ("http://gpu01", Endpoint("gpu01", 80)),
        ("http://gpu01:8000", Endpoint("gpu01", 8000)),
        ("http://gpu01:8000/v1/", Endpoint("gpu01", 8000)),
        ("https://gw:8443/openai", Endpoint("gw", 8443, scheme="https", path="/openai")),
    ],
)
def test_endpoint_urls(spec: str, expected: Endpoint) -> None:
    assert Endpoint.parse(spec) == expected


def test_endpoint_base_and_root_urls_keep_the_path() -> None:
    endpoint = Endpoint.parse("https://inference.example.org/site/llm/v1")
    assert endpoint.base_url == "https://inference.example.org:443/site/llm/v1"
    assert endpoint.url == "https://inference.example.org:443/site/llm"
    assert str(endpoint) == "inference.example.org:443/site/llm/v1"
    assert "path='/site/llm/v1'" in repr(endpoint)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("gpu01", "expected 'host:port'"),
        ("https://user:pw@gw/v1", "credentials in a URL"),
        ("https://gw/v1?key=x", "query"),
    ],
)
def test_bad_endpoint_urls_are_refused(spec: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        Endpoint.parse(spec)
    assert "pw" not in str(caught.value)


def test_hostfile_reads_urls_and_key_variables(tmp_path: Path) -> None:
    hostfile = tmp_path / "fleet"
    hostfile.write_text(
        "https://gw.example.org/a/v1\tapi_key_env=SITE_KEY\n"
        "https://gw.example.org/b/v1\tapi_key_env=SITE_KEY\n"  # same host, other path
        "gpu01\t8000\n"
    )
    first, second, third = parse_hostfile(hostfile)
    assert (first.path, second.path, third.path) == ("/a/v1", "/b/v1", "/v1")
    assert first.tags["api_key_env"] == "SITE_KEY"


def test_missing_key_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_KEY_VARIABLE", raising=False)
    endpoint = Endpoint("gw", 443, {"api_key_env": "NO_SUCH_KEY_VARIABLE"}, "https")
    with pytest.raises(ConfigurationError, match="NO_SUCH_KEY_VARIABLE"):
        VLLMPool([endpoint], model=MODEL)


def test_bad_ca_bundle_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="CA bundle"):
        VLLMPool(["h:1"], model=MODEL, verify=tmp_path / "missing.pem")


# -- TLS -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return cert, key


def _server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


@INTEGRATION
async def test_https_gateway_with_a_path_and_a_key_from_the_environment(
    certificate: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("SITE_LLM_KEY", KEY)
    prompts = [f"question {k}" for k in range(30)]
    async with FakeFleet(2, model=MODEL, tls=_server_context(certificate),
                         base_path="/site/llm", api_key=KEY) as fleet:
        hostfile = fleet.write_hostfile(tmp_path / "fleet", tags={"api_key_env": "SITE_LLM_KEY"})
        text = hostfile.read_text()
        assert "https://127.0.0.1:" in text and "/site/llm/v1" in text
        endpoints = parse_hostfile(hostfile)
        async with VLLMPool(endpoints, model=MODEL, max_tokens=16,
                            verify=certificate[0]) as pool:
            batched = await pool.send_all_batched(prompts)
            one = await pool.post(1, "hello")
            summary = await run_job(pool, prompts, tmp_path / "results.jsonl")
            seen = [repr(pool), repr(pool.endpoints), repr(pool.stats()),
                    repr(pool._core.transport), repr(batched), repr(one)]
    assert [r.text for r in batched] == [expected_answer(p, 16)[0] for p in prompts]
    assert one.success and summary.answered == len(prompts)
    results = (tmp_path / "results.jsonl").read_text()
    assert len(results.splitlines()) == len(prompts)
    for text in [*seen, results, hostfile.read_text(), caplog.text]:
        assert KEY not in text
    assert fleet.totals().requests.get("unauthorized", 0) == 0


@INTEGRATION
async def test_https_is_verified_by_default(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with FakeFleet(1, model=MODEL, tls=_server_context(certificate)) as fleet:
        async with VLLMPool(fleet.endpoints, model=MODEL, max_tokens=8, retry=ONE_TRY) as pool:
            (response,) = await pool.send_all_batched(["x"])
    assert isinstance(response.exception, ConnectError)
    assert "CERTIFICATE_VERIFY_FAILED" in (response.error or "")


@INTEGRATION
async def test_a_request_cancelled_during_its_tls_handshake_closes_its_socket() -> None:
    # A server that accepts and never answers holds the client in its TLS handshake. The HTTP
    # stack closed a connection whose handshake failed but not one whose handshake was
    # cancelled: the socket stayed open until the garbage collector found it, and the server
    # waited for the rest of the handshake (CI saw this as a stray ResourceWarning).
    accepted: list[asyncio.StreamReader] = []
    closed = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(reader)
        await reader.read()  # b"" once the client closes
        closed.set()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            async with VLLMPool([f"https://127.0.0.1:{port}/v1"], model=MODEL, max_tokens=8,
                                retry=ONE_TRY) as pool:
                with anyio.move_on_after(0.5) as scope:
                    await pool.post(0, "hello")
                assert scope.cancelled_caught, "the handshake was expected to hang"
                assert len(accepted) == 1
                with anyio.fail_after(5):
                    await closed.wait()  # closed by the client, not by the collector
            gc.collect()
        leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
        assert leaks == []
    finally:
        server.close()
        await server.wait_closed()


async def test_a_wrong_key_is_a_clear_401_that_does_not_show_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SITE_LLM_KEY", "sk-wrong-key-do-not-print")
    async with fleet_of(1, model=MODEL, api_key=KEY) as fleet:
        endpoint = Endpoint(fleet.endpoints[0].host, fleet.endpoints[0].port,
                            {"api_key_env": "SITE_LLM_KEY"})
        async with VLLMPool([endpoint], model=MODEL, max_tokens=8, retry=ONE_TRY,
                            transport=fleet.transport) as pool:
            out = await pool.send_all_batched(["a", "b"])
    for response in out:
        assert isinstance(response.exception, HTTPStatusError)
        assert response.exception.status_code == 401
        assert "sk-wrong" not in (response.error or "") and KEY not in (response.error or "")


# -- proxies -------------------------------------------------------------------------------------


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@INTEGRATION
async def test_environment_proxy_is_used_by_default_and_named_when_it_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = _dead_port()
    monkeypatch.setenv("http_proxy", f"http://proxyuser:proxysecret@127.0.0.1:{port}")
    async with FakeFleet(1, model=MODEL) as fleet:
        async with VLLMPool(fleet.endpoints, model=MODEL, max_tokens=8, retry=ONE_TRY) as pool:
            (response,) = await pool.send_all_batched(["x"])
        assert fleet.total_requests() == 0
    error = response.error or ""
    assert isinstance(response.exception, ConnectError)
    assert f"proxy http://***@127.0.0.1:{port}" in error
    assert "no_proxy" in error and "env_proxies=False" in error
    assert "proxysecret" not in error


@INTEGRATION
@pytest.mark.parametrize("bypass", ["env_proxies", "no_proxy"])
async def test_environment_proxy_can_be_bypassed(
    monkeypatch: pytest.MonkeyPatch, bypass: str,
) -> None:
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{_dead_port()}")
    if bypass == "no_proxy":
        monkeypatch.setenv("no_proxy", "127.0.0.1")
    async with FakeFleet(1, model=MODEL) as fleet:
        async with VLLMPool(fleet.endpoints, model=MODEL, max_tokens=8, retry=ONE_TRY,
                            env_proxies=bypass != "env_proxies") as pool:
            out = await pool.send_all_batched(["a", "b"])
    assert [r.text for r in out] == ["ECHO: a", "ECHO: b"]
