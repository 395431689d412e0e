//! Cron expressions and time zones, evaluated in the zone's own wall-clock time.
//!
//! A suite's cron runs in its named time zone, across daylight-saving changes, through croner:
//! a fixed time that does not exist on a spring-forward day runs once, at the first instant after
//! the gap; a fixed time that exists twice on a fall-back day runs once, at its first instance.
//! Everything else in the scheduler works in UTC instants.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A parsed five-field cron expression (`minute hour day-of-month month day-of-week`).
#[derive(Clone, Debug)]
pub struct CronExpr {
    text: String,
    cron: croner::Cron,
}

impl CronExpr {
    /// Parses an expression; the error says what is wrong and what to write instead.
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        let cron = croner::Cron::from_str(trimmed).map_err(|e| {
            format!("`{trimmed}` is not a cron expression ({e}); write five fields, minute hour day-of-month month day-of-week, e.g. `0 2 * * *` for 02:00 every day")
        })?;
        Ok(Self {
            text: trimmed.to_owned(),
            cron,
        })
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first occurrence strictly after `after`, in `zone`'s wall-clock time.
    pub fn next_after(&self, after: DateTime<Utc>, zone: Tz) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&after.with_timezone(&zone), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The latest occurrence at or before `at`, in `zone`'s wall-clock time.
    pub fn latest_at_or_before(&self, at: DateTime<Utc>, zone: Tz) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&at.with_timezone(&zone), true)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// Every occurrence in `(after, until]`, at most `limit` of them.
    pub fn occurrences_between(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
        zone: Tz,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut found = Vec::new();
        let mut cursor = after;
        while found.len() < limit {
            match self.next_after(cursor, zone) {
                Some(next) if next <= until => {
                    found.push(next);
                    cursor = next;
                }
                _ => break,
            }
        }
        found
    }
}

impl PartialEq for CronExpr {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Serialize for CronExpr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for CronExpr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// An IANA time zone name (`Europe/Berlin`, `America/New_York`, `UTC`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Zone(pub Tz);

impl Default for Zone {
    fn default() -> Self {
        Zone(Tz::UTC)
    }
}

impl Zone {
    /// Parses a zone name; the error says what to write instead.
    pub fn parse(name: &str) -> Result<Self, String> {
        Tz::from_str(name.trim()).map(Zone).map_err(|_| {
            format!("`{name}` is not a time zone; use an IANA name such as UTC, Europe/Berlin or America/New_York")
        })
    }
}

impl Serialize for Zone {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0.name())
    }
}

impl<'de> Deserialize<'de> for Zone {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect(text)
            .with_timezone(&Utc)
    }

    fn zone(name: &str) -> Tz {
        Zone::parse(name).expect(name).0
    }

    /// Every run of `cron` in `zone` between two instants, as UTC RFC 3339 text.
    fn runs(cron: &str, zone_name: &str, from: &str, until: &str) -> Vec<String> {
        CronExpr::parse(cron)
            .expect(cron)
            .occurrences_between(utc(from), utc(until), zone(zone_name), 100)
            .iter()
            .map(DateTime::to_rfc3339)
            .collect()
    }

    #[test]
    fn berlin_spring_forward_a_time_that_does_not_exist_runs_once() {
        // 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist that night.
        let got = runs(
            "30 2 * * *",
            "Europe/Berlin",
            "2026-03-27T12:00:00Z",
            "2026-03-31T12:00:00Z",
        );
        assert_eq!(
            got,
            [
                "2026-03-28T01:30:00+00:00", // 02:30 CET
                "2026-03-29T01:00:00+00:00", // the first instant after the gap, 03:00 CEST
                "2026-03-30T00:30:00+00:00", // 02:30 CEST
                "2026-03-31T00:30:00+00:00",
            ]
        );
    }

    #[test]
    fn berlin_fall_back_a_time_that_exists_twice_runs_once() {
        // 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice that night.
        let got = runs(
            "30 2 * * *",
            "Europe/Berlin",
            "2026-10-23T12:00:00Z",
            "2026-10-27T12:00:00Z",
        );
        assert_eq!(
            got,
            [
                "2026-10-24T00:30:00+00:00", // 02:30 CEST
                "2026-10-25T00:30:00+00:00", // the first 02:30 (CEST) only
                "2026-10-26T01:30:00+00:00", // 02:30 CET
                "2026-10-27T01:30:00+00:00",
            ]
        );
    }

    #[test]
    fn new_york_spring_forward_and_fall_back() {
        // 2026-03-08: 02:00 EST jumps to 03:00 EDT.
        let got = runs(
            "30 2 * * *",
            "America/New_York",
            "2026-03-07T00:00:00Z",
            "2026-03-09T12:00:00Z",
        );
        assert_eq!(
            got,
            [
                "2026-03-07T07:30:00+00:00", // 02:30 EST
                "2026-03-08T07:00:00+00:00", // 03:00 EDT, first instant after the gap
                "2026-03-09T06:30:00+00:00", // 02:30 EDT
            ]
        );
        // 2026-11-01: 02:00 EDT falls back to 01:00 EST; 01:30 happens twice.
        let got = runs(
            "30 1 * * *",
            "America/New_York",
            "2026-10-31T00:00:00Z",
            "2026-11-02T12:00:00Z",
        );
        assert_eq!(
            got,
            [
                "2026-10-31T05:30:00+00:00", // 01:30 EDT
                "2026-11-01T05:30:00+00:00", // the first 01:30 (EDT) only
                "2026-11-02T06:30:00+00:00", // 01:30 EST
            ]
        );
    }

    #[test]
    fn a_time_unaffected_by_the_change_keeps_its_wall_clock_time() {
        // 04:00 local before and after both changes: the UTC instant moves by an hour, which a
        // scheduler fixed to one UTC offset would get wrong.
        let got = runs(
            "0 4 * * *",
            "Europe/Berlin",
            "2026-03-28T00:00:00Z",
            "2026-03-30T00:00:00Z",
        );
        assert_eq!(
            got,
            ["2026-03-28T03:00:00+00:00", "2026-03-29T02:00:00+00:00"]
        );
        let got = runs(
            "0 4 * * *",
            "America/New_York",
            "2026-10-31T00:00:00Z",
            "2026-11-02T00:00:00Z",
        );
        assert_eq!(
            got,
            ["2026-10-31T08:00:00+00:00", "2026-11-01T09:00:00+00:00"]
        );
    }

    #[test]
    fn latest_at_or_before_includes_the_instant_itself() {
        let cron = CronExpr::parse("0 3 * * 0").expect("weekly");
        let sunday = utc("2026-06-07T03:00:00Z");
        assert_eq!(cron.latest_at_or_before(sunday, Tz::UTC), Some(sunday));
        assert_eq!(
            cron.latest_at_or_before(utc("2026-06-13T00:00:00Z"), Tz::UTC),
            Some(sunday)
        );
    }

    #[test]
    fn bad_expressions_and_zones_say_what_to_write() {
        let error = CronExpr::parse("0 25 * * *").expect_err("hour 25");
        assert!(
            error.contains("not a cron expression") && error.contains("0 2 * * *"),
            "{error}"
        );
        let error = Zone::parse("Europe/Berln").expect_err("typo");
        assert!(error.contains("Europe/Berlin"), "{error}");
    }
}
