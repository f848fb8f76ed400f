"""labkit: the small helper library behind the LLM Fine-Tuning Lab notebooks.

One module per idea (see the README's lab map). Notebooks build each technique
in front of the learner, then check it against the copy kept here and against
the library practitioners use.
"""
import inspect

from .errors import LabkitError

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
