//! Durations and memory sizes as people write them in the config, and back again for messages.
//!
//! Durations: one or more `<integer><unit>` parts, units `d`, `h`, `m`, `s`, largest first, each at
//! most once, no spaces: `90s`, `5m`, `1h30m`, `1d`. A bare number is refused (seconds or
//! minutes? the reader of the config should not have to guess).
//!
//! Sizes (memory, in MiB): an integer or decimal followed by a binary unit `MiB`, `GiB` or `TiB`
//! (case as written here, one optional space): `512MiB`, `4GiB`, `1.5GiB`, `4 GiB`. The result must
//! be a whole number of MiB. `M`, `G`, `MB`, `GB` and friends are refused with a hint, because
//! `4G` could mean 4000 or 4096 MiB. In the TOML file a plain integer (not a string) means MiB.

use std::fmt;
use std::time::Duration;

/// A duration or size string that could not be read. Its message quotes the input and says
/// what is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitError {
    message: String,
}

impl UnitError {
    fn duration(input: &str, why: impl fmt::Display) -> Self {
        UnitError {
            message: format!(
                "invalid duration {input:?}: {why} (write e.g. \"90s\", \"5m\", \"1h30m\", \"1d\")"
            ),
        }
    }

    fn size(input: &str, why: impl fmt::Display) -> Self {
        UnitError {
            message: format!(
                "invalid size {input:?}: {why} (write e.g. \"512MiB\", \"4GiB\", \"1.5GiB\", or an integer in MiB)"
            ),
        }
    }
}

impl fmt::Display for UnitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UnitError {}

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

/// Parses `90s`, `5m`, `1h`, `1d`, `1h30m`, `1d12h`, `0s`. Zero is allowed here; callers that
/// need a positive duration check that themselves.
pub fn parse_duration(input: &str) -> Result<Duration, UnitError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(UnitError::duration(input, "it is empty"));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UnitError::duration(
            input,
            format!("a unit is missing (\"{s}s\" for seconds, \"{s}m\" for minutes)"),
        ));
    }
    let units: [(char, u64); 4] = [('d', DAY), ('h', HOUR), ('m', MINUTE), ('s', 1)];
    let mut total: u64 = 0;
    // Index into `units` of the last unit seen; the next one must come strictly after it.
    let mut next_allowed = 0usize;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            let c = rest.chars().next().unwrap_or(' ');
            return Err(UnitError::duration(
                input,
                format!("expected a number at {c:?}"),
            ));
        }
        let (number, after) = rest.split_at(digits);
        let value: u64 = number
            .parse()
            .map_err(|_| UnitError::duration(input, "the number is too large"))?;
        let unit_len = after
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit())
            .map_or(after.len(), |(i, _)| i);
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(UnitError::duration(input, "the last number has no unit"));
        }
        let pos = match unit {
            "d" => 0,
            "h" => 1,
            "m" => 2,
            "s" => 3,
            "ms" => {
                return Err(UnitError::duration(
                    input,
                    "milliseconds are not supported; the smallest unit is s",
                ));
            }
            _ => {
                return Err(UnitError::duration(
                    input,
                    format!("unknown unit {unit:?} (use d, h, m or s, without spaces)"),
                ));
            }
        };
        if pos < next_allowed {
            return Err(UnitError::duration(
                input,
                "units must go from largest to smallest, each at most once",
            ));
        }
        next_allowed = pos + 1;
        let seconds = value
            .checked_mul(units[pos].1)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| UnitError::duration(input, "the number is too large"))?;
        total = seconds;
        rest = after;
    }
    Ok(Duration::from_secs(total))
}

