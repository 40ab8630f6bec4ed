"""l2rw.run.config_schema: every option of every config group passes the check before a run, and each
bad value is named in one line saying what it must be. This is the one home of those messages;
through the command line (exit code 2, nothing written) they are test_refusals.py's."""
import pytest

from l2rw.errors import UserError
from l2rw.run.config_schema import check_config
from tests.helpers.configs import UNREAD_KEY_OVERRIDES, compose_config, config_options


@pytest.mark.parametrize("override", [
    *[f"{group}={option}" for group in ("dataset", "model", "method", "loss", "hardware") for option in config_options(group)],
    *[f"+experiment={preset}" for preset in config_options("experiment")],
    *[f"+recipe={recipe}" for recipe in config_options("recipe")],
])
def test_every_option_of_every_group_passes_the_check(override):
    check_config(compose_config(override))


@pytest.mark.parametrize("overrides, message", [
    (["steps=0"], "steps=0 must be a whole number >= 1"),
    (["steps=true"], "steps=true must be a whole number >= 1"),
    (["seed=1.5"], "seed=1.5 must be a whole number in [0, 9223372036854775807]"),
    (["seed=18446744073709551616"], "seed=18446744073709551616 must be a whole number in [0, 9223372036854775807]"),
    (["lr=abc"], "lr=abc must be a finite number > 0"),
    (["lr=-1"], "lr=-1 must be a finite number > 0"),
    (["batch_size=0"], "batch_size=0 must be a whole number >= 1"),
    (["lr=inf"], "lr=inf must be a finite number > 0"),
    (["momentum=1.0"], "momentum=1.0 must be a finite number >= 0 and < 1 (0: none)"),
    (["momentum=-1"], "momentum=-1 must be a finite number >= 0 and < 1 (0: none)"),
    (["weight_decay=-1"], "weight_decay=-1 must be a finite number >= 0 and <= 1 (0: none)"),
    (["schedule=linear"], "schedule=linear is unknown; use one of constant, cosine, step, multistep"),
    (["clip_grad_norm=0"], "clip_grad_norm=0 must be a finite number > 0, or null for no clipping"),
    (["threads=0"], "threads=0 must be a whole number in [1, 4096], or null for this job's share of the cores"),
    (["checkpoint_every=-1"], "checkpoint_every=-1 must be a whole number >= 0 (0: only when interrupted)"),
    (["progress=abc"], "progress=abc must be true or false"),
    (["results_csv=[1]"], "results_csv=[1] must be a path"),
    (["+lr_decay=0.1"], "lr_decay is not an option; check its spelling (options: seed, imbalance, imbalance_ratio, "
                        "meta, noise, steps, epochs, batch_size, lr, momentum, nesterov, weight_decay, schedule, "
                        "warmup_epochs, lr_milestones, lr_factors, clip_grad_norm, "
                        "eval_every, posthoc_tau, progress, results_csv, skip_done, checkpoint_every, threads)"),
    (["epochs=0"], "epochs=0 must be a whole number >= 1, or null for a run of `steps` steps"),
    (["nesterov=1"], "nesterov=1 must be true or false"),
    (["warmup_epochs=-1"], "warmup_epochs=-1 must be a whole number >= 0 (0: no warm-up)"),
    (["schedule=multistep"], "lr_milestones=[] must be rising epochs for schedule=multistep, e.g. [160,180]"),
    (["schedule=multistep", "lr_milestones=[180,160]", "lr_factors=[0.01,0.0001]"],
     "lr_milestones=[180,160] must be rising epochs for schedule=multistep, e.g. [160,180]"),
    (["schedule=multistep", "lr_milestones=[160,180]", "lr_factors=[0.01]"],
     "lr_factors=[0.01] must hold one lr multiplier per milestone of lr_milestones=[160,180], e.g. [0.01,0.0001]"),
    (["schedule=multistep", "lr_milestones=[0]", "lr_factors=[0.1]"],
     "lr_milestones=[0] must be a list of epochs >= 1, e.g. [160,180]"),
    (["+recipe=ldam_drw", "method.defer=later"],
     "method.defer=later must be a finite number >= 0 and < 1 (the fraction of steps before the class weights switch on; "
     "0: from the start) or one of first_lr_drop"),
    (["imbalance=abc"], "imbalance=abc must be a finite number (the majority class's share of the training set)"),
    (["dataset.profile=longtail", "imbalance_ratio=0.5"],
     "imbalance_ratio=0.5 must be a finite number >= 1 (n_max / n_min; 1 is balanced)"),
    (["meta.per_class=1.5"], "meta.per_class=1.5 must be a whole number >= 1 (clean images per class)"),
    (["meta.add_to_train=1"], "meta.add_to_train=1 must be true or false"),
    (["noise.kind=flip", "noise.flip_to=abc"],
     "noise.flip_to=abc must be a list of target classes, one per class, e.g. [1,2,0], or null for c -> c+1 mod K"),
    (["noise.kind=uniform", "noise.rate=1.5"],
     "noise.rate=1.5 must be a finite number >= 0 and <= 1 (the probability that a training label is replaced)"),
    (["dataset.classes=[0,true]"], "dataset.classes=[0,true] must be a list of class indices, e.g. [0,1], or null for all"),
    (["dataset.val_per_class=-1"], "dataset.val_per_class=-1 must be a whole number >= 0 (0: no validation split)"),
    (["dataset.train_size=0"], "dataset.train_size=0 must be a whole number >= 1, or null for all the imbalance profile allows"),
    (["dataset.test_per_class=0"], "dataset.test_per_class=0 must be a whole number >= 1 (test images per class)"),
    (["dataset=ham10000", "dataset.test_fraction=1"], "dataset.test_fraction=1 must be a finite number > 0 and < 1"),
    (["dataset=ham10000", "dataset.test_fraction=abc"], "dataset.test_fraction=abc must be a finite number > 0 and < 1"),
    (["meta.per_class=0"], "meta.per_class=0 must be a whole number >= 1 (clean images per class)"),
    (["dataset.profile=zipf"], "dataset.profile=zipf is unknown; use one of step, longtail, natural"),
    (["dataset=ham10000", "dataset.workers=-1"], "dataset.workers=-1 must be a whole number >= 0 (0: every available core)"),
    (["model=mlp", "model.hidden=abc"],
     "model.hidden=abc must be a list of hidden layer widths, each a whole number >= 1, e.g. [256,256]"),
    (["model=mlp", "model.hidden=[0]"],
     "model.hidden=[0] must be a list of hidden layer widths, each a whole number >= 1, e.g. [256,256]"),
    (["model=resnet32", "model.blocks_per_stage=-1"],
     "model.blocks_per_stage=-1 must be a whole number >= 1 (6n+2 layers: 5 gives ResNet-32)"),
    (["model=resnet18", "model.pretrained=1"], "model.pretrained=1 must be true or false"),
    (["model=lenet", "+model.hidden=[8]"], "model.hidden is not an option of model=lenet; check its spelling (options: normed_head)"),
    (["method=l2rw", "method.meta_batch_size=0"], "method.meta_batch_size=0 must be a whole number >= 1"),
    (["method=l2rw", "method.update_every=abc"], "method.update_every=abc must be a whole number >= 1 (1: every step)"),
    (["method=l2rw", "method.impl=[1,2]"], "method.impl=[1,2] is unknown; use one of fwd, double_backprop, last_layer"),
    (["method=l2rw", "method.mix=1.5"], "method.mix=1.5 must be a finite number >= 0 and <= 1 (0: plain L2RW weights)"),
    (["method=l2rw", "method.smoothing=1"],
     "method.smoothing=1 must be a finite number >= 0 and < 1 (0: each step's own weights)"),
    (["method=class_balanced", "method.beta=abc"],
     "method.beta=abc must be a finite number >= 0 and < 1 (Cui et al. use 0.9-0.9999), or null for 1/n_c"),
    (["hardware.amp=fp16"], "hardware.amp=fp16 is unknown; use one of bf16, or null for full precision"),
    (["hardware.channels_last=null"], "hardware.channels_last=null must be true or false"),
    (["lr=1e39"], "lr=1e+39 is too large: it must fit a float32 (magnitude at most 3.4e38)"),
    (["imbalance=-1e308"], "imbalance=-1e+308 is too large: it must fit a float32 (magnitude at most 3.4e38)"),
    (["imbalance='0.9'"], "imbalance='0.9' must be a finite number (the majority class's share of the training set)"),
    (["method.name=weighted_sampler"], "method.name=weighted_sampler does not name what this run builds (l2rw.methods.base.Method, "
                                       "which is method=sgd); choose it with method=<name> rather than setting method.name"),
    (["dataset.name=mnist"], "dataset.name=mnist does not name what this run builds (l2rw.data.digits.load_digits, "
                             "which is dataset=digits); choose it with dataset=<name> rather than setting dataset.name"),
    (["method=l2rw", "method.meta_batch_size=abc"], "method.meta_batch_size=abc must be a whole number >= 1"),
    (["method=l2rw", "method.update_every=0"], "method.update_every=0 must be a whole number >= 1 (1: every step)"),
    (["method=l2rw", "method.update_every=1.5"], "method.update_every=1.5 must be a whole number >= 1 (1: every step)"),
    *[(["method=class_balanced", f"method.beta={value}"],
       f"method.beta={value} must be a finite number >= 0 and < 1 (Cui et al. use 0.9-0.9999), or null for 1/n_c")
      for value in ("1.0", "-0.5", "true")],
    *[(["method=class_balanced", f"method.defer={value}"],
       f"method.defer={value} must be a finite number >= 0 and < 1 (the fraction of steps before the class weights "
       "switch on; 0: from the start) or one of first_lr_drop") for value in ("1.0", "-0.1")],
    (["loss=focal", "loss.gamma=-1"], "loss.gamma=-1 must be a finite number >= 0 and <= 100 (0: cross-entropy; Lin et al. use 2)"),
    (["loss=gce", "loss.q=0"], "loss.q=0 must be a finite number > 0 and <= 1 (Zhang and Sabuncu use 0.7)"),
    (["loss=ldam", "loss.scale=abc"], "loss.scale=abc must be a finite number > 0 and <= 1000 (logit scale; Cao et al. use 30 on cosine logits)"),
    (["loss=logit_adjusted", "+loss.tua=1"], "loss.tua is not an option of loss=logit_adjusted; check its spelling (options: tau)"),
    (["loss=ce", "+loss.gamma=2"], "loss.gamma is not an option of loss=ce; check its spelling (options: none)"),
    (["hardware.compile=1"], "hardware.compile=1 must be true or false"),
    (["threads=1099511627776"], "threads=1099511627776 must be a whole number in [1, 4096], or null for this job's share of the cores"),
    (["dataset.classes=abc"], "dataset.classes=abc must be a list of class indices, e.g. [0,1], or null for all"),
    (["noise.kind=flip", "noise.flip_to=-1"],
     "noise.flip_to=-1 must be a list of target classes, one per class, e.g. [1,2,0], or null for c -> c+1 mod K"),
])

def test_a_bad_value_is_named_in_one_line_with_what_it_must_be(overrides, message):
    with pytest.raises(UserError) as raised:
        check_config(compose_config(*overrides))
    assert str(raised.value) == message and "\n" not in message


@pytest.mark.parametrize("overrides", UNREAD_KEY_OVERRIDES)
def test_a_key_the_run_does_not_read_is_not_checked(overrides):
    check_config(compose_config(*overrides))
