"""Code labels come from the kiosk's catalogue, in the reader's language, sorted by meaning."""

from kiosk.catalog import LANGUAGES, load_catalogs
from kiosk.protocol import AGE_GROUPS, DEFAULT_REASONS, INPUTS, SCORES
from server.dashboard.i18n import code_label
from server.labels import READER_LANGS, Labels, in_order


def test_kiosk_and_server_name_every_code_alike():
    catalogs = load_catalogs()
    for lang in READER_LANGS:
        labels, kiosk = Labels(lang), catalogs[lang]
        for code in DEFAULT_REASONS:
            # The kiosk may show a short form where a 7" tile is narrow; what it
            # names the code, and what every report prints, is the full label.
            assert labels.code("reason", code) == kiosk[f"reason.{code}"] == code_label(code, lang)
            assert kiosk.label("reason", code) == kiosk.shown(f"reason.{code}")
        for code in AGE_GROUPS:
            assert labels.code("age_group", code) == kiosk[f"age.{code}"] == code_label(code, lang)
        for score in SCORES:
            assert labels.code("score", score) == kiosk.score(score)


def test_the_labels_the_issue_found_disagreeing():
    ko = Labels("ko")
    assert ko.code("reason", "resolution") == "업무 처리 결과"
    assert ko.code("reason", "facilities") == "시설·환경"


def test_no_code_reads_as_itself():
    for lang in READER_LANGS:
        labels = Labels(lang)
        for field, codes in (("reason", DEFAULT_REASONS), ("age_group", AGE_GROUPS),
                             ("lang", LANGUAGES), ("input", INPUTS)):
            for code in codes:
                # "20s" is its own English label.
                assert labels.code(field, code) != code or code[0].isdigit() and lang == "en", \
                    (lang, field, code)
    assert Labels("ko").code("lang", "zh") == "중국어" and Labels("en").code("lang", "ko") == "Korean"
    assert Labels("ko").code("input", "button") == "버튼"


def test_no_answer_hours_and_weekdays():
    ko, en = Labels("ko"), Labels("en")
    assert ko.code("reason", None) == "응답 없음" and en.code("age_group", None) == "No answer"
    assert ko.hour(9) == "09시" and en.hour(9) == "09:00" and ko.code("hour", 17) == "17시"
    assert ko.weekday(0) == "월" and en.weekday(6) == "Sun"


def test_a_sites_own_reason_takes_its_configured_label_else_the_code():
    labels = {"parking": {"ko": "주차", "en": "Parking"}}
    assert Labels("ko", labels).code("reason", "parking") == "주차"
    assert Labels("en", {"parking": {"ko": "주차"}}).code("reason", "parking") == "주차"
    assert Labels("ko").code("reason", "parking") == "parking"


def test_an_unknown_reader_language_reads_korean():
    assert Labels("xx").code("reason", "wait_time") == "대기 시간"


def test_sorted_by_meaning_not_by_code():
    assert in_order("age_group", [None, "70plus", "20s", "under20", "60s"]) == \
        ["under20", "20s", "60s", "70plus", None]
    reasons = ("wait_time", "parking", "other")
    assert in_order("reason", ["other", None, "parking", "wait_time", "zzz"], reasons) == \
        ["wait_time", "parking", "other", "zzz", None]
    assert in_order("hour", [17, 9, 13]) == [9, 13, 17]
    assert in_order("lang", ["ja", "en", "ko"]) == ["ko", "en", "ja"]


def test_the_server_reads_the_catalogue_without_importing_the_kiosk():
    import subprocess
    import sys

    probe = ("import sys\n"
             "import server.labels, server.report, server.document, server.export, server.subscription\n"
             "from server.labels import Labels\n"
             "Labels('ko').code('reason', 'wait_time')\n"
             "print(sorted(m for m in sys.modules if m.split('.')[0] == 'kiosk'))\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "['kiosk', 'kiosk.protocol']"
