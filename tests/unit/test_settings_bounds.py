"""Settings refuse values that would silently switch a defence off or refuse everything."""

from __future__ import annotations

import pytest

from app.settings import Settings, SettingsError


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GANTRY_SIGN_IN_WINDOW", "-1"),  # would turn the sign-in throttle off
        ("GANTRY_MAX_TASKS_PER_WORKFLOW", "0"),  # would refuse every workflow
        ("GANTRY_STATEMENT_TIMEOUT", "nan"),
        ("GANTRY_DB_RESERVE_POOL_SIZE", "0"),
        ("GANTRY_MAX_QUEUED_PER_USER", "-5"),
        ("GANTRY_MAX_LOG_BYTES_PER_ATTEMPT", "-1"),
        ("GANTRY_AUTH_PUBLIC_PATHS", "/metrics,/api/v1/workflows"),  # never under /api
        ("GANTRY_AUTH_PUBLIC_PATHS", "/"),  # would cover /api
        ("GANTRY_AUTH_PUBLIC_PATHS", "/ap"),
        ("GANTRY_AUTH_PUBLIC_PATHS", "metrics"),
        ("GANTRY_TOKEN_MAX_LIFETIME", "0"),
        ("GANTRY_TOKEN_MAX_LIFETIME", "soon"),
        ("GANTRY_TOKEN_MAX_LIFETIME", "5y"),
        ("GANTRY_TOKEN_ROTATION_GRACE", "-1"),
    ],
)
def test_out_of_range_settings_are_refused_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({"GANTRY_SECRET_KEY": "k", name: value})


def test_zero_still_turns_a_limit_off() -> None:
    settings = Settings.from_env(
        {"GANTRY_SECRET_KEY": "k", "GANTRY_RETENTION_DAYS": "0", "GANTRY_MAX_QUEUED_PER_USER": "0"}
    )
    assert settings.retention_days == 0 and settings.max_queued_per_user == 0


def test_public_paths_and_durations_are_read() -> None:
    settings = Settings.from_env(
        {"GANTRY_SECRET_KEY": "k", "GANTRY_AUTH_PUBLIC_PATHS": " /metrics, /docs/ ",
         "GANTRY_TOKEN_MAX_LIFETIME": "30d"}
    )  # fmt: skip
    assert settings.auth_public_paths == ("/metrics", "/docs/")
    assert settings.token_max_lifetime == 30 * 86400
    assert Settings.from_env({"GANTRY_SECRET_KEY": "k"}).token_max_lifetime == 365 * 86400
