//! Blackout windows: freeze periods during which nothing is injected.

use chrono::{DateTime, Utc};

use super::file::Blackout;

/// A blackout in force at some instant.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ActiveBlackout {
    /// The blackout's name.
    pub name: String,
    /// When this window ends.
    pub until: DateTime<Utc>,
}

impl Blackout {
    /// The blackout's name.
    pub fn name(&self) -> &str {
        match self {
            Blackout::Recurring { name, .. } | Blackout::Fixed { name, .. } => name,
        }
    }

    /// The window in force at `at`, if any (start inclusive, end exclusive).
    pub fn window_at(&self, at: DateTime<Utc>) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        match self {
            Blackout::Fixed { from, until, .. } => {
                (*from <= at && at < *until).then_some((*from, *until))
            }
            Blackout::Recurring {
                cron,
                zone,
                duration,
                ..
            } => {
                let length = chrono::Duration::from_std(*duration).ok()?;
                let start = cron.latest_at_or_before(at, zone.0)?;
                let end = start + length;
                (at < end).then_some((start, end))
            }
        }
    }
}

/// The blackout in force at `at`, if any. When windows overlap or touch, `until` is the end of
/// the whole frozen stretch, so a caller waiting for it does not wake up inside another window.
pub fn active_at(blackouts: &[Blackout], at: DateTime<Utc>) -> Option<ActiveBlackout> {
    let (first, mut until) = blackouts
        .iter()
        .find_map(|b| b.window_at(at).map(|(_, end)| (b.name().to_owned(), end)))?;
    // Bounded: each step moves `until` forward to the end of another window.
    for _ in 0..64 {
        let extended = blackouts
            .iter()
            .filter_map(|b| b.window_at(until).map(|(_, end)| end))
            .max();
        match extended {
            Some(end) if end > until => until = end,
            _ => break,
        }
    }
    Some(ActiveBlackout { name: first, until })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::schedule::cron::{CronExpr, Zone};

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect(text)
            .with_timezone(&Utc)
    }

    fn business_hours() -> Blackout {
        Blackout::Recurring {
            name: "business-hours".into(),
            cron: Box::new(CronExpr::parse("0 9 * * 1-5").expect("cron")),
            zone: Zone::parse("Europe/Berlin").expect("zone"),
            duration: Duration::from_secs(9 * 3600),
        }
    }

    #[test]
    fn recurring_window_in_its_own_zone() {
        let b = [business_hours()];
        // Wednesday 2026-06-10, CEST (UTC+2): 09:00-18:00 local is 07:00-16:00 UTC.
        assert_eq!(active_at(&b, utc("2026-06-10T06:59:59Z")), None);
        let active = active_at(&b, utc("2026-06-10T07:00:00Z")).expect("in");
        assert_eq!(active.name, "business-hours");
        assert_eq!(active.until, utc("2026-06-10T16:00:00Z"));
        assert!(active_at(&b, utc("2026-06-10T15:59:59Z")).is_some());
        assert_eq!(active_at(&b, utc("2026-06-10T16:00:00Z")), None);
        // Saturday: no window.
        assert_eq!(active_at(&b, utc("2026-06-13T10:00:00Z")), None);
    }

    #[test]
    fn fixed_window_and_merged_overlaps() {
        let release = Blackout::Fixed {
            name: "release".into(),
            from: utc("2026-06-10T15:00:00Z"),
            until: utc("2026-06-10T20:00:00Z"),
        };
        let b = [business_hours(), release];
        // Inside business hours, which run into the release freeze: frozen until 20:00.
        let active = active_at(&b, utc("2026-06-10T08:00:00Z")).expect("in");
        assert_eq!(active.name, "business-hours");
        assert_eq!(active.until, utc("2026-06-10T20:00:00Z"));
        let active = active_at(&b, utc("2026-06-10T17:00:00Z")).expect("in");
        assert_eq!(active.name, "release");
        assert_eq!(active_at(&b, utc("2026-06-10T20:00:00Z")), None);
    }
}
