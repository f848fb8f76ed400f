"""Decoding from scratch: the logits processors, a KV cache and ``generate``.

Built in lab 10 ("Generation and repetition"). Each processor takes ``(batch, vocab)`` logits
and returns new logits exactly as the matching ``transformers`` processor does (same ties, same
``-inf`` handling), so a learner can swap one for the other:

==========================  ===================================================
labkit                      transformers
==========================  ===================================================
``temperature(l, t)``       ``TemperatureLogitsWarper(t)``
``top_k(l, k)``             ``TopKLogitsWarper(k)``
``top_p(l, p)``             ``TopPLogitsWarper(p)``
``repetition_penalty``      ``RepetitionPenaltyLogitsProcessor(penalty)``
``no_repeat_ngram``         ``NoRepeatNGramLogitsProcessor(n)``
``generate(model, ...)``    ``model.generate(...)`` (greedy and multinomial sampling)
==========================  ===================================================

Why a KV cache: a decoder's token t attends to the keys and values of tokens 0..t. Without a
cache every new token recomputes them for the whole prefix (quadratic work); with one, each step
computes q, k, v for the *new* token only and appends k, v to what earlier steps stored. The
cache is the memory that grows with every generated token (``KVCache.nbytes`` equals
`labkit.memory.kv_cache_bytes`), and decode becomes memory-bound: each step reads every weight
and the whole cache to produce one token.

``generate`` runs the model's own modules (embeddings, norms, projections, MLP, rotary
embedding, LM head) but does the attention bookkeeping itself -- the cache, the positions, the
causal prefill -- so it works on the Llama-family models of the labs (``lab-tiny``,
``smollm2-135m``, LoRA-wrapped or not).

Repetition metrics (Li et al. 2016's distinct-n; Holtzman et al. 2020 on degeneration):
``distinct_n(tokens, n)`` is the share of n-grams that are distinct, ``repetition_rate(tokens, n)``
the share of n-gram occurrences that repeat an earlier one (``1 - distinct_n``).

One module per role, every name re-exported here, so ``from labkit import decoding;
decoding.generate(model, ids, 20)`` reads the same as before the split:

* `processors` -- the five logits processors (lab 10 §3-4);
* `repetition_metrics` -- `distinct_n`, `repetition_rate` (lab 10 §3-5);
* `kv_cache` -- `KVCache` and `forward_logits` (lab 10 §3, §7);
* `generation` -- `generate` (lab 10 §3-7);
* `experiment` -- `GRID`, `repetition_grid` and ``python -m labkit decode`` (`main`) (lab 10 §5);
* `checks` -- the one-line argument checks they share.
"""
from ..errors import LabkitError  # noqa: F401 -- a name of the module before the split
from ..rope import apply_rope  # noqa: F401 -- a name of the module before the split
from .checks import _check_ids, _check_logits, _positive_int, _positive_number
from .experiment import GRID, _left_pad, main, repetition_grid
from .generation import (_apply_repetition_penalty, _apply_temperature, _apply_top_k, _apply_top_p,
                         generate)
from .kv_cache import KVCache, _decoder, forward_logits
from .processors import no_repeat_ngram, repetition_penalty, temperature, top_k, top_p
from .repetition_metrics import _ngrams, distinct_n, repetition_rate

__all__ = ["KVCache", "distinct_n", "generate", "no_repeat_ngram", "repetition_grid", "repetition_penalty", "repetition_rate",
           "temperature", "top_k", "top_p"]
