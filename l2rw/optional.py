"""Optional packages (pyproject's extras): imported when a logger or the sweeper is chosen, so the
core install stays lean and a missing one is one line naming its install command."""
from __future__ import annotations

import importlib
from types import ModuleType

from l2rw.errors import UserError


def require(module: str, extra: str, chosen: str) -> ModuleType:
    """`module`, imported; a UserError naming `pip install -e '.[extra]'` when it is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{chosen} needs the optional package {module.split('.')[0]}, which is not installed; "
                        f"install it with: pip install -e '.[{extra}]'") from None
