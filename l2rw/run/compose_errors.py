"""A command line Hydra cannot compose, refused in one line with exit code 2 before anything is written.

`hydra.main` reports its own composition errors (a misspelt key, an option a config group does not
have, an optional group without its `+`, an override its grammar cannot parse, a sweep without
--multirun) in several lines and exits with 1, and what it advises can be wrong here: `+lrr=0.1`
only meets l2rw's config check (l2rw.run.config_schema), which refuses keys it does not know. It
prints that report before any code of ours runs, and with --multirun it composes the jobs only
after writing the sweep dir's multirun.yaml. So `l2rw-train` first composes the command line as
Hydra is about to, through the config loader `hydra.initialize_config_dir` sets up: the config (or
a sweep's master config, then each job the basic sweeper will launch). A mistake recognised below,
in an override the user typed, becomes one line naming that override and its fix; every other
failure is left alone, and Hydra reports it as before (a traceback included), so a bug is never
hidden behind a refusal. `l2rw-plan` asks the same question once its own composition failed.
"""
from __future__ import annotations

import contextlib
import difflib
import re
import sys
from dataclasses import dataclass

from hydra import initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.utils import get_args_parser
from hydra.core.config_loader import ConfigLoader
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from l2rw.run import CONFIG_DIR

CONFIG_NAME = "config"
COMPOSITION_ERRORS = (HydraException, OmegaConfBaseException)
BASIC_SWEEPER = f"{BasicSweeper.__module__}.{BasicSweeper.__name__}"
GRAMMAR = "https://hydra.cc/docs/advanced/override_grammar/basic/"
OPTIONS_LISTED = "l2rw-train's options are listed by l2rw-train --cfg"
# Hydra's messages for mistakes its exceptions carry no fields for
NOT_IN_DEFAULTS = re.compile(r"Could not override '([^']+)'\. No match in the defaults list")
ALREADY_SET = re.compile(r"Could not append to config\. An item is already at '([^']+)'")
ALREADY_CHOSEN = re.compile(r"Multiple values for (\S+)\. To override a value use")
SWEEP_IN_A_RUN = re.compile(r"Ambiguous value for argument '(.+)'|Sweep parameters '(.+)' requires --multirun")
LEXER_ERROR = "LexerNoViableAltException: "


@dataclass
class Failure:
    """A composition that failed, and the overrides and mode it was composed with (a job's, in a sweep)."""

    error: Exception
    overrides: list[str]
    run_mode: RunMode


@dataclass
class CommandLine:
    """The overrides as the user typed them, each parsed where Hydra can, and the loader composing them."""

    overrides: list[str]
    typed: list[Override]
    loader: ConfigLoader

    def typed_as(self, kind: OverrideType, key: str) -> Override | None:
        return next((override for override in self.typed if override.type == kind and override.key_or_group == key), None)

    def choice(self, failure: Failure, group: str) -> str | None:
        """The option `group` had in the composition that failed, when it had exactly one."""
        choices = self.loader.compute_defaults_list(CONFIG_NAME, failure.overrides, failure.run_mode).overrides.known_choices
        choice = choices.get(group)
        return choice if isinstance(choice, str) else None

    def in_another_option(self, failure: Failure, key: str, group: str, choice: str) -> tuple[str, str] | None:
        """The first other option of `group` with a key close to `key`'s last part, and that key
        under the group's node: a key of mlflow's, say, set while the run logs with csv."""
        others = [override.input_line for override in parsed_one_by_one(failure.overrides, self.loader) if not sets(override, key)]
        for option in self.loader.get_group_options(group):
            if option == choice:
                continue
            try:
                cfg = self.loader.load_configuration(CONFIG_NAME, [*others, f"{group}={option}"], failure.run_mode)
            except COMPOSITION_ERRORS:  # another mistake on the command line; the next run refuses that one
                continue
            node = OmegaConf.select(cfg, group.replace("/", "."))
            if isinstance(node, DictConfig) and (found := closest_key(OmegaConf.to_container(node, resolve=False), key.rpartition(".")[2])):
                return option, found
        return None


