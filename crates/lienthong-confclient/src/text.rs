//! Times and durations as operators read them, in status lines and errors.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `2030-01-01T00:00:00Z`, UTC, whole seconds.
pub(crate) fn utc(t: SystemTime) -> String {
    let Ok(since_epoch) = t.duration_since(UNIX_EPOCH) else { return "(before 1970)".into() };
    let secs = since_epoch.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a proleptic Gregorian date, counting in 400-year eras that start
    // on 1 March (so the leap day is the last day of a year).
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// `1h 5m`, `2m 30s`, `45s`: two units at most, enough for an operator.
pub(crate) fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(utc(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(utc(UNIX_EPOCH + Duration::from_secs(1_893_456_000 + 3_723)), "2030-01-01T01:02:03Z");
        assert_eq!(utc(UNIX_EPOCH + Duration::from_secs(4_107_542_399)), "2100-02-28T23:59:59Z");
        assert_eq!(utc(UNIX_EPOCH + Duration::from_secs(4_107_542_400)), "2100-03-01T00:00:00Z");
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_millis(999)), "0s");
        assert_eq!(human(Duration::from_secs(150)), "2m 30s");
        assert_eq!(human(Duration::from_secs(3900)), "1h 5m");
        assert_eq!(human(Duration::from_secs(90_000)), "1d 1h");
    }
}
