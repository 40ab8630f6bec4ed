import signal
from pathlib import Path


def shown(text) -> str:
    """`text` (a path, a message) on one line: a control character in it, a newline in a file name
    say, is written as an escape (\\n), so that a message stays one line and a list one name per line."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(text))


class UserError(Exception):
    """A mistake the user can fix (config value, data path, data content).

    The message names the field or path and the fix; `l2rw-train` prints it as one
    line on stderr and exits with code 2, before any result row is written.
    """


class DivergedError(Exception):
    """The training loss became NaN or infinite; the run ends with status `diverged`."""

    def __init__(self, step: int, loss: float, lr: float):
        self.step = step
        super().__init__(
            f"training diverged: loss is {loss} at step {step}, where the scheduled learning rate was "
            f"{lr:.4g}; lower `lr` or `momentum`, or an option that scales the loss or the updates: `weight_decay`, "
            "the loss's (`loss.*`) or the method's (`method.*`)"
        )


class StoppedAtOnce(KeyboardInterrupt):
    """SIGTERM or SIGUSR2 where no step can end first (while the data loads, or a second one while
    the first still waits for its step to end): the run stops where it is, as Ctrl-C's
    KeyboardInterrupt stops it. `exit_code` is the shell's for that signal: 143, 140."""

    def __init__(self, signum: int):
        self.exit_code = 128 + signum
        super().__init__(signal.Signals(signum).name)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, SIGTERM or SIGUSR2 stopped the run after a whole step; its checkpoint is saved and
    no row is written. `exit_code` is the shell's for that signal: 130, 143, 140."""

    def __init__(self, step: int, checkpoint: Path, signum: int = signal.SIGINT):
        self.step = step
        self.exit_code = 128 + signum
        super().__init__(
            f"{signal.Signals(signum).name}: interrupted after step {step}; saved {checkpoint}. To resume, rerun "
            f"the same command (a single run also needs hydra.run.dir={checkpoint.parent})"
        )
