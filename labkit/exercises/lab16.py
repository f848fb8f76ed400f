"""Lab 16: architectures and emergence -- the exercises at the end of the notebook.

The code exercises run the learner's function on fresh random sizes against `labkit.masks`
(proven equal to transformers' `sdpa_mask` / `create_bidirectional_mask` and to a model's own
loss in lab 16, section 4); the numbers are computed from the same functions.
"""
from __future__ import annotations

from .checker import CodeExercise, Exercise, draw_int


def _prefix_inputs(gen):
    n = draw_int(gen, 1, 40)
    return (n, draw_int(gen, 0, n))


def _prefix_reference(n, prefix_len):
    from .. import masks

    return masks.prefix_lm_mask(n, prefix_len)


def _ed_inputs(gen):
    return (draw_int(gen, 1, 30), draw_int(gen, 1, 30))


def _ed_reference(n_src, n_tgt):
    from .. import masks

    return masks.encoder_decoder_masks(n_src, n_tgt)


def _loss_inputs(gen):
    import torch

    batch, n, vocab = draw_int(gen, 1, 4), draw_int(gen, 2, 12), draw_int(gen, 2, 50)
    logits = torch.randn(batch, n, vocab, generator=gen) * 3
    ids = torch.randint(0, vocab, (batch, n), generator=gen)
    keep = torch.rand(batch, n, generator=gen) < 0.6
    keep[0, -1] = True                      # at least one token after the first carries loss
    return (logits, ids, keep if draw_int(gen, 0, 3) else None)


def _loss_reference(logits, input_ids, loss_mask):
    from .. import masks

    return masks.next_token_loss(logits, input_ids, loss_mask)


def _turns_inputs(gen):
    turns = [(draw_int(gen, 0, 60), draw_int(gen, 0, 60)) for _ in range(draw_int(gen, 0, 12))]
    return (turns, bool(draw_int(gen, 0, 1)))


def _turns_reference(turns, reuse_cache):
    from .. import masks

    return masks.recomputed_tokens(turns, reuse_cache=reuse_cache)


def _prefix_true() -> float:
    from .. import masks

    return float(masks.prefix_lm_mask(512, 128).sum())


def _chat_positions() -> float:
    from .. import masks

    return float(masks.recomputed_tokens([(50, 100)] * 10, reuse_cache=False))


EXERCISES = {
    "16.prefix_lm_mask": CodeExercise(
        question="write prefix_lm_mask_s(n, prefix_len): an (n, n) bool mask, bidirectional over the first prefix_len "
                 "tokens and causal after them",
        reference=_prefix_reference, inputs=_prefix_inputs, solution="prefix_lm_mask_s",
        hint="start from the causal mask (key j <= query i) and OR in the block where both i and j are < prefix_len"),
    "16.encoder_decoder_masks": CodeExercise(
        question="write encoder_decoder_masks_s(n_src, n_tgt): a dict of bool masks 'encoder' (n_src, n_src), "
                 "'decoder' (n_tgt, n_tgt) and 'cross' (n_tgt, n_src)",
        reference=_ed_reference, inputs=_ed_inputs, solution="encoder_decoder_masks_s",
        hint="the encoder and the cross-attention see everything; only the decoder's self-attention is causal"),
    "16.next_token_loss": CodeExercise(
        question="write next_token_loss_s(logits, input_ids, loss_mask=None): the mean -log p of each next token over "
                 "the tokens that carry loss (None: every token but the first)",
        reference=_loss_reference, inputs=_loss_inputs, solution="next_token_loss_s", rtol=1e-5, atol=1e-5,
        hint="position t predicts token t+1: log_softmax(logits[:, :-1]), gather input_ids[:, 1:], weight by loss_mask[:, 1:]"),
    "16.recomputed_tokens": CodeExercise(
        question="write recomputed_tokens_s(turns, reuse_cache=True): token positions computed over a chat of "
                 "[(user, reply), ...] with and without reusing the cache across turns",
        reference=_turns_reference, inputs=_turns_inputs, solution="recomputed_tokens_s", rtol=0, atol=0,
        hint="with the cache each token once; without it, each turn re-encodes all earlier turns plus its message"),

    "16.prefix_mask_true_entries": Exercise(
        "True entries of prefix_lm_mask(512, 128)", _prefix_true, 1e-9,
        "the causal triangle n(n+1)/2 plus the prefix block's upper part p(p-1)/2"),
    "16.prefix_lm_chat_positions": Exercise(
        "token positions a prefix LM computes over 10 turns of 50 user + 100 reply tokens, re-encoding the history each turn",
        _chat_positions, 1e-9, "turn t re-encodes 150 (t-1) history tokens plus its 50, then decodes 100"),
    "16.exact_match_p_to_k": Exercise(
        "expected exact match on 8-token answers when each token is right with probability 0.9 (independent)",
        lambda: 0.9 ** 8, 0.002, "every one of the 8 tokens must be right: p^k"),
}
