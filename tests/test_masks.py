"""labkit.masks against transformers' own mask builders and by hand."""
import pytest
import torch
from transformers.masking_utils import and_masks, bidirectional_mask_function, eager_mask, or_masks, sdpa_mask

from labkit import masks
from labkit.errors import LabkitError


@pytest.mark.parametrize("n", [1, 2, 7, 33])
def test_causal_mask_equals_transformers_sdpa_mask(n):
    ref = sdpa_mask(batch_size=1, q_length=n, kv_length=n, allow_is_causal_skip=False)
    assert torch.equal(masks.causal_mask(n), ref[0, 0])


def test_padding_combined_equals_transformers():
    attn = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    ref = sdpa_mask(batch_size=2, q_length=5, kv_length=5, attention_mask=attn, allow_is_causal_skip=False)
    assert torch.equal(masks.combine(masks.causal_mask(5), attn), ref)
    add = eager_mask(batch_size=2, q_length=5, kv_length=5, attention_mask=attn.bool(), dtype=torch.float32)
    assert torch.equal(masks.to_additive(masks.combine(masks.causal_mask(5), attn)), add)


def test_prefix_lm_mask_by_hand_and_its_limits():
    m = masks.prefix_lm_mask(5, 3).int().tolist()
    assert m == [[1, 1, 1, 0, 0],
                 [1, 1, 1, 0, 0],
                 [1, 1, 1, 0, 0],
                 [1, 1, 1, 1, 0],
                 [1, 1, 1, 1, 1]]
    assert torch.equal(masks.prefix_lm_mask(6, 0), masks.causal_mask(6))
    full = sdpa_mask(batch_size=1, q_length=6, kv_length=6, mask_function=bidirectional_mask_function,
                     allow_is_bidirectional_skip=False, allow_is_causal_skip=False)
    assert torch.equal(masks.prefix_lm_mask(6, 6), full[0, 0])
    for n, p in [(5, 3), (9, 1), (9, 8)]:          # transformers' own building blocks: causal OR (both in prefix)
        in_prefix = lambda b, h, q, kv, p=p: (q < p) & (kv < p)  # noqa: E731
        composed = or_masks(and_masks(bidirectional_mask_function, in_prefix),
                            lambda b, h, q, kv: kv <= q)
        ref = sdpa_mask(batch_size=1, q_length=n, kv_length=n, mask_function=composed, allow_is_causal_skip=False)
        assert torch.equal(masks.prefix_lm_mask(n, p), ref[0, 0])


def test_next_token_loss_equals_transformers_loss():
    from labkit import models
    cfg = models.config("lab-tiny", hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                        num_key_value_heads=2, head_dim=16)
    model = models.build(cfg, device="cpu").eval()
    ids = torch.randint(3, 2000, (3, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(ids, labels=ids)
    assert torch.allclose(masks.next_token_loss(out.logits, ids), out.loss, atol=1e-6)
    keep = torch.zeros_like(ids, dtype=torch.bool)
    keep[:, 5:] = True
    labels = ids.masked_fill(~keep, -100)
    with torch.no_grad():
        ref = model(ids, labels=labels).loss
    assert torch.allclose(masks.next_token_loss(out.logits, ids, keep), ref, atol=1e-6)


def test_recomputed_tokens_by_hand():
    turns = [(5, 3), (4, 2), (6, 1)]
    assert masks.recomputed_tokens(turns, reuse_cache=True) == 21
    assert masks.recomputed_tokens(turns, reuse_cache=False) == 5 + 3 + (8 + 4) + 2 + (14 + 6) + 1
    assert masks.recomputed_tokens([], reuse_cache=False) == 0


def test_encoder_decoder_masks_shapes_and_values():
    m = masks.encoder_decoder_masks(4, 3)
    assert m["encoder"].shape == (4, 4) and bool(m["encoder"].all())
    assert torch.equal(m["decoder"], masks.causal_mask(3))
    assert m["cross"].shape == (3, 4) and bool(m["cross"].all())


@pytest.mark.parametrize("call, match", [
    (lambda: masks.causal_mask(0), "positive integer"),
    (lambda: masks.prefix_lm_mask(4, 5), "cannot exceed"),
    (lambda: masks.prefix_lm_mask(4, -1), "non-negative"),
    (lambda: masks.encoder_decoder_masks(2, 0), "n_tgt"),
    (lambda: masks.padding_mask(torch.ones(3)), "batch, length"),
    (lambda: masks.combine(masks.causal_mask(3), torch.ones(1, 4)), "same keys"),
    (lambda: masks.next_token_loss(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long)), "batch, n, vocab"),
    (lambda: masks.next_token_loss(torch.zeros(1, 3, 5), torch.zeros(1, 3, dtype=torch.long),
                                   torch.tensor([[1, 0, 0]])), "nothing to predict"),
    (lambda: masks.recomputed_tokens([(2, -1)]), "non-negative"),
])
def test_bad_input_one_line(call, match):
    with pytest.raises(LabkitError, match=match) as err:
        call()
    assert "\n" not in str(err.value)
