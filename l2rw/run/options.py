"""The types options are declared with: constructors of methods, models and losses annotate
their parameters with these, and `l2rw.run.config_schema` checks a run's config against those
signatures before anything is written. Each type carries the description its error message and
the docs use, so an option is declared once, where it is read."""
from typing import Annotated, Any, Literal, Union

from pydantic import Field


def whole(minimum: int, maximum: int | None = None, note: str = "") -> Any:
    bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
    return Annotated[int, Field(strict=True, ge=minimum, le=maximum, description=f"a whole number {bounds}{note}")]


# Every number ends up in a float32 tensor or multiplies one: a larger one would become inf there
FLOAT32_MAX = 3.4028234663852886e38


def number(*, gt: float | None = None, ge: float | None = None, lt: float | None = None, le: float | None = None,
           note: str = "") -> Any:
    """A finite int or float within the given bounds (YAML's true and false are not numbers) that
    float32 can hold."""
    bounds = [f"{sign} {bound}" for sign, bound in ((">", gt), (">=", ge), ("<", lt), ("<=", le)) if bound is not None]
    description = " ".join(["a finite number", " and ".join(bounds)]).rstrip() + note
    if lt is None and le is None:
        le = FLOAT32_MAX
    if gt is None and ge is None:
        ge = -FLOAT32_MAX
    return Annotated[float, Field(strict=True, allow_inf_nan=False, gt=gt, ge=ge, lt=lt, le=le, description=description)]


def choice(*options: str) -> Any:
    return Annotated[Literal[options], Field(description=f"one of {', '.join(options)}")]


def optional(kind: Any, null_means: str) -> Any:
    return Annotated[kind | None, Field(description=f"{description(kind)}, or null {null_means}")]


def either(*kinds: Any) -> Any:
    """A value of any of `kinds`, described as their descriptions joined by "or"."""
    return Annotated[Union[kinds], Field(description=" or ".join(description(kind) for kind in kinds))]  # noqa: UP007  Union[tuple] has no | form


def list_of(kind: Any, what: str) -> Any:
    return Annotated[list[kind], Field(strict=True, description=what)]


def description(kind: Any) -> str:
    """What a value of `kind` must be, in words: its declared description, else its type's name."""
    for meta in getattr(kind, "__metadata__", ()):
        if getattr(meta, "description", None):
            return meta.description
    names = {bool: "true or false", int: "a whole number", float: "a finite number", str: "a string"}
    return names.get(kind, f"a {getattr(kind, '__name__', kind)}")


def text(what: str) -> Any:
    return Annotated[str, Field(strict=True, description=what)]


FLAG = Annotated[bool, Field(strict=True, description="true or false")]
PATH = text("a path")
CLASS = whole(0, note=" (a class index)")
