"""The dashboard's words in Korean (default) and English."""

from __future__ import annotations

import re

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
    "menu": {"ko": "메뉴", "en": "Menu"},
    "help": {"ko": "도움말", "en": "Help"},
    "group": {"ko": "권역(기관 묶음)", "en": "Group"},
    "all_groups": {"ko": "전체 권역", "en": "All groups"},
    "all_terminals": {"ko": "전체 단말기", "en": "All terminals"},
    "suspect_short": {"ko": "의심 평가", "en": "Suspect ratings"},
    "suspect_count": {"ko": "오늘의 의심 평가", "en": "Suspect ratings today"},
    "target": {"ko": "목표 지수", "en": "Target index"},
    "author": {"ko": "작성자", "en": "Added by"},
    "verdict": {"ko": "판단", "en": "Verdict"},
    "asked_period": {"ko": "비교 기간", "en": "period asked"},
    "heatmap_title": {"ko": "시간대 × 요일", "en": "Hour × weekday"},
    "cell_shows": {"ko": "칸 안의 숫자", "en": "Each cell shows"},
    "cell_index": {"ko": "만족도 지수", "en": "index"},
    "cell_count": {"ko": "건수", "en": "count"},
    "heat_meaning_index": {"ko": "색: 만족도 지수(빨강 0 → 초록 100). 칸 안의 숫자: 만족도 지수. 회색: 평가 없음.",
                           "en": "Colour: satisfaction index (red 0 → green 100). Number in each cell: the index. "
                                 "Grey: no ratings."},
    "heat_meaning_count": {"ko": "색: 만족도 지수(빨강 0 → 초록 100). 칸 안의 숫자: 평가 건수. 회색: 평가 없음.",
                           "en": "Colour: satisfaction index (red 0 → green 100). Number in each cell: ratings "
                                 "counted. Grey: no ratings."},
    "bars_meaning": {"ko": "막대 길이: 건수 · 옆의 숫자: 건수 · 만족도 지수",
                     "en": "Bar length: count · beside it: count · index"},
    "ratings_export": {"ko": "평가 내보내기", "en": "Export ratings"},
    "export_note": {"ko": "내보내기는 위에서 고른 기간·기관·단말기·의심 평가 기준을 따르며, 파일 이름과 엑셀 요약 시트에 그 기준이 적힙니다.",
                    "en": "Exports follow the period, site, terminal and suspect choice above; the file name and "
                          "the Excel summary sheet state them."},
    "privacy": {"ko": "개인정보 처리 안내", "en": "Privacy"},
    "privacy_missing": {"ko": "개인정보 처리 안내는 배포본의 docs/privacy.md에 있습니다.",
                        "en": "The privacy statement is in docs/privacy.md of the distribution."},
    "help_index": {"ko": "만족도 지수 = (평균 점수 − 1) ÷ 4 × 100. 모든 평가가 ‘매우 만족’(5점)이면 100, ‘매우 불만족’(1점)이면 "
                         "0입니다. 점수 분포 전체를 한 숫자로 나타냅니다.",
                   "en": "Satisfaction index = (mean score − 1) ÷ 4 × 100: 100 when every rating is ‘very "
                         "satisfied’ (5), 0 when every one is ‘very dissatisfied’ (1). One number for the whole "
                         "distribution of scores."},
    "help_csat": {"ko": "CSAT = 4점(만족)과 5점(매우 만족)을 누른 평가의 비율(%)입니다.",
                  "en": "CSAT = the share (%) of ratings of 4 (satisfied) and 5 (very satisfied)."},
    "help_suspect": {"ko": "의심 평가: 한 단말기에서 {burst}번 이상 연달아 {burst_s}초 안쪽 간격으로 누른 평가, 또는 같은 점수를 "
                           "{run}번 이상 {run_s}초 안쪽 간격으로 누른 평가입니다(사람이 아닌 기계적 속도). 지우지 않고 "
                           "표시만 하며, 모든 화면·내보내기·보고서는 기본으로 제외하고 그 선택을 함께 적습니다.",
                     "en": "Suspect ratings: {burst} or more taps at one terminal each less than {burst_s} s apart, "
                           "or {run} or more equal scores each less than {run_s} s apart (machine pace). They are "
                           "flagged, never deleted; every page, export and report leaves them out by default and "
                           "states the choice."},
    "help_compare": {"ko": "전후 비교의 ‘유의함’은 두 기간 차이의 95% 신뢰구간이 0을 포함하지 않는다는 뜻입니다. 어느 한쪽이 "
                           "{min_count}건 미만이면 판단을 보류합니다.",
                     "en": "‘Significant’ in before/after: the 95% confidence interval of the difference excludes "
                           "0. With fewer than {min_count} ratings on either side there is no verdict."},
    "help_collect_title": {"ko": "평가를 받는 방법", "en": "How ratings are collected"},
    "help_collect": {"ko": "창구마다 놓인 단말기에서 민원인이 다섯 얼굴 중 하나를 한 번 누릅니다. 기관이 켠 경우에만 불만족 사유와 "
                           "연령대를 묻고, 답하지 않아도 평가는 기록됩니다(‘응답 없음’). 평가는 누르는 즉시 단말기에 "
                           "저장되고, 네트워크가 끊겨도 서버가 수신을 확인할 때까지 보관되어 정확히 한 번 집계됩니다.",
                     "en": "At each counter a visitor taps one of five faces once. Only where the institution turns "
                           "them on, the kiosk asks why and the age group; the rating counts whether or not they are "
                           "answered (‘no answer’). Each rating is stored on the kiosk at once and kept until the "
                           "server confirms it, so it is counted exactly once even through network outages."},
    "help_grade_title": {"ko": "목표와 등급", "en": "Targets and grade"},
    "help_grade": {"ko": "기관이나 권역마다 목표 지수를 정할 수 있습니다. 월간 보고서의 등급(우수·보통·미흡)은 공공서비스 "
                         "고객만족도(PCSI)가 2019년부터 쓰는 방식처럼 기관 자신의 기준(전년 동월, 자료가 부족하면 전월) "
                         "대비 개선도로 정하고, 그 규칙을 보고서에 적습니다.",
                   "en": "Each site or group may have a target index. The monthly report's grade (excellent, fair, "
                         "poor) follows improvement against the institution's own baseline (the same month last "
                         "year, else the previous month), as the PCSI has graded since 2019, and prints the rule."},
    "alert_offline": {"ko": "연결 끊김", "en": "Offline"},
    "alert_backlog": {"ko": "미전송 누적", "en": "Backlog"},
    "alert_clock": {"ko": "시계 미동기화", "en": "Clock not synchronised"},
    "alert_low_scores": {"ko": "낮은 점수 연속", "en": "Low scores"},
    "alert_suspect": {"ko": "의심 평가", "en": "Suspect ratings"},
    "alert_text_offline": {"ko": "운영 시간 중 {minutes}분째 연결이 끊겨 있습니다.",
                           "en": "Offline for {minutes} min during opening hours."},
    "alert_text_offline_plain": {"ko": "운영 시간 중 연결이 끊겨 있습니다.", "en": "Offline during opening hours."},
    "alert_text_backlog": {"ko": "미전송 평가 {backlog}건이 줄지 않습니다.",
                           "en": "{backlog} ratings waiting to be sent are not draining."},
    "alert_text_backlog_plain": {"ko": "미전송 평가가 줄지 않습니다.", "en": "Ratings waiting to be sent are not draining."},
    "alert_text_clock": {"ko": "단말기 시계가 동기화되지 않았습니다(NTP).", "en": "The terminal's clock is not synchronised (NTP)."},
    "alert_text_low_scores": {"ko": "최근 {minutes}분 동안 {max}점 이하 평가가 {count}건 있었습니다.",
                              "en": "{count} ratings of {max} or less in the last {minutes} min."},
    "alert_text_low_scores_plain": {"ko": "최근 낮은 점수가 잇따랐습니다.", "en": "Several low scores recently."},
    "alert_text_suspect": {"ko": "기계적 속도로 누른 평가 {count}건을 의심 평가로 표시했습니다(보관, 제외 가능).",
                           "en": "{count} ratings at machine pace flagged suspect (kept, excludable)."},
    "alert_text_suspect_plain": {"ko": "기계적 속도로 누른 평가를 의심 평가로 표시했습니다.",
                                 "en": "Ratings at machine pace flagged suspect."},
    "alert_certificate": {"ko": "인증서 만료 임박", "en": "Certificate expiring"},
    "alert_help": {"ko": "직원 호출", "en": "Staff call"},
    "alert_seq_restart": {"ko": "평가 번호 재시작", "en": "Numbering restarted"},
    "alert_quarantine": {"ko": "격리 한도 도달", "en": "Quarantine cap reached"},
    "alert_missing": {"ko": "누락된 평가", "en": "Missing ratings"},
    "alert_chain": {"ko": "체인 끊김", "en": "Chain broken"},
    "alert_signature": {"ko": "서명 불일치", "en": "Bad signature"},
    "alert_tamper": {"ko": "저장 기록 변조 의심", "en": "Stored ratings altered"},
    "alert_text_certificate_expired": {"ko": "브로커 인증서가 {day}에 만료되었습니다. 바로 갱신하세요.",
                                       "en": "A broker certificate expired on {day}: renew it now."},
    "alert_text_certificate": {"ko": "브로커 인증서가 {day}에 만료됩니다({days}일 남음). 갱신하세요.",
                               "en": "A broker certificate expires on {day} (in {days} days): renew it."},
    "alert_text_certificate_plain": {"ko": "브로커 인증서 파일을 읽을 수 없습니다. 설정한 파일을 확인하세요.",
                                     "en": "A broker certificate file cannot be read: check the configured file."},
    "alert_text_help": {"ko": "민원인이 단말기에서 직원 도움을 요청했습니다.",
                        "en": "A citizen at the terminal asks for staff help."},
    "alert_text_seq_restart": {"ko": "평가 번호가 다시 1부터 시작했습니다(모두 {starts}번). 단말기를 저장 기록 없이 "
                                     "교체했는지 확인하세요. 평가는 모두 보관됩니다.",
                               "en": "Numbering began again at 1 ({starts} times in all): was a kiosk replaced "
                                     "without its outbox? Ratings are kept."},
    "alert_text_seq_restart_plain": {"ko": "평가 번호가 다시 1부터 시작했습니다. 평가는 모두 보관됩니다.",
                                     "en": "Numbering began again at 1. Ratings are kept."},
    "alert_text_quarantine": {"ko": "오늘의 격리 한도에 도달했습니다(격리 {rows}건, {size}바이트). 이후 잘못된 메시지는 "
                                    "세기만 하고 버립니다.",
                              "en": "Reached the daily quarantine cap ({rows} messages, {size} bytes): further bad "
                                    "messages are counted and dropped."},
    "alert_text_quarantine_plain": {"ko": "오늘의 격리 한도에 도달했습니다. 이후 잘못된 메시지는 세기만 하고 버립니다.",
                                    "en": "Reached the daily quarantine cap: further bad messages are counted and "
                                          "dropped."},
    "alert_text_missing_more": {"ko": "일련번호 {seqs} 외 {more}개 구간의 평가가 {minutes}분 넘게 도착하지 않았습니다"
                                      "(단말기에서 유실되었거나 지워졌을 수 있음).",
                                "en": "Ratings {seqs} and {more} more ranges missing for over {minutes} min (lost or "
                                      "removed at the kiosk?)."},
    "alert_text_missing": {"ko": "일련번호 {seqs}의 평가가 {minutes}분 넘게 도착하지 않았습니다(단말기에서 유실되었거나 "
                                 "지워졌을 수 있음).",
                           "en": "Ratings {seqs} missing for over {minutes} min (lost or removed at the kiosk?)."},
    "alert_text_missing_plain": {"ko": "도착하지 않은 평가 번호가 있습니다.", "en": "Some rating numbers never arrived."},
    "alert_text_chain_unchained": {"ko": "일련번호 {seq} 평가가 체인 없이 도착했습니다(앞선 평가에는 체인이 있었음).",
                                   "en": "Rating {seq} arrived without a chain after chained ratings."},
    "alert_text_chain": {"ko": "일련번호 {seq}에서 체인이 끊겼습니다(평가가 바뀌었거나 끼워 넣어졌거나, 저장 기록을 잃은 "
                               "단말기).",
                         "en": "The chain breaks at rating {seq} (altered, inserted, or a kiosk that lost its "
                               "outbox)."},
    "alert_text_chain_plain": {"ko": "평가 체인이 끊겼습니다.", "en": "The ratings' chain is broken."},
    "alert_text_signature": {"ko": "서명이 맞지 않는 평가 묶음({count}건)을 격리했고 집계하지 않았습니다(위조되었거나 "
                                   "단말기 키가 등록부와 다름).",
                             "en": "A batch of {count} ratings whose signature does not verify was quarantined, not "
                                   "counted (forged, or the kiosk's key does not match the registry)."},
    "alert_text_signature_plain": {"ko": "서명이 맞지 않는 평가 묶음을 격리했고 집계하지 않았습니다.",
                                   "en": "A batch whose signature does not verify was quarantined, not counted."},
    "alert_text_tamper": {"ko": "저장된 평가가 더 이상 검증되지 않습니다(일련번호 {seq}부터). 데이터베이스에서 바뀌었을 "
                                "수 있으니 감사 기록을 확인하세요.",
                          "en": "Stored ratings no longer verify (from rating {seq}): they may have been changed in "
                                "the database; check the audit trail."},
    "alert_text_tamper_plain": {"ko": "저장된 평가가 더 이상 검증되지 않습니다.",
                                "en": "Stored ratings no longer verify."},
    "retire": {"ko": "퇴역 처리", "en": "Retire"},
    "retire_title": {"ko": "단말기 퇴역 처리", "en": "Retire a terminal"},
    "retire_what": {"ko": "퇴역 처리: 평가 기록은 남고 현황판과 알림에서 빠집니다. 다시 접속해 오면 현황판에 돌아옵니다.",
                    "en": "Retire: its ratings stay in every figure; it leaves the terminals board and the alerts. "
                          "If it connects again it comes back on the board."},
    "retire_backlog": {"ko": "이 단말기는 마지막 상태에서 미전송 평가 {backlog}건을 보고했습니다. 모두 전송될 때까지 "
                             "기다리거나 저장 기록을 새 단말기로 옮기세요. 그래도 퇴역하려면 서버에서 "
                             "`onetap-server terminal retire --force`를 실행하세요.",
                       "en": "This terminal last reported {backlog} unsent ratings. Let it drain or carry its outbox "
                             "to its replacement; to retire it anyway run `onetap-server terminal retire --force` "
                             "on the server."},
    "retire_broker": {"ko": "현황판에서는 브로커 계정을 지울 수 없습니다. 단말기가 더 보내지 못하게 하려면 서버에서 다음 "
                            "명령을 실행하세요(브로커 계정을 지웁니다):",
                      "en": "The dashboard cannot remove the broker account. So that the terminal can send nothing "
                            "more, run this on the server (it removes the broker account):"},
    "retire_confirm": {"ko": "퇴역 처리 확인", "en": "Retire it"},
    "retire_admin_only": {"ko": "모든 기관을 보는 관리자만 단말기를 퇴역 처리할 수 있습니다.",
                          "en": "Only an administrator who sees every site may retire a terminal."},
    "cancel": {"ko": "취소", "en": "Cancel"},
    "go_back": {"ko": "처음 화면으로", "en": "Back to the start"},
    "error_400": {"ko": "요청을 처리할 수 없습니다", "en": "The request cannot be handled"},
    "error_403": {"ko": "볼 권한이 없습니다", "en": "Not allowed"},
    "error_404": {"ko": "찾을 수 없습니다", "en": "Not found"},
    "error_405": {"ko": "허용되지 않는 요청입니다", "en": "Method not allowed"},
    "error_413": {"ko": "요청이 너무 큽니다", "en": "Request too large"},
    "error_429": {"ko": "요청이 너무 많습니다", "en": "Too many requests"},
    "error_500": {"ko": "서버에 문제가 생겼습니다", "en": "Something went wrong on the server"},
    "error_503": {"ko": "잠시 사용할 수 없습니다", "en": "Unavailable for a moment"},
    "error_hint_400": {"ko": "입력한 값을 확인하고 다시 시도하세요.", "en": "Check what you entered and try again."},
    "error_hint_403": {"ko": "이 기관이나 권역을 볼 권한이 없습니다. 필요하면 관리자에게 문의하세요.",
                       "en": "Your account may not see this site or group. Ask an administrator if you need to."},
    "error_hint_404": {"ko": "주소가 바뀌었거나 지워진 항목입니다.", "en": "The address has changed or the item was deleted."},
    "error_hint_500": {"ko": "문제가 기록되었습니다. 잠시 뒤에 다시 시도하세요.",
                       "en": "The problem was logged. Try again in a moment."},
    "error_hint_503": {"ko": "잠시 뒤에 다시 시도하세요.", "en": "Try again in a moment."},
    "not_found": {"ko": "그런 항목이 없습니다.", "en": "There is no such item."},
    "no_such_mark": {"ko": "그런 기준일 표시가 없습니다.", "en": "There is no such mark."},
    "no_such_alert": {"ko": "그런 알림이 없습니다.", "en": "There is no such alert."},
    "csrf_refused": {"ko": "양식이 만료되었습니다. 페이지를 새로 고친 뒤 다시 시도하세요.",
                     "en": "The form has expired (missing or invalid CSRF token). Reload the page and try again."},
    "login_csrf_refused": {"ko": "로그인 양식이 만료되었습니다. 로그인 페이지를 새로 고치세요.",
                           "en": "The login form has expired (invalid or missing CSRF token); reload the login page."},
    "bad_date": {"ko": "{name}: 날짜를 YYYY-MM-DD 형식으로 입력하세요.", "en": "{name} must be a date YYYY-MM-DD."},
    "date_out_of_range": {"ko": "{name}: 날짜는 {first}부터 {last}까지입니다.",
                          "en": "{name} must be between {first} and {last}."},
    "bad_range": {"ko": "시작일이 종료일보다 늦거나, 기간이 10년을 넘습니다.",
                  "en": "from must not be after to, nor ten years before it."},
    "bad_site": {"ko": "기관 식별자가 올바르지 않습니다.", "en": "site is not a site identifier."},
    "bad_group": {"ko": "그런 권역이 없습니다.", "en": "There is no such group."},
    "site_not_in_group": {"ko": "고른 기관이 고른 권역에 속하지 않습니다.", "en": "The site is not in the group."},
    "bad_terminal": {"ko": "단말기 식별자가 올바르지 않습니다.", "en": "terminal is not a terminal identifier."},
    "terminal_needs_site": {"ko": "단말기를 고를 때는 기관도 고르세요(여러 기관에 같은 이름의 단말기가 있을 수 있습니다).",
                            "en": "Choose the site with the terminal (several sites may have a terminal of that name)."},
    "terminal_not_in_site": {"ko": "고른 단말기가 고른 기관에 속하지 않습니다.", "en": "The terminal is not at the site."},
    "bad_suspect": {"ko": "의심 평가는 다음 중 하나입니다: {choices}", "en": "suspect must be one of: {choices}"},
    "bad_cell": {"ko": "칸 안의 숫자는 만족도 지수나 건수입니다.", "en": "cell must be index or count."},
    "bad_days": {"ko": "전후 비교 기간은 1일부터 {most}일까지의 정수입니다.",
                 "en": "days must be a whole number of days from 1 to {most}."},
    "mark_day_out_of_range": {"ko": "기준일은 {first}부터 {last}까지입니다.",
                              "en": "a mark's day must be between {first} and {last}."},
    "mark_needs_note": {"ko": "기준일 표시에는 메모가 필요합니다.", "en": "A mark needs a note."},
    "mark_needs_site": {"ko": "기관별 권한 사용자는 자기 기관에만 표시할 수 있습니다.",
                        "en": "A site-scoped user marks one of their sites."},
    "report_needs_site": {"ko": "보고서는 한 기관이나 한 권역에 대해 만듭니다. 기관이나 권역을 고르세요.",
                          "en": "A report is of one site or one group: choose a site or a group."},
    "bad_month": {"ko": "월을 YYYY-MM 형식으로 입력하세요.", "en": "month must be YYYY-MM."},
    "month_out_of_range": {"ko": "월은 {first}부터 {last}까지입니다.", "en": "month must be between {first} and {last}."},
    "store_down": {"ko": "데이터베이스를 지금 읽을 수 없습니다. 잠시 뒤에 다시 시도하세요.",
                   "en": "The database cannot be read just now. Try again in a moment."},
    "bad_form": {"ko": "양식의 값이 올바르지 않습니다.", "en": "The form's values are not valid."},
}


