"""labkit: the small helper library behind the LLM Fine-Tuning Lab notebooks.

One module per idea (see the README's lab map). Notebooks build each technique
in front of the learner, then check it against the copy kept here and against
the library practitioners use.
"""
import inspect
import logging
import warnings

from .errors import LabkitError

# Known, harmless library noise that would otherwise sit in every committed notebook as a
# red stderr box a learner cannot act on:
# * bitsandbytes >= 0.50 on an AVX512-BF16 CPU looks for an optional `kernels` package and
#   logs a warning when it is absent; its own CPU path (the one the labs check) still runs.
# * transformers 5.2x renamed gradient checkpointing to activation checkpointing and warns
#   when anything (peft, accelerate, our version-agnostic code) reads the old name.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message=r".*gradient_checkpointing.* is deprecated", category=FutureWarning)

__version__ = "0.1.0"
__all__ = ["LabkitError", "show", "__version__"]


def show(obj) -> None:
    """Print the source of a labkit function or class, so a notebook can show
    the canonical implementation instead of keeping a second, drifting copy."""
    try:
        source = inspect.getsource(obj)
    except (TypeError, OSError) as exc:
        raise LabkitError(f"cannot show the source of {obj!r}: {exc}") from None
    try:  # nicer in Jupyter; plain text elsewhere
        from IPython.display import Markdown, display

        display(Markdown(f"```python\n{source}\n```"))
    except ImportError:
        print(source)
