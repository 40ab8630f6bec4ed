"""l2rw: Learning to Reweight Examples (Ren et al., 2018) as an experiment runner, and as a
function for any training loop: `from l2rw import example_weights` (see `l2rw.reweight`)."""
from l2rw.reweight import Reweighted, example_weights  # noqa: F401  the public API
from l2rw.run import identity as run_identity  # noqa: F401  registers ${config_hash:} wherever a sweep job unpickles l2rw