/// Formats a duration the way [`parse_duration`] reads it: `2m30s`, `1h`, `1d2h`, `0s`.
/// Sub-second parts are dropped, except that a duration below one second shows as milliseconds
/// (`250ms`), so that it does not read as zero.
pub fn fmt_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return if d.is_zero() {
            "0s".to_owned()
        } else {
            format!("{}ms", d.subsec_millis().max(1))
        };
    }
    let mut out = String::new();
    for (unit, size) in [("d", DAY), ("h", HOUR), ("m", MINUTE), ("s", 1)] {
        let n = secs / size;
        if n > 0 {
            out.push_str(&n.to_string());
            out.push_str(unit);
            secs -= n * size;
        }
    }
    out
}

/// Bytes in a MiB: Proxmox reports memory in bytes, pvescale sizes it in MiB.
pub const MIB: u64 = 1024 * 1024;

/// MiB in a GiB.
pub const MIB_PER_GIB: u64 = 1024;
const MIB_PER_TIB: u64 = 1024 * 1024;

/// Parses a size string into MiB: `512MiB`, `4GiB`, `1.5GiB`, `4 GiB`, `1TiB`. The value must be
/// a whole number of MiB. Zero is allowed here; callers check their own ranges.
pub fn parse_size(input: &str) -> Result<u64, UnitError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(UnitError::size(input, "it is empty"));
    }
    let number_len = s
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_digit() || *c == '.'))
        .map_or(s.len(), |(i, _)| i);
    let (number, unit) = s.split_at(number_len);
    let unit = unit.strip_prefix(' ').unwrap_or(unit);
    if number.is_empty() {
        return Err(UnitError::size(input, "it does not start with a number"));
    }
    let per_unit = match unit {
        "MiB" => 1,
        "GiB" => MIB_PER_GIB,
        "TiB" => MIB_PER_TIB,
        "" => {
            return Err(UnitError::size(
                input,
                "a unit is missing (in a string; a bare TOML integer means MiB)",
            ));
        }
        other => {
            let hint = match other.to_ascii_lowercase().as_str() {
                "m" | "mb" | "mib" => "; did you mean \"MiB\"?",
                "g" | "gb" | "gib" => "; did you mean \"GiB\"?",
                "t" | "tb" | "tib" => "; did you mean \"TiB\"?",
                "k" | "kb" | "kib" | "b" => "; sizes are whole MiB or more",
                _ => "",
            };
            return Err(UnitError::size(
                input,
                format!("unknown unit {other:?}: use MiB, GiB or TiB (binary units){hint}"),
            ));
        }
    };
    let (whole, frac) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number, ""),
    };
    if whole.is_empty() || number.ends_with('.') || frac.contains('.') {
        return Err(UnitError::size(input, "the number is malformed"));
    }
    let too_large = || UnitError::size(input, "the number is too large");
    let whole: u64 = whole.parse().map_err(|_| too_large())?;
    let mut mib = whole.checked_mul(per_unit).ok_or_else(too_large)?;
    if !frac.is_empty() {
        if frac.len() > 6 {
            return Err(UnitError::size(input, "too many decimal places"));
        }
        let digits: u64 = frac.parse().map_err(|_| too_large())?;
        let scale = 10u64.pow(frac.len() as u32);
        let numerator = digits.checked_mul(per_unit).ok_or_else(too_large)?;
        if !numerator.is_multiple_of(scale) {
            return Err(UnitError::size(
                input,
                "it is not a whole number of MiB; write it in MiB instead",
            ));
        }
        mib = mib.checked_add(numerator / scale).ok_or_else(too_large)?;
    }
    Ok(mib)
}

/// Formats MiB for people: `512 MiB`, `4 GiB`, `1.5 GiB`, `1100 MiB`, `2 TiB`. Uses GiB when
/// the value is at least 1 GiB and exact with at most two decimals, MiB otherwise. The output
/// parses back with [`parse_size`].
pub fn fmt_mib(mib: u64) -> String {
    if mib >= MIB_PER_TIB && mib.is_multiple_of(MIB_PER_TIB) {
        return format!("{} TiB", mib / MIB_PER_TIB);
    }
    if mib >= MIB_PER_GIB && ((mib % MIB_PER_GIB) * 100).is_multiple_of(MIB_PER_GIB) {
        let whole = mib / MIB_PER_GIB;
        let hundredths = (mib % MIB_PER_GIB) * 100 / MIB_PER_GIB;
        return if hundredths == 0 {
            format!("{whole} GiB")
        } else if hundredths.is_multiple_of(10) {
            format!("{whole}.{} GiB", hundredths / 10)
        } else {
            format!("{whole}.{hundredths:02} GiB")
        };
    }
    format!("{mib} MiB")
}

