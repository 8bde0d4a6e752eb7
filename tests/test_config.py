"""The technician's config file: every problem at once, with file, dotted key and reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.domain.config import load_settings, redacted, settings_from_dict
from agent.domain.errors import ConfigError

GOOD = """
[venue]
id = "harbour-kitchen"
timezone = "Europe/London"

[intake]
listen = "0.0.0.0:8787"
token_file = "intake-token"

[pos]
driver = "http"

[pos.http]
url = "http://127.0.0.1:9/orders"
hmac_secret = "pos-secret-value"
"""


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the venue-agent CLI in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "agent.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def write(tmp_path: Path, text: str) -> Path:
    """Write a config file and the secret it names; return its path."""
    (tmp_path / "intake-token").write_text("intake-secret-value\n")
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


class TestLoading:
    """Loading and validating settings."""

    def test_relative_secret_files_come_from_the_credentials_directory(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """token_file relative to $CREDENTIALS_DIRECTORY is read and stripped."""
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
        settings, _ = load_settings(write(tmp_path, GOOD))
        assert settings.intake.token is not None
        assert settings.intake.token.get_secret_value() == "intake-secret-value"

    def test_environment_overrides_the_file(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """VENUE_AGENT_POS__TIMEOUT_SECONDS wins over the file."""
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
        monkeypatch.setenv("VENUE_AGENT_POS__TIMEOUT_SECONDS", "3.5")
        settings, _ = load_settings(write(tmp_path, GOOD))
        assert settings.pos.timeout_seconds == 3.5

    def test_every_problem_at_once(self, tmp_path: Path) -> None:
        """A broken file reports each problem with its dotted key, not just the first."""
        text = """
