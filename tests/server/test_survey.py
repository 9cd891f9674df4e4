"""Survey config payloads the server publishes per site: validated, versioned by content, kiosk-readable."""

from __future__ import annotations

import pytest

from kiosk.protocol import SurveyConfig
from server.errors import ConfigError
from server.survey import content_version, survey_config, survey_payloads


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
