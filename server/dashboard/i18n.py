"""The dashboard's words in Korean (default) and English."""

from __future__ import annotations

from kiosk.protocol import AGE_GROUPS
from server.labels import Labels

LANGS = ("ko", "en")

TEXT: dict[str, dict[str, str]] = {
    "title": {"ko": "onetap 현장 만족도", "en": "onetap feedback"},
    "login": {"ko": "로그인", "en": "Log in"},
    "logout": {"ko": "로그아웃", "en": "Log out"},
    "username": {"ko": "아이디", "en": "User name"},
    "password": {"ko": "비밀번호", "en": "Password"},
    "bad_login": {"ko": "아이디 또는 비밀번호가 맞지 않습니다.", "en": "Wrong user name or password."},
    "login_locked": {"ko": "로그인 실패가 많아 잠시 로그인할 수 없습니다. {seconds}초 뒤에 다시 시도하세요.",
                     "en": "Too many failed logins. Try again in {seconds} seconds."},
    "login_busy": {"ko": "지금 로그인 요청이 많습니다. 잠시 뒤에 다시 시도하세요.",
                   "en": "Too many logins at once. Try again in a moment."},
    "mark_out_of_range": {"ko": "이 표시의 날짜는 비교할 수 있는 범위를 벗어납니다.",
                          "en": "This mark's date is outside the range that can be compared."},
    "home": {"ko": "현황", "en": "Now"},
    "trends": {"ko": "추이", "en": "Trends"},
    "compare": {"ko": "전후 비교", "en": "Before / after"},
    "alerts": {"ko": "알림", "en": "Alerts"},
    "exports": {"ko": "내보내기", "en": "Exports"},
    "terminals": {"ko": "단말기", "en": "Terminals"},
    "today": {"ko": "오늘", "en": "Today"},
    "site": {"ko": "기관", "en": "Site"},
    "terminal": {"ko": "단말기", "en": "Terminal"},
    "state": {"ko": "상태", "en": "State"},
    "online": {"ko": "정상", "en": "online"},
    "offline": {"ko": "끊김", "en": "offline"},
    "stale": {"ko": "응답 없음", "en": "stale"},
    "unknown": {"ko": "알 수 없음", "en": "unknown"},
    "last_tap": {"ko": "마지막 평가", "en": "Last tap"},
    "backlog": {"ko": "미전송", "en": "Backlog"},
    "chain": {"ko": "기록 무결성", "en": "Record integrity"},
    "chain_ok": {"ko": "정상", "en": "Intact"},
    "chain_broken": {"ko": "{seq}번에서 끊김", "en": "Broken at no. {seq}"},
    "chain_unchained": {"ko": "검증 불가(이전 단말기)", "en": "Not verifiable (older kiosk)"},
    "chain_missing": {"ko": "누락: {ranges}번", "en": "Missing: no. {ranges}"},
    "oldest_pending": {"ko": "가장 오래된 미전송", "en": "Oldest pending"},
    "clock": {"ko": "시계 동기화", "en": "Clock sync"},
    "version": {"ko": "소프트웨어", "en": "Software"},
    "config_version": {"ko": "설정 버전", "en": "Config"},
    "last_status": {"ko": "마지막 상태", "en": "Last status"},
    "count": {"ko": "건수", "en": "Count"},
    "index": {"ko": "만족도 지수", "en": "Index"},
    "mean": {"ko": "평균", "en": "Mean"},
    "distribution": {"ko": "분포", "en": "Distribution"},
    "total": {"ko": "합계", "en": "Total"},
    "no_data": {"ko": "자료 없음", "en": "No data"},
    "none": {"ko": "없음", "en": "none"},
    "yes": {"ko": "예", "en": "yes"},
    "no": {"ko": "아니오", "en": "no"},
    "from": {"ko": "시작일", "en": "From"},
    "to": {"ko": "종료일", "en": "To"},
    "all_sites": {"ko": "전체 기관", "en": "All sites"},
    "show": {"ko": "보기", "en": "Show"},
    "exclude_suspect": {"ko": "의심 평가 제외", "en": "Exclude suspect ratings"},
    "suspect": {"ko": "의심 평가(기계적 속도)", "en": "Suspect ratings (machine pace)"},
    "daily": {"ko": "일별 만족도 지수와 CSAT", "en": "Daily index and CSAT"},
    "trend": {"ko": "일별 추이", "en": "Daily trend"},
    "heatmap": {"ko": "시간대 × 요일 (만족도 지수)", "en": "Hour × weekday (index)"},
    "reasons": {"ko": "불만족 사유", "en": "Reasons"},
    "age_groups": {"ko": "연령대", "en": "Age groups"},
    "per_site": {"ko": "기관별 비교", "en": "Per site"},
    "bars": {"ko": "막대 그래프", "en": "Bar chart"},
    "marks": {"ko": "기준일 표시", "en": "Marks"},
    "add_mark": {"ko": "기준일 추가", "en": "Add a mark"},
    "note": {"ko": "메모", "en": "Note"},
    "day": {"ko": "날짜", "en": "Day"},
    "delete": {"ko": "삭제", "en": "Delete"},
    "days_each_side": {"ko": "전후 비교 기간(일)", "en": "Days each side"},
    "before": {"ko": "이전", "en": "Before"},
    "after": {"ko": "이후", "en": "After"},
    "change": {"ko": "변화", "en": "Change"},
    "ci": {"ko": "95% 신뢰구간", "en": "95% CI"},
    "significant": {"ko": "유의함", "en": "significant"},
    "not_significant": {"ko": "유의하지 않음", "en": "not significant"},
    "no_verdict": {"ko": "판단 보류", "en": "no verdict"},
    "compare_at": {"ko": "비교", "en": "Compare"},
    "open_alerts": {"ko": "진행 중인 알림", "en": "Open alerts"},
    "past_alerts": {"ko": "지난 알림", "en": "Past alerts"},
    "acknowledge": {"ko": "확인", "en": "Acknowledge"},
    "acked": {"ko": "확인함", "en": "Acknowledged"},
    "raised": {"ko": "발생", "en": "Raised"},
    "cleared": {"ko": "해소", "en": "Cleared"},
    "kind": {"ko": "종류", "en": "Kind"},
    "message": {"ko": "내용", "en": "Message"},
    "csv": {"ko": "평가 원자료 CSV", "en": "Ratings CSV"},
    "xlsx": {"ko": "엑셀(XLSX): 요약 + 원자료", "en": "Excel (XLSX): summary + raw"},
    "report": {"ko": "월간 보고서 (인쇄/PDF)", "en": "Monthly report (print / PDF)"},
    "month": {"ko": "월", "en": "Month"},
    "open": {"ko": "열기", "en": "Open"},
    "print": {"ko": "인쇄 또는 PDF 저장", "en": "Print or save as PDF"},
    "monthly_report": {"ko": "월간 만족도 보고서", "en": "Monthly satisfaction report"},
    "hour": {"ko": "시간", "en": "Hour"},
    "generated": {"ko": "작성", "en": "Generated"},
    "updated": {"ko": "갱신", "en": "Updated"},
    "closed_alarm": {"ko": "운영 시간 중 끊김", "en": "offline in opening hours"},
    "forbidden": {"ko": "이 기관을 볼 권한이 없습니다.", "en": "You may not see this site."},
    "weekdays": {"ko": "월,화,수,목,금,토,일", "en": "Mon,Tue,Wed,Thu,Fri,Sat,Sun"},
}


#: Labels of the suspect filter's choices. The codes ratings carry (reasons, age
#: groups, ...) take their labels from the kiosk's catalogue: server/labels.py.
SUSPECT_LABELS: dict[str, dict[str, str]] = {
    "exclude": {"ko": "제외", "en": "Exclude"},
    "include": {"ko": "포함", "en": "Include"},
    "only": {"ko": "의심만", "en": "Only suspect"},
}


def code_label(code: str, lang: str) -> str:
    """A suspect choice's, age group's or reason's label; a site's own reason code
    without a label anywhere shows as it is."""
    entry = SUSPECT_LABELS.get(code)
    if entry:
        return entry.get(lang) or entry["ko"]
    field = "age_group" if code in AGE_GROUPS else "reason"
    return Labels(lang).code(field, code)


def t(key: str, lang: str) -> str:
    entry = TEXT[key]
    return entry.get(lang) or entry["ko"]
