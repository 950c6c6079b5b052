"""The test server launcher's own policy (tests/lsserver.py): what a missing PostgreSQL does."""

from __future__ import annotations

import pytest

from tests.lsserver import missing_postgres_outcome


class TestMissingPostgreSQL:
    @pytest.mark.parametrize("value", ["true", "True", "1"])
    def test_ci_fails_instead_of_skipping(self, value: str) -> None:
        """With CI=true a missing PostgreSQL fails the tests that need it."""
        assert "fail" == missing_postgres_outcome({"CI": value})

    @pytest.mark.parametrize("env", [{}, {"CI": "false"}, {"CI": ""}])
    def test_a_developer_machine_skips(self, env: dict[str, str]) -> None:
        """Outside CI a missing PostgreSQL skips them, with the reason shown."""
        assert "skip" == missing_postgres_outcome(env)
