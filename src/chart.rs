//! Charts as one self-contained SVG file: panels of time series sharing a time axis, with
//! marks (changes, refusals) whose reasons are hover titles. No script, no fonts or styles
//! from elsewhere: any browser shows it, offline.
//!
//! The geometry is readable back from the file: each panel carries its data range and plot
//! rectangle (`data-*` attributes) and each series is one `<path>` whose vertices are the
//! data points, so tests can check that what is drawn is the data.

use std::fmt::Write as _;

use jiff::Timestamp;
use jiff::tz::TimeZone;

const WIDTH: f64 = 960.0;
const PANEL_HEIGHT: f64 = 280.0;
const LEFT: f64 = 72.0;
const RIGHT: f64 = 24.0;
/// Title and legend above a plot.
const PANEL_TOP: f64 = 58.0;
/// Time labels below a plot.
const PANEL_BOTTOM: f64 = 36.0;
const HEADER: f64 = 40.0;
const FOOTER: f64 = 28.0;

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Straight lines between points (a measured figure).
    Line,
    /// A value that holds until the next point (a size that was set).
    Step,
}

/// One line of a panel. Points are (unix seconds, value); `None` is a gap.
#[derive(Debug, Clone)]
pub struct Series {
    /// A stable name for programs (`data-series`).
    pub id: &'static str,
    /// The legend text.
    pub label: String,
    pub shape: Shape,
    pub color: &'static str,
    pub dashed: bool,
    pub points: Vec<(u64, Option<f64>)>,
}

/// What a mark on the time axis stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkKind {
    Change,
    Refused,
    Failed,
}

impl MarkKind {
    fn color(self) -> &'static str {
        match self {
            MarkKind::Change => "#6a6a6a",
            MarkKind::Refused => "#d97706",
            MarkKind::Failed => "#dc2626",
        }
    }

    fn class(self) -> &'static str {
        match self {
            MarkKind::Change => "change",
            MarkKind::Refused => "refused",
            MarkKind::Failed => "failed",
        }
    }
}

/// A moment worth marking, with what to say on hover.
#[derive(Debug, Clone)]
pub struct Mark {
    pub t: u64,
    pub kind: MarkKind,
    pub title: String,
}

/// One plot: its series share the y axis.
#[derive(Debug, Clone)]
pub struct Panel {
    pub title: String,
    /// The y axis label, with its unit.
    pub y_label: String,
    pub series: Vec<Series>,
    pub marks: Vec<Mark>,
}

/// Panels stacked over one time axis, labelled in `zone`.
#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub subtitle: String,
    pub panels: Vec<Panel>,
    pub zone: TimeZone,
}

/// The chart as an SVG document.
pub fn render(chart: &Chart) -> String {
    let (t0, t1) = time_range(chart);
    let height = HEADER + chart.panels.len() as f64 * PANEL_HEIGHT + FOOTER;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, "<title>{}</title>", escape(&chart.title));
    let _ = writeln!(
        out,
        r##"<rect width="100%" height="100%" fill="#ffffff"/>
<text x="{LEFT}" y="22" font-size="16" font-weight="bold">{}</text>
<text x="{LEFT}" y="36" fill="#555555">{}</text>"##,
        escape(&chart.title),
        escape(&chart.subtitle)
    );
    for (i, panel) in chart.panels.iter().enumerate() {
        let top = HEADER + i as f64 * PANEL_HEIGHT;
        render_panel(&mut out, panel, top, (t0, t1), &chart.zone);
    }
    let zone_name = chart.zone.iana_name().unwrap_or("local time");
    let _ = writeln!(
        out,
        r##"<text x="{}" y="{}" text-anchor="end" fill="#555555">time ({})</text>"##,
        WIDTH - RIGHT,
        height - 8.0,
        escape(zone_name)
    );
    out.push_str("</svg>\n");
    out
}

fn time_range(chart: &Chart) -> (u64, u64) {
    let times = chart.panels.iter().flat_map(|p| {
        p.series
            .iter()
            .flat_map(|s| s.points.iter().map(|(t, _)| *t))
            .chain(p.marks.iter().map(|m| m.t))
    });
    let (lo, hi) = times.fold((u64::MAX, 0), |(lo, hi), t| (lo.min(t), hi.max(t)));
    if lo > hi {
        (0, 60)
    } else if lo == hi {
        (lo, lo + 60)
    } else {
        (lo, hi)
    }
}

/// The plot rectangle of a panel whose top is `top`.
fn plot_rect(top: f64) -> (f64, f64, f64, f64) {
    (
        LEFT,
        top + PANEL_TOP,
        WIDTH - LEFT - RIGHT,
        PANEL_HEIGHT - PANEL_TOP - PANEL_BOTTOM,
    )
}

