//! Weekly windows written in systemd's calendar style (`"Sat 01:00..05:00"`,
//! `"Mon..Fri 08:00..18:00"`, `"Fri 22:00..06:00"` over midnight, `"Sat,Sun"` all day), and
//! whether one is in force at an instant in a time zone.
//!
//! Windows are wall-clock times, so they follow daylight saving changes: `01:00..05:00` on the
//! night clocks go forward lasts three hours, on the night they go back five. A time that does
//! not exist that night (inside the skipped hour) is read as the same time after the change
//! (02:30 → 03:30), one that exists twice as the first of the two: jiff's "compatible" rule, as
//! RFC 5545 and most calendars do.

use std::fmt;

use jiff::Timestamp;
use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;

const SECONDS_PER_DAY: u32 = 86_400;
const DAY_NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const LONG_DAY_NAMES: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// One weekly window: on these weekdays, from `start` to `end` (local wall-clock time). An
/// `end` at or before `start` ends on the next day; the weekdays name the day it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeeklyWindow {
    text: String,
    /// Monday first.
    days: [bool; 7],
    /// Seconds after midnight.
    start: u32,
    /// Seconds after midnight, 1 ..= 86400 (`24:00`).
    end: u32,
}

/// One occurrence of a window, in unix seconds: `start <= t < end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Occurrence {
    pub start: u64,
    pub end: u64,
}

impl WeeklyWindow {
    /// Reads `[DAYS] [HH:MM[:SS]..HH:MM[:SS]]`: DAYS a comma-separated list of weekdays and
    /// ranges (`Mon..Fri,Sun`; `Fri..Mon` wraps), every day when left out; the time range the
    /// whole day when left out. Errors say what is wrong and show the expected shape.
    pub fn parse(text: &str) -> Result<WeeklyWindow, String> {
        let shape = "write it as [DAYS] HH:MM..HH:MM, e.g. \"Sat 01:00..05:00\", \
                     \"Mon..Fri 08:00..18:00\" or \"Sat,Sun\"";
        let trimmed = text.trim();
        let mut parts = trimmed.split_whitespace();
        let (days_part, time_part) = match (parts.next(), parts.next(), parts.next()) {
            (None, _, _) => return Err(format!("is empty: {shape}")),
            (Some(one), None, _) if one.contains(':') => (None, Some(one)),
            (Some(one), None, _) => (Some(one), None),
            (Some(days), Some(time), None) => (Some(days), Some(time)),
            (Some(_), Some(_), Some(_)) => {
                return Err(format!("{trimmed:?} has more than two parts: {shape}"));
            }
        };
        let days = match days_part {
            Some(d) => parse_days(d).map_err(|e| format!("{trimmed:?}: {e}: {shape}"))?,
            None => [true; 7],
        };
        let (start, end) = match time_part {
            Some(t) => parse_time_range(t).map_err(|e| format!("{trimmed:?}: {e}: {shape}"))?,
            None => (0, SECONDS_PER_DAY),
        };
        Ok(WeeklyWindow {
            text: trimmed.to_string(),
            days,
            start,
            end,
        })
    }

    /// The window as the admin wrote it (trimmed).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The occurrence in force at `now`, if any. An occurrence starts on the local date of
    /// `now` or the day before (a window is shorter than a day, plus a DST hour).
    pub fn occurrence_at(&self, now: u64, zone: &TimeZone) -> Option<Occurrence> {
        let instant = Timestamp::from_second(i64::try_from(now).ok()?).ok()?;
        let today = zone.to_datetime(instant).date();
        [Some(today), today.yesterday().ok()]
            .into_iter()
            .flatten()
            .filter_map(|day| self.occurrence_starting_on(day, zone))
            .find(|o| o.start <= now && now < o.end)
    }

    fn occurrence_starting_on(&self, day: Date, zone: &TimeZone) -> Option<Occurrence> {
        if !self.days[weekday_index(day.weekday())] {
            return None;
        }
        let start = local_instant(day, self.start, zone)?;
        let end_day = if self.end > self.start {
            day
        } else {
            day.tomorrow().ok()?
        };
        let end = local_instant(end_day, self.end, zone)?;
        // A window inside the hour clocks skip has no time that night.
        (end > start).then_some(Occurrence { start, end })
    }
}

