"""Hostfiles and endpoints: the forms a hostfile line may take, tags, and errors.

Run it with ``python examples/hostfiles.py``.
"""

import tempfile
from pathlib import Path

from aurora_swarm import Endpoint, HostfileError, parse_hostfile

HOSTFILE = """\
# written by the job script: host, port, then key=value tags
x1000c0s0b0n0\t8000\tmodel=llama\trole=worker\tnode=0
x1000c0s0b0n0 8001 model=llama role=critic
x1000c0s1b0n0:8000   role=worker          # host:port works too
http://x1000c0s1b0n0:8001/v1                # and so does a URL
"""


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "agents.hostfile"
        path.write_text(HOSTFILE)
        for endpoint in parse_hostfile(path):
            print(f"{endpoint!r:60} {endpoint.base_url}")

        path.write_text("gpu01\t8000\ngpu02\teight-thousand\n")
        try:
            parse_hostfile(path)
        except HostfileError as exc:  # names the file and the line
            print(f"HostfileError: {exc.problem} (line {exc.line})")

    # Endpoints can also be made directly, or given to a pool as "host:port" strings or URLs.
    print(Endpoint.parse("gpu01:8000") == Endpoint("gpu01", 8000))
    print(Endpoint.parse("https://inference.example.org:443/v1").url)


if __name__ == "__main__":
    main()
