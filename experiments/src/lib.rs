//! The experiment layer: the lab target, the tenant workload and its history, the checkers and
//! reports, the experiment spec and the engine that runs the phases, and the scheduler that runs
//! suites of experiments unattended.
//!
//! `unsafe` is denied except in one place: `lab/session.rs` calls `setsid(2)` between fork and
//! exec, which `std` offers only through the unsafe `pre_exec`, so that the lab agent's services
//! and the deadline guards each run in a session of their own.

/// Writes a line to stderr, or nowhere when stderr is gone (a closed pipe, a dropped SSH
/// session): a diagnostic must never end a process that holds or heals faults, and
/// `eprintln!` panics on a closed pipe.
#[macro_export]
macro_rules! stderr_line {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub mod checkers;
pub mod engine;
pub mod history;
pub mod kubernetes;
pub mod lab;
pub mod report;
pub mod schedule;
pub mod spec;
pub mod workload;

/// A YAML error as `line L column C: message`, without serde_yaml's trailing repeat of the
/// location.
pub(crate) fn describe_yaml_error(error: &serde_yaml::Error) -> String {
    let text = error.to_string();
    match error.location() {
        Some(at) => {
            let suffix = format!(" at line {} column {}", at.line(), at.column());
            let message = text.strip_suffix(&suffix).unwrap_or(&text);
            format!(
                "line {} column {}: {}",
                at.line(),
                at.column(),
                plain_words(message)
            )
        }
        None => plain_words(&text),
    }
}

/// serde's messages in the user's words: types named as a user knows them, and a did-you-mean
/// for an unknown field or value. The field path in front (`workload.tenants: `) is kept.
pub fn plain_words(message: &str) -> String {
    let (path, rest) = split_path(message);
    for (prefix, what) in [("unknown field `", "field"), ("unknown variant `", "value")] {
        if let Some(tail) = rest.strip_prefix(prefix) {
            let Some((word, expected)) = tail.split_once('`') else {
                break;
            };
            let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
            let hint = match closest(word, &known) {
                Some(best) => format!("; did you mean `{best}`?"),
                None => String::new(),
            };
            let list = if known.is_empty() {
                String::new()
            } else {
                format!(" Known: {}.", known.join(", "))
            };
            return format!("{path}unknown {what} `{word}`{hint}{list}");
        }
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(tail) = rest.strip_prefix(prefix) {
            if let Some((got, expected)) = tail.split_once(", expected ") {
                return format!(
                    "{path}must be {}, got {}",
                    expected_in_words(expected),
                    got_in_words(got)
                );
            }
        }
    }
    message.to_owned()
}

/// `workload.tenants: invalid type: …` as (`workload.tenants: `, `invalid type: …`).
fn split_path(message: &str) -> (&str, &str) {
    match message.find(": ") {
        Some(i)
            if !message[..i].contains(' ')
                && !message[..i].is_empty()
                && !message.starts_with("invalid")
                && !message.starts_with("unknown") =>
        {
            message.split_at(i + 2)
        }
        _ => ("", message),
    }
}

fn expected_in_words(expected: &str) -> String {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number, 0 or more".to_owned(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number".to_owned(),
        "f32" | "f64" => "a number".to_owned(),
        "a boolean" => "true or false".to_owned(),
        "a string" => "text".to_owned(),
        "a sequence" => "a list".to_owned(),
        other if other.starts_with("struct ") || other == "a map" => {
            "a mapping (`key: value` lines)".to_owned()
        }
        other => other.to_owned(),
    }
}

fn got_in_words(got: &str) -> String {
    // `integer `-3``, `string "abc"`, `floating point `1.5``, `sequence`, `map`, `unit value`
    if let Some(value) = got.split('`').nth(1) {
        return value.to_owned();
    }
    if let Some(value) = got.strip_prefix("string ") {
        return value.to_owned();
    }
    match got {
        "sequence" => "a list".to_owned(),
        "map" => "a mapping".to_owned(),
        "unit value" => "nothing".to_owned(),
        other => other.to_owned(),
    }
}

/// The candidate nearest to `word` by edit distance, if it is near enough to be a typo.
pub fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(2);
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_jargon_becomes_plain_words() {
        assert_eq!(
            plain_words("workload.tenants: invalid type: integer `-3`, expected u32"),
            "workload.tenants: must be a whole number, 0 or more, got -3"
        );
        assert_eq!(
            plain_words("slo.min_success_rate: invalid type: string \"high\", expected f64"),
            "slo.min_success_rate: must be a number, got \"high\""
        );
        assert_eq!(
            plain_words("workload: unknown field `tenats`, expected one of `tenants`, `rate`, `adapter`"),
            "workload: unknown field `tenats`; did you mean `tenants`? Known: tenants, rate, adapter."
        );
        assert_eq!(
            plain_words("unknown field `zzzzzz`, expected `name` or `faults`"),
            "unknown field `zzzzzz` Known: name, faults."
        );
        assert_eq!(plain_words("something else"), "something else");
    }

    #[test]
    fn typos_find_their_word_and_strangers_find_none() {
        let scenarios = ["az-failure", "pod-failure", "node-failure"];
        assert_eq!(closest("az-failur", &scenarios), Some("az-failure"));
        assert_eq!(closest("node-failur", &scenarios), Some("node-failure"));
        assert_eq!(closest("banana", &scenarios), None);
    }
}