fn render_panel(out: &mut String, panel: &Panel, top: f64, (t0, t1): (u64, u64), zone: &TimeZone) {
    let (x, y, w, h) = plot_rect(top);
    let max = panel
        .series
        .iter()
        .flat_map(|s| s.points.iter().filter_map(|(_, v)| *v))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let (y1, y_step) = nice_axis(max);
    let _ = writeln!(
        out,
        r#"<g class="panel" data-title="{}" data-t0="{t0}" data-t1="{t1}" data-y0="0" data-y1="{y1}" data-x="{x}" data-y="{y}" data-w="{w}" data-h="{h}">"#,
        escape(&panel.title)
    );
    let _ = writeln!(
        out,
        r#"<text x="{x}" y="{}" font-size="14" font-weight="bold">{}</text>"#,
        top + 20.0,
        escape(&panel.title)
    );
    render_legend(out, panel, x, top + 38.0);
    let _ = writeln!(
        out,
        r##"<rect x="{x}" y="{y}" width="{w}" height="{h}" fill="none" stroke="#bbbbbb"/>"##
    );
    // The y axis: grid lines and labels, the label with its unit.
    let mut v = 0.0;
    while v <= y1 + y_step / 2.0 {
        let py = y + h - v / y1 * h;
        let _ = writeln!(
            out,
            r##"<line x1="{x}" x2="{}" y1="{py:.1}" y2="{py:.1}" stroke="#eeeeee"/><text x="{}" y="{:.1}" text-anchor="end" fill="#555555">{}</text>"##,
            x + w,
            x - 6.0,
            py + 4.0,
            fmt_tick(v)
        );
        v += y_step;
    }
    let _ = writeln!(
        out,
        r##"<text transform="translate({},{:.1}) rotate(-90)" text-anchor="middle" fill="#333333">{}</text>"##,
        x - 52.0,
        y + h / 2.0,
        escape(&panel.y_label)
    );
    // The time axis, in the chart's zone.
    for (t, label) in time_ticks(t0, t1, zone) {
        let px = x + (t - t0) as f64 / (t1 - t0) as f64 * w;
        let _ = writeln!(
            out,
            r##"<line x1="{px:.1}" x2="{px:.1}" y1="{y}" y2="{}" stroke="#eeeeee"/><text class="time" data-t="{t}" x="{px:.1}" y="{}" text-anchor="middle" fill="#555555">{}</text>"##,
            y + h,
            y + h + 16.0,
            escape(&label)
        );
    }
    let to_px = |t: u64, v: f64| {
        (
            x + (t.saturating_sub(t0)) as f64 / (t1 - t0) as f64 * w,
            y + h - (v / y1).clamp(0.0, 1.0) * h,
        )
    };
    for mark in &panel.marks {
        let (px, _) = to_px(mark.t, 0.0);
        let _ = writeln!(
            out,
            r#"<line class="mark {}" data-t="{}" x1="{px:.1}" x2="{px:.1}" y1="{y}" y2="{}" stroke="{}" stroke-width="2" stroke-dasharray="2,3"><title>{}</title></line>"#,
            mark.kind.class(),
            mark.t,
            y + h,
            mark.kind.color(),
            escape(&mark.title)
        );
    }
    for series in &panel.series {
        let d = path_data(series, to_px);
        if d.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            r#"<path class="series" data-series="{}" d="{d}" fill="none" stroke="{}" stroke-width="2"{}><title>{}</title></path>"#,
            series.id,
            series.color,
            if series.dashed {
                r#" stroke-dasharray="6,4""#
            } else {
                ""
            },
            escape(&series.label)
        );
    }
    out.push_str("</g>\n");
}

fn render_legend(out: &mut String, panel: &Panel, x: f64, y: f64) {
    let mut at = x;
    for s in &panel.series {
        let dash = if s.dashed {
            r#" stroke-dasharray="6,4""#
        } else {
            ""
        };
        let _ = writeln!(
            out,
            r#"<line x1="{at:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="{}" stroke-width="2"{dash}/><text x="{:.1}" y="{y:.1}">{}</text>"#,
            at + 18.0,
            y - 4.0,
            y - 4.0,
            s.color,
            at + 22.0,
            escape(&s.label)
        );
        at += 30.0 + s.label.chars().count() as f64 * 6.6;
    }
    for kind in [MarkKind::Change, MarkKind::Refused, MarkKind::Failed] {
        if !panel.marks.iter().any(|m| m.kind == kind) {
            continue;
        }
        let label = match kind {
            MarkKind::Change => "change (hover: why)",
            MarkKind::Refused => "refused",
            MarkKind::Failed => "failed",
        };
        let _ = writeln!(
            out,
            r#"<line x1="{at:.1}" x2="{at:.1}" y1="{:.1}" y2="{:.1}" stroke="{}" stroke-width="2" stroke-dasharray="2,3"/><text x="{:.1}" y="{y:.1}">{label}</text>"#,
            y - 12.0,
            y + 2.0,
            kind.color(),
            at + 6.0,
        );
        at += 20.0 + label.len() as f64 * 6.6;
    }
}

