"""The one place that picks the capture tiers, and what it says about why."""

from __future__ import annotations

import pytest

from onlooker.agent import config, daemon
from onlooker.agent.sources.fanotify import FanotifySource
from onlooker.agent.sources.netlink import NetlinkProcSource


def cfg(tmp_path, text=""):
    (tmp_path / ".onlooker").mkdir(exist_ok=True)
    (tmp_path / ".onlooker" / "config.toml").write_text(text)
    return config.load(tmp_path)


def test_forced_unprivileged_tiers_are_used_and_said_so(tmp_path):
    tiers = daemon.choose_tiers(cfg(tmp_path, '[capture]\nprocess = "poll"\nfiles = "inotify"\n'))
    assert tiers["process"] == {"name": "poll", "why": 'forced by capture.process = "poll"'}
    assert tiers["files"]["name"] == "inotify" and "forced" in tiers["files"]["why"]


def test_auto_falls_back_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(NetlinkProcSource, "probe", staticmethod(lambda: (False, "no way")))
    monkeypatch.setattr(FanotifySource, "probe", staticmethod(lambda: (False, "EPERM")))
    tiers = daemon.choose_tiers(cfg(tmp_path))
    assert tiers["process"] == {"name": "poll", "why": "netlink unavailable: no way"}
    assert tiers["files"] == {"name": "inotify", "why": "fanotify unavailable: EPERM"}


def test_a_forced_privileged_tier_that_is_not_allowed_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setattr(FanotifySource, "probe", staticmethod(lambda: (False, "EPERM")))
    with pytest.raises(config.ConfigError, match="capture.files"):
        daemon.choose_tiers(cfg(tmp_path, '[capture]\nfiles = "fanotify"\n'))


def test_bad_settings_are_one_sentence(tmp_path):
    with pytest.raises(config.ConfigError, match="must be one of"):
        cfg(tmp_path, '[capture]\nprocess = "magic"\n')
    with pytest.raises(config.ConfigError, match="must be positive"):
        cfg(tmp_path, '[capture]\npoll_hz = 0\n')
    with pytest.raises(config.ConfigError, match="store.object_max_bytes.*must not be negative"):
        cfg(tmp_path, '[store]\nobject_max_bytes = -5\n')
    assert cfg(tmp_path, '[store]\nobject_max_bytes = 0\n')["store"]["object_max_bytes"] == 0
    with pytest.raises(config.ConfigError, match="unknown setting"):
        cfg(tmp_path, '[capture]\nturbo = true\n')
