//! Reports: JSON, self-contained HTML, JUnit XML and the terminal summary.
