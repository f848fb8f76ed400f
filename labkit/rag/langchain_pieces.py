"""The LangChain pieces, from scratch: prompts, example selectors, output parsing, memory, ReAct (lab 15 §8).

Why a module: these are what a RAG application is assembled from, once retrieval works. Each
equals the library piece a learner would otherwise import (checked in tests/test_rag.py and lab 15 §8):

==============================  ==============================================================
labkit                          the library it equals
==============================  ==============================================================
``PromptTemplate(t).format``    ``langchain_core.prompts.PromptTemplate.from_template``
``LengthExampleSelector``       ``langchain_core.example_selectors.LengthBasedExampleSelector``
``SimilarityExampleSelector``   ``SemanticSimilarityExampleSelector`` over an in-memory store
``parse_json_output``           ``langchain_core.output_parsers.JsonOutputParser().parse``
``BufferMemory.buffer_string``  ``langchain_core.messages.get_buffer_string``
==============================  ==============================================================

plus `SummaryMemory` (a buffer that summarises its oldest turns) and a ReAct loop (`react`,
Yao et al. 2023) with a `calculator` tool that parses arithmetic with `ast` instead of `eval`.
"""
from __future__ import annotations

import ast
import json
import operator
import re
from string import Formatter

from ..errors import LabkitError
from .checks import _check_text, _number, _positive_int
from .dense import _as_matrix, cosine_top_k
from .sparse import tokenize

__all__ = ["PromptTemplate", "LengthExampleSelector", "parse_json_output", "BufferMemory", "calculator",
           "REACT_TEMPLATE", "react", "SimilarityExampleSelector", "SummaryMemory"]


class PromptTemplate:
    """An f-string template: ``PromptTemplate("Q: {question}\\nA:").format(question="...")``.

    Equals ``langchain_core.prompts.PromptTemplate.from_template(template).format(...)``:
    ``{{`` and ``}}`` are literal braces, ``{x!r}`` and ``{x:>8}`` work as in ``str.format``,
    extra keywords are ignored, ``input_variables`` is sorted. Like LangChain it refuses
    attribute access or indexing (``{x.y}``, ``{x[0]}``) and positional fields (``{}``, ``{0}``);
    a missing variable is a one-line LabkitError (LangChain raises a KeyError).
    """

    def __init__(self, template: str):
        _check_text(template, "template")
        try:
            fields = [(name, spec, conv) for _, name, spec, conv in Formatter().parse(template) if name is not None]
        except ValueError as e:
            raise LabkitError(f"template is not a valid f-string template ({e}); "
                              "write a literal brace as {{ or }}") from None
        for name, spec, conversion in fields:
            if name == "" or name.isdigit() or any(c in name for c in ".[]"):
                raise LabkitError(f"invalid variable {{{name}}} in template: use a plain name such as {{question}}")
            if spec and ("{" in spec or "}" in spec):
                raise LabkitError(f"variable {{{name}}} has a nested field in its format spec; "
                                  "nested fields are not allowed")
            if conversion not in (None, "r", "s", "a"):
                raise LabkitError(f"variable {{{name}!{conversion}}}: the conversion must be !r, !s or !a")
        self.template = template
        self.input_variables = sorted({name for name, _, _ in fields})

    def format(self, **variables) -> str:
        missing = [v for v in self.input_variables if v not in variables]
        if missing:
            raise LabkitError(f"PromptTemplate.format is missing {missing}: pass every one of "
                              f"{self.input_variables} as a keyword, e.g. .format({missing[0]}=...)")
        convert = {"r": repr, "s": str, "a": ascii}
        out = []
        for literal, name, spec, conversion in Formatter().parse(self.template):
            out.append(literal)
            if name is not None:
                value = variables[name]
                if conversion:
                    value = convert[conversion](value)
                out.append(format(value, spec))
        return "".join(out)

    def __repr__(self) -> str:
        return f"PromptTemplate({self.template!r})"


def _word_count(text: str) -> int:
    """LangChain's default length: pieces between spaces and newlines (``len(re.split(r"\\n| ", t))``)."""
    return len(re.split(r"\n| ", text))


