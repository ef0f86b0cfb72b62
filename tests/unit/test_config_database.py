"""`[database]` settings for poolers: `pooler` is validated, and transaction mode needs a direct
LISTEN DSN."""

from __future__ import annotations

import pytest

from hookd import config
from hookd.errors import ConfigError

DSN = "postgresql://hookd@pgbouncer:6432/app"
DIRECT = "postgresql://hookd@db:5432/app"


def test_pooler_defaults_to_none() -> None:
    assert config.from_mapping({"database": {"dsn": DSN}}).database.pooler == "none"


def test_transaction_pooler_with_a_listen_dsn_is_accepted() -> None:
    cfg = config.from_mapping(
        {"database": {"dsn": DSN, "pooler": "transaction", "listen_dsn": DIRECT}}
    )
    assert (cfg.database.pooler, cfg.database.listen_dsn) == ("transaction", DIRECT)


def test_transaction_pooler_without_a_listen_dsn_names_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"^database\.listen_dsn: must be set when"):
        config.from_mapping({"database": {"dsn": DSN, "pooler": "transaction"}})


@pytest.mark.parametrize("value", ["session", "pgbouncer", ""])
def test_unknown_pooler_is_refused_with_the_choices(value: str) -> None:
    with pytest.raises(ConfigError, match=r"^database\.pooler: must be one of none, transaction"):
        config.from_mapping({"database": {"dsn": DSN, "pooler": value}})
