"""Command-line options come from the config dataclasses: every field, its docstring, its
default, and values that parse back into the same config."""

import argparse
from dataclasses import fields

import pytest

from sae_core.__main__ import parser
from sae_core.cli_options import add_config_args, config_from_args, field_docs
from sae_core.config import BuildConfig, TrainConfig


def _parse(argv):
    p = argparse.ArgumentParser()
    add_config_args(p, BuildConfig)
    add_config_args(p, TrainConfig, aliases={"architecture": "--arch"})
    args = p.parse_args(argv)
    return config_from_args(BuildConfig, args), config_from_args(TrainConfig, args)


def test_every_field_is_an_option_with_its_docstring():
    help_text = " ".join(parser()._subparsers._group_actions[0].choices["train"]
                         .format_help().split())
    for cls in (BuildConfig, TrainConfig):
        docs = field_docs(cls)
        assert set(docs) == {f.name for f in fields(cls)}  # every field documented
        for f in fields(cls):
            assert f"--{f.name.replace('_', '-')}" in help_text
            assert docs[f.name][:40] in help_text


def test_defaults_give_the_default_configs():
    assert _parse([]) == (BuildConfig(), TrainConfig())


def test_values_parse_into_the_config():
    build, train = _parse([
        "--model", "gpt2", "--layers", "0,5,12", "--seq-len", "128", "--arch", "relu",
        "--k", "64", "--k-start", "none", "--lr", "3e-3", "--max-tokens", "none",
        "--no-bf16", "--encoder-init-scale", "0.25", "--l1-coeff", "0.05"])
    assert build == BuildConfig(model="gpt2", layers=(0, 5, 12), seq_len=128)
    assert train == TrainConfig(architecture="relu", k=64, lr=3e-3, max_tokens=None, bf16=False,
                                encoder_init_scale=0.25, l1_coeff=0.05)
    assert _parse(["--layers", "all"])[0].layers is None


@pytest.mark.parametrize("argv", [["--k", "many"], ["--arch", "gated"], ["--layers", "a,b"]])
def test_bad_values_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit):
        _parse(argv)
    assert "error" in capsys.readouterr().err


def test_bad_combinations_are_config_errors():
    with pytest.raises(ValueError, match="k_start"):
        _parse(["--k", "32", "--k-start", "8"])
    with pytest.raises(ValueError, match="layers"):
        _parse(["--layers", "-1"])


def test_train_config_checks_its_limits_table_and_the_form_asks_within_it():
    from dataclasses import replace

    from sae_core.config import TRAIN_FORM_LIMITS, TRAIN_LIMITS

    base = TrainConfig()
    for name, limit in TRAIN_LIMITS.items():
        assert getattr(replace(base, **{name: limit.lo}), name) == limit.lo
        with pytest.raises(ValueError, match=f"^{name} must be a whole number of at least"):
            replace(base, **{name: limit.lo - 1})
    for name, form in TRAIN_FORM_LIMITS.items():
        lib = TRAIN_LIMITS.get(name)
        assert lib is None or (form.lo >= lib.lo and form.whole == lib.whole)
        assert form.lo <= getattr(base, name) <= form.hi  # the default is a value it may ask
        for value in (form.lo, form.hi):  # both ends are configs the library trains
            assert getattr(replace(base, **{name: value}), name) == value
