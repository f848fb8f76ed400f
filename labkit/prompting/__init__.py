"""Chain-of-thought prompting: prompt builders, answer extraction and one evaluation harness (lab 08).

The strategies, as the papers define them:

* ``direct``          -- ask for the answer at once ("A: The answer is"), the baseline;
* ``zero_shot_cot``   -- Kojima et al. 2022: stage 1 appends "Let's think step by step."
  and lets the model reason; stage 2 feeds the reasoning back with
  "Therefore, the answer (arabic numerals) is" so the answer comes out in a
  parseable form;
* ``few_shot_cot``    -- Wei et al. 2022: k worked exemplars ("Q: ... A: <steps> The
  answer is N.") before the question; the model imitates the format;
* ``least_to_most``   -- Zhou et al. 2022: stage 1 decomposes the problem into
  sub-questions; then one call per sub-question, each prompt holding the sub-questions and
  the answers of the earlier calls, and a last call for the final answer;
* ``self_consistency`` -- Wang et al. 2022: sample n reasoning paths at a temperature
  and take the majority answer.

The same harness (`evaluate`) runs on the lab's CoT model (`load_cot_model`) and on any
local Hugging Face causal LM named by ``LABKIT_MODEL`` (`load_model`).

The *text formats* below are also what `labkit.cot_model` trains the lab model on:
change them and the committed checkpoint no longer matches its prompts.

One module per role, every name re-exported here, so ``from labkit import prompting as P; P.evaluate(...)``
reads the same as before the split:

* `prompts` -- the strategies' prompt texts and the few-shot exemplars (lab 08 §4, §6b);
* `scoring` -- answer extraction, Wilson intervals, voting, Cochran's Q, `diagnose` (lab 08 §5-6, §6b, §11);
* `generation` -- `load_model` and batched `generate_batch` (lab 08 §3, §8, §12);
* `harness` -- `evaluate`, `run_strategy` (was `_run`), the least-to-most calls, records (lab 08 §4-6, §10);
* `cli` -- `held_out`, `compare`, `format_table` and ``python -m labkit cot`` (`main`) (lab 08 §6, §8, §12).
"""
from pathlib import Path  # noqa: F401 -- a name of the module before the split (tests build paths with P.Path)

from ..errors import LabkitError  # noqa: F401 -- a name of the module before the split
from .prompts import (ANSWER_TRIGGER, COT_MODEL, COT_TRIGGER, EXEMPLAR_STEPS, LTM_SOLVE, LTM_TRIGGER, STRATEGIES, _SUBQ,
                      cut_subanswer, decomposition_text, direct, exemplar_sets, exemplars, few_shot_cot, least_to_most,
                      least_to_most_final, least_to_most_stage2, least_to_most_step, parse_subquestions, qa_prefix,
                      reasoning_of, self_consistency, solved_in_order_text, subquestions, zero_shot_cot,
                      zero_shot_cot_stage2)
from .scoring import (_ANSWER_RE, _EQ, _NUMBER, CochranResult, SpreadResult, chi2_sf, cochran_q, diagnose,
                      extract_answer, majority_vote, normalize_number, prompt_spread, wilson_ci)
from .generation import _is_lab_tokenizer, _model_texts, generate_batch, load_model
from .harness import (LTM_MAX_SUBQUESTIONS, EvalResult, Record, _check_strategy, _run, evaluate,
                      least_to_most_calls, prompt_lengths, read_records, records_table, run_strategy, write_records)
from .cli import _check_cli_args, _check_out_path, compare, format_table, held_out, main

__all__ = [  # prompt texts (prompts.py)
           "STRATEGIES", "COT_TRIGGER", "ANSWER_TRIGGER", "LTM_TRIGGER", "LTM_SOLVE", "COT_MODEL", "qa_prefix",
           "reasoning_of", "subquestions", "decomposition_text", "solved_in_order_text", "direct", "zero_shot_cot",
           "zero_shot_cot_stage2", "EXEMPLAR_STEPS", "exemplars", "few_shot_cot", "exemplar_sets", "least_to_most",
           "least_to_most_stage2", "parse_subquestions", "least_to_most_step", "least_to_most_final",
           "cut_subanswer", "self_consistency",
           # scoring (scoring.py)
           "normalize_number", "extract_answer", "wilson_ci", "majority_vote", "chi2_sf", "CochranResult",
           "cochran_q", "SpreadResult", "prompt_spread", "diagnose",
           # models (generation.py)
           "load_model", "generate_batch",
           # the harness (harness.py)
           "Record", "EvalResult", "prompt_lengths", "evaluate", "run_strategy", "LTM_MAX_SUBQUESTIONS",
           "least_to_most_calls", "records_table", "write_records", "read_records",
           # experiments and the CLI (cli.py)
           "held_out", "compare", "format_table", "main"]

# Before the split this was labkit/prompting.py, and tests find the repository as
# ``Path(prompting.__file__).parent.parent`` (the committed lab-cot model's training.json): the package
# reports its own directory, labkit/prompting, so that still names the repository root.
__file__ = str(Path(__file__).parent)