impl fmt::Display for WeeklyWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The time zone windows are read in: `TZ`, else `/etc/localtime`.
pub fn local_zone() -> Result<TimeZone, String> {
    TimeZone::try_system().map_err(|e| {
        format!(
            "the local time zone could not be determined ({e}); set TZ (e.g. TZ=Europe/Berlin) \
             or /etc/localtime, or set timezone in each [[schedule]]"
        )
    })
}

/// A time zone by IANA name (`"Europe/Berlin"`), from the system's database.
pub fn zone_named(name: &str) -> Result<TimeZone, String> {
    TimeZone::get(name).map_err(|e| {
        format!("{name:?} is not a time zone known here ({e}); use an IANA name such as \"Europe/Berlin\"")
    })
}

/// `05:00` when `at` falls on the same local day as `now`, else `Sat 05:00`: when a window
/// ends, for people.
pub fn local_time_label(at: u64, now: u64, zone: &TimeZone) -> String {
    let civil = |t: u64| {
        i64::try_from(t)
            .ok()
            .and_then(|s| Timestamp::from_second(s).ok())
            .map(|ts| zone.to_datetime(ts))
    };
    let (Some(at_local), Some(now_local)) = (civil(at), civil(now)) else {
        return format!("@{at}");
    };
    let clock = format!("{:02}:{:02}", at_local.hour(), at_local.minute());
    if at_local.date() == now_local.date() {
        clock
    } else {
        format!("{} {clock}", DAY_NAMES[weekday_index(at_local.weekday())])
    }
}

fn weekday_index(day: Weekday) -> usize {
    usize::try_from(day.to_monday_zero_offset()).unwrap_or(0)
}

/// `day` at `seconds` after its midnight (86400: the next midnight), as unix seconds.
fn local_instant(day: Date, seconds: u32, zone: &TimeZone) -> Option<u64> {
    let (day, seconds) = if seconds >= SECONDS_PER_DAY {
        (day.tomorrow().ok()?, seconds - SECONDS_PER_DAY)
    } else {
        (day, seconds)
    };
    let part = |n: u32| i8::try_from(n).ok();
    let time = Time::new(
        part(seconds / 3600)?,
        part(seconds / 60 % 60)?,
        part(seconds % 60)?,
        0,
    )
    .ok()?;
    let instant = zone
        .to_ambiguous_timestamp(day.to_datetime(time))
        .compatible()
        .ok()?;
    u64::try_from(instant.as_second()).ok()
}

