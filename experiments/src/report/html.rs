//! The self-contained HTML page: inline CSS, inline SVG, no script, no external asset.

use std::fmt::Write as _;
use std::io;

use plotters::style::RGBColor;

use crate::checkers::{CheckReport, Evidence, Severity, Status};

use super::junit::xml_escape as esc;
use super::plots::{tenant_heatmap, time_chart, Line, TenantRow};
use super::{ms_as_s, outage_text, secs, status_word, utc};

/// Tenants shown in the heatmap.
const HEATMAP_TENANTS: usize = 40;

const CSS: &str = r"
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;margin:24px;color:#1d2330;background:#fafbfc}
h1{font-size:22px;margin:0 0 4px}h1.outcome.valid{color:#1a7f37}h1.outcome.invalid{color:#cf222e}h1.outcome.unknown{color:#9a6700}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #dde1e6;padding-bottom:4px}
.meta{color:#5a6472;font-size:13px}
.aborted{background:#fdecea;border:1px solid #c62828;padding:8px 12px;border-radius:6px}
.badge{display:inline-block;padding:2px 10px;border-radius:10px;font-weight:600;font-size:13px;color:#fff}
.valid{background:#1f8a4c}.invalid{background:#c62828}.unknown{background:#b7791f}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:14px 0}
.card{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:10px 14px;min-width:120px}
.card b{display:block;font-size:20px}.card span{color:#5a6472;font-size:12px}
table{border-collapse:collapse;background:#fff;font-size:13px;margin:6px 0}
th,td{border:1px solid #dde1e6;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f0f2f5}
td.num{text-align:right;font-variant-numeric:tabular-nums}
details{margin:6px 0 12px}summary{cursor:pointer;font-weight:600}
.plot{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:6px;margin:8px 0;overflow-x:auto}
.plot svg{max-width:100%;height:auto}
.note{color:#5a6472;font-size:13px}
.wide{overflow-x:auto;max-width:100%}
td code{word-break:break-all}
code{font-size:12px}
";

fn badge(s: Status) -> String {
    format!(
        r#"<span class="badge {}">{}</span>"#,
        s.as_str(),
        status_word(s)
    )
}

fn opt<T: ToString>(v: Option<&T>) -> String {
    v.map_or_else(String::new, |v| esc(&v.to_string()))
}

/// Renders the page.
/// One line naming every service's version and program.
fn system_under_test(h: &mut String, servers: &[crate::checkers::ServerVersion]) {
    if servers.is_empty() {
        return;
    }
    let servers: Vec<String> = servers
        .iter()
        .map(|v| {
            format!(
                "{} <b>{}</b> <code>{}</code>",
                esc(&v.service),
                esc(&v.version),
                esc(&v.program)
            )
        })
        .collect();
    let _ = writeln!(
        h,
        "<div class=\"meta\">system under test: {}</div>",
        servers.join(" &middot; ")
    );
}

pub(crate) fn render(r: &CheckReport) -> io::Result<String> {
    let mut h = String::with_capacity(64 * 1024);
    let title = format!("Faultline check: {}", r.run.run_id);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{CSS}</style></head><body>\n",
        esc(&title)
    );
    let _ = writeln!(
        h,
        "<h1 class=\"outcome {}\">{}</h1>\n<div class=\"meta\">{}</div>",
        r.status.as_str(),
        esc(&super::outcome(r)),
        esc(&title)
    );
    if let Some(experiment) = &r.experiment {
        let _ = writeln!(
            h,
            "<div class=\"meta\">scenario <b>{}</b>{} &middot; lab {} &middot; seed {}</div>",
            esc(&experiment.scenario),
            experiment
                .plan_id
                .as_deref()
                .map(|id| format!(" ({})", esc(id)))
                .unwrap_or_default(),
            esc(&experiment.lab),
            experiment.seed
        );
        system_under_test(&mut h, &experiment.system_under_test);
        if let Some(reason) = &experiment.aborted {
            let _ = writeln!(
                h,
                "<p class=\"aborted\"><b>ABORTED:</b> {}. This is a partial report.</p>",
                esc(reason)
            );
        }
        if !experiment.faults.is_empty() {
            let _ = writeln!(h, "<ul class=\"meta\">");
            for fault in &experiment.faults {
                let _ = writeln!(h, "<li>{}</li>", esc(fault));
            }
            let _ = writeln!(h, "</ul>");
        }
    }
    let _ = writeln!(
        h,
        "<div class=\"meta\">adapter {} &middot; started {} &middot; history v{} &middot; report schema v{} &middot; faultline {} &middot; exit code {}</div>",
        esc(&r.run.adapter),
        esc(&utc(r.run.started_at_unix_ms)),
        r.run.history_version,
        r.schema_version,
        esc(&r.tool_version),
        r.exit_code()
    );
    let worst_ttr = r.recovery.faults.iter().filter_map(|f| f.ttr_ms).max();
    let never = r
        .recovery
        .faults
        .iter()
        .any(|f| f.reference_ns.is_some() && !f.recovered);
    let ttr_card = match (never, worst_ttr) {
        (true, _) => "never".to_string(),
        (false, Some(t)) => ms_as_s(t),
        (false, None) => "n/a".to_string(),
    };
    let _ = writeln!(h, "<div class=\"cards\">");
    for (value, label) in [
        (
            format!("{}/100", r.score),
            format!("score: {}", super::SCORE_MEANING),
        ),
        (r.input.operations.to_string(), "operations".to_string()),
        (r.input.values.to_string(), "distinct values".to_string()),
        (r.input.tenants.to_string(), "tenants".to_string()),
        (r.faults.len().to_string(), "fault windows".to_string()),
        (ttr_card, "worst time to recovery".to_string()),
    ] {
        let _ = writeln!(
            h,
            "<div class=\"card\"><b>{}</b><span>{}</span></div>",
            esc(&value),
            esc(&label)
        );
    }
    let _ = writeln!(h, "</div>");

    verdicts(&mut h, r);
    plots(&mut h, r)?;
    faults(&mut h, r);
    client_zones(&mut h, r);
    tenants(&mut h, r)?;
    input(&mut h, r);
    let _ = writeln!(
        h,
        "<p class=\"note\">Definitions of every checker, anomaly and the score: docs/checkers.md. \
         The score is secondary: the run passes only if every verdict is valid.</p>\n</body></html>"
    );
    Ok(h)
}

fn verdicts(h: &mut String, r: &CheckReport) {
    let _ = writeln!(
        h,
        "<h2>Verdicts</h2><table><tr><th>checker</th><th>status</th><th>summary</th></tr>"
    );
    for v in &r.verdicts {
        let _ = writeln!(
            h,
            "<tr><td><a href=\"#v-{0}\">{0}</a></td><td>{1}</td><td>{2}</td></tr>",
            esc(&v.name),
            badge(v.status),
            esc(&v.summary)
        );
    }
    let _ = writeln!(h, "</table>");
    for v in &r.verdicts {
        let _ = writeln!(
            h,
            "<h3 id=\"v-{0}\">{0} {1}</h3>",
            esc(&v.name),
            badge(v.status)
        );
        for n in &v.notes {
            let _ = writeln!(h, "<div class=\"note\">note: {}</div>", esc(n));
        }
        if v.anomalies.is_empty() {
            let _ = writeln!(h, "<div class=\"note\">no anomalies</div>");
        }
        for a in &v.anomalies {
            let sev = match a.severity {
                Severity::Invalid => "invalid",
                Severity::Info => "reported only",
            };
            let cats: Vec<String> = a
                .categories
                .iter()
                .map(|(k, n)| format!("{k}: {n}"))
                .collect();
            let _ = writeln!(
                h,
                "<details{}><summary>{} &mdash; {} ({sev}){}</summary>",
                if a.severity == Severity::Invalid {
                    " open"
                } else {
                    ""
                },
                esc(&a.name),
                a.count,
                if cats.is_empty() {
                    String::new()
                } else {
                    format!(" &middot; {}", esc(&cats.join(", ")))
                }
            );
            if !a.evidence.is_empty() {
                evidence_table(h, &a.evidence);
                if a.count > a.evidence.len() as u64 {
                    let _ = writeln!(
                        h,
                        "<div class=\"note\">showing the earliest {} of {}</div>",
                        a.evidence.len(),
                        a.count
                    );
                }
            }
            let _ = writeln!(h, "</details>");
        }
    }
}

/// One evidence column: its heading, whether it is a number, and its cell for one row (empty
/// when the row has nothing there).
struct EvidenceColumn {
    heading: &'static str,
    numeric: bool,
    cell: fn(&Evidence) -> String,
}

/// An "other" cell that repeats the row's own value says nothing: left empty.
fn other(own: Option<&String>, other: Option<&String>) -> String {
    match other {
        Some(o) if Some(o) != own => esc(o),
        _ => String::new(),
    }
}

const EVIDENCE_COLUMNS: [EvidenceColumn; 11] = [
    EvidenceColumn {
        heading: "t (s)",
        numeric: true,
        cell: |e| e.at_ns.map(secs).unwrap_or_default(),
    },
    EvidenceColumn {
        heading: "tenant",
        numeric: false,
        cell: |e| opt(e.tenant.as_ref()),
    },
    EvidenceColumn {
        heading: "other tenant",
        numeric: false,
        cell: |e| other(e.tenant.as_ref(), e.other_tenant.as_ref()),
    },
    EvidenceColumn {
        heading: "value",
        numeric: false,
        cell: |e| code(&opt(e.value.as_ref())),
    },
    EvidenceColumn {
        heading: "other value",
        numeric: false,
        cell: |e| code(&other(e.value.as_ref(), e.other_value.as_ref())),
    },
    EvidenceColumn {
        heading: "node",
        numeric: false,
        cell: |e| opt(e.node.as_ref()),
    },
    EvidenceColumn {
        heading: "other node",
        numeric: false,
        cell: |e| other(e.node.as_ref(), e.other_node.as_ref()),
    },
    EvidenceColumn {
        heading: "stream",
        numeric: false,
        cell: |e| opt(e.stream.as_ref()),
    },
    EvidenceColumn {
        heading: "seq",
        numeric: true,
        cell: |e| opt(e.seq.as_ref()),
    },
    EvidenceColumn {
        heading: "line",
        numeric: true,
        cell: |e| opt(e.line.as_ref()),
    },
    EvidenceColumn {
        heading: "detail",
        numeric: false,
        cell: |e| esc(&e.detail),
    },
];

fn code(escaped: &str) -> String {
    if escaped.is_empty() {
        String::new()
    } else {
        format!("<code>{escaped}</code>")
    }
}

/// The evidence of one anomaly kind, with only the columns some row fills: a `lost` value has
/// no other tenant, a `two-leaders` sample no value.
fn evidence_table(h: &mut String, evidence: &[Evidence]) {
    let cells: Vec<Vec<String>> = evidence
        .iter()
        .map(|e| EVIDENCE_COLUMNS.iter().map(|c| (c.cell)(e)).collect())
        .collect();
    let shown: Vec<usize> = (0..EVIDENCE_COLUMNS.len())
        .filter(|&i| cells.iter().any(|row| !row[i].is_empty()))
        .collect();
    let _ = write!(h, "<div class=\"wide\"><table><tr>");
    for &i in &shown {
        let _ = write!(h, "<th>{}</th>", EVIDENCE_COLUMNS[i].heading);
    }
    let _ = writeln!(h, "</tr>");
    for row in &cells {
        let _ = write!(h, "<tr>");
        for &i in &shown {
            let class = if EVIDENCE_COLUMNS[i].numeric {
                " class=\"num\""
            } else {
                ""
            };
            let _ = write!(h, "<td{class}>{}</td>", row[i]);
        }
        let _ = writeln!(h, "</tr>");
    }
    let _ = writeln!(h, "</table></div>");
}

fn x_max(r: &CheckReport) -> f64 {
    let step = r.timeline.step_ms as f64 / 1e3;
    let tl = r.timeline.points.last().map_or(0.0, |p| p.t_s + step);
    let faults = r
        .faults
        .iter()
        .map(|f| f.end_ns.unwrap_or(f.start_ns) as f64 / 1e9)
        .fold(0.0, f64::max);
    tl.max(faults).max(1.0)
}

fn fault_ranges(r: &CheckReport, x_max: f64) -> Vec<(f64, f64)> {
    r.faults
        .iter()
        .map(|f| {
            (
                f.start_ns as f64 / 1e9,
                f.end_ns.map_or(x_max, |e| e as f64 / 1e9),
            )
        })
        .collect()
}

fn plots(h: &mut String, r: &CheckReport) -> io::Result<()> {
    let _ = writeln!(
        h,
        "<h2>Over time</h2><div class=\"note\">All tenants, {} ms per point; fault windows shaded red.</div>",
        r.timeline.step_ms
    );
    if r.timeline.points.is_empty() {
        let _ = writeln!(h, "<div class=\"note\">no load operations to plot</div>");
        return Ok(());
    }
    let xm = x_max(r);
    let faults = fault_ranges(r, xm);
    let pts = &r.timeline.points;
    let series =
        |f: &dyn Fn(&crate::checkers::TimelinePoint) -> Option<f64>| -> Vec<(f64, Option<f64>)> {
            pts.iter().map(|p| (p.t_s, f(p))).collect()
        };
    let charts = [
        time_chart(
            "Throughput",
            "ok completions / s",
            xm,
            &[Line {
                label: "throughput",
                color: RGBColor(31, 119, 180),
                points: series(&|p| Some(p.throughput)),
            }],
            &faults,
            false,
        )?,
        time_chart(
            "Errors and indeterminate outcomes",
            "operations / s",
            xm,
            &[
                Line {
                    label: "fail",
                    color: RGBColor(214, 39, 40),
                    points: series(&|p| Some(p.errors)),
                },
                Line {
                    label: "info",
                    color: RGBColor(255, 127, 14),
                    points: series(&|p| Some(p.infos)),
                },
            ],
            &faults,
            false,
        )?,
        time_chart(
            "Latency (intended send to completion)",
            "ms (log)",
            xm,
            &[
                Line {
                    label: "p50",
                    color: RGBColor(44, 160, 44),
                    points: series(&|p| p.p50_ms),
                },
                Line {
                    label: "p99",
                    color: RGBColor(148, 103, 189),
                    points: series(&|p| p.p99_ms),
                },
            ],
            &faults,
            true,
        )?,
        time_chart(
            "Tenants failing the SLO",
            "tenants",
            xm,
            &[Line {
                label: "failing tenants",
                color: RGBColor(200, 30, 30),
                points: series(&|p| Some(p.failing_tenants as f64)),
            }],
            &faults,
            false,
        )?,
    ];
    for svg in charts {
        let _ = writeln!(h, "<div class=\"plot\">{svg}</div>");
    }
    Ok(())
}

fn faults(h: &mut String, r: &CheckReport) {
    let _ = writeln!(h, "<h2>Faults and recovery</h2>");
    if r.faults.is_empty() {
        let _ = writeln!(h, "<div class=\"note\">no fault windows observed</div>");
        return;
    }
    let _ = writeln!(
        h,
        "<div class=\"wide\"><table><tr><th>fault</th><th>kind</th><th>start (s)</th><th>heal (s)</th><th>survivable</th><th>sides / affected</th>\
         <th>time to impact</th><th>TTR</th><th>deadline</th><th>total outage</th><th>impacted tenants</th><th>worst tenant</th></tr>"
    );
    for (w, f) in r.faults.iter().zip(&r.recovery.faults) {
        let sides: Vec<String> = w
            .sides
            .iter()
            .map(|s| format!("[{}]", s.join(", ")))
            .collect();
        let shape = match (sides.is_empty(), w.affected.is_empty()) {
            (false, _) => sides.join(" | "),
            (true, false) => w.affected.join(", "),
            (true, true) => String::new(),
        };
        let ttr = match (f.reference_ns, f.ttr_ms) {
            (None, _) => "not measured (never healed)".to_string(),
            (Some(_), Some(t)) => ms_as_s(t),
            (Some(_), None) => "<b>never recovered</b>".to_string(),
        };
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td>{}</td></tr>",
            esc(&w.fault_id),
            esc(&w.kind),
            secs(w.start_ns),
            w.end_ns.map(secs).unwrap_or_default(),
            esc(&survivable_text(w, r.experiment.is_some())),
            esc(&shape),
            f.time_to_impact_ms.map_or_else(|| "no impact".to_string(), ms_as_s),
            ttr,
            ms_as_s(f.deadline_ms),
            esc(&outage_text(f)),
            f.impacted_tenants,
            esc(&match (&f.worst_tenant, &f.worst_series) {
                (Some(t), Some(s)) => format!("{t} ({s})"),
                _ => String::new(),
            })
        );
    }
    let _ = writeln!(h, "</table></div>");
}

/// Whether the system was expected to keep serving, and why: from the spec in an experiment,
/// from the fault's shape when the windows were recorded by the load alone.
fn survivable_text(w: &crate::checkers::FaultWindow, from_spec: bool) -> String {
    match (from_spec, w.survivable) {
        (true, true) => {
            "yes: the spec declares it survivable (slo.survivable), so recovery is timed from the injection".to_owned()
        }
        (true, false) => {
            "no: the spec does not declare it survivable (slo.survivable), so recovery is timed from the heal".to_owned()
        }
        (false, true) if !w.sides.is_empty() => {
            "yes: one side keeps a majority of the NATS servers".to_owned()
        }
        (false, true) => "yes: one replica of three or more is down".to_owned(),
        (false, false) if !w.sides.is_empty() => {
            "no: no side keeps a majority of the NATS servers, so no quorum can form until the heal".to_owned()
        }
        (false, false) if w.affected.len() > 1 => format!(
            "no: {} nodes are down at once ({})",
            w.affected.len(),
            w.affected.join(", ")
        ),
        (false, false) => {
            "no: with fewer than three NATS servers, none can be lost without losing the quorum"
                .to_owned()
        }
    }
}

/// The load by the zone its clients stood in, when they stood in more than one.
fn client_zones(h: &mut String, r: &CheckReport) {
    if r.client_zones.is_empty() {
        return;
    }
    let _ = writeln!(
        h,
        "<h2>Client zones</h2><div class=\"note\">Where the load's clients stood (clients: per-zone): \
         a zone cut off by a partition shares its fate with its clients.</div>\
         <table><tr><th>client zone</th><th>tenants</th><th>operations</th><th>acknowledged writes</th>\
         <th>fail</th><th>unknown outcome</th><th>anomalies</th></tr>"
    );
    for z in &r.client_zones {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(&z.zone),
            z.tenants,
            z.operations,
            z.acked_writes,
            z.failed,
            z.unknown,
            z.anomalies
        );
    }
    let _ = writeln!(h, "</table>");
}

fn tenants(h: &mut String, r: &CheckReport) -> io::Result<()> {
    let _ = writeln!(h, "<h2>Tenants</h2>");
    let bucket_s = r.config.bucket_ms as f64 / 1e3;
    let rows: Vec<TenantRow> = r
        .tenants
        .iter()
        .filter(|t| t.failing_buckets > 0)
        .take(HEATMAP_TENANTS)
        .map(|t| TenantRow {
            tenant: t.tenant.clone(),
            failing: t
                .failing_runs
                .iter()
                .map(|[s, n]| (*s as f64 * bucket_s, (*s + *n) as f64 * bucket_s))
                .collect(),
        })
        .collect();
    if rows.is_empty() {
        let _ = writeln!(h, "<div class=\"note\">no tenant failed a bucket</div>");
    } else {
        let xm = x_max(r);
        let svg = tenant_heatmap(xm, &rows, &fault_ranges(r, xm))?;
        let failing = r.tenants.iter().filter(|t| t.failing_buckets > 0).count();
        let which = if failing > rows.len() {
            format!(
                "the worst {} of the {failing} tenants that failed at least one bucket",
                rows.len()
            )
        } else {
            format!(
                "the {failing} tenant{} that failed at least one bucket, worst first (the others passed every bucket)",
                if failing == 1 { "" } else { "s" }
            )
        };
        let _ = writeln!(
            h,
            "<div class=\"note\">Buckets in which a tenant failed the SLO (red): {which}; fault windows shaded.</div>\
             <div class=\"plot\">{svg}</div>",
        );
    }
    let silent = r.input.tenants.saturating_sub(r.tenants.len() as u64);
    let _ = writeln!(
        h,
        "<details><summary>All {} tenants with load operations{}</summary><div class=\"wide\"><table><tr><th>tenant</th><th>operations</th><th>ok</th><th>fail</th><th>unknown outcome</th>\
         <th>failing buckets</th><th>worst TTR</th><th>never recovered</th><th>failing before the faults</th><th>anomalies</th></tr>",
        r.tenants.len(),
        if silent > 0 {
            format!(
                " ({silent} of the history's {} tenants sent no load operation: idle tenants wait long between bursts, so they appear only in the read-back)",
                r.input.tenants
            )
        } else {
            String::new()
        }
    );
    for t in &r.tenants {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td></tr>",
            esc(&t.tenant),
            t.operations,
            t.ok,
            t.fail,
            t.info,
            t.failing_buckets,
            t.worst_ttr_ms.map(ms_as_s).unwrap_or_default(),
            if t.never_recovered { "<b>yes</b>" } else { "" },
            if t.failing_before_faults {
                "yes (judged against its baseline)"
            } else {
                ""
            },
            t.anomalies
        );
    }
    let _ = writeln!(h, "</table></div></details>");
    Ok(())
}

fn input(h: &mut String, r: &CheckReport) {
    let i = &r.input;
    let _ = writeln!(h, "<h2>Input</h2><table>");
    let mut rows = vec![
        ("history", i.history.clone().unwrap_or_default()),
        (
            "observations",
            i.observations.clone().unwrap_or_else(|| "none".into()),
        ),
        ("operations", i.operations.to_string()),
        (
            "lines out of completion order",
            i.out_of_order_lines.to_string(),
        ),
        (
            "truncated last line",
            if i.truncated_last_line {
                "yes (skipped)"
            } else {
                "no"
            }
            .to_string(),
        ),
        (
            "observations: truncated last line",
            if i.observations_truncated_last_line {
                "yes (skipped)"
            } else {
                "no"
            }
            .to_string(),
        ),
    ];
    for (k, n) in &i.defects {
        rows.push(("defect", format!("{k}: {n}")));
    }
    for (k, v) in rows {
        let _ = writeln!(h, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&v));
    }
    let _ = writeln!(h, "</table>");
    slo(h, r);
}

/// The SLO the run was judged by, in words: what a passing bucket is, and the deadlines.
fn slo(h: &mut String, r: &CheckReport) {
    let slo = &r.config.slo;
    let mut rows = vec![(
        "judged with".to_owned(),
        slo.scenario.as_ref().map_or_else(
            || "the default SLO".to_owned(),
            |s| format!("the SLO of {s}"),
        ),
    )];
    rows.push((
        "recovery deadline".to_owned(),
        format!(
            "{} after the heal (after the injection for survivable faults)",
            ms_as_s(slo.recovery_deadline_ms)
        ),
    ));
    for (kind, ms) in &slo.deadline_by_fault_kind {
        rows.push((format!("recovery deadline, {kind}"), ms_as_s(*ms)));
    }
    rows.push((
        "a bucket passes when".to_owned(),
        format!(
            "at least {} of its operations end ok, its p99 latency is at most {} ms, and its throughput is at least {} of the pre-fault baseline (this last only for series with a baseline of at least {} ok/s)",
            percent(slo.min_success_rate),
            slo.max_p99_ms,
            percent(slo.min_throughput_ratio),
            slo.min_baseline_ops_per_s
        ),
    ));
    rows.push((
        "bucket".to_owned(),
        format!(
            "{}, per tenant and operation kind",
            ms_as_s(r.config.bucket_ms)
        ),
    ));
    let _ = writeln!(h, "<h2>SLO</h2><table class=\"slo\">");
    for (k, v) in rows {
        let _ = writeln!(h, "<tr><th>{}</th><td>{}</td></tr>", esc(&k), esc(&v));
    }
    let _ = writeln!(h, "</table>");
}

/// A share as a percentage: 0.99 is "99 %", 0.995 is "99.5 %".
fn percent(share: f64) -> String {
    let p = (share * 1000.0).round() / 10.0;
    if p.fract() == 0.0 {
        format!("{p:.0} %")
    } else {
        format!("{p} %")
    }
}
