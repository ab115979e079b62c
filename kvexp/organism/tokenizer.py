"""The organism's tokenizer: a tiny word-level vocabulary built with the `tokenizers` library.

Every character the tasks write is one token (variable names a-z, digits, punctuation, space and
newline), every word of the tasks' fixed question texts is one token (with its leading space), and so is
``\\boxed{``; anything else maps to ``<unk>``. The chat template is minimal and round-trips: the text
`apply_chat_template` writes re-tokenizes, without adding special tokens, into exactly the ids the model was
trained on.
"""

from __future__ import annotations

import string

BOS, EOS, PAD, UNK = "<|bos|>", "<|end|>", "<|pad|>", "<|unk|>"
SYSTEM, USER, ASSISTANT = "<|system|>", "<|user|>", "<|assistant|>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK, SYSTEM, USER, ASSISTANT)
WORDS = (
    "facts",
    "start",
    "at",
    "and",
    "take",
    "steps",
    "add",
    "the",
    "values",
    "mod",
    "reason",
    "step",
    "by",
    "put",
    "final",
    "answer",
    "in",
)
# Words of the tasks added after `chain` (recall, read_once, local_state): appended to the vocabulary
# after every earlier token, so a token keeps its id across versions.
SUITE_WORDS = ("pair", "last", "two", "memo", "sum", "then", "from", "as")
BOXED = "\\boxed{"
PUNCTUATION = (" ", "\n", ":", "=", ">", "+", ".", ",", "{", "}", "\\")

# One piece per token: \boxed{, a word of two or more letters with its leading space if any, or any single
# character.
PRE_TOKENIZE = r"\\boxed\{| [a-z](?:=[0-9]|>[a-z])|[a-z][=>]| ?[a-z][a-z]+|[\s\S]"

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '<|system|>' + message['content'] }}"
    "{% elif message['role'] == 'user' %}{{ '<|user|>' + message['content'] }}"
    "{% else %}{{ '<|assistant|>' + message['content'] + '<|end|>' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def vocabulary() -> list[str]:
    return [
        *SPECIAL_TOKENS,
        *string.ascii_lowercase,
        *string.digits,
        *PUNCTUATION,
        BOXED,
        *WORDS,
        *(" " + w for w in WORDS),
        *(f" {v}={d}" for v in string.ascii_lowercase for d in string.digits),
        *(f" {v}>{w}" for v in string.ascii_lowercase for w in string.ascii_lowercase),
        *(f"{v}=" for v in string.ascii_lowercase),
        *(f"{v}>" for v in string.ascii_lowercase),
        *SUITE_WORDS,
        *(" " + w for w in SUITE_WORDS),
    ]


def build_tokenizer():
    """A `PreTrainedTokenizerFast` with bos/eos/pad/unk and the chat template."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(vocabulary())}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(PRE_TOKENIZE), behavior="isolated")
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        additional_special_tokens=[SYSTEM, USER, ASSISTANT],
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
        model_max_length=1024,
    )
    return tokenizer


def training_text(question: str, trace: str) -> tuple[str, str]:
    """(prompt, completion) text of one training example: the chat-templated user turn with the
    generation prompt, and the assistant's reply closed by the end-of-turn token."""
    return f"{BOS}{USER}{question}{ASSISTANT}", f"{trace}{EOS}"
