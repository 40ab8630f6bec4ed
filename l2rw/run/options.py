"""The types options are declared with: constructors of methods, models, losses, dataset loaders
and loggers annotate their parameters with these, and `l2rw.run.config_schema` checks a run's
config against those signatures before anything is written.

Each type carries two texts. Its description says what a value must be ("a whole number >= 1",
with the `note` or `null_means` that qualifies it); the config schema's one-line error messages
use it. Its `doc` says what the option does: its unit and what its special values mean, where
the description has not said so already; scripts/option_docs.py writes every option's
description and doc into the docs' tables. So an option is described once, where it is read."""
from typing import Annotated, Any, Literal, Union

from pydantic import Field
from pydantic.fields import FieldInfo


def _field(description: str, doc: str, **constraints: Any) -> FieldInfo:
    return Field(description=description, json_schema_extra={"doc": doc} if doc else None, **constraints)


def doc_of(field: FieldInfo) -> str:
    """What the option declared as `field` does, as its `doc=` says ("" when it has none)."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    return extra.get("doc", "")


def whole(minimum: int, maximum: int | None = None, note: str = "", *, doc: str = "") -> Any:
    bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
    return Annotated[int, _field(f"a whole number {bounds}{note}", doc, strict=True, ge=minimum, le=maximum)]


# Every number ends up in a float32 tensor or multiplies one: a larger one would become inf there,
# and a positive one below float32's smallest normal number 0 there, or a number of a few bits
FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_SMALLEST_NORMAL = 1.1754943508222875e-38


def number(*, gt: float | None = None, ge: float | None = None, lt: float | None = None, le: float | None = None,
           note: str = "", doc: str = "") -> Any:
    """A finite int or float within the given bounds (YAML's true and false are not numbers) that
    float32 can hold: a number > 0 is also at least float32's smallest normal number."""
    bounds = [f"{sign} {bound}" for sign, bound in ((">", gt), (">=", ge), ("<", lt), ("<=", le)) if bound is not None]
    description = " ".join(["a finite number", " and ".join(bounds)]).rstrip() + note
    if lt is None and le is None:
        le = FLOAT32_MAX
    if gt is None and ge is None:
        ge = -FLOAT32_MAX
    if gt == 0:
        ge = FLOAT32_SMALLEST_NORMAL
    return Annotated[float, _field(description, doc, strict=True, allow_inf_nan=False, gt=gt, ge=ge, lt=lt, le=le)]


def choice(*options: str, doc: str = "") -> Any:
    return Annotated[Literal[options], _field(f"one of {', '.join(options)}", doc)]


def optional(kind: Any, null_means: str, *, doc: str = "") -> Any:
    return Annotated[kind | None, _field(f"{description(kind)}, or null {null_means}", doc)]


def either(*kinds: Any, doc: str = "") -> Any:
    """A value of any of `kinds`, described as their descriptions joined by "or"."""
    return Annotated[Union[kinds], _field(" or ".join(description(kind) for kind in kinds), doc)]  # noqa: UP007  Union[tuple] has no | form


def list_of(kind: Any, what: str, *, doc: str = "") -> Any:
    return Annotated[list[kind], _field(what, doc, strict=True)]


def description(kind: Any) -> str:
    """What a value of `kind` must be, in words: its declared description, else its type's name."""
    for meta in getattr(kind, "__metadata__", ()):
        if getattr(meta, "description", None):
            return meta.description
    names = {bool: "true or false", int: "a whole number", float: "a finite number", str: "a string"}
    return names.get(kind, f"a {getattr(kind, '__name__', kind)}")


def text(what: str, *, doc: str = "") -> Any:
    return Annotated[str, _field(what, doc, strict=True)]


def flag(*, doc: str = "") -> Any:
    return Annotated[bool, _field("true or false", doc, strict=True)]


def filesystem_path(*, doc: str = "") -> Any:
    return text("a path", doc=doc)


CLASS = whole(0, note=" (a class index)")
