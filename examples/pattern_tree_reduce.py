"""tree_reduce: leaves answer, supervisors merge groups of ``fanin`` answers, level by level.

Twenty abstracts are summarized (one batched call), then merged four at a time (one batched
call per level) until one answer is left. ``tree_reduce_tree`` returns every level, so the
path of any leaf to the root can be inspected. One abstract is too long for the model's
context on purpose: its leaf fails, is left out of the merge and is recorded, not lost.

Run it with ``python examples/pattern_tree_reduce.py``.
"""

import anyio

from aurora_swarm import VLLMPool
from aurora_swarm.patterns import tree_reduce, tree_reduce_tree
from aurora_swarm.testing import FakeFleet


async def main() -> None:
    abstracts = [f"abstract {i}" for i in range(20)]
    abstracts[13] = "a very long abstract " * 100  # 400 words: more than the context
    async with FakeFleet(4, max_model_len=256) as fleet:
        async with VLLMPool(fleet.endpoints, model=fleet.model, max_tokens=12) as pool:
            top = await tree_reduce(pool, "Summarize {item}", "Merge:\n{responses}",
                                    fanin=4, items=abstracts)
            print("root:", top.text)

            tree = await tree_reduce_tree(pool, "Summarize {item}", "Merge (level {level}):\n"
                                          "{responses}", fanin=4, items=abstracts)
            print("answers per level:", [len(level) for level in tree.levels])
            print("groups merged at level 1:", tree.groups[1])
            print("path of leaf 6 to the root:", tree.path(6))
            print("prompt of the root:", repr(tree.prompts[-1][0][:60]))
            for dropped in tree.dropped:
                print(f"dropped: level {dropped.level}, index {dropped.index}, {dropped.reason}: "
                      f"{dropped.response.error[:50]}...")
            print(f"{pool.stats().requests} HTTP requests for two trees of "
                  f"{sum(len(level) for level in tree.levels)} nodes each")


if __name__ == "__main__":
    anyio.run(main)
