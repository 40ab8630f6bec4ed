"""Config groups name their choice (`name:`, used in run dirs and result rows) and the
class or function that implements it (`_target_:`); the rest are its arguments."""
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from l2rw.errors import UserError


def build(node: DictConfig, **runtime_args: Any) -> Any:
    """Instantiate a config-group choice; `runtime_args` are values only the data knows."""
    arguments = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k != "name"}
    try:
        return instantiate(arguments, **runtime_args, _convert_="all")
    except InstantiationException as error:
        if isinstance(error.__cause__, UserError):  # Hydra wraps it; the user needs only its message
            raise error.__cause__ from None
        raise
