"""hydra/sweeper=optuna: l2rw's own Hydra sweeper on Optuna's ask-and-tell API (docs/tuning.md).

It lives in Hydra's `hydra_plugins` namespace, where Hydra looks for sweepers. The official
hydra-optuna-sweeper (1.3.0, the last release) requires optuna<3; this one needs optuna>=4.
"""
