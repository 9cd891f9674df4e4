"""The monthly report of one site as a model: figures, tables and words in the reader's language (pure).

``fetch_answers`` asks the store the questions a report needs (the only
I/O here); ``build_report`` turns those answers, ``today`` and the reader's
language into what the template prints, so every figure is tested without a
database or a browser.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Mapping, Sequence

from kiosk.protocol import DEFAULT_REASONS
from server.aggregate import Distribution, Summary, summarize
from server.compare import MIN_COUNT, Change, compare
from server.labels import Labels, in_order
from server import words
from server.particles import attach
from server.store import Filters, Store

#: Which word of the one catalogue (server/words.py) the report prints under each name its template uses.
REPORT_WORDS: dict[str, str] = {
    "title": "monthly_report", "period": "period", "generated": "generated", "count": "report_count",
    "index": "satisfaction_index", "csat": "report_csat", "mean": "mean_score", "daily": "report_daily",
    "heatmap": "report_heatmap", "reasons": "report_reasons", "reason": "reason",
    "age_reasons": "report_age_reasons", "age_group": "age_group", "ages": "age_groups",
    "terminals": "report_terminals", "terminal": "terminal", "share": "report_share", "total": "total",
    "distribution": "report_distribution", "comparison": "report_comparison", "this_month": "report_current",
    "previous": "report_previous", "last_year": "report_last_year", "change": "change", "ci": "ci",
    "verdict": "verdict", "significant": "significant", "not_significant": "not_significant",
    "no_verdict": "no_verdict", "no_data": "no_data", "notes": "report_notes", "page": "report_page",
    "suspect": "suspect_short",
}

#: Words that change with the report's period: the catalogue holds them as ``<key>_<period>``.
PERIOD_WORDS = {"title": "report_title", "this_month": "report_current", "previous": "report_previous",
                "last_year": "report_last_year", "comparison": "report_comparison"}
PERIODS = ("day", "week", "month")


def word(key: str, lang: str, period: str = "month") -> str:
    for_period = f"{PERIOD_WORDS.get(key)}_{period}"
    return words.t(for_period if for_period in words.TEXT else REPORT_WORDS[key], lang)


def last_complete_month(today: date) -> date:
    """The first day of the month before *today*'s (the last month with every day over)."""
    return (today.replace(day=1) - timedelta(days=1)).replace(day=1)


def last_complete(today: date, period: str) -> date:
    """The first day of the last period (day, week from Monday, month) wholly before *today*."""
    if period == "day":
        return today - timedelta(days=1)
    if period == "week":
        return today - timedelta(days=today.weekday() + 7)
    return last_complete_month(today)


def period_bounds(first: date, period: str) -> tuple[date, date]:
    if period == "day":
        return first, first
    if period == "week":
        return first, first + timedelta(days=6)
    return month_bounds(first)


def previous_period(first: date, period: str) -> date:
    return {"day": first - timedelta(days=1), "week": first - timedelta(days=7)}.get(
        period) or shift_months(first, -1)


def last_year_period(first: date, period: str) -> date:
    # A day or week a year back falls on the same weekdays 52 weeks (364 days) before.
    return first - timedelta(days=364) if period in ("day", "week") else shift_months(first, -12)


def month_bounds(first: date) -> tuple[date, date]:
    first = first.replace(day=1)
    return first, first.replace(day=calendar.monthrange(first.year, first.month)[1])


def shift_months(first: date, months: int) -> date:
    index = first.year * 12 + first.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


@dataclass(frozen=True)
class ReportAnswers:
    """What the store answered for one site and month (distributions by key)."""

    total: Distribution
    suspect: int
    days: Sequence[tuple[tuple, Distribution]]
    hour_weekday: Sequence[tuple[tuple, Distribution]]
    reasons: Sequence[tuple[tuple, Distribution]]
    ages: Sequence[tuple[tuple, Distribution]]
    age_reasons: Sequence[tuple[tuple, Distribution]]
    terminals: Sequence[tuple[tuple, Distribution]]
    previous: Distribution
    last_year: Distribution
    marks: Sequence[tuple[str, str]] = ()


