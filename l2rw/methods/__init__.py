"""Training methods: how batches are drawn and how each example of a batch is weighted.

One file per method, selected by `conf/method/<name>.yaml` (`_target_`)."""
