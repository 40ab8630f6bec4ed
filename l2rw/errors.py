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
            f"training diverged: loss is {loss} at step {step}; "
            f"lower `lr` (now {lr}) or `momentum`, or try `schedule=cosine`"
        )
