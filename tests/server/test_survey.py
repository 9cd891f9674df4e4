"""Survey config payloads the server publishes per site: validated, versioned by content, kiosk-readable."""

from __future__ import annotations

import queue

import pytest

from kiosk.outbox import Outbox
from kiosk.protocol import SurveyConfig
from kiosk.uplink import Uplink
from server.config import load_config
from server.errors import ConfigError
from server.survey import (
    SurveyPublisher,
    content_version,
    site_payload,
    survey_config,
    survey_payloads,
)
from tests.server_process import ServerProcess


def test_a_plain_dict_becomes_a_config_the_kiosk_decodes():
    spec = {"question": {"ko": "민원 처리에 만족하셨나요?"}, "reasons": ["wait_time", "parking"],
            "reason_labels": {"parking": {"ko": "주차"}}, "reason_threshold": 3, "age_group": True,
            "cooldown_s": 5, "hours": ["mon-fri 09:00-18:00"]}
    config = survey_config(spec)
    decoded = SurveyConfig.decode(config.encode())
    assert decoded == config and decoded.reasons == ("wait_time", "parking") and decoded.cooldown_s == 5.0


def test_the_version_follows_the_content():
    one = survey_config({"reason_threshold": 2})
    assert one.version == survey_config({"reason_threshold": 2}).version
    assert one.version != survey_config({"reason_threshold": 3}).version
    assert survey_config({"version": "2026-11-27", "reason_threshold": 3}).version == "2026-11-27"
    assert content_version({"a": 1, "b": 2}) == content_version({"b": 2, "a": 1})


@pytest.mark.parametrize("spec,message", [
    ({"colour": "red"}, "survey.colour: unknown key"),
    ({"reason_threshold": 9}, "survey.reason_threshold:"),
    ({"hours": ["weekdays 9-6"]}, "survey.hours[0]:"),
    ({"reason_labels": {"parking": {"ko": "주차"}}}, "survey.reason_labels.parking"),
    ("nope", "survey: must be a table"),
])
def test_bad_specs_name_the_key(spec, message):
    with pytest.raises(ConfigError) as info:
        survey_config(spec)
    assert message in str(info.value)


def test_per_site_payloads_override_defaults():
    payloads = survey_payloads(
        {"gangnam": {"age_group": True}, "seocho": {}},
        defaults={"reason_threshold": 3, "question": {"ko": "만족하셨나요?"}},
    )
    gangnam, seocho = (SurveyConfig.decode(payloads[s]) for s in ("gangnam", "seocho"))
    assert gangnam.age_group and not seocho.age_group
    assert gangnam.reason_threshold == seocho.reason_threshold == 3
    assert gangnam.version != seocho.version
    with pytest.raises(ConfigError, match=r"sites\.seocho\.survey\.cooldown_s"):
        survey_payloads({"seocho": {"cooldown_s": -1}})


def config_with_survey(tmp_path, text):
    path = tmp_path / "server.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path, env={})


SURVEY_TOML = """
reasons = ["wait_time", "other"]

[survey]
question = { ko = "오늘 민원 처리에 만족하셨나요?", en = "Were you satisfied today?" }
age_group = true

[sites.gangnam-office]
reasons = ["wait_time", "parking"]

[sites.gangnam-office.survey]
reason_threshold = 3
"""


def test_site_payload_merges_defaults_site_survey_and_the_sites_reasons(tmp_path):
    config = config_with_survey(tmp_path, SURVEY_TOML)
    gangnam = SurveyConfig.decode(site_payload(config, "gangnam-office"))
    assert gangnam.reasons == ("wait_time", "parking")
    assert (gangnam.reason_threshold, gangnam.age_group) == (3, True)
    assert gangnam.question["ko"] == "오늘 민원 처리에 만족하셨나요?"
    elsewhere = SurveyConfig.decode(site_payload(config, "elsewhere"))
    assert elsewhere.reasons == ("wait_time", "other") and elsewhere.reason_threshold == 2
    assert site_payload(config_with_survey(tmp_path, 'reasons = ["a"]\n'), "x") is None


def test_bad_survey_in_the_server_config_names_the_key_and_file(tmp_path):
    with pytest.raises(ConfigError, match=r"server.toml: survey.reason_threshold"):
        config_with_survey(tmp_path, "[survey]\nreason_threshold = 9\n")


def test_publisher_publishes_each_terminal_once_per_connection(tmp_path):
    config = config_with_survey(tmp_path, SURVEY_TOML)
    sent = []
    publisher = SurveyPublisher(config, lambda topic, payload: sent.append(topic))
    terminals = [("gangnam-office", "counter-01"), ("gangnam-office", "counter-02")]
    assert publisher.run_once(terminals, connected=True) == 2
    assert publisher.run_once(terminals + [("mapo", "c1")], connected=True) == 1
    assert sent == ["onetap/v1/gangnam-office/counter-01/config",
                    "onetap/v1/gangnam-office/counter-02/config", "onetap/v1/mapo/c1/config"]
    # The broker may come back empty: after a disconnect, everything again.
    assert publisher.run_once(terminals, connected=False) == 0
    assert publisher.run_once(terminals, connected=True) == 2


def test_a_kiosk_receives_its_sites_survey_from_the_running_server(tmp_path, mosquitto):
    path = tmp_path / "server.toml"
    path.write_text(SURVEY_TOML, encoding="utf-8")
    server = ServerProcess(mosquitto, tmp_path, args=("--config", str(path))).start()
    received = queue.Queue()
    uplink = Uplink(lambda: Outbox.open(tmp_path / "outbox.db"), site="gangnam-office",
                    terminal="counter-09", broker_url=mosquitto.url,
                    on_config=received.put).start()
    try:
        survey = SurveyConfig.decode(received.get(timeout=30))
        assert survey.reasons == ("wait_time", "parking") and survey.reason_threshold == 3
    finally:
        uplink.stop()
        server.stop()
