"""Supervised fine-tuning data: formats, loss masks, packing, collation, dedup (lab 09).

An SFT example in the usual shape is ``{"prompt", "response", "history": [[user, assistant], ...]}``:
the history holds the earlier turns, ``prompt``/``response`` the last one. This module turns it into
``{"input_ids", "attention_mask", "labels"}`` where ``labels`` equals ``input_ids`` on the tokens the
loss trains and is ``-100`` (ignored by the cross-entropy) everywhere else.

Decisions, and why:

* **Loss only on assistant tokens.** The prompt is given at inference time; training the model to
  *predict* user turns wastes capacity on text it never has to write and teaches it to continue a
  conversation by inventing the user's next message.
* **The ``<|end|>`` after an answer carries loss.** It is the only way the model learns to stop.
  The role headers (``<|assistant|>`` + newline), the newline after ``<|end|>``, ``<|bos|>``,
  system and user turns and padding do not.
* **Multi-turn:** every assistant turn is trained by default (one forward pass teaches all of
  them, each conditioned on its true history); ``last_turn_only=True`` trains the final answer only.
* **Empty response:** `LabkitError` (only ``<|end|>`` would be trained, teaching the model to say
  nothing). **Truncation** may cut only untrained tokens; if it would cut a trained answer,
  `format_example` raises, or drops the oldest history turns first with ``truncation="drop_history"``.
  `format_dataset(..., on_error="skip")` skips such examples and counts why.
* **Turn text is stripped** of surrounding whitespace: the template supplies its own newlines, so
  ``<|assistant|>`` + newline always tokenizes the same way and `build_labels` can find it.
* **Packing** concatenates short examples into one row and restarts ``position_ids`` at each
  example. Transformers then builds the block-diagonal (per-document) causal mask itself --
  but only with ``attention_mask=None`` and no KV cache, so packed batches carry
  ``use_cache=False``. `document_mask` builds the same mask from scratch.
* **Continue-pretraining** data is raw text: ``<bos> doc <eos>`` streamed and cut into fixed
  windows, loss on every token (`format_pretraining`).

Lab 04's ``lora.instruction_batches`` / ``instruction_eval_batches`` are thin wrappers over
`format_example` + `sft_batches` / `eval_batches`; a test pins their labels to the tokenizer's own
``{% generation %}`` mask.

One module per role, every name re-exported here, so ``from labkit import sft; sft.format_example(...)``
and ``python -m labkit sft`` (``labkit.sft:main``) read the same as before the split:

* `formats` -- `messages`, `build_labels`, `format_example`, `format_dataset`, `format_prompt`,
  `format_pretraining`, `IGNORE`, `TEMPLATES` (lab 09 §3, §5, §7);
* `batches` -- `collate`, `sft_batches`, `eval_batches`, `pack`, `collate_packed`, `packed_batches`,
  `document_mask` (lab 09 §4);
* `render` -- `render_text`, `render_html` (lab 09 §3);
* `generation` -- `generate` (lab 09 §6-7);
* `curation` -- exact and MinHash near dedup, the length filter, `clean`, `token_counts`, `mix_table`
  (lab 09 §8);
* `command` -- `main`, the ``python -m labkit sft`` command (lab 09 §3).
"""
from ..errors import LabkitError  # noqa: F401 -- a name of the module before the split
from .batches import collate, collate_packed, document_mask, eval_batches, pack, packed_batches, sft_batches
from .command import main
from .curation import (_PRIME, clean, exact_dedup, jaccard, length_filter, minhash_jaccard,  # noqa: F401 (_PRIME)
                       minhash_signatures, mix_table, near_dedup, normalize, shingles, text_of, token_counts)
from .formats import (IGNORE, TEMPLATES, build_labels, format_dataset, format_example, format_pretraining,
                      format_prompt, messages)
from .formats import _base_segments, _encode, _newline_id, _special, _text  # noqa: F401 -- old private names
from .generation import generate
from .render import _pieces, render_html, render_text  # noqa: F401 (_pieces)

__all__ = ["IGNORE", "TEMPLATES", "messages", "format_example", "build_labels", "format_prompt",
           "format_dataset", "format_pretraining", "collate", "sft_batches", "eval_batches", "pack",
           "collate_packed", "packed_batches", "document_mask", "render_text", "render_html", "generate",
           "normalize", "text_of", "exact_dedup", "shingles", "jaccard", "minhash_signatures",
           "minhash_jaccard", "near_dedup", "length_filter", "clean", "token_counts", "mix_table", "main"]