def fetch_answers(store: Store, site: str | None, first: date, *, period: str = "month", exclude_suspect: bool = True,
                  sites: frozenset[str] | None = None, terminal: str | None = None) -> ReportAnswers:
    """Ask *store* what the report of *site* (None: every site of *sites*, a group), or of one
    *terminal* of it, for the period (day, week, month) starting *first* shows."""
    suspect = False if exclude_suspect else None

    def month(start: date) -> Filters:
        low, high = period_bounds(start, period)
        return Filters(low, high, site=site, terminal=terminal, sites=sites, suspect=suspect)

    this = month(first)
    flagged = Filters(this.date_from, this.date_to, site=site, terminal=terminal, sites=sites, suspect=True)
    return ReportAnswers(
        total=store.summary(this),
        suspect=sum(store.summary(flagged).values()),
        days=store.aggregates(("day",), this),
        hour_weekday=store.aggregates(("hour", "weekday"), this),
        reasons=store.aggregates(("reason",), this),
        ages=store.aggregates(("age_group",), this),
        age_reasons=store.aggregates(("age_group", "reason"), this),
        # A terminal is known by its site: a group's report keys counters by both.
        terminals=(store.aggregates(("terminal",), this) if site is not None else
                   [((f"{s}/{t}",), dist) for (s, t), dist in store.aggregates(("site", "terminal"), this)]),
        previous=store.summary(month(previous_period(first, period))),
        last_year=store.summary(month(last_year_period(first, period))),
        marks=[(m["day"], m["note"]) for m in store.marks(sites)
               if (m["site"] is None or m["site"] == site or (site is None and sites is not None
                                                              and m["site"] in sites))
               and this.date_from.isoformat() <= m["day"] <= this.date_to.isoformat()],
    )


@dataclass(frozen=True)
class Figure:
    """A cover figure: label, value as printed, and its definition."""

    key: str
    label: str
    value: str
    definition: str


@dataclass(frozen=True)
class Row:
    """A table row: its label and the summary of its ratings (share: % of the table's total)."""

    label: str
    summary: Summary
    share: float | None = None


@dataclass(frozen=True)
class ComparisonRow:
    label: str
    period: str
    summary: Summary
    index: Change
    csat: Change
    index_verdict: str
    csat_verdict: str
    sentence: str


@dataclass(frozen=True)
class Report:
    lang: str
    title: str
    institution: str | None
    site: str
    site_name: str
    month: str
    first: date
    last: date
    generated: str
    exclude_suspect: bool
    suspect: int
    total: Summary
    figures: list[Figure]
    days: list[tuple[str, Summary | None]]
    marks: list[tuple[str, str]]
    heat: dict[tuple[int, int], tuple[int, float | None]]
    hours: list[int]
    hour_labels: list[str]
    weekdays: list[str]
    reasons: list[Row]
    ages: list[Row]
    age_reason_columns: list[str]
    age_reasons: list[tuple[str, list[tuple[int, float | None]], int]]
    terminals: list[Row]
    this_month: Summary
    comparisons: list[ComparisonRow]
    notes: list[str]
    words: Mapping[str, str] = field(default_factory=dict)


