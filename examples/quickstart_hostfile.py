"""The same scatter_gather against servers listed in a hostfile, as on a cluster.

Start a local fake fleet in another terminal first; it writes ``fleet.hostfile``::

    aurora-swarm fleet --endpoints 4 --hostfile fleet.hostfile

then run ``python examples/quickstart_hostfile.py fleet.hostfile``. On a cluster, point it at
the hostfile your job script wrote and pass ``--model`` with the served model's name.
"""

import argparse

import anyio

from aurora_swarm import VLLMPool, parse_hostfile
from aurora_swarm.patterns.scatter_gather import scatter_gather


async def main(hostfile: str, model: str) -> None:
    endpoints = parse_hostfile(hostfile)  # host<TAB>port<TAB>key=value ... one line each
    print(f"{len(endpoints)} endpoints, the first is {endpoints[0]}")
    async with VLLMPool(endpoints, model=model, max_tokens=64) as pool:
        prompts = [f"Name one use of element number {z}." for z in range(1, 11)]
        answers = await scatter_gather(pool, prompts)
        print(answers[0].text)
        print(f"{sum(a.success for a in answers)}/{len(prompts)} answered with "
              f"{pool.stats().requests} HTTP requests")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("hostfile")
    parser.add_argument("--model", default="fake-model", help="served model name")
    args = parser.parse_args()
    anyio.run(main, args.hostfile, args.model)
