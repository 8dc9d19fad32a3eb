"""Chat templates: the same 100 conversations sent in each mode, and what each costs.

``chat_template=None`` sends raw text (no chat formatting); a template (a ``ChatTemplate``, its
text, a ``.jinja`` file or a model directory) is rendered here and sent batched to
``/v1/completions``; ``"server"`` sends batches of conversations to vLLM's
``/v1/chat/completions/batch``; ``"auto"`` picks the server route when every endpoint offers
it, else the template in the model directory the servers report. ``send_all`` is the
unbatched baseline: one ``/v1/chat/completions`` request per prompt.

Run it with ``python examples/chat_templates.py``.
"""

import json
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

from aurora_swarm import ChatTemplate, Response, VLLMPool
from aurora_swarm.testing import FakeFleet

# A tiny Llama-3-style template; a real model ships its own in tokenizer_config.json.
TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


async def count(
    fleet: FakeFleet, label: str, send: Callable[[], Awaitable[list[Response]]]
) -> None:
    fleet.reset_counters()
    answers = await send()
    totals = fleet.totals()
    routes = {"completions": totals.completion_requests, "chat": totals.chat_requests,
              "chat/batch": totals.chat_batch_requests}
    used = ", ".join(f"{n} {route}" for route, n in routes.items() if n)
    print(f"{label:34} {fleet.total_requests():4} requests ({used}); "
          f"{sum(a.success for a in answers)} answered")


async def main() -> None:
    conversations = [[{"role": "user", "content": f"Define term {i}."}] for i in range(100)]
    with tempfile.TemporaryDirectory() as model_dir:
        config = {"chat_template": TEMPLATE, "bos_token": "<s>", "eos_token": "</s>"}
        (Path(model_dir) / "tokenizer_config.json").write_text(json.dumps(config))
        template = ChatTemplate.from_model_dir(model_dir)
        print(repr(template.render(conversations[0])))

        # Servers without the batch chat route, reporting the model directory as their root.
        async with FakeFleet(4, model_root=model_dir) as fleet:
            async with VLLMPool(fleet.endpoints, model=fleet.model, max_tokens=16,
                                system_prompt="Be brief.") as pool:
                raw = [c[0]["content"] for c in conversations]
                await count(fleet, "raw text (chat_template=None)",
                            lambda: pool.send_all_batched(raw, system_prompt=None))
                await count(fleet, "client template (ChatTemplate)",
                            lambda: pool.send_all_batched(conversations, chat_template=template))
                await count(fleet, "auto -> model directory template",
                            lambda: pool.send_all_batched(conversations, chat_template="auto"))
                await count(fleet, "send_all (one chat request each)",
                            lambda: pool.send_all(conversations))

        # Servers that offer /v1/chat/completions/batch.
        async with FakeFleet(4, chat_batch=True) as fleet:
            async with VLLMPool(fleet.endpoints, model=fleet.model, max_tokens=16,
                                chat_template="auto") as pool:
                # The first call asks each endpoint once (an empty request, nothing generated)
                # whether it has the route; the pool remembers the answer.
                await count(fleet, "auto -> server (+ one-time probes)",
                            lambda: pool.send_all_batched(conversations))
                await count(fleet, "server (chat/completions/batch)",
                            lambda: pool.send_all_batched(conversations, chat_template="server"))


if __name__ == "__main__":
    anyio.run(main)
