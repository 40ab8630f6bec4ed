"""Hydra's sweep syntax as Optuna distributions, and a trial's values back as overrides.

    lr=tag(log,interval(0.01,1))   -> FloatDistribution(0.01, 1, log=True)
    method.smoothing=interval(0,0.97)
    steps=tag(int,interval(500,2000))  -> IntDistribution(500, 2000)
    momentum=choice(0,0.9)         -> CategoricalDistribution([0, 0.9])
    seed=range(0,3)                -> CategoricalDistribution([0, 1, 2])

Any other override is fixed: every trial gets it as written.
"""
from __future__ import annotations

from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep, Transformer

from l2rw.errors import UserError


def parse(arguments: list[str]) -> tuple[dict[str, Any], list[str]]:
    """The search space (key -> distribution) and the fixed overrides of `arguments`."""
    space, fixed = {}, []
    for override in OverridesParser.create().parse_overrides(arguments):
        if override.is_sweep_override():
            space[override.get_key_element()] = distribution(override)
        else:
            fixed.append(override.input_line)
    return space, fixed


def fixed_value(fixed: list[str], key: str, default: Any) -> Any:
    """The value the last of the `fixed` overrides sets `key` to, else `default`."""
    values = [override.value() for override in OverridesParser.create().parse_overrides(fixed) if override.key_or_group == key]
    return values[-1] if values else default


def distribution(override: Override):
    """The override's sweep as an Optuna distribution; one Optuna cannot sample from (an empty
    range, bounds the wrong way round, a log scale reaching 0) is refused by its key."""
    try:
        return optuna_distribution(override)
    except ValueError as error:
        raise UserError(f"{override.input_line} is not a space Optuna can sample ({str(error).rstrip('.')}); "
                        "e.g. interval(0.01,1), tag(log,interval(0.01,1)) or choice(0,0.9)") from None


def optuna_distribution(override: Override):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    sweep, key = override.value(), override.get_key_element()
    if isinstance(sweep, ChoiceSweep | RangeSweep):
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if isinstance(sweep, IntervalSweep):
        unknown = set(sweep.tags) - {"log", "int"}
        if unknown:
            raise UserError(f"{key}: tag {', '.join(sorted(unknown))} is not a search option; use tag(log,...) and/or tag(int,...)")
        if "int" in sweep.tags:
            return IntDistribution(int(sweep.start), int(sweep.end), log="log" in sweep.tags)
        return FloatDistribution(sweep.start, sweep.end, log="log" in sweep.tags)
    raise UserError(f"{override.input_line}: not a search space; use interval(a,b), tag(log,interval(a,b)), choice(a,b) or range(a,b)")


def as_override(key: str, value: Any) -> str:
    """key=value as the command line writes it (choice() values are already encoded). A float from
    an interval is rounded to 3 significant digits: finer differences are noise for these knobs,
    and the rows, run dirs and the printed best trial stay readable (lr=0.125, not 0.12520653814999466)."""
    if value is None:
        return f"{key}=null"
    if isinstance(value, bool):
        return f"{key}={str(value).lower()}"
    if isinstance(value, float):
        return f"{key}={float(f'{value:.3g}')}"
    return f"{key}={value}"
