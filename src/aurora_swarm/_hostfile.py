"""Read the hostfile a job script writes: one endpoint a line."""

from __future__ import annotations

import os
import re

from ._endpoint import Endpoint
from ._exceptions import ConfigurationError, HostfileError

__all__ = ["parse_hostfile"]

_TAG = re.compile(r"^([A-Za-z_][\w.-]*)=(.*)$")


def parse_hostfile(path: str | os.PathLike[str]) -> list[Endpoint]:
    """Read endpoints from a hostfile.

    Each non-blank line names one endpoint, in any of these forms:

    .. code-block:: text

        gpu01<TAB>8000<TAB>role=critic<TAB>node=x1
        gpu01 8000 role=critic
        gpu01:8000 role=critic
        http://gpu01:8000/v1
        https://inference.example.org/site/llm/v1  api_key_env=SITE_LLM_KEY

    Columns are separated by tabs or spaces. ``key=value`` columns after the address become
    ``Endpoint.tags``. A URL may carry the API's base path; without a port it gets its scheme's
    default. The column ``api_key_env=NAME`` names the environment variable that holds the
    endpoint's API key: the key itself never goes in a hostfile. ``#`` starts a comment, to the
    end of the line; blank lines are skipped.

    Raises
    ------
    HostfileError
        If the file is missing, unreadable, holds no endpoint, or a line cannot be read;
        the message names the file and the line number.
    """
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        raise HostfileError(name, None, "no such file") from None
    except IsADirectoryError:
        raise HostfileError(name, None, "is a directory, not a hostfile") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HostfileError(name, None, f"cannot be read: {exc}") from exc
    endpoints: list[Endpoint] = []
    seen: dict[tuple[str, int, str], int] = {}
    for number, raw in enumerate(lines, start=1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        endpoint = _parse_line(name, number, text)
        key = (endpoint.host, endpoint.port, endpoint.path)
        if key in seen:
            raise HostfileError(
                name, number, f"{endpoint} is listed already on line {seen[key]}"
            )
        seen[key] = number
        endpoints.append(endpoint)
    if not endpoints:
        raise HostfileError(name, None, "holds no endpoint (only blank lines or comments)")
    return endpoints


def _parse_line(path: str, number: int, text: str) -> Endpoint:
    columns = text.split()
    first = columns[0]
    if "=" in first:
        raise HostfileError(path, number, f"expected a host first, found the tag {first!r}")
    if len(columns) > 1 and columns[1].isdigit() and ":" not in first.strip("[]"):
        address, rest = f"{first}:{columns[1]}", columns[2:]
    elif len(columns) > 1 and "=" not in columns[1] and ":" not in first:
        raise HostfileError(path, number, f"port {columns[1]!r} is not a whole number")
    else:
        address, rest = first, columns[1:]
    if ":" not in address.rsplit("]", 1)[-1]:
        raise HostfileError(path, number, f"no port for host {first!r} (expected host<TAB>port)")
    tags: dict[str, str] = {}
    for column in rest:
        match = _TAG.match(column)
        if match is None:
            raise HostfileError(path, number, f"expected key=value, found {column!r}")
        tags[match.group(1)] = match.group(2)
    try:
        return Endpoint.parse(address, tags)
    except ConfigurationError as exc:
        raise HostfileError(path, number, str(exc)) from exc