/// `M x y L x y ...`: a gap starts a new subpath; a step series holds each value until the
/// next point's time. Every data point is a vertex.
fn path_data(series: &Series, to_px: impl Fn(u64, f64) -> (f64, f64)) -> String {
    let mut d = String::new();
    let mut previous: Option<(u64, f64)> = None;
    for &(t, v) in &series.points {
        let Some(v) = v.filter(|v| v.is_finite()) else {
            previous = None;
            continue;
        };
        let (px, py) = to_px(t, v);
        match previous {
            None => {
                let _ = write!(d, "M{px:.1} {py:.1}");
            }
            Some((_, pv)) if series.shape == Shape::Step => {
                let (_, held) = to_px(t, pv);
                let _ = write!(d, " L{px:.1} {held:.1} L{px:.1} {py:.1}");
            }
            Some(_) => {
                let _ = write!(d, " L{px:.1} {py:.1}");
            }
        }
        previous = Some((t, v));
    }
    d
}

/// The top of the y axis and its step: 1, 2 or 5 × 10^k, at most 6 steps, with room above
/// the largest value.
fn nice_axis(max: f64) -> (f64, f64) {
    let max = if max.is_finite() && max > 0.0 {
        max * 1.08
    } else {
        1.0
    };
    let rough = max / 5.0;
    let magnitude = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| max / s <= 6.0)
        .unwrap_or(10.0 * magnitude);
    ((max / step).ceil() * step, step)
}

fn fmt_tick(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        format!("{v:.1}")
    }
}

/// Time ticks: a round interval giving at most 8 ticks, on its multiples in local time,
/// labelled `HH:MM`, with the day where it changes (and on the first tick).
fn time_ticks(t0: u64, t1: u64, zone: &TimeZone) -> Vec<(u64, String)> {
    const STEPS: [u64; 12] = [
        60, 300, 600, 900, 1800, 3600, 7200, 10_800, 21_600, 43_200, 86_400, 172_800,
    ];
    let span = t1.saturating_sub(t0).max(1);
    let step = STEPS
        .iter()
        .copied()
        .find(|s| span / s <= 8)
        .unwrap_or(604_800);
    let offset = |t: u64| -> i64 {
        i64::try_from(t)
            .ok()
            .and_then(|s| Timestamp::from_second(s).ok())
            .map_or(0, |ts| i64::from(zone.to_offset(ts).seconds()))
    };
    // Multiples of the step in local wall-clock time (the zone's offset at the start).
    let local0 = i64::try_from(t0).unwrap_or(0) + offset(t0);
    let step_i = i64::try_from(step).unwrap_or(3600);
    let first_local =
        local0.div_euclid(step_i) * step_i + if local0 % step_i == 0 { 0 } else { step_i };
    let mut ticks = Vec::new();
    let mut previous_day = None;
    let mut local = first_local;
    while let Ok(t) = u64::try_from(local - offset(t0)) {
        if t > t1 {
            break;
        }
        let civil = Timestamp::from_second(local - offset(t0))
            .ok()
            .map(|ts| zone.to_datetime(ts));
        if let Some(dt) = civil {
            let day = dt.date();
            let clock = format!("{:02}:{:02}", dt.hour(), dt.minute());
            let label = if previous_day != Some(day) || step >= 86_400 {
                format!("{} {}", day.strftime("%a %-d %b"), clock)
            } else {
                clock
            };
            previous_day = Some(day);
            ticks.push((t, label));
        }
        local += step_i;
    }
    ticks
}

/// Text for SVG: the five characters XML reserves, and control characters (which XML 1.0
/// does not allow) as U+FFFD.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' | '\t' => out.push(' '),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_are_round() {
        assert_eq!(nice_axis(3.6), (4.0, 1.0));
        assert_eq!(nice_axis(6.0), (8.0, 2.0));
        assert_eq!(nice_axis(5200.0), (6000.0, 1000.0));
        assert_eq!(nice_axis(0.0), (1.0, 0.2));
    }

    #[test]
    fn time_ticks_fall_on_local_round_times() {
        let berlin = TimeZone::get("Europe/Berlin").expect("tz database");
        // Saturday 5 December 2026, 00:07 to 00:52 in Berlin (UTC+1).
        let t0 = 1_796_425_200 + 7 * 60;
        let ticks = time_ticks(t0, t0 + 45 * 60, &berlin);
        let labels: Vec<&str> = ticks.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(
            labels,
            ["Sat 5 Dec 00:10", "00:20", "00:30", "00:40", "00:50"]
        );
        assert_eq!(ticks[0].0, 1_796_425_200 + 600);
        let utc = time_ticks(t0, t0 + 45 * 60, &TimeZone::UTC);
        assert_eq!(utc[0].1, "Fri 4 Dec 23:10");
    }

    #[test]
    fn a_step_series_holds_its_value_and_gaps_break_the_line() {
        let series = Series {
            id: "s",
            label: "s".into(),
            shape: Shape::Step,
            color: "#000",
            dashed: false,
            points: vec![(0, Some(1.0)), (10, Some(2.0)), (20, None), (30, Some(3.0))],
        };
        let d = path_data(&series, |t, v| (t as f64, v));
        assert_eq!(d, "M0.0 1.0 L10.0 1.0 L10.0 2.0M30.0 3.0");
    }

    #[test]
    fn text_is_escaped_for_xml() {
        assert_eq!(
            escape("a<b & \"c\"\n\u{1b}[31m"),
            "a&lt;b &amp; &quot;c&quot; \u{fffd}[31m"
        );
    }
}