class LengthExampleSelector:
    """Few-shot examples, in order, while the prompt stays under ``max_length``.

    Equals ``LengthBasedExampleSelector(examples=..., example_prompt=..., max_length=...)``:
    the budget starts at ``max_length - length(" ".join(input values))`` and takes examples
    from the front while each one still fits (stopping at the first that does not, or when the
    budget is exactly spent). ``example_prompt`` formats one example (a `PromptTemplate` or
    anything with ``.format(**example)``); ``get_text_length`` defaults to LangChain's word count.
    """

    def __init__(self, examples, example_prompt, max_length: int = 2048, get_text_length=None):
        if not isinstance(examples, (list, tuple)) or not all(isinstance(e, dict) for e in examples):
            raise LabkitError("examples must be a list of dicts, one per example, e.g. [{'input': ..., 'output': ...}]")
        if not hasattr(example_prompt, "format"):
            raise LabkitError("example_prompt must be a PromptTemplate (something with .format(**example))")
        self.example_prompt = example_prompt
        self.max_length = _number(max_length, "max_length")
        self.get_text_length = get_text_length or _word_count
        self.examples, self.example_text_lengths = [], []
        for example in examples:
            self.add_example(example)

    def add_example(self, example: dict) -> None:
        self.examples.append(example)
        self.example_text_lengths.append(self.get_text_length(self.example_prompt.format(**example)))

    def select_examples(self, input_variables: dict) -> list[dict]:
        if not isinstance(input_variables, dict):
            raise LabkitError("input_variables must be a dict of the new input, e.g. {'input': 'big'}")
        remaining = self.max_length - self.get_text_length(" ".join(input_variables.values()))
        chosen = []
        for example, length in zip(self.examples, self.example_text_lengths):
            if remaining <= 0 or remaining - length < 0:
                break
            chosen.append(example)
            remaining -= length
        return chosen


_FENCE = re.compile(r"```(?:json)?(.*?)(?:```|$)", re.DOTALL)


def parse_json_output(text: str, raise_on_error: bool = True):
    """The JSON value a model wrote: at the start of its reply, or of its first ```` ```json ```` fence.

    Agrees with ``JsonOutputParser().parse`` on valid JSON, surrounded by whitespace, in a fence
    (with prose before or after it), followed by trailing words (ignored), and with raw newlines
    inside strings (``strict=False``, as LangChain). Deliberately stricter on truncated output:
    LangChain *repairs* ``{"a": 1, "b": [2`` into ``{'a': 1, 'b': [2]}`` (closing what the
    model never closed) where this reports a failure, and it *returns* ``None`` for mismatched
    brackets (``{"a": 1]}``) where this reports a failure too. A failure is a one-line
    LabkitError, or ``None`` with ``raise_on_error=False`` (count those for a parse-failure
    rate; the reply ``null`` also parses to None).
    """
    _check_text(text)
    body = text.strip()
    match = _FENCE.search(body)
    candidates = [body] if match is None else [body, match.group(1)]
    for candidate in candidates:
        try:
            value, _ = json.JSONDecoder(strict=False).raw_decode(candidate.strip(" \n\r\t`"))
            return value
        except json.JSONDecodeError:
            continue
    if raise_on_error:
        shown = body if len(body) <= 60 else body[:57] + "..."
        raise LabkitError(f"model output is not valid JSON: {shown!r}; re-ask the model, or pass "
                          "raise_on_error=False to count failures")
    return None


class BufferMemory:
    """Chat history kept verbatim: every message goes back into the next prompt.

    ``tokens_per_turn[t]`` is how many tokens the buffer holds after turn t (a user message and
    the reply): it grows with every turn, which is what a summary memory is for. ``count_tokens``
    counts one message's tokens (``lambda s: len(tokenizer(s)["input_ids"])`` for a model's
    tokens); the default counts `tokenize` words. ``buffer_string()`` equals LangChain's
    ``get_buffer_string`` of the same messages ("Human: ...", "AI: ...", "System: ...").
    """

    _PREFIX = {"system": "System", "user": "Human", "assistant": "AI"}

    def __init__(self, count_tokens=None):
        self.count_tokens = count_tokens or (lambda s: len(tokenize(s)))
        self.messages: list[dict] = []
        self.message_tokens: list[int] = []
        self.tokens_per_turn: list[int] = []

    def _add(self, role: str, content: str) -> None:
        _check_text(content, "content")
        self.messages.append({"role": role, "content": content})
        self.message_tokens.append(self.count_tokens(content))

    def add_system_message(self, content: str) -> None:
        self._add("system", content)

    def add_user_message(self, content: str) -> None:
        self._add("user", content)

    def add_ai_message(self, content: str) -> None:
        """The reply closes a turn: record the buffer's size."""
        self._add("assistant", content)
        self.tokens_per_turn.append(self.tokens())

    def tokens(self) -> int:
        return sum(self.message_tokens)

    def buffer_string(self, human_prefix: str = "Human", ai_prefix: str = "AI") -> str:
        prefix = {**self._PREFIX, "user": human_prefix, "assistant": ai_prefix}
        return "\n".join(f"{prefix[m['role']]}: {m['content']}" for m in self.messages)

    def clear(self) -> None:
        self.messages, self.message_tokens, self.tokens_per_turn = [], [], []


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.UAdd: operator.pos, ast.USub: operator.neg}


