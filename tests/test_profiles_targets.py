"""Profiles and targets: shipped files load, discovery order, validation messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeprune import config
from edgeprune.devices.profiles import list_profiles, load_profile
from edgeprune.devices.targets import list_targets, load_target
from edgeprune.errors import ConfigError, NotFoundError, UsageError

SHIPPED_PROFILES = {"local", "rpi4", "rpi5", "jetson-nano", "jetson-orin-nano"}


@pytest.fixture(autouse=True)
def _user_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EDGEPRUNE_CONFIG_DIR", str(tmp_path / "cfg"))
    return tmp_path / "cfg"


def test_every_shipped_profile_loads() -> None:
    found = list_profiles()
    assert set(found) >= SHIPPED_PROFILES
    for name in SHIPPED_PROFILES:
        profile = load_profile(name)
        assert profile.name == name
        assert profile.budgets.latency_percentile == 90
    rpi4 = load_profile("rpi4")
    assert rpi4.budgets.max_latency_ms and rpi4.arch == "aarch64" and rpi4.threads == 4


def test_every_shipped_target_loads_and_names_its_profile() -> None:
    found = list_targets()
    assert set(found) >= SHIPPED_PROFILES
    for name in SHIPPED_PROFILES:
        target = load_target(name)
        assert target.profile == name
        assert target.is_local == (name == "local")
        if target.ssh:
            assert target.ssh.host_key_policy == "strict"


def test_user_dir_overrides_builtin_and_file_flag_overrides_both(
        _user_config: Path, tmp_path: Path) -> None:
    (_user_config / "targets").mkdir(parents=True)
    (_user_config / "targets" / "rpi4.toml").write_text(
        'profile = "rpi4"\n[ssh]\nhost = "10.1.2.3"\nuser = "me"\n')
    assert load_target("rpi4").ssh.host == "10.1.2.3"
    assert list_targets()["rpi4"][0] == "user"
    flag = tmp_path / "rpi4.toml"
    flag.write_text('profile = "rpi4"\n[ssh]\nhost = "10.9.9.9"\n')
    assert load_target("rpi4", extra_files=[flag]).ssh.host == "10.9.9.9"


def _write(tmp_path: Path, text: str, name: str = "bad.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_unknown_key_names_file_key_and_suggestion(tmp_path: Path) -> None:
    path = _write(tmp_path, 'profile = "rpi4"\n[ssh]\nhost = "h"\nprot = 22\n')
    with pytest.raises(ConfigError) as err:
        load_target(str(path))
    text = str(err.value)
    assert str(path) in text and "ssh.prot" in text and "did you mean 'port'" in text


def test_wrong_type_names_key_and_fix(tmp_path: Path) -> None:
    path = _write(tmp_path, '[budgets]\nmax_latency_ms = "fast"\n')
    with pytest.raises(ConfigError, match=r"budgets\.max_latency_ms.*expected a number.*quotes"):
        load_profile(str(path))


def test_profile_rules_checked(tmp_path: Path) -> None:
    path = _write(tmp_path, "[budgets]\nmax_latency_ms = 10\nmax_latency_ratio = 0.5\n")
    with pytest.raises(ConfigError, match="budgets.max_latency_ratio.*keep one"):
        load_profile(str(path))
    path = _write(tmp_path, "[budgets]\nlatency_percentile = 80\n", "p.toml")
    with pytest.raises(ConfigError, match="latency_percentile.*80 is not allowed"):
        load_profile(str(path))


def test_missing_required_key(tmp_path: Path) -> None:
    path = _write(tmp_path, '[ssh]\nuser = "pi"\n')
    with pytest.raises(ConfigError, match=r"key 'ssh\.host': required key is missing"):
        load_target(str(path))


def test_toml_syntax_error_names_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "profile = \n")
    with pytest.raises(ConfigError, match="bad.toml: invalid TOML"):
        load_target(str(path))


def test_not_found_suggests() -> None:
    with pytest.raises(NotFoundError, match="did you mean 'rpi5'"):
        load_profile("rpi55")
    with pytest.raises(NotFoundError, match="no target named"):
        load_target("no-such-device-anywhere")


def test_ssh_url_targets() -> None:
    t = load_target("ssh://pi@10.0.0.7:2222", profile="rpi4", identity_file="~/k",
                    known_hosts="/tmp/kh", accept_new=True)
    assert (t.ssh.host, t.ssh.port, t.ssh.user) == ("10.0.0.7", 2222, "pi")
    assert t.profile == "rpi4" and t.ssh.identity_file == "~/k"
    assert t.ssh.host_key_policy == "accept-new" and t.where == "pi@10.0.0.7:2222"
    assert load_target("ssh://host.lan").ssh.port == 22
    with pytest.raises(UsageError):
        load_target("ssh://user@host:notaport")
    with pytest.raises(UsageError, match="local"):
        load_target("local", identity_file="~/k")


def test_to_dict_round_trips_through_from_dict() -> None:
    from edgeprune.devices.profiles import Profile

    profile = load_profile("rpi5")
    again = config.from_dict(Profile, profile.to_dict(), source="roundtrip")
    assert again == profile