/// Unix seconds as `2026-01-01T00:00:00Z`.
pub fn iso8601(secs: u64) -> String {
    let (date, [h, m, s]) = utc_parts(secs);
    format!("{date}T{h:02}:{m:02}:{s:02}Z")
}

/// Unix seconds as `2026-01-01 00:00:00` (UTC), for tables.
pub fn fmt_utc(secs: u64) -> String {
    let (date, [h, m, s]) = utc_parts(secs);
    format!("{date} {h:02}:{m:02}:{s:02}")
}

/// `YYYY-MM-DD` and hour, minute, second of unix seconds, UTC (proleptic Gregorian, Howard
/// Hinnant's civil_from_days).
fn utc_parts(secs: u64) -> (String, [u64; 3]) {
    let z = (secs / 86_400) as i64 + 719_468;
    let rem = secs % 86_400;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        format!("{year:04}-{month:02}-{day:02}"),
        [rem / 3600, rem % 3600 / 60, rem % 60],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90s"), Ok(secs(90)));
        assert_eq!(parse_duration("5m"), Ok(secs(300)));
        assert_eq!(parse_duration("1h"), Ok(secs(3600)));
        assert_eq!(parse_duration("1d"), Ok(secs(86400)));
        assert_eq!(parse_duration("1h30m"), Ok(secs(5400)));
        assert_eq!(parse_duration("1d2h3m4s"), Ok(secs(93784)));
        assert_eq!(parse_duration("0s"), Ok(secs(0)));
        assert_eq!(parse_duration(" 10s "), Ok(secs(10)));
        assert_eq!(parse_duration("120m"), Ok(secs(7200)));
    }

    #[test]
    fn durations_refused_with_reason() {
        let err = |s: &str| parse_duration(s).unwrap_err().to_string();
        assert!(err("90").contains("unit is missing"), "{}", err("90"));
        assert!(err("").contains("empty"));
        assert!(err("5x").contains("unknown unit \"x\""));
        assert!(err("5 m").contains("unknown unit"));
        assert!(err("1h 30m").contains("unknown unit"));
        assert!(err("30m1h").contains("largest to smallest"));
        assert!(err("1m1m").contains("largest to smallest"));
        assert!(err("1.5h").contains("unknown unit"));
        assert!(err("h").contains("expected a number"));
        assert!(err("-5s").contains("expected a number"));
        assert!(err("500ms").contains("milliseconds"));
        assert!(err("5M").contains("unknown unit \"M\""));
        assert!(err("99999999999999999999s").contains("too large"));
        assert!(err("999999999999999999d").contains("too large"));
        // The message quotes the input and shows what works.
        assert!(err("5x").contains("\"5x\"") && err("5x").contains("1h30m"));
    }

    #[test]
    fn durations_format() {
        assert_eq!(fmt_duration(secs(150)), "2m30s");
        assert_eq!(fmt_duration(secs(0)), "0s");
        assert_eq!(fmt_duration(secs(59)), "59s");
        assert_eq!(fmt_duration(secs(3600)), "1h");
        assert_eq!(fmt_duration(secs(90000)), "1d1h");
        assert_eq!(fmt_duration(secs(93784)), "1d2h3m4s");
        assert_eq!(fmt_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(fmt_duration(Duration::from_nanos(5)), "1ms");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1s");
    }

    #[test]
    fn durations_round_trip() {
        for n in [
            1, 59, 60, 61, 3599, 3600, 3661, 86399, 86400, 90061, 1_000_000,
        ] {
            assert_eq!(parse_duration(&fmt_duration(secs(n))), Ok(secs(n)), "{n}");
        }
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("512MiB"), Ok(512));
        assert_eq!(parse_size("4GiB"), Ok(4096));
        assert_eq!(parse_size("4 GiB"), Ok(4096));
        assert_eq!(parse_size("1.5GiB"), Ok(1536));
        assert_eq!(parse_size("1.25GiB"), Ok(1280));
        assert_eq!(parse_size("0.5GiB"), Ok(512));
        assert_eq!(parse_size("1TiB"), Ok(1024 * 1024));
        assert_eq!(parse_size("0MiB"), Ok(0));
    }

    #[test]
    fn sizes_refused_with_reason() {
        let err = |s: &str| parse_size(s).unwrap_err().to_string();
        assert!(err("4G").contains("did you mean \"GiB\""), "{}", err("4G"));
        assert!(err("4GB").contains("did you mean \"GiB\""));
        assert!(err("512M").contains("did you mean \"MiB\""));
        assert!(err("4gib").contains("did you mean \"GiB\""));
        assert!(err("4096").contains("unit is missing"));
        assert!(err("GiB").contains("does not start with a number"));
        assert!(err("1.3GiB").contains("whole number of MiB"));
        assert!(err("1.5MiB").contains("whole number of MiB"));
        assert!(err("1..5GiB").contains("malformed"));
        assert!(err(".5GiB").contains("malformed"));
        assert!(err("5.GiB").contains("malformed"));
        assert!(err("4  GiB").contains("unknown unit"));
        assert!(err("-4GiB").contains("does not start with a number"));
        assert!(err("99999999999999999999TiB").contains("too large"));
        assert!(err("9999999999999999TiB").contains("too large"));
        assert!(err("").contains("empty"));
        assert!(err("4G").contains("\"4G\""));
    }

    #[test]
    fn sizes_format() {
        assert_eq!(fmt_mib(4096), "4 GiB");
        assert_eq!(fmt_mib(512), "512 MiB");
        assert_eq!(fmt_mib(1536), "1.5 GiB");
        assert_eq!(fmt_mib(1280), "1.25 GiB");
        assert_eq!(fmt_mib(1100), "1100 MiB");
        assert_eq!(fmt_mib(0), "0 MiB");
        assert_eq!(fmt_mib(2 * 1024 * 1024), "2 TiB");
        assert_eq!(fmt_mib(1024 * 1024 + 512), "1024.5 GiB");
    }

    proptest::proptest! {
        #[test]
        fn any_duration_round_trips(n in 0u64..100_000_000) {
            proptest::prop_assert_eq!(parse_duration(&fmt_duration(secs(n))), Ok(secs(n)));
        }

        #[test]
        fn any_size_round_trips(n in 0u64..(1 << 40)) {
            proptest::prop_assert_eq!(parse_size(&fmt_mib(n)), Ok(n));
        }

        #[test]
        fn parsers_never_panic(s in "\\PC{0,24}") {
            let _ = parse_duration(&s);
            let _ = parse_size(&s);
        }
    }

    #[test]
    fn sizes_round_trip() {
        for n in [
            1,
            512,
            1024,
            1100,
            1280,
            1536,
            1792,
            4096,
            17408,
            524288,
            1 << 20,
        ] {
            assert_eq!(parse_size(&fmt_mib(n)), Ok(n), "{n}");
        }
    }

    #[test]
    fn utc_times() {
        assert_eq!(fmt_utc(0), "1970-01-01 00:00:00");
        assert_eq!(fmt_utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(fmt_utc(1_767_225_599), "2025-12-31 23:59:59");
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1_767_225_600), "2026-01-01T00:00:00Z");
        assert_eq!(iso8601(951_825_600 + 3661), "2000-02-29T13:01:01Z");
    }
}