[venue]
id = "Harbour Kitchen"
timezon = "Europe/London"
[intake]
listen = "0.0.0.0:8787"
[pos]
driver = "lightspeed_k"
timeout_seconds = "soon"
[[printers]]
name = "pass"
connection = "network"
"""
        with pytest.raises(ConfigError) as caught:
            load_settings(write(tmp_path, text))
        keys = {p.key for p in caught.value.problems}
        assert {
            "venue.id",
            "venue.timezon",
            "intake.token",
            "pos.timeout_seconds",
            "printers[pass].host",
            "pos.lightspeed_k.business_location_id",
        } <= keys
        assert all(p.source.endswith("agent.toml") for p in caught.value.problems)

    def test_mqtt_tls_files_are_checked(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """TLS files without tls = true, a key without its certificate and a missing file are each named."""
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
        (tmp_path / "client.key").write_text("k")
        plain = '[mqtt]\nenabled = true\nhost = "ops.example.net"\nca_file = "/etc/ssl/ops-ca.pem"\n'
        with pytest.raises(ConfigError) as caught:
            load_settings(write(tmp_path, GOOD + plain))
        [problem] = caught.value.problems
        assert problem.key == "mqtt.ca_file" and "tls = true" in problem.message
        missing = f'[mqtt]\nenabled = true\nhost = "h"\ntls = true\nca_file = "{tmp_path}/nope.pem"\n'
        keyonly = f'key_file = "{tmp_path}/client.key"\n'
        with pytest.raises(ConfigError) as caught:
            load_settings(write(tmp_path, GOOD + missing + keyonly))
        problems = {p.key: p.message for p in caught.value.problems}
        assert set(problems) == {"mqtt.ca_file", "mqtt.cert_file"}
        assert f"{tmp_path}/nope.pem does not exist" in problems["mqtt.ca_file"]
        assert "key_file" in problems["mqtt.cert_file"]

    def test_environment_errors_name_the_variable(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A bad override is blamed on the environment variable, not the file."""
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
        monkeypatch.setenv("VENUE_AGENT_POS__TIMEOUT_SECONDS", "soon")
        with pytest.raises(ConfigError) as caught:
            load_settings(write(tmp_path, GOOD))
        assert caught.value.problems[0].source == "environment VENUE_AGENT_POS__TIMEOUT_SECONDS"

    def test_missing_secret_file_is_named(self, tmp_path: Path) -> None:
        """A *_file that cannot be read names the key and the path."""
        path = tmp_path / "agent.toml"
        path.write_text(GOOD.replace('token_file = "intake-token"', 'token_file = "/nonexistent/token"'))
        with pytest.raises(ConfigError) as caught:
            load_settings(path)
        [problem] = caught.value.problems
        assert problem.key == "intake.token_file" and "/nonexistent/token" in problem.message

    def test_syntax_error_names_the_line(self, tmp_path: Path) -> None:
        """Broken TOML is reported with its line."""
        with pytest.raises(ConfigError) as caught:
            load_settings(write(tmp_path, "[venue]\nid = \n"))
        assert "line 2" in str(caught.value)

    def test_missing_file_names_the_paths_searched(self, tmp_path: Path) -> None:
        """Without a config file the error lists where it looked."""
        with pytest.raises(ConfigError) as caught:
            load_settings(tmp_path / "nope.toml")
        assert str(tmp_path / "nope.toml") in str(caught.value)

    def test_example_config_is_valid(self) -> None:
        """config/example.toml, which documents every key, validates."""
        import tomllib

        example = Path(__file__).parent.parent / "config" / "example.toml"
        settings = settings_from_dict(tomllib.loads(example.read_text()))
        assert settings.venue.id == "harbour-kitchen"

    def test_secrets_are_redacted(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """config show's data has no secret value in it."""
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
        settings, _ = load_settings(write(tmp_path, GOOD))
        text = str(redacted(settings))
        assert "intake-secret-value" not in text and "pos-secret-value" not in text and "***" in text


class TestConfigCommands:
    """venue-agent config check / show as a technician runs them."""

    def test_check_ok_prints_a_summary(self, tmp_path: Path) -> None:
        """A valid file exits 0 with a one-screen summary."""
        path = write(tmp_path, GOOD.replace('token_file = "intake-token"', f'token_file = "{tmp_path}/intake-token"'))
        result = cli("config", "check", "--config", str(path))
        assert result.returncode == 0, result.stderr
        assert "OK" in result.stdout and "harbour-kitchen" in result.stdout
        assert len(result.stdout.splitlines()) < 25

    def test_check_bad_exits_2_listing_problems(self, tmp_path: Path) -> None:
        """A broken file exits 2 and lists each problem with file and key."""
        path = write(tmp_path, '[venue]\nid = "x"\ncolour = 1\n[pos]\ndriver = "nope"\n')
        result = cli("config", "check", "--config", str(path))
        assert result.returncode == 2
        assert f"{path}: venue.colour: unknown key" in result.stderr
        assert f"{path}: pos.driver:" in result.stderr

    def test_show_redacts(self, tmp_path: Path) -> None:
        """config show prints TOML without the secrets."""
        path = write(tmp_path, GOOD.replace('token_file = "intake-token"', f'token_file = "{tmp_path}/intake-token"'))
        result = cli("config", "show", "--config", str(path))
        assert result.returncode == 0, result.stderr
        assert "pos-secret-value" not in result.stdout and "intake-secret-value" not in result.stdout
        assert 'hmac_secret = "***"' in result.stdout
        import tomllib

        assert tomllib.loads(result.stdout)["pos"]["driver"] == "http"


HTTP_POS = {"driver": "http", "http": {"url": "http://127.0.0.1:9/orders"}}


class TestVenueCountry:
    """venue.country: the venue's country (ISO 3166-1 alpha-2), by default the country of venue.timezone."""

    @pytest.mark.parametrize(
        ("zone", "country"),
        [
            ("Europe/London", "GB"),
            ("America/New_York", "US"),
            ("Europe/Jersey", "JE"),
            ("Asia/Calcutta", "IN"),  # a backward-compatible link to Asia/Kolkata
            ("US/Eastern", "US"),
            ("UTC", None),
            ("Etc/GMT+1", None),
        ],
    )
    def test_default_is_the_country_of_the_timezone(self, zone: str, country: str | None) -> None:
        """Without venue.country the system's tzdata tables (zone.tab, zone1970.tab) give the zone's country."""
        settings = settings_from_dict({"venue": {"id": "harbour-kitchen", "timezone": zone}, "pos": HTTP_POS})
        assert settings.venue.country == country

    def test_given_country_wins_and_is_upper_cased(self) -> None:
        """A venue in a zone shared across a border says its country; "gb" is read as "GB"."""
        raw = {"venue": {"id": "harbour-kitchen", "timezone": "Europe/Paris", "country": "gb"}, "pos": HTTP_POS}
        assert settings_from_dict(raw).venue.country == "GB"

    @pytest.mark.parametrize("bad", ["UK", "GBR", "United Kingdom", "1"])
    def test_config_check_names_a_bad_country(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
        """config check refuses what is not an ISO 3166-1 alpha-2 code ("UK" is not one), naming venue.country."""
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
        path = write(
            tmp_path, GOOD.replace('timezone = "Europe/London"', f'timezone = "Europe/London"\ncountry = "{bad}"')
        )
        with pytest.raises(ConfigError) as caught:
            load_settings(path)
        [problem] = caught.value.problems
        assert problem.key == "venue.country"
        assert "ISO 3166-1 alpha-2" in problem.message

    def test_square_catalog_ids_longer_than_square_takes_are_refused(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A catalog object id over Square's 192 characters is a config problem, not a refused order."""
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
        square = (
            f'[pos.square]\nlocation_id = "L1"\naccess_token = "t"\n[pos.square.catalog]\nPZ-MARG = "{"X" * 193}"\n'
        )
        with pytest.raises(ConfigError) as caught:
            load_settings(write(tmp_path, GOOD + square))
        [problem] = caught.value.problems
        assert problem.key == "pos.square.catalog" and "PZ-MARG" in problem.message and "192" in problem.message


LIGHTSPEED = """
[venue]
id = "harbour-kitchen"
timezone = "Europe/London"

[injection]
confirm_timeout_seconds = {timeout}

[pos]
driver = "{driver}"

[pos.lightspeed_k]
business_location_id = 45454545
client_id = "venue-agent"
client_secret = "client-secret"
refresh_token = "seed"
endpoint_id = "venue-agent-hook"

[pos.http]
url = "http://127.0.0.1:9/orders"
"""


class TestLightspeedRules:
    """Rules that follow from the Lightspeed K-Series API (docs/lightspeed-k.md), checked before anything runs."""

    def test_check_refuses_a_confirm_timeout_under_60_naming_the_key_and_why(self, tmp_path: Path) -> None:
        """Lightspeed tries the till for >= 60 s: a shorter wait would print a fallback the till may still get."""
        path = write(tmp_path, LIGHTSPEED.format(timeout=30, driver="lightspeed_k"))
        result = cli("config", "check", "--config", str(path))
        assert result.returncode == 2
        [line] = [x for x in result.stderr.splitlines() if "confirm_timeout_seconds" in x]
        assert line.startswith(f"  {path}: injection.confirm_timeout_seconds: must be at least 60")
        assert "maxTimeToAttemptOrderDeliverToPos" in line and "made twice" in line

    @pytest.mark.parametrize(("timeout", "driver"), [(60, "lightspeed_k"), (600, "lightspeed_k"), (5, "http")])
    def test_sixty_seconds_or_another_driver_is_fine(self, tmp_path: Path, timeout: int, driver: str) -> None:
        settings, _ = load_settings(write(tmp_path, LIGHTSPEED.format(timeout=timeout, driver=driver)))
        assert settings.injection.confirm_timeout_seconds == timeout

    def test_the_rule_is_reported_with_the_other_problems(self, tmp_path: Path) -> None:
        """Every problem at once: a too-short timeout is named even when another key is broken too."""
        text = LIGHTSPEED.format(timeout=59.5, driver="lightspeed_k") + "\n[venue.extra]\nx = 1\n"
        text = text.replace('endpoint_id = "venue-agent-hook"', 'endpoint_id = "venue-agent-hook"\ndiscount_sku = ""')
        with pytest.raises(ConfigError) as caught:
            load_settings(write(tmp_path, text))
        problems = {p.key: p.message for p in caught.value.problems}
        assert "(got 59.5)" in problems["injection.confirm_timeout_seconds"]
        assert "must be 1 to 25 characters" in problems["pos.lightspeed_k.discount_sku"]

    def test_extra_line_skus_longer_than_25_are_refused(self, tmp_path: Path) -> None:
        text = LIGHTSPEED.format(timeout=120, driver="lightspeed_k").replace(
            'endpoint_id = "venue-agent-hook"',
            'endpoint_id = "venue-agent-hook"\ndelivery_fee_sku = "' + "D" * 26 + '"',
        )
        with pytest.raises(ConfigError) as caught:
            load_settings(write(tmp_path, text))
        [problem] = caught.value.problems
        assert problem.key == "pos.lightspeed_k.delivery_fee_sku" and "25" in problem.message


class TestTickets:
    """The ``[tickets]`` section (docs/configuration.md)."""

    def test_defaults(self) -> None:
        """Late after 10 minutes, no extra allergy words, no QR code."""
        settings = settings_from_dict({"venue": {"id": "v"}, "pos": {"driver": "simulator"}})
        assert (settings.tickets.late_after_minutes, settings.tickets.allergy_words, settings.tickets.qr) == (
            10,
            [],
            "none",
        )
        assert settings.tickets.qr_data("ord_1") is None

    def test_every_ticket_problem_is_named(self, tmp_path: Path) -> None:
        """config check names a misspelt key, a negative lateness, a blank allergy word and a QR URL without an id."""
        text = GOOD + (
            '\n[tickets]\nlate_after_minute = 5\nlate_after_minutes = -1\nallergy_words = ["pine nuts", " "]\n'
            'qr = "order_url"\nqr_url = "https://example.com/orders"\n'
        )
        result = cli("config", "check", "--config", str(write(tmp_path, text)))
        assert result.returncode == 2, result.stdout + result.stderr
        out = result.stdout + result.stderr
        for key in ("tickets.late_after_minute", "tickets.late_after_minutes", "tickets.allergy_words.1"):
            assert key in out, out
        with pytest.raises(ConfigError) as caught:
            settings_from_dict(
                {
                    "venue": {"id": "v"},
                    "pos": {"driver": "simulator"},
                    "tickets": {"qr": "order_url", "qr_url": "https://example.com/orders"},
                }
            )
        assert [p.key for p in caught.value.problems] == ["tickets.qr_url"]
        assert "{order_id}" in caught.value.problems[0].message

    def test_a_qr_url_names_the_order(self) -> None:
        """qr = "order_url" puts the order's own page in the code."""
        settings = settings_from_dict(
            {
                "venue": {"id": "v"},
                "pos": {"driver": "simulator"},
                "tickets": {"qr": "order_url", "qr_url": "https://example.com/o/{order_id}?v=1"},
            }
        )
        assert settings.tickets.qr_data("ord_7") == "https://example.com/o/ord_7?v=1"