#: Labels of the suspect filter's choices. The codes ratings carry (reasons, age
#: groups, ...) take their labels from the kiosk's catalogue: server/labels.py.
SUSPECT_LABELS: dict[str, dict[str, str]] = {
    "exclude": {"ko": "제외 (기본)", "en": "Exclude (default)"},
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


#: What each alert kind's stored message carries (server/alerts.py, audit.py, ingest.py write one English
#: message per condition), read back as the parameters of the reader's sentence: (pattern, text key) tried in
#: order; a message none matches reads as the kind's "_plain" sentence (or its sentence without figures).
_ALERT_PARAMS: dict[str, tuple[tuple[re.Pattern, str], ...]] = {
    "offline": ((re.compile(r" for (?P<minutes>\d+) min"), "alert_text_offline"),),
    "backlog": ((re.compile(r"backlog (?P<backlog>\d+)"), "alert_text_backlog"),),
    "low_scores": ((re.compile(r"(?P<count>\d+) scores <= (?P<max>\d+) in the last (?P<minutes>\d+) min"),
                    "alert_text_low_scores"),),
    "suspect": ((re.compile(r"(?P<count>\d+) ratings at machine pace"), "alert_text_suspect"),),
    "clock": ((re.compile(r""), "alert_text_clock"),),
    "certificate": ((re.compile(r"expired on (?P<day>\d{4}-\d\d-\d\d)"), "alert_text_certificate_expired"),
                    (re.compile(r"expires on (?P<day>\d{4}-\d\d-\d\d) \(in (?P<days>\d+) days?\)"),
                     "alert_text_certificate")),
    "help": ((re.compile(r""), "alert_text_help"),),
    "seq_restart": ((re.compile(r"\((?P<starts>\d+) times in all\)"), "alert_text_seq_restart"),),
    "quarantine": ((re.compile(r"quarantine cap \((?P<rows>\d+) rows, (?P<size>\d+) bytes\)"),
                    "alert_text_quarantine"),),
    "missing": ((re.compile(r"seq (?P<seqs>[\d, -]+?) and (?P<more>\d+) more ranges missing for over "
                            r"(?P<minutes>\d+) min"), "alert_text_missing_more"),
                (re.compile(r"seq (?P<seqs>[\d, -]+?) missing for over (?P<minutes>\d+) min"), "alert_text_missing")),
    "chain": ((re.compile(r"seq (?P<seq>\d+) arrived without a chain"), "alert_text_chain_unchained"),
              (re.compile(r"chain broken at seq (?P<seq>\d+)"), "alert_text_chain")),
    "signature": ((re.compile(r"a batch of (?P<count>\d+) ratings whose signature"), "alert_text_signature"),),
    "tamper": ((re.compile(r"no longer verify: \S+ seq (?P<seq>\d+)"), "alert_text_tamper"),),
}


def alert_kind(kind: str, lang: str) -> str:
    """An alert kind's name; a kind this version does not know shows as it is."""
    return t(f"alert_{kind}", lang) if f"alert_{kind}" in TEXT else kind


def alert_text(kind: str, message: str, lang: str) -> str:
    """An alert's sentence in *lang*, from its kind and the figures its stored message carries;
    an unknown kind keeps its message."""
    patterns = _ALERT_PARAMS.get(kind)
    if patterns is None:
        return message
    for pattern, key in patterns:
        found = pattern.search(message or "")
        if found is not None:
            return t(key, lang).format(**found.groupdict())
    plain = f"alert_text_{kind}_plain"
    return t(plain if plain in TEXT else patterns[-1][1], lang)


def t(key: str, lang: str) -> str:
    entry = TEXT[key]
    return entry.get(lang) or entry["ko"]
