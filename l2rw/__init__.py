"""l2rw: Learning to Reweight Examples (Ren et al., 2018) as an experiment runner."""
from l2rw import sweeps  # noqa: F401  registers ${config_hash:} wherever a sweep job unpickles l2rw
