"""Endpoints and hostfiles: every accepted spelling, and a clear error for every bad line."""

from __future__ import annotations

from pathlib import Path

import pytest

from aurora_swarm import AgentEndpoint, ConfigurationError, Endpoint, HostfileError, parse_hostfile


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agents.hostfile"
    path.write_text(text, encoding="utf-8")
    return path


def test_endpoint_is_hashable_and_immutable() -> None:
    a = Endpoint("gpu01", 8000, {"role": "critic"})
    b = Endpoint("gpu01", 8000, {"role": "critic"})
    assert a == b and hash(a) == hash(b)
    assert len({a, b}) == 1
    with pytest.raises(AttributeError):
        a.port = 9000  # type: ignore[misc]
    assert AgentEndpoint is Endpoint


def test_endpoint_urls() -> None:
    assert Endpoint("gpu01", 8000).base_url == "http://gpu01:8000/v1"
    assert Endpoint("::1", 8000).url == "http://[::1]:8000"
    assert Endpoint("h", 443, scheme="https").base_url == "https://h:443/v1"


@pytest.mark.parametrize(
    ("spec", "host", "port", "scheme"),
    [
        ("gpu01:8000", "gpu01", 8000, "http"),
        ("http://gpu01:8001/v1", "gpu01", 8001, "http"),
        ("https://example.org:8443", "example.org", 8443, "https"),
        ("[::1]:9000", "::1", 9000, "http"),
        ("  10.0.0.5:80  ", "10.0.0.5", 80, "http"),
    ],
)
def test_endpoint_parse(spec: str, host: str, port: int, scheme: str) -> None:
    endpoint = Endpoint.parse(spec)
    assert (endpoint.host, endpoint.port, endpoint.scheme) == (host, port, scheme)


@pytest.mark.parametrize(
    ("spec", "message"),
    [("gpu01", "expected 'host:port'"), ("gpu01:abc", "cannot read endpoint"),
     ("gpu01:70000", "cannot read endpoint")],
)
def test_endpoint_parse_errors(spec: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Endpoint.parse(spec)


def test_endpoint_validation() -> None:
    with pytest.raises(ConfigurationError, match="out of range"):
        Endpoint("h", 0)
    with pytest.raises(ConfigurationError, match="empty or contains white space"):
        Endpoint("", 80)
    with pytest.raises(ConfigurationError, match="scheme 'ftp'"):
        Endpoint("h", 80, scheme="ftp")


def test_hostfile_all_forms(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "# fleet written by the job script\n"
        "\n"
        "gpu01\t8000\trole=critic\tnode=x1\n"
        "gpu01 8001 role=worker   # trailing comment\n"
        "gpu02:8000 role=worker\n"
        "http://gpu03:8000/v1\n"
        "   \n",
    )
    endpoints = parse_hostfile(path)
    assert [str(e) for e in endpoints] == ["gpu01:8000", "gpu01:8001", "gpu02:8000", "gpu03:8000"]
    assert dict(endpoints[0].tags) == {"role": "critic", "node": "x1"}
    assert endpoints[1].tags["role"] == "worker"
    assert not endpoints[3].tags


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("gpu01\t8000\ngpu02\n", 2, "no port for host 'gpu02'"),
        ("gpu01\tabc\n", 1, "port 'abc' is not a whole number"),
        ("gpu01\t8000\tbadtag\n", 1, "expected key=value, found 'badtag'"),
        ("# c\n\ngpu01\t99999\n", 3, "out of range"),
        ("role=x gpu01 8000\n", 1, "expected a host first"),
        ("gpu01 8000\ngpu01:8000\n", 2, "listed already on line 1"),
    ],
)
def test_hostfile_bad_line_names_file_and_line(
    tmp_path: Path, text: str, line: int, problem: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(HostfileError) as info:
        parse_hostfile(path)
    assert info.value.line == line
    assert str(info.value).startswith(f"{path}:{line}: ")
    assert problem in str(info.value)
    assert isinstance(info.value, ValueError)


def test_hostfile_missing(tmp_path: Path) -> None:
    with pytest.raises(HostfileError, match="no such file"):
        parse_hostfile(tmp_path / "nope.hostfile")


def test_hostfile_empty(tmp_path: Path) -> None:
    path = write(tmp_path, "# only a comment\n\n")
    with pytest.raises(HostfileError, match="holds no endpoint") as info:
        parse_hostfile(path)
    assert info.value.line is None


def test_hostfile_directory(tmp_path: Path) -> None:
    with pytest.raises(HostfileError, match="is a directory"):
        parse_hostfile(tmp_path)