def refuse_composition_mistakes(argv: list[str]) -> None:
    """l2rw-train's command line (`sys.argv[1:]`), composed before `hydra.main` composes it: a
    mistake is one line on stderr and exit code 2."""
    args = get_args_parser().parse_args(argv)
    if (args.help or args.hydra_help or args.info or args.shell_completion or args.experimental_rerun
            or args.config_path or args.config_name or args.config_dir):
        return  # nothing composed, or another primary config than ours: Hydra's own handling
    if message := composition_mistake(args.overrides, multirun=args.multirun):
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def composition_mistake(overrides: list[str], multirun: bool) -> str | None:
    """The one line for the user's mistake that stops `overrides` from composing as l2rw-train
    composes them; None when they compose, or fail for a reason not recognised here."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        failure = failed_composition(loader, overrides, multirun)
        if failure is None:
            return None
        command_line = CommandLine(overrides, parsed_one_by_one(overrides, loader), loader)
        explanations = (unparsable, misspelt_key, unknown_option, optional_group, needless_plus, sweep_without_multirun)
        return next((message for explain in explanations if (message := explain(failure, command_line))), None)


def failed_composition(loader: ConfigLoader, overrides: list[str], multirun: bool) -> Failure | None:
    """The first composition that fails, in the order `hydra.main` composes, or None."""
    if not multirun:
        failure = composing(loader, overrides, RunMode.RUN)
        if failure is None or not configured_as_multirun(loader, overrides):
            return failure
    try:
        master = loader.load_configuration(CONFIG_NAME, overrides, RunMode.MULTIRUN)
        jobs = basic_sweep_grid(loader, master)
    except COMPOSITION_ERRORS as error:
        return Failure(error, overrides, RunMode.MULTIRUN)
    if jobs is None:
        return None  # any other sweeper chooses its jobs while it runs
    return next((failure for job in jobs if (failure := composing(loader, [*master.hydra.overrides.hydra, *job], RunMode.RUN))), None)


def basic_sweep_grid(loader: ConfigLoader, master: DictConfig) -> list[list[str]] | None:
    """Each job's overrides, in the order the basic sweeper launches them (its own expansion), from
    a sweep's master config; None when the sweep has another sweeper, which picks its trials while
    it runs."""
    if master.hydra.sweeper._target_ != BASIC_SWEEPER:
        return None
    params = [f"{key}={values}" for key, values in (master.hydra.sweeper.params or {}).items()]
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(params + list(master.hydra.overrides.task))
    [grid] = BasicSweeper.split_arguments(parsed, None)
    return grid


def composing(loader: ConfigLoader, overrides: list[str], run_mode: RunMode) -> Failure | None:
    try:
        loader.load_configuration(CONFIG_NAME, overrides, run_mode)
    except COMPOSITION_ERRORS as error:
        return Failure(error, overrides, run_mode)
    return None


def configured_as_multirun(loader: ConfigLoader, overrides: list[str]) -> bool:
    """Whether `hydra.main` sweeps without --multirun (hydra.mode=MULTIRUN), decided as it decides."""
    try:
        cfg = loader.load_configuration(CONFIG_NAME, overrides, RunMode.MULTIRUN, validate_sweep_overrides=False)
    except COMPOSITION_ERRORS:
        return False
    return cfg.hydra.mode == RunMode.MULTIRUN


def parsed_one_by_one(overrides: list[str], loader: ConfigLoader) -> list[Override]:
    parser = OverridesParser.create(config_loader=loader)
    typed = []
    for line in overrides:
        with contextlib.suppress(HydraException):  # the unparsable one has its own explanation
            typed += parser.parse_overrides([line])
    return typed


def unparsable(failure: Failure, command_line: CommandLine) -> str | None:
    error = failure.error
    if not isinstance(error, OverrideParseException) or error.override not in command_line.overrides:
        return None
    lines = error.message.splitlines()
    if lines[0].startswith(LEXER_ERROR):  # the line under it points at the character no token starts with
        position = lines[1].index("^") - len(LEXER_ERROR)
        detail = f"unexpected {error.override[position]!r} at character {position + 1}"
    else:  # ANTLR's list of the tokens it expected names grammar rules, not anything to type
        detail = next(line for line in lines if not line.startswith(("Error parsing override", "See https:")))
        detail = detail.split(" expecting ")[0]
    return (f"cannot parse {error.override} ({detail}); write key=value, a sweep as key=a,b,c or key=range(0,3) "
            f"(grammar: {GRAMMAR})")


def misspelt_key(failure: Failure, command_line: CommandLine) -> str | None:
    cause = failure.error.__cause__
    if not (isinstance(failure.error, ConfigCompositionException) and isinstance(cause, (ConfigAttributeError, ConfigKeyError))
            and isinstance(cause.parent_node, DictConfig)):
        return None
    key = cause.full_key  # the first missing level, when the override goes deeper
    if not any(sets(override, key) for override in command_line.typed):
        return None
    level, _, name = key.rpartition(".")
    group = level.replace(".", "/")
    choice = command_line.choice(failure, group) if level else None
    hint = "check its spelling"
    if found := closest_key(OmegaConf.to_container(cause.parent_node, resolve=False), name):
        hint = f"did you mean {dotted(level, found)}?"
    elif choice and (elsewhere := command_line.in_another_option(failure, key, group, choice)):
        option, found = elsewhere
        hint = f"{group}={option} has it" if found == name else f"did you mean {dotted(level, found)}, which {group}={option} has?"
    listing = "hydra" if key.startswith("hydra.") else "job"
    return f"{key} is not an option{f' of {group}={choice}' if choice else ''}; {hint} ({OPTIONS_LISTED} {listing})"


def sets(override: Override, key: str) -> bool:
    """Whether `override` sets `key` or a key under it, without + or ~."""
    return override.type == OverrideType.CHANGE and f"{override.key_or_group}.".startswith(f"{key}.")


def closest_key(node: dict, name: str) -> str | None:
    """The key of `node` closest to `name`, else the closest of the dicts in it (as `outer.inner`)."""
    own = [str(key) for key in node]
    inner = [f"{key}.{inner}" for key, value in node.items() if isinstance(value, dict) for inner in value]
    for keys in (own, inner):
        by_name = {key.rpartition(".")[2]: key for key in keys if not key.rpartition(".")[2].startswith("_")}
        if closest := difflib.get_close_matches(name, list(by_name), n=1):
            return by_name[closest[0]]
    return None


def dotted(level: str, key: str) -> str:
    return f"{level}.{key}" if level else key


def unknown_option(failure: Failure, command_line: CommandLine) -> str | None:
    error = failure.error
    if not isinstance(error, MissingConfigException) or "/" not in (error.missing_cfg_file or ""):
        return None
    group, _, option = error.missing_cfg_file.rpartition("/")
    override = next((override for override in command_line.typed
                     if override.key_or_group == group and option in options_named(override)), None)
    if override is None:
        return None
    options = command_line.loader.get_group_options(group)
    closest = difflib.get_close_matches(option, options, n=1)
    hint = f"did you mean {closest[0]}? ({group}'s options: {', '.join(options)})" if closest else f"use one of {', '.join(options)}"
    return f"{override.input_line}: {option} is not an option of {group}; {hint}"


def options_named(override: Override) -> list[str]:
    """The options of its group a group override names: one, a list of them, or a sweep's."""
    if override.is_choice_sweep():
        return list(override.sweep_string_iterator())
    value = override.value()
    return [str(option) for option in value] if isinstance(value, list) else [str(value)]


def optional_group(failure: Failure, command_line: CommandLine) -> str | None:
    match = isinstance(failure.error, ConfigCompositionException) and NOT_IN_DEFAULTS.match(str(failure.error))
    if not match or not command_line.loader.get_group_options(group := match[1]):
        return None
    override = command_line.typed_as(OverrideType.CHANGE, group)
    return None if override is None else f"{group} is an optional group: add it with +{override.input_line}"


def needless_plus(failure: Failure, command_line: CommandLine) -> str | None:
    for pattern, what in ((ALREADY_SET, "an option"), (ALREADY_CHOSEN, "a group every run has")):
        if (match := pattern.match(str(failure.error))) and (override := command_line.typed_as(OverrideType.ADD, match[1])):
            return f"{match[1]} is {what}: set it without +, {override.input_line[1:]}"
    return None


def sweep_without_multirun(failure: Failure, command_line: CommandLine) -> str | None:
    match = SWEEP_IN_A_RUN.match(str(failure.error))
    if not match or (line := match[1] or match[2]) not in command_line.overrides:
        return None
    key, _, values = line.partition("=")
    as_list = f" (a list is written {key}=[{values}])" if match[1] else ""
    return f"{line} is a sweep: add --multirun to launch one run per value{as_list}"
