"""l2rw: Learning to Reweight Examples (Ren et al., 2018) as an experiment runner."""