def calculator(expression: str):
    """Evaluate arithmetic: numbers, + - * / and parentheses, e.g. "(3 + 4) * 2.5". Nothing else.

    The expression is parsed with `ast` and only number literals and those operators are
    walked; a name, a call, ``**`` or anything else is refused, so a model cannot run code
    through it (``eval`` would run ``__import__('os').system(...)``).
    """
    _check_text(expression, "expression")
    if len(expression) > 200:
        raise LabkitError("expression is longer than 200 characters; the calculator takes short arithmetic")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError:
        raise LabkitError(f"{expression!r} is not arithmetic; use numbers, + - * / and parentheses") from None

    def walk(node):
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Div) and right == 0:
                raise LabkitError(f"division by zero in {expression!r}")
            return _OPS[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.operand))
        raise LabkitError(f"the calculator accepts numbers, + - * / and parentheses only, "
                          f"not {ast.unparse(node)!r}")

    return walk(tree)


REACT_TEMPLATE = """Answer the question. You can use these tools:
{tool_descriptions}

Use this format:
Thought: what to do next
Action: the tool to use, one of [{tool_names}]
Action Input: the input for the tool
Observation: the tool's result
... (Thought / Action / Action Input / Observation can repeat)
Thought: I now know the answer
Final Answer: the answer

Question: {question}
Thought:"""

_ACTION = re.compile(r"Action\s*:\s*(.*?)\s*\n\s*Action\s*Input\s*:\s*(.*)")


def react(generate_fn, question: str, tools: dict, max_steps: int = 5) -> dict:
    """A ReAct loop (reason + act): the model thinks, calls a tool, reads the result, repeats.

    ``generate_fn(prompt) -> str`` continues the prompt (a model, or a scripted fake in tests).
    Each step: if the reply has ``Final Answer:`` that is the answer; else its ``Action:`` /
    ``Action Input:`` lines name a tool in ``tools`` (name -> function of one string) and the
    result is appended as ``Observation:``. Whatever the model wrote after its own
    ``Observation:`` is cut off (it must not invent tool results). A bad format, an unknown tool
    or a tool's LabkitError becomes the observation, so the model can correct itself.

    Returns ``{"answer": str or None (no answer in max_steps), "steps": [{"text", "action",
    "input", "observation"}], "prompt": the whole transcript}``.
    """
    if not callable(generate_fn):
        raise LabkitError("generate_fn must be a function prompt -> continuation")
    _check_text(question, "question")
    if not isinstance(tools, dict) or not tools or not all(callable(f) for f in tools.values()):
        raise LabkitError("tools must be a dict of name -> function, e.g. {'calculator': rag.calculator}")
    _positive_int(max_steps, "max_steps")
    descriptions = "\n".join(f"{name}: {(f.__doc__ or name).strip().splitlines()[0]}" for name, f in tools.items())
    prompt = PromptTemplate(REACT_TEMPLATE).format(tool_descriptions=descriptions, tool_names=", ".join(tools),
                                                   question=question)
    steps = []
    for _ in range(max_steps):
        text = generate_fn(prompt)
        if not isinstance(text, str):
            raise LabkitError(f"generate_fn must return a str, got {type(text).__name__}")
        text = text.split("\nObservation:")[0].rstrip()
        if "Final Answer:" in text:
            answer = text.split("Final Answer:", 1)[1].strip()
            steps.append({"text": text, "action": None, "input": None, "observation": None})
            return {"answer": answer, "steps": steps, "prompt": prompt + text}
        match = _ACTION.search(text)
        action = tool_input = None
        if match is None:
            observation = ("Invalid format: write 'Action: <tool>' and 'Action Input: <input>', "
                           "or 'Final Answer: <answer>'")
        else:
            action, tool_input = match.group(1).strip(), match.group(2).strip().strip("\"'`")
            if action not in tools:
                observation = f"unknown tool {action!r}; use one of [{', '.join(tools)}]"
            else:
                try:
                    observation = str(tools[action](tool_input))
                except LabkitError as e:
                    observation = f"error: {e}"
        steps.append({"text": text, "action": action, "input": tool_input, "observation": observation})
        prompt += f"{text}\nObservation: {observation}\nThought:"
    return {"answer": None, "steps": steps, "prompt": prompt}


