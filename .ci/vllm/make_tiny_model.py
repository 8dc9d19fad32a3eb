"""Make a tiny random-weight Llama model (tokenizer + weights) for CI.

Usage: python make_tiny_model.py OUTPUT_DIR

Run it with the vLLM virtual environment's python (it needs torch,
transformers and tokenizers).  Nothing is downloaded: the tokenizer is a
byte-level BPE trained on synthetic sentences generated here, and the model
weights are random (fixed seed).  Its output is noise; it exists so that a
real vLLM server has something to serve.

Idempotent: if OUTPUT_DIR/config.json exists, nothing is done.
"""

from __future__ import annotations

import os
import random
import shutil
import sys
import time

SEED = 1234
VOCAB_SIZE = 512
NUM_SENTENCES = 4000

BOS = "<|begin_of_text|>"
EOS = "<|eot_id|>"
START_HEADER = "<|start_header_id|>"
END_HEADER = "<|end_header_id|>"
SPECIAL_TOKENS = [BOS, EOS, START_HEADER, END_HEADER]

# Llama-3 style chat template.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{% if message['content'] is string %}"
    "{{ message['content'] | trim }}"
    "{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] | trim }}{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "{{ '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)

_SUBJECTS = [
    "the agent",
    "a worker",
    "the scheduler",
    "every node",
    "the model",
    "our team",
    "the swarm",
    "a small robot",
    "the server",
    "this function",
    "the user",
    "an old cat",
    "the river",
    "my friend",
    "the system",
    "she",
    "he",
    "they",
    "we",
    "it",
]

_VERBS = [
    "reads",
    "writes",
    "sends",
    "finds",
    "builds",
    "checks",
    "answers",
    "counts",
    "moves",
    "sorts",
    "collects",
    "returns",
    "computes",
    "waits for",
    "asks about",
    "describes",
    "summarizes",
    "explains",
    "compares",
    "tests",
]

_OBJECTS = [
    "the message",
    "a list of numbers",
    "the final answer",
    "three apples",
    "the weather",
    "a long report",
    "every request",
    "the hostfile",
    "some tokens",
    "the results",
    "a question",
    "the blue book",
    "the data",
    "a simple plan",
    "the next step",
    "two prompts",
    "the output",
    "an error",
    "the queue",
    "a short poem",
]

_ENDINGS = [
    "today",
    "quickly",
    "again",
    "in order",
    "before noon",
    "with care",
    "for the group",
    "at the end",
    "one by one",
    "without delay",
    "as expected",
    "in parallel",
    "every hour",
    "on time",
    "by itself",
]
_QUESTIONS = [
    "What is {a} plus {b}?",
    "How many {o} are there?",
    "Why does {s} wait?",
    "Can you list {n} items?",
    "Where is {o}?",
    "Who {v} {o}?",
]


def _sentences(rng: random.Random, count: int) -> list[str]:
    out: list[str] = []
    for i in range(count):
        kind = rng.random()
        if kind < 0.7:
            s = (
                f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} "
                f"{rng.choice(_OBJECTS)} {rng.choice(_ENDINGS)}."
            )
            s = s[0].upper() + s[1:]
        elif kind < 0.9:
            s = rng.choice(_QUESTIONS).format(
                a=rng.randint(0, 999),
                b=rng.randint(0, 999),
                o=rng.choice(_OBJECTS),
                s=rng.choice(_SUBJECTS),
                n=rng.randint(2, 12),
                v=rng.choice(_VERBS),
            )
        else:
            s = f"Item {i}: value={rng.randint(0, 10**6)}, ok={rng.choice(['yes', 'no'])}; done!"
        out.append(s)
    return out


def _build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(SEED)
    texts = _sentences(rng, NUM_SENTENCES)

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    # Like Llama 3: add_special_tokens=True prepends the BOS token.
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{BOS}:0 $A:0",
                pair=f"{BOS}:0 $A:0 {BOS}:1 $B:1",
                special_tokens=[(BOS, bos_id)],
            ),
        ]
    )

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        additional_special_tokens=[START_HEADER, END_HEADER],
        model_max_length=2048,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def make(out_dir: str) -> None:
    if os.path.exists(os.path.join(out_dir, "config.json")):
        print(f"tiny model already present in {out_dir}")
        return

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    t0 = time.monotonic()
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp_dir = os.path.abspath(out_dir) + f".tmp-{os.getpid()}"
    shutil.rmtree(tmp_dir, ignore_errors=True)

    tokenizer = _build_tokenizer()
    tokenizer.save_pretrained(tmp_dir)
    with open(os.path.join(tmp_dir, "chat_template.jinja"), "w", encoding="utf-8") as f:
        f.write(CHAT_TEMPLATE)

    config = LlamaConfig(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,  # head_dim 64 (16 is refused by the CPU attention kernel)
        num_key_value_heads=1,
        max_position_embeddings=2048,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(tmp_dir)

    # Publish atomically: config.json appears only with everything else.
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)  # incomplete leftover (it has no config.json)
    os.replace(tmp_dir, out_dir)
    print(
        f"made tiny model in {out_dir}: vocab={len(tokenizer)} "
        f"params={sum(p.numel() for p in model.parameters())} "
        f"in {time.monotonic() - t0:.1f}s"
    )


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    make(argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
