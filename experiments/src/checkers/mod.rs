//! Checkers: pure functions of a history and its observations that return verdicts with evidence.