class SimilarityExampleSelector:
    """The ``k`` examples most similar to the new input, most similar first.

    Equals ``SemanticSimilarityExampleSelector(vectorstore=InMemoryVectorStore(embeddings), k=k)``
    with the same embedding function: each example is embedded as the space-joined values of its
    keys sorted by name (only ``input_keys`` when given), the new input the same way, and the
    examples are ranked by cosine similarity. ``embed_fn(list of texts) -> (n, dim)`` vectors.
    Ties: lower index first (the in-memory store's reversed argsort lists tied examples last first).
    """

    def __init__(self, examples, embed_fn, k: int = 4, input_keys=None):
        if not isinstance(examples, (list, tuple)) or not examples or not all(isinstance(e, dict) for e in examples):
            raise LabkitError("examples must be a non-empty list of dicts, e.g. [{'input': ..., 'output': ...}]")
        if not callable(embed_fn):
            raise LabkitError("embed_fn must be a function: list of texts -> (n, dim) vectors")
        self.examples, self.embed_fn = list(examples), embed_fn
        self.k, self.input_keys = _positive_int(k, "k"), input_keys
        self.vectors = _as_matrix(embed_fn([self.example_text(e) for e in self.examples]), "embed_fn(...)")

    def example_text(self, example: dict) -> str:
        keys = self.input_keys or sorted(example)
        return " ".join(str(example[key]) for key in sorted(keys))

    def select_examples(self, input_variables: dict) -> list[dict]:
        if not isinstance(input_variables, dict):
            raise LabkitError("input_variables must be a dict of the new input, e.g. {'input': 'big'}")
        query = _as_matrix(self.embed_fn([self.example_text(input_variables)]), "embed_fn(...)")
        ids = cosine_top_k(query, self.vectors, min(self.k, len(self.examples)))[0]
        return [self.examples[i] for i in ids.tolist()]


class SummaryMemory(BufferMemory):
    """Chat history kept as a running summary plus the last ``keep_last`` messages.

    After each reply the messages older than the last ``keep_last`` are folded into the summary
    by ``summarize_fn(summary_so_far, lines) -> new summary`` (an LLM call in practice: that is
    the price of a bounded prompt). ``tokens()`` counts the summary plus the kept messages, so
    ``tokens_per_turn`` stays roughly flat where `BufferMemory`'s grows; ``summary_calls``
    counts the extra model calls.
    """

    def __init__(self, summarize_fn, keep_last: int = 2, count_tokens=None):
        super().__init__(count_tokens)
        if not callable(summarize_fn):
            raise LabkitError("summarize_fn must be a function (summary, new lines) -> summary")
        if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 0:
            raise LabkitError(f"keep_last must be an integer >= 0, got {keep_last!r}")
        self.summarize_fn, self.keep_last = summarize_fn, keep_last
        self.summary, self.summary_calls = "", 0

    def add_ai_message(self, content: str) -> None:
        self._add("assistant", content)
        cut = len(self.messages) - self.keep_last
        if cut > 0:
            old = self.messages[:cut]
            lines = "\n".join(f"{self._PREFIX[m['role']]}: {m['content']}" for m in old)
            summary = self.summarize_fn(self.summary, lines)
            _check_text(summary, "summarize_fn(...)")
            self.summary, self.summary_calls = summary.strip(), self.summary_calls + 1
            self.messages, self.message_tokens = self.messages[cut:], self.message_tokens[cut:]
        self.tokens_per_turn.append(self.tokens())

    def tokens(self) -> int:
        return (self.count_tokens(self.summary) if self.summary else 0) + sum(self.message_tokens)

    def buffer_string(self, human_prefix: str = "Human", ai_prefix: str = "AI") -> str:
        recent = super().buffer_string(human_prefix, ai_prefix)
        return f"Summary of the conversation so far: {self.summary}\n{recent}" if self.summary else recent

    def clear(self) -> None:
        super().clear()
        self.summary, self.summary_calls = "", 0
