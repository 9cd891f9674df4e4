"""Survey config: the wire message (protocol.SurveyConfig), opening hours, merge, cache, and delivery through a real mosquitto."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from kiosk import protocol
from kiosk.flow import Question, Settings
from kiosk.outbox import Outbox
from kiosk.protocol import ProtocolError, SurveyConfig
from kiosk.survey import Survey, hours, is_open, merge
from kiosk.uplink import Uplink
from tests.waiting import wait_for

KST = timezone(timedelta(hours=9))


# -- the message ----------------------------------------------------------------


def full_config(**kw) -> SurveyConfig:
    args = dict(
        version="2026-11-27.1", question={"ko": "민원 처리에 만족하셨나요?", "en": "Happy?"},
        reasons=("wait_time", "parking"), reason_labels={"parking": {"ko": "주차", "en": "Parking"}},
        reason_threshold=3, age_group=True, cooldown_s=5, followup_timeout_s=15.0, thank_you_s=2,
        hours=("mon-fri 09:00-18:00",), count_when_closed=True,
    )
    args.update(kw)
    return SurveyConfig(**args)


def test_survey_config_round_trips():
    config = full_config()
    again = SurveyConfig.decode(config.encode())
    assert again == config and again.cooldown_s == 5.0
    assert SurveyConfig.decode(b'{"v":1,"version":7}').version == "7"
    minimal = SurveyConfig.decode(b'{"v":1,"version":"a"}')
    assert minimal.reasons == protocol.DEFAULT_REASONS and minimal.hours is None
    assert minimal.cooldown_s is None and minimal.age_group is False


@pytest.mark.parametrize("change,field", [
    ({"v": 2}, "v"),
    ({"version": ""}, "version"),
    ({"version": None}, "version"),
    ({"question": {"ko": ""}}, "question.ko"),
    ({"question": {"KO!": "x"}}, "question.KO!"),
    ({"question": "질문"}, "question"),
    ({"reasons": ["Wait Time"]}, "reasons[0]"),
    ({"reasons": ["a", "a"]}, "reasons"),
    ({"reasons": [f"r{i}" for i in range(13)]}, "reasons"),
    ({"reason_labels": {"nope": {"ko": "x"}}}, "reason_labels.nope"),
    ({"reason_threshold": 6}, "reason_threshold"),
    ({"reason_threshold": True}, "reason_threshold"),
    ({"age_group": "yes"}, "age_group"),
    ({"cooldown_s": -1}, "cooldown_s"),
    ({"followup_timeout_s": "10"}, "followup_timeout_s"),
    ({"thank_you_s": 100}, "thank_you_s"),
    ({"hours": ["mon-fri 18:00-09:00"]}, "hours[0]"),
    ({"hours": ["someday 09:00-18:00"]}, "hours[0]"),
    ({"hours": ["mon 9-18"]}, "hours[0]"),
    ({"hours": "mon-fri 09:00-18:00"}, "hours"),
    ({"count_when_closed": 1}, "count_when_closed"),
    ({"colour": "red"}, "colour"),
])
def test_bad_survey_configs_name_the_field(change, field):
    obj = {**json.loads(full_config().encode()), **change}
    with pytest.raises(ProtocolError) as info:
        SurveyConfig.decode(json.dumps(obj).encode())
    assert info.value.field == field


@pytest.mark.parametrize("payload", [b"", b"\xff", b"[]", b"{", b'{"version":"1"}'])
def test_unreadable_payloads_are_protocol_errors(payload):
    with pytest.raises(ProtocolError):
        SurveyConfig.decode(payload)


def test_constructor_validates():
    with pytest.raises(ProtocolError):
        SurveyConfig("1", reason_threshold=9)


# -- opening hours and merge ---------------------------------------------------------


def test_opening_hours():
    lines = ("mon-fri 09:00-12:00 13:00-18:00", "sat 10:00-13:00")
    thursday = datetime(2026, 11, 26, tzinfo=KST)
    assert not is_open(lines, thursday.replace(hour=8, minute=59))
    assert is_open(lines, thursday.replace(hour=9))
    assert not is_open(lines, thursday.replace(hour=12, minute=30))
    assert is_open(lines, thursday.replace(hour=17, minute=59))
    assert not is_open(lines, thursday.replace(hour=18))
    assert is_open(lines, (thursday + timedelta(days=2)).replace(hour=10))  # Saturday
    assert not is_open(lines, (thursday + timedelta(days=3)).replace(hour=10))  # Sunday
    assert is_open((), thursday)
    assert is_open(("mon,wed,sun 00:00-24:00",), (thursday + timedelta(days=3)).replace(hour=23, minute=59))


def test_merge_takes_what_the_site_sets_and_keeps_the_rest():
    base = Settings(cooldown_s=3.0, followup_timeout_s=10.0, thank_you_s=2.5, pin="1234")
    assert merge(base, None) is base
    merged = merge(base, SurveyConfig("1", reasons=("parking",), reason_threshold=4, cooldown_s=8,
                                      reason_labels={"parking": {"ko": "주차"}}))
    assert merged.questions == (Question("reason", ("parking",), 4, labels={"parking": {"ko": "주차"}}),)
    assert merged.cooldown_s == 8.0 and merged.followup_timeout_s == 10.0 and merged.pin == "1234"
    assert merge(base, full_config()).count_when_closed is True
    assert merge(base, SurveyConfig("2", reason_threshold=0, age_group=True)).questions == (
        Question("age_group", protocol.AGE_GROUPS, 5, key="age"),)
    assert hours(("mon 09:00-10:00",), None) == ("mon 09:00-10:00",)
    assert hours(("mon 09:00-10:00",), SurveyConfig("1", hours=())) == ()


# -- cache ----------------------------------------------------------------------------


def test_offer_applies_caches_and_survives_a_restart(tmp_path):
    seen = []
    survey = Survey(tmp_path / "survey.json", on_change=seen.append)
    assert survey.current is None and survey.version is None
    config = full_config()
    assert survey.offer(config.encode()) == config
    assert seen == [config] and survey.version == "2026-11-27.1"
    assert survey.offer(config.encode()) is None and len(seen) == 1  # same again: no change
    assert Survey(tmp_path / "survey.json").current == config


def test_bad_config_is_rejected_loudly_and_the_last_good_one_stays(tmp_path, caplog):
    survey = Survey(tmp_path / "survey.json")
    survey.offer(full_config().encode())
    with caplog.at_level(logging.ERROR, logger="kiosk.survey"):
        assert survey.offer(b'{"v":1,"version":"2","reason_threshold":"low"}') is None
    assert "survey config rejected: reason_threshold" in caplog.text
    assert "keeping version 2026-11-27.1" in caplog.text
    assert survey.version == "2026-11-27.1" and survey.rejected == 1
    assert Survey(tmp_path / "survey.json").version == "2026-11-27.1"
    assert survey.offer(b"") is None and survey.version == "2026-11-27.1"


def test_a_corrupt_cache_is_logged_and_ignored(tmp_path, caplog):
    (tmp_path / "survey.json").write_bytes(b'{"v":1,"version":"1","hours":["nope"]}')
    with caplog.at_level(logging.ERROR, logger="kiosk.survey"):
        assert Survey(tmp_path / "survey.json").current is None
    assert "is invalid (hours[0]" in caplog.text


def test_an_unwritable_cache_still_applies(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    survey = Survey(blocker / "survey.json")
    with caplog.at_level(logging.ERROR, logger="kiosk.survey"):
        assert survey.offer(full_config().encode()) is not None
    assert "not cached" in caplog.text and survey.version == "2026-11-27.1"


# -- through a real broker ----------------------------------------------------------------


def publish_retained(broker, topic: str, payload: bytes) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-config-publisher")
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1, retain=True).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def test_config_from_a_real_broker_is_applied_cached_and_reported(mosquitto, tmp_path):
    topic = protocol.topic("site-a", "kiosk-1", "config")
    publish_retained(mosquitto, topic, full_config(version="v1").encode())
    survey = Survey(tmp_path / "survey.json")
    statuses = []
    watcher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-status-watcher")
    watcher.on_message = lambda c, u, m: statuses.append(protocol.Status.decode(m.payload))
    watcher.connect("127.0.0.1", mosquitto.port)
    watcher.subscribe(protocol.topic("site-a", "kiosk-1", "status"), qos=1)
    watcher.loop_start()
    uplink = Uplink(
        lambda: Outbox.open(tmp_path / "outbox.db"), site="site-a", terminal="kiosk-1",
        broker_url=mosquitto.url, on_config=survey.offer, status_interval=0.2,
        status_extra=lambda: {"config_version": survey.version},
    ).start()
    try:
        wait_for(lambda: survey.version == "v1", what="the retained config")
        wait_for(lambda: any(s.fields.get("config_version") == "v1" for s in statuses),
                 what="config_version in Status")
        publish_retained(mosquitto, topic, b'{"v":1,"version":"v2","cooldown_s":"soon"}')
        wait_for(lambda: survey.rejected == 1, what="the bad config")
        assert survey.version == "v1"
        publish_retained(mosquitto, topic, full_config(version="v3", age_group=False).encode())
        wait_for(lambda: survey.version == "v3", what="the new config")
    finally:
        uplink.stop()
        watcher.disconnect()
        watcher.loop_stop()
    mosquitto.stop()
    # Restart with the broker away: the last good config is in force.
    restarted = Survey(tmp_path / "survey.json")
    assert restarted.version == "v3" and restarted.current.age_group is False