fn parse_days(text: &str) -> Result<[bool; 7], String> {
    let mut days = [false; 7];
    for item in text.split(',') {
        let item = item.trim();
        match item.split_once("..") {
            Some((from, to)) => {
                let (from, to) = (day_index(from)?, day_index(to)?);
                let mut d = from;
                loop {
                    days[d] = true;
                    if d == to {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => days[day_index(item)?] = true,
        }
    }
    Ok(days)
}

fn day_index(name: &str) -> Result<usize, String> {
    let lower = name.trim().to_ascii_lowercase();
    LONG_DAY_NAMES
        .iter()
        .position(|long| lower.len() >= 3 && long.starts_with(&lower))
        .ok_or_else(|| {
            format!(
                "{name:?} is not a weekday (Mon, Tue, Wed, Thu, Fri, Sat, Sun; ranges as Mon..Fri)"
            )
        })
}

fn parse_time_range(text: &str) -> Result<(u32, u32), String> {
    let Some((from, to)) = text.split_once("..") else {
        return Err(format!("{text:?} is not a time range such as 01:00..05:00"));
    };
    let start = parse_clock(from)?;
    let end = parse_clock(to)?;
    if start >= SECONDS_PER_DAY {
        return Err("a window can not start at 24:00; write 00:00 of the next day".into());
    }
    if start == end {
        return Err(format!("{text:?} starts and ends at the same time"));
    }
    Ok((start, end))
}

/// `HH:MM` or `HH:MM:SS`, 00:00 to 24:00.
fn parse_clock(text: &str) -> Result<u32, String> {
    let bad = || format!("{text:?} is not a time of day (HH:MM, 00:00 to 24:00)");
    let fields: Vec<&str> = text.split(':').collect();
    if !(2..=3).contains(&fields.len())
        || fields
            .iter()
            .any(|f| f.is_empty() || f.len() > 2 || !f.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad());
    }
    let number = |i: usize| fields.get(i).map_or(Ok(0), |f| f.parse::<u32>());
    let (h, m, s) = match (number(0), number(1), number(2)) {
        (Ok(h), Ok(m), Ok(s)) => (h, m, s),
        _ => return Err(bad()),
    };
    let seconds = h * 3600 + m * 60 + s;
    if m > 59 || s > 59 || seconds > SECONDS_PER_DAY {
        return Err(bad());
    }
    Ok(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn berlin() -> TimeZone {
        TimeZone::get("Europe/Berlin").expect("the system's tz database has Europe/Berlin")
    }

    /// Unix seconds of a local wall-clock time in `zone` (unambiguous times only).
    fn at(zone: &TimeZone, y: i16, mo: i8, d: i8, h: i8, mi: i8) -> u64 {
        let dt = jiff::civil::date(y, mo, d).at(h, mi, 0, 0);
        let ts = zone
            .to_ambiguous_timestamp(dt)
            .unambiguous()
            .expect("an unambiguous local time");
        u64::try_from(ts.as_second()).expect("after 1970")
    }

    fn utc(y: i16, mo: i8, d: i8, h: i8, mi: i8) -> u64 {
        at(&TimeZone::UTC, y, mo, d, h, mi)
    }

    fn window(text: &str) -> WeeklyWindow {
        WeeklyWindow::parse(text).expect("a valid window")
    }

    #[test]
    fn days_and_times_are_read_in_the_forms_systemd_uses() {
        let w = window("Mon..Fri 08:00..18:00");
        assert_eq!(w.days, [true, true, true, true, true, false, false]);
        assert_eq!((w.start, w.end), (8 * 3600, 18 * 3600));
        assert_eq!(
            window("sat,SUN").days,
            [false, false, false, false, false, true, true]
        );
        assert_eq!(
            (window("Sat,Sun").start, window("Sat,Sun").end),
            (0, 86_400)
        );
        assert_eq!(
            window("Fri..Mon").days,
            [true, false, false, false, true, true, true]
        );
        assert_eq!(window("Saturday 01:00..05:00:30").end, 5 * 3600 + 30);
        assert_eq!(window("22:00..06:00").days, [true; 7]);
        assert_eq!(window("Mon,Wed..Thu 20:00..24:00").end, 86_400);
    }

    #[test]
    fn mistakes_are_refused_with_the_expected_shape() {
        for bad in [
            "",
            "Sa 01:00..02:00",
            "Sat 1:00-5:00",
            "Sat 01:00..25:00",
            "Sat 01:60..02:00",
            "Sat 24:00..02:00",
            "Sat 05:00..05:00",
            "Sat 01:00..05:00 extra",
            "Funday 01:00..02:00",
        ] {
            let err = WeeklyWindow::parse(bad).expect_err(bad);
            assert!(err.contains("e.g."), "{bad:?}: {err}");
        }
    }

    #[test]
    fn a_window_is_in_force_from_its_start_to_just_before_its_end() {
        let zone = berlin();
        let w = window("Sat 01:00..05:00");
        // Saturday 5 December 2026, winter time (UTC+1).
        let start = at(&zone, 2026, 12, 5, 1, 0);
        let end = at(&zone, 2026, 12, 5, 5, 0);
        assert_eq!(start, utc(2026, 12, 5, 0, 0));
        assert_eq!(w.occurrence_at(start - 1, &zone), None);
        assert_eq!(
            w.occurrence_at(start, &zone),
            Some(Occurrence { start, end })
        );
        assert_eq!(
            w.occurrence_at(end - 1, &zone),
            Some(Occurrence { start, end })
        );
        assert_eq!(w.occurrence_at(end, &zone), None);
        // Not on Sunday.
        assert_eq!(w.occurrence_at(at(&zone, 2026, 12, 6, 2, 0), &zone), None);
    }

    #[test]
    fn a_window_over_midnight_belongs_to_the_day_it_starts() {
        let zone = berlin();
        let w = window("Fri 22:00..06:00");
        let start = at(&zone, 2026, 12, 4, 22, 0);
        let end = at(&zone, 2026, 12, 5, 6, 0);
        let saturday_3am = at(&zone, 2026, 12, 5, 3, 0);
        assert_eq!(
            w.occurrence_at(saturday_3am, &zone),
            Some(Occurrence { start, end })
        );
        // Saturday night is not Friday's window.
        assert_eq!(w.occurrence_at(at(&zone, 2026, 12, 5, 23, 0), &zone), None);
        // Thursday 23:00 neither.
        assert_eq!(w.occurrence_at(at(&zone, 2026, 12, 3, 23, 0), &zone), None);
    }

    #[test]
    fn spring_forward_shortens_the_night_window_by_the_skipped_hour() {
        // Sunday 29 March 2026: Berlin goes from 02:00 CET to 03:00 CEST.
        let zone = berlin();
        let w = window("Sun 01:00..05:00");
        let start = utc(2026, 3, 29, 0, 0); // 01:00 CET
        let end = utc(2026, 3, 29, 3, 0); // 05:00 CEST
        assert_eq!(end - start, 3 * 3600);
        assert_eq!(
            w.occurrence_at(utc(2026, 3, 29, 1, 30), &zone),
            Some(Occurrence { start, end })
        );
        assert_eq!(w.occurrence_at(end, &zone), None);
        // A start inside the skipped hour (02:30) is read as 03:30 that night.
        let skipped = window("Sun 02:30..04:00");
        let o = skipped
            .occurrence_at(utc(2026, 3, 29, 1, 45), &zone)
            .expect("in force after the change");
        assert_eq!(o.start, utc(2026, 3, 29, 1, 30)); // 03:30 CEST
        assert_eq!(o.end, utc(2026, 3, 29, 2, 0)); // 04:00 CEST
        assert_eq!(skipped.occurrence_at(utc(2026, 3, 29, 1, 0), &zone), None);
    }

    #[test]
    fn fall_back_lengthens_the_night_window_by_the_repeated_hour() {
        // Sunday 25 October 2026: Berlin goes from 03:00 CEST back to 02:00 CET.
        let zone = berlin();
        let w = window("Sun 01:00..05:00");
        let start = utc(2026, 10, 24, 23, 0); // 01:00 CEST
        let end = utc(2026, 10, 25, 4, 0); // 05:00 CET
        assert_eq!(end - start, 5 * 3600);
        // Both 02:30s are inside.
        for t in [utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30)] {
            assert_eq!(w.occurrence_at(t, &zone), Some(Occurrence { start, end }));
        }
        assert_eq!(w.occurrence_at(end, &zone), None);
        // A window ending in the repeated hour ends at its first 02:30.
        let ambiguous_end = window("Sun 01:00..02:30");
        let o = ambiguous_end
            .occurrence_at(utc(2026, 10, 25, 0, 0), &zone)
            .expect("in force");
        assert_eq!(o.end, utc(2026, 10, 25, 0, 30));
    }

    #[test]
    fn the_same_window_is_read_in_the_zone_it_is_given() {
        let w = window("Mon..Fri 08:00..18:00");
        // Monday 7 December 2026, 07:30 UTC: 08:30 in Berlin, 02:30 in New York.
        let t = utc(2026, 12, 7, 7, 30);
        assert!(w.occurrence_at(t, &berlin()).is_some());
        let new_york = TimeZone::get("America/New_York").expect("tz database");
        assert_eq!(w.occurrence_at(t, &new_york), None);
        assert_eq!(w.occurrence_at(t, &TimeZone::UTC), None);
    }

    #[test]
    fn the_end_is_labelled_with_the_day_when_it_is_another_day() {
        let zone = berlin();
        let now = at(&zone, 2026, 12, 4, 23, 0);
        assert_eq!(
            local_time_label(at(&zone, 2026, 12, 4, 23, 30), now, &zone),
            "23:30"
        );
        assert_eq!(
            local_time_label(at(&zone, 2026, 12, 5, 6, 0), now, &zone),
            "Sat 06:00"
        );
    }
}
