"""Applying a model's defaults and system prompt (models.yaml) to a request."""

from __future__ import annotations

import pytest

from tiller.contract.requests import Message, Sampling
from tiller.contract.routes import defaults_of, filled, with_system_prompt
from tiller.protos.router.v1 import router_pb2
from tiller.router.config import ConfigError, parse


def test_only_what_the_request_left_unset_is_defaulted() -> None:
    defaults = router_pb2.SamplingDefaults(max_tokens=256, temperature=0.2, stop=["END"])
    done = filled(Sampling(temperature=0.9), defaults_of(defaults))
    assert (done.max_tokens, done.temperature, done.stop) == (256, 0.9, ("END",))
    assert done.top_p is None and done.seed is None  # not in the defaults: left unset
    own_stop = filled(Sampling(stop=("STOP",)), defaults_of(defaults))
    assert own_stop.stop == ("STOP",)
    assert filled(Sampling(), defaults_of(router_pb2.SamplingDefaults())) == Sampling()


def test_the_system_prompt_comes_first_unless_the_request_has_its_own() -> None:
    user = (Message("user", "hi"),)
    assert with_system_prompt(user, "Be brief.") == (Message("system", "Be brief."), *user)
    own = (Message("developer", "Mine."), *user)
    assert with_system_prompt(own, "Be brief.") == own
    assert with_system_prompt(user, "") == user


def test_defaults_are_validated_by_name() -> None:
    text = """\
models:
  m:
    defaults: {temperature: 7}
    deployments: [{adapter: openai, endpoint: "http://e:1/v1"}]
"""
    with pytest.raises(ConfigError, match=r"models.yaml:3: models.m.defaults.temperature"):
        parse(text)
