"""The lab tokenizer: a small byte-level BPE with a chat template.

Why our own? The labs run offline, so nothing may be downloaded; a 2,048-token
vocabulary keeps the tiny models' embedding tables small (a real 32k-128k
vocabulary would be most of a 4M-parameter model). Byte-level BPE can encode
any string (no unknown token), like GPT-2's and Llama-3's tokenizers.

The chat template wraps each turn in role markers and ends it with
``<|end|>``. Assistant content sits inside ``{% generation %}`` so
``apply_chat_template(..., return_assistant_tokens_mask=True)`` tells which
tokens an SFT loss should train on (lab 09).

Retrain with ``python -m labkit tokenizer`` (rebuilds ``data/tokenizer``; a result that differs
from the committed files needs ``--force``).
"""
from __future__ import annotations

from pathlib import Path

from .errors import LabkitError

TOKENIZER_DIR = Path(__file__).resolve().parent.parent / "data" / "tokenizer"
VOCAB_SIZE = 2048
# Fixed ids: pad 0, bos 1, eos 2 (the lab model configs rely on these).
SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|eos|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\n' }}{% generation %}{{ message['content'] + '<|end|>' }}{% endgeneration %}{{ '\n' }}"
    "{%- else %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|assistant|>\n' }}{%- endif %}"
)


def train_tokenizer(texts, vocab_size: int = VOCAB_SIZE):
    """Train a byte-level BPE on an iterable of strings; return a PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), min_frequency=2)
    bpe.train_from_iterator(texts, trainer=trainer)
    return _wrap(bpe)


def _wrap(bpe):
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|pad|>",
        additional_special_tokens=["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"],
        model_max_length=1024, padding_side="right", clean_up_tokenization_spaces=False)
    tok.chat_template = CHAT_TEMPLATE
    return tok


def load_tokenizer(path: str | Path | None = None):
    """The committed lab tokenizer (a `PreTrainedTokenizerFast` with its chat template)."""
    from transformers import PreTrainedTokenizerFast

    path = Path(path) if path is not None else TOKENIZER_DIR
    if not (path / "tokenizer.json").exists():
        raise LabkitError(f"no tokenizer in {path}; create it with `python -m labkit tokenizer`")
    tok = PreTrainedTokenizerFast.from_pretrained(path)
    if not tok.chat_template:
        tok.chat_template = CHAT_TEMPLATE
    return tok


# Tokens that close an assistant turn: the lab template's, ChatML's (SmolLM2, Qwen), Llama-3's.
END_OF_TURN_TOKENS = ("<|end|>", "<|im_end|>", "<|eot_id|>")


def end_of_turn_ids(tokenizer) -> list[int]:
    """Token ids that end a generation: eos for raw text, and the end-of-turn token of the
    tokenizer's chat template (``<|end|>`` for the lab tokenizer, ``<|im_end|>`` for SmolLM2)."""
    vocab = tokenizer.get_vocab()
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    ids += [vocab[t] for t in END_OF_TURN_TOKENS if t in vocab]
    return list(dict.fromkeys(ids))


def training_texts(seed: int = 0) -> list[str]:
    """The text the tokenizer is trained on: every lab corpus, so domain words,
    numbers and chat turns all tokenize compactly."""
    from . import data

    texts = data.general_corpus(20000, seed=seed)
    texts += data.domain_corpus(5000, seed=seed)
    texts += [f"{x['prompt']}\n{x['response']}" for x in data.instructions(3000, seed=seed)]
    texts += [f"{x['question']}\n{x['solution']}" for x in data.word_problems(3000, seed=seed)]
    for d in data.dialogues(1000, seed=seed):
        texts += [u + "\n" + a for u, a in d["history"]] + [d["prompt"] + "\n" + d["response"]]
    return texts


def main(argv: list[str]) -> int:
    from . import cli

    p = cli.parser("tokenizer", "Retrain the lab BPE tokenizer into data/tokenizer.", profile=False, json_flag=False)
    p.add_argument("--vocab-size", type=int, default=VOCAB_SIZE)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(TOKENIZER_DIR))
    p.add_argument("--force", action="store_true", help="replace committed tokenizer files that would change")
    args = p.parse_args(argv)
    if args.vocab_size < 300:
        raise LabkitError("--vocab-size must be at least 300 (256 bytes + special tokens + merges)")
    import tempfile

    from . import artefacts

    tok = train_tokenizer(training_texts(args.seed), args.vocab_size)
    with tempfile.TemporaryDirectory(prefix="labkit-tokenizer-") as tmp:
        tok.save_pretrained(tmp)  # built aside, then compared: a committed tokenizer is never silently replaced
        status = artefacts.publish(Path(tmp), Path(args.out), force=args.force, what="tokenizer")
    changed = sorted(name for name, s in status.items() if s != "unchanged")
    print(f"{len(tok)}-token BPE tokenizer in {args.out}: "
          + (f"written ({', '.join(changed)})" if changed else "unchanged (reproduced bit for bit)"))
    return 0