def number(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _verdict(change: Change, lang: str) -> str:
    if change.significant is None:
        return word("no_verdict", lang)
    return word("significant" if change.significant else "not_significant", lang)


def _period_label(first: date, lang: str, period: str = "month") -> str:
    if period == "day":
        return first.isoformat()
    if period == "week":
        return f"{first.isoformat()} – {(first + timedelta(days=6)).isoformat()}"
    return f"{first.year}년 {first.month}월" if lang == "ko" else first.strftime("%B %Y")


def _notes(lang: str, exclude_suspect: bool, suspect: int, rules: Mapping[str, Any]) -> list[str]:
    burst, burst_s = rules.get("burst_count", 4), rules.get("burst_interval_s", 1.0)
    run, run_s = rules.get("run_length", 20), rules.get("run_interval_s", 3.0)
    if lang == "ko":
        excluded = (f"이 보고서의 수치는 의심 평가 {attach(f'{suspect:,}건', '을')} 제외한 값입니다."
                    if exclude_suspect else
                    f"이 보고서의 수치는 의심 평가 {attach(f'{suspect:,}건', '을')} 포함한 값입니다.")
        return [
            "만족도 지수 = (평균 점수 − 1) ÷ 4 × 100. 모든 평가가 ‘매우 만족’(5점)이면 100, ‘매우 불만족’(1점)이면 0입니다.",
            "CSAT = 4점(만족)과 5점(매우 만족)의 비율(%). 평균 점수는 1~5점의 산술 평균입니다.",
            f"비교의 ‘유의함’은 두 기간 차이의 95% 신뢰구간이 0을 포함하지 않는다는 뜻입니다. "
            f"어느 한쪽이 {MIN_COUNT}건 미만이면 판단을 보류합니다.",
            f"의심 평가: 한 단말기에서 {burst}번 이상 연달아 {burst_s:g}초 안쪽 간격으로 누른 평가, 또는 "
            f"같은 점수를 {run}번 이상 {run_s:g}초 안쪽 간격으로 누른 평가입니다(기계적 속도). "
            f"지우지 않고 표시만 합니다. {excluded}",
            "‘응답 없음’은 사유나 연령대를 묻지 않았거나 답하지 않은 평가입니다. 날짜와 시간은 현지 시각입니다.",
        ]
    verb = "exclude" if exclude_suspect else "include"
    return [
        "Satisfaction index = (mean score − 1) ÷ 4 × 100: 100 when every rating is ‘very satisfied’ (5), "
        "0 when every one is ‘very dissatisfied’ (1).",
        "CSAT = the share (%) of ratings 4 (satisfied) and 5 (very satisfied). The mean score is the "
        "arithmetic mean of the scores 1 to 5.",
        f"‘Significant’ in the comparison: the 95% confidence interval of the difference excludes 0. "
        f"With fewer than {MIN_COUNT} ratings on either side there is no verdict.",
        f"Suspect ratings: {burst} or more taps at one terminal each less than {burst_s:g} s apart, or "
        f"{run} or more equal scores each less than {run_s:g} s apart (machine pace). They are flagged, "
        f"never deleted. The figures of this report {verb} the {suspect:,} suspect ratings.",
        "‘No answer’: the reason or age group was not asked or not answered. Days and hours are local time.",
    ]


#: The grade's words, and the rule printed with it.
GRADES: dict[str, dict[str, str]] = {
    "excellent": {"ko": "우수", "en": "Excellent"},
    "fair": {"ko": "보통", "en": "Fair"},
    "poor": {"ko": "미흡", "en": "Poor"},
    "none": {"ko": "판단 보류", "en": "No grade"},
}


def grade(index: float | None, baseline: Change, target: float | None) -> str:
    """우수/보통/미흡 by improvement against the institution's own baseline (as the PCSI
    grades since 2019), with the target index as a floor for 우수:
    excellent: a significant improvement on the baseline, or the target met without a significant decline;
    poor: a significant decline on the baseline while the target (if any) is not met;
    fair: anything else; none: no index, or neither a baseline verdict nor a target."""
    if index is None:
        return "none"
    improved = baseline.significant is True and (baseline.diff or 0) > 0
    declined = baseline.significant is True and (baseline.diff or 0) < 0
    met = target is not None and index >= target
    if improved or (met and not declined):
        return "excellent"
    if declined and not met:
        return "poor"
    if baseline.significant is None and target is None:
        return "none"
    return "fair"


def grade_rule(lang: str, target: float | None, baseline_label: str) -> str:
    goal = "–" if target is None else f"{target:g}"
    if lang == "ko":
        return (f"등급(우수·보통·미흡)은 공공서비스 고객만족도(PCSI)가 2019년부터 쓰는 방식처럼 기관 자신의 기준 대비 "
                f"개선도로 정합니다. 기준은 {baseline_label}이며 목표 지수는 {goal}입니다. 우수: 기준보다 유의하게 "
                f"개선되었거나, 유의한 하락 없이 목표에 도달함. 미흡: 기준보다 유의하게 하락했고 목표에 미달함. "
                f"보통: 그 밖의 경우. 기준과 목표가 모두 없으면 판단을 보류합니다.")
    return (f"The grade (excellent, fair, poor) follows improvement against the institution's own baseline, as "
            f"the Korean public service customer satisfaction index (PCSI) has graded since 2019. Baseline: "
            f"{baseline_label}; target index: {goal}. Excellent: significantly better than the baseline, or the "
            f"target met without a significant decline. Poor: significantly worse than the baseline and the "
            f"target not met. Fair: anything else. Without baseline and target there is no grade.")


def build_report(answers: ReportAnswers, *, site: str, first: date, today: date, lang: str = "ko",
                 generated_at: datetime | None = None, site_name: str | None = None,
                 institution: str | None = None, reasons: Sequence[str] = DEFAULT_REASONS,
                 reason_labels: Mapping[str, Mapping[str, str]] | None = None,
                 exclude_suspect: bool = True, suspect_rules: Mapping[str, Any] | None = None,
                 period: str = "month", terminal_names: Mapping[str, str] | None = None,
                 target: float | None = None) -> Report:
    """The report of *site* for the period (day, week, month) starting *first*, as of *today*,
    for a reader of *lang*."""
    labels = Labels(lang, reason_labels)
    lang = labels.lang
    first, last = period_bounds(first, period)
    total = summarize(answers.total)

    figures = [
        Figure("count", word("count", lang), f"{total.count:,}",
               words.t(f"report_count_definition_{period}", lang)),
        Figure("index", word("index", lang), number(total.index, 1),
               "(평균 − 1) ÷ 4 × 100, 0~100" if lang == "ko" else "(mean − 1) ÷ 4 × 100, 0 to 100"),
        Figure("csat", word("csat", lang), f"{number(total.csat, 1)}%" if total.csat is not None else "–",
               "4점·5점의 비율" if lang == "ko" else "share of scores 4 and 5"),
        Figure("mean", word("mean", lang), number(total.mean, 2),
               "1~5점 평균" if lang == "ko" else "mean of scores 1 to 5"),
    ]

    by_day = {key[0]: summarize(dist) for key, dist in answers.days}
    days = []
    for offset in range((last - first).days + 1):
        day = (first + timedelta(days=offset)).isoformat()
        days.append((day, by_day.get(day)))

    heat = {}
    for (hour, weekday), dist in answers.hour_weekday:
        s = summarize(dist)
        heat[(int(hour), int(weekday))] = (s.count, s.index)
    used = sorted({hour for hour, _ in heat})
    hours = list(range(min(used), max(used) + 1)) if used else list(range(9, 18))

    def rows(field: str, items: Sequence[tuple[tuple, Distribution]]) -> list[Row]:
        sums = {key[0]: summarize(dist) for key, dist in items}
        count = sum(s.count for s in sums.values()) or 1
        named = (lambda code: (terminal_names or {}).get(code) or code) if field == "terminal" else (
            lambda code: labels.code(field, code))
        return [Row(named(code), sums[code], round(sums[code].count * 100 / count, 1))
                for code in in_order(field, sums, reasons)]

    reason_rows = rows("reason", answers.reasons)
    age_rows = rows("age_group", answers.ages)
    terminal_rows = rows("terminal", answers.terminals)

    # Age groups x reasons: only ratings that name a reason, so each row says
    # what that age group found lacking (the share is of the row).
    cells: dict[Any, dict[Any, int]] = {}
    for (age, reason), dist in answers.age_reasons:
        if reason is None:
            continue
        cells.setdefault(age, {})[reason] = sum(dist.values())
    reason_codes = in_order("reason", {r for row in cells.values() for r in row}, reasons)
    age_codes = in_order("age_group", cells, reasons)
    matrix = []
    for age in age_codes:
        row_total = sum(cells[age].values())
        matrix.append((labels.code("age_group", age),
                       [(cells[age].get(r, 0), round(cells[age].get(r, 0) * 100 / row_total, 1) if row_total else None)
                        for r in reason_codes], row_total))

    comparisons = []
    for key, dist, start in (("previous", answers.previous, previous_period(first, period)),
                             ("last_year", answers.last_year, last_year_period(first, period))):
        c = compare(dist, answers.total)
        comparisons.append(ComparisonRow(
            word(key, lang, period), _period_label(start, lang, period), c.before, c.index, c.csat,
            _verdict(c.index, lang), _verdict(c.csat, lang), c.statement(lang)))

    # The baseline: the same period last year when it has enough ratings for a verdict, else the previous one.
    baseline = comparisons[1] if comparisons[1].index.significant is not None else comparisons[0]
    graded = grade(total.index, baseline.index, target)
    figures.append(Figure("grade", "등급" if lang == "ko" else "Grade", GRADES[graded][lang],
                          (f"목표 {target:g} · 기준 {baseline.label}" if lang == "ko" else
                           f"target {target:g} · baseline: {baseline.label.lower()}") if target is not None else
                          (f"기준 {baseline.label}" if lang == "ko" else f"baseline: {baseline.label.lower()}")))
    title = word("title", lang, period)
    generated = (generated_at.strftime("%Y-%m-%d %H:%M") if generated_at else today.isoformat())
    return Report(
        lang=lang, title=title, institution=institution, site=site, site_name=site_name or site,
        month=_period_label(first, lang, period), first=first, last=last, generated=generated,
        exclude_suspect=exclude_suspect, suspect=answers.suspect, total=total, figures=figures,
        days=days, marks=list(answers.marks), heat=heat, hours=hours,
        hour_labels=[labels.hour(hour) for hour in hours],
        weekdays=[labels.weekday(i) for i in range(7)],
        reasons=reason_rows, ages=age_rows,
        age_reason_columns=[labels.code("reason", r) for r in reason_codes], age_reasons=matrix,
        terminals=terminal_rows, this_month=total, comparisons=comparisons,
        notes=[*_notes(lang, exclude_suspect, answers.suspect, suspect_rules or {}),
               grade_rule(lang, target, baseline.label)],
        words={key: word(key, lang, period) for key in REPORT_WORDS},
    )



def report_for(config: Any, store: Store, site: str | None, first: date, *, lang: str, now: datetime,
               sites: frozenset[str] | None = None, exclude_suspect: bool = True,
               period: str = "month", group: str | None = None, terminal: str | None = None) -> Report:
    """Fetch and build the report of *site* (or of *group*, every site of it that *sites* allows;
    or of one *terminal* of *site*) for the month of *first* with the server's settings
    (display names, reasons and their labels, suspect rules, targets, time zone)."""
    if site is None:
        if group is None:
            raise ValueError("a report is of a site or of a group")
        members = frozenset(config.groups[group].sites)
        sites = members if sites is None else sites & members
    site_config = config.sites.get(site) if site else None
    own = (site_config.survey or {}) if site_config is not None else {}
    reason_labels = own.get("reason_labels") or (config.survey or {}).get("reason_labels")
    rules = config.alerts
    answers = fetch_answers(store, site, first, period=period, exclude_suspect=exclude_suspect, sites=sites,
                            terminal=terminal)
    local = now.astimezone(config.tz)
    name = config.site_name(site) if site else config.group_name(group)
    if site_config is not None:
        terminal_names = dict(site_config.terminals)
    elif site is None:
        # A group's counters are keyed site/terminal (fetch_answers): named by both.
        terminal_names = {f"{row['site']}/{row['terminal']}": f"{config.site_name(row['site'])} · "
                          f"{config.terminal_name(row['site'], row['terminal'])}"
                          for row in store.terminals(sites=sites)}
    else:
        terminal_names = None
    if site and terminal:
        name = f"{name} · {config.terminal_name(site, terminal)}"
    return build_report(
        answers, site=site or group, first=first, today=local.date(), lang=lang, generated_at=local,
        site_name=name, institution=config.institution,
        terminal_names=terminal_names,
        reasons=config.reasons_for_site(site) if site else config.reasons, reason_labels=reason_labels,
        exclude_suspect=exclude_suspect, period=period, target=config.target(site, group),
        suspect_rules={"burst_count": rules.burst_count, "burst_interval_s": rules.burst_interval_s,
                       "run_length": rules.run_length, "run_interval_s": rules.run_interval_s})
