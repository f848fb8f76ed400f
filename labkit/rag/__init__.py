"""Retrieval-augmented generation and the LangChain pieces, from scratch (lab 15).

Built in lab 15 ("Retrieval and LangChain from scratch"). Each piece is small enough to read
in one sitting, and each is checked in ``tests/test_rag.py`` against the library a learner
would otherwise import. One module per role, every name re-exported here, so ``from labkit
import rag; rag.BM25(...)`` reads the same as ever:

* `chunking` -- splitters (lab 15 §3-5): `fixed_size_chunks`, `recursive_chunks`;
* `sparse` -- BM25 and its `tokenize` (lab 15 §3, §6);
* `dense` -- `mean_pool`, `embed`, `cosine_top_k`, `BiEncoder`, `contrastive_loss`,
  `train_bi_encoder` (lab 15 §3, §6);
* `ranking` -- hybrid search by `reciprocal_rank_fusion`, and `recall_at_k`, `hit_at_k`, `mrr`
  (lab 15 §3, §6);
* `task` -- the lab's corpus, questions, relevant chunks and answer grading (lab 15 §5, §7);
* `langchain_pieces` -- prompt template, example selectors, JSON output parser, chat memories,
  ReAct with a calculator (lab 15 §8);
* `experiment` -- `retrieval_table` and ``python -m labkit rag`` (lab 15 §6);
* `checks` -- the one-line argument checks they share.

===================================  ==========================================================
labkit                               the library it equals
===================================  ==========================================================
``fixed_size_chunks``                ``langchain_text_splitters.CharacterTextSplitter``
``recursive_chunks``                 ``RecursiveCharacterTextSplitter(...).split_text``
``BM25(...).scores``                 ``rank_bm25.BM25Okapi(...).get_scores`` (bit for bit)
``cosine_top_k``                     ``faiss.IndexFlatIP`` search on L2-normalised float32
``PromptTemplate(t).format``         ``langchain_core.prompts.PromptTemplate.from_template``
``LengthExampleSelector``            ``langchain_core.example_selectors.LengthBasedExampleSelector``
``parse_json_output``                ``langchain_core.output_parsers.JsonOutputParser().parse``
``BufferMemory.buffer_string``       ``langchain_core.messages.get_buffer_string``
===================================  ==========================================================

**Chunking** (section 1). A splitter cuts the text at a separator, then *merges* the pieces
greedily into chunks of at most ``chunk_size`` characters; when a chunk is full the next one
starts with the last pieces of the previous one that fit in ``chunk_overlap`` (so the text
on either side of a boundary is found together in one chunk). The recursive splitter tries ``"\\n\\n"``
(paragraphs) first and re-splits only the pieces still too long with ``"\\n"``, then ``" "``,
then ``""`` (characters); it keeps each separator at the start of the piece after it. A piece
that no separator can cut (a long word when the list has no ``""``) is kept whole: chunks can
be longer than ``chunk_size``.

**Sparse retrieval** (section 2): BM25 (Robertson et al.; Okapi weighting with ``k1``, ``b``)
scores a document by the query words it contains, weighted by their rarity (idf) and damped
by term frequency and document length. rank_bm25's variant floors a negative idf (a word in
more than half the documents) at ``epsilon`` x the mean idf.

**Dense retrieval** (section 3): embed queries and documents as unit vectors (mean of a
model's last hidden states, or a small `BiEncoder` trained with in-batch negatives, the
InfoNCE loss of van den Oord et al. 2018 / DPR, Karpukhin et al. 2020), then rank by cosine
similarity = inner product of unit vectors. **Hybrid search** fuses the two rankings with
reciprocal-rank fusion (Cormack, Clarke & Buettcher 2009): ``score(d) = sum 1 / (k + rank)``.

**The LangChain pieces** (section 4): a prompt template, a few-shot example selector by length,
a JSON output parser, a chat buffer that counts the tokens it carries, and a ReAct loop
(Yao et al. 2023) with a calculator tool that parses arithmetic with `ast` instead of `eval`.

Ties: the top-k searches break exact ties by the lower id first (a stable sort). faiss and
rank_bm25 do not (see `cosine_top_k` and `BM25.top_k`); exact ties come from duplicate documents.
"""
from __future__ import annotations

# the private names (underscored) are those of the old single module, still importable here
from .checks import _check_text, _number, _positive_int, _shape  # noqa: F401
from .chunking import (_check_chunk_sizes, _merge, _recursive, _split_keeping_separator,  # noqa: F401
                       fixed_size_chunks, recursive_chunks)
from .dense import (BiEncoder, _as_matrix, _pad_right, contrastive_loss, cosine_top_k, embed,  # noqa: F401
                    mean_pool, train_bi_encoder)
from .experiment import main, retrieval_table
from .langchain_pieces import (REACT_TEMPLATE, _ACTION, _FENCE, _OPS, BufferMemory,  # noqa: F401
                               LengthExampleSelector, PromptTemplate, SimilarityExampleSelector, SummaryMemory,
                               _word_count, calculator, parse_json_output, react)
from .ranking import _id_list, _per_query, hit_at_k, mrr, recall_at_k, reciprocal_rank_fusion  # noqa: F401
from .sparse import BM25, _stable_top, tokenize  # noqa: F401
from .task import (QUESTIONS, _REFUSAL, _mentions, answer_bearing, answer_match, fact_question,  # noqa: F401
                   is_refusal, lab_corpus, qa_set, training_pairs)

__all__ = ["BM25", "BiEncoder", "BufferMemory", "LengthExampleSelector", "PromptTemplate", "QUESTIONS",
           "REACT_TEMPLATE", "SimilarityExampleSelector", "SummaryMemory", "answer_bearing", "answer_match",
           "calculator", "contrastive_loss", "cosine_top_k", "embed", "fact_question", "fixed_size_chunks",
           "hit_at_k", "is_refusal", "lab_corpus", "main", "mean_pool", "mrr", "parse_json_output", "qa_set",
           "react", "recall_at_k", "reciprocal_rank_fusion", "recursive_chunks", "retrieval_table", "tokenize",
           "train_bi_encoder", "training_pairs"]

