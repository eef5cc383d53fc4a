//! `holdfast postmortem`: drafts an incident report in the shape of a good
//! postmortem (summary, customer impact, timeline, detection gap, root cause,
//! action items) from the service's operational journal
//! (`GET /api/v1/ops/journal`) and, when given, a drill's journal. The draft
//! fills in what the records show and leaves the rest for people.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};
use serde_json::Value;

use crate::drill::journal::{Entry, Event, GateKind, InvariantStatus, Journal, Op, Phase, Verdict};
use crate::drill::metrics::{Class, Timeline, number};
use crate::drill::report::table;
use crate::load::Driver;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Md,
    Html,
}

#[derive(Debug, Args)]
pub struct PostmortemArgs {
    /// Start of the incident window (RFC 3339); with --drill-report, the drill's start.
    #[arg(long, value_name = "T")]
    pub since: Option<String>,
    /// End of the window (RFC 3339); default now, or the drill's end.
    #[arg(long, value_name = "T")]
    pub until: Option<String>,
    /// A drill's report folder (DIR/SCENARIO, holding journal.jsonl).
    #[arg(long, value_name = "DIR")]
    pub drill_report: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "md")]
    pub format: Format,
    /// A running node whose operational journal to read. With --drill-report
    /// and no --url, the journal the drill saved is used.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// An admin API key of that node.
    #[arg(long, env = "HOLDFAST_ADMIN_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Write the draft here instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// A fault as the drill's journal tells it.
struct FaultSeen {
    name: String,
    target: String,
    detail: String,
    on: DateTime<Utc>,
    off: Option<DateTime<Utc>>,
    affected: Option<u64>,
}

/// One row of the timeline.
#[derive(Debug, Clone)]
struct Moment {
    at: DateTime<Utc>,
    source: &'static str,
    what: String,
}

/// The draft, before it is written as Markdown or HTML.
#[derive(Debug, Default)]
pub struct Draft {
    title: String,
    status: String,
    window: (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
    summary: Vec<String>,
    impact: Vec<(String, String)>,
    endpoints: Vec<String>,
    timeline: Vec<Moment>,
    detection: String,
    root_cause: Vec<String>,
    actions: Vec<String>,
}

pub async fn run(args: PostmortemArgs) -> anyhow::Result<u8> {
    let drill = match &args.drill_report {
        Some(dir) => Some(
            Journal::read(&dir.join("journal.jsonl"))
                .with_context(|| format!("--drill-report {}: expected a drill's report folder", dir.display()))?,
        ),
        None => None,
    };
    let since = parse_time("--since", args.since.as_deref())?
        .or_else(|| drill.as_ref().and_then(|e| e.first()).map(|e| e.wall));
    let until =
        parse_time("--until", args.until.as_deref())?.or_else(|| drill.as_ref().and_then(|e| e.last()).map(|e| e.wall));
    let Some(since) = since else {
        anyhow::bail!("give --since (and --until), or --drill-report DIR");
    };
    let until = until.unwrap_or_else(Utc::now);
    anyhow::ensure!(since < until, "--since must come before --until");
    let ops = match (&args.url, &drill) {
        (Some(url), _) => fetch_ops_journal(url, args.api_key.as_deref(), since, until).await?,
        (None, Some(entries)) => saved_ops_journal(entries),
        (None, None) => {
            anyhow::bail!("give --url (and --api-key) of a node whose journal to read, or --drill-report DIR")
        }
    };
    let draft = Draft::build(since, until, &ops, drill.as_deref());
    let text = match args.format {
        Format::Md => draft.markdown(),
        Format::Html => draft.html(),
    };
    match &args.output {
        Some(path) => std::fs::write(path, text).with_context(|| format!("--output {}", path.display()))?,
        None => print!("{text}"),
    }
    Ok(0)
}

fn parse_time(flag: &str, value: Option<&str>) -> anyhow::Result<Option<DateTime<Utc>>> {
    value
        .map(|v| {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| anyhow::anyhow!("{flag} {v}: not an RFC 3339 time ({e}), e.g. 2025-01-31T14:00:00Z"))
        })
        .transpose()
}

/// The operational journal over `[since, until)`, every page.
async fn fetch_ops_journal(
    url: &str,
    key: Option<&str>,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> anyhow::Result<Vec<Value>> {
    let key = key.ok_or_else(|| anyhow::anyhow!("--api-key (or HOLDFAST_ADMIN_KEY) is needed to read {url}"))?;
    let admin = Driver::new(url.trim_end_matches('/'), key)?;
    let mut entries: Vec<Value> = Vec::new();
    let mut from = since;
    loop {
        let path = format!(
            "/api/v1/ops/journal?since={}&until={}&limit=1000",
            encode(&from.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
            encode(&until.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        );
        let answer = admin
            .get(&path)
            .await
            .with_context(|| format!("reading the operational journal at {url}"))?;
        anyhow::ensure!(
            answer.status == 200,
            "reading the operational journal at {url}: HTTP {} {}",
            answer.status,
            answer.raw
        );
        let page = answer.body["entries"].as_array().cloned().unwrap_or_default();
        let full = page.len() == 1000;
        let last = page
            .last()
            .and_then(|e| e["at"].as_str())
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok());
        for entry in page {
            if !entries.iter().any(|known| known["seq"] == entry["seq"]) {
                entries.push(entry);
            }
        }
        match last {
            Some(last) if full && last.with_timezone(&Utc) > from => from = last.with_timezone(&Utc),
            _ => break,
        }
    }
    Ok(entries)
}

fn encode(text: &str) -> String {
    text.replace('+', "%2B").replace(':', "%3A")
}

/// The operational journal a drill saved before it stopped its nodes.
fn saved_ops_journal(entries: &[Entry]) -> Vec<Value> {
    entries
        .iter()
        .filter_map(|e| match &e.event {
            Event::OpsJournal { entries, .. } => Some(entries.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn ops_time(entry: &Value) -> Option<DateTime<Utc>> {
    entry["at"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

impl Draft {
    pub fn build(since: DateTime<Utc>, until: DateTime<Utc>, ops: &[Value], drill: Option<&[Entry]>) -> Self {
        let mut draft = Draft {
            title: format!("Postmortem: {} service degradation", since.format("%B %-d, %Y")),
            status: "DRAFT, pending review".into(),
            window: (Some(since), Some(until)),
            ..Draft::default()
        };
        for entry in ops {
            let Some(at) = ops_time(entry) else { continue };
            if at < since || at >= until {
                continue;
            }
            let node = entry["node"].as_str().unwrap_or_default();
            draft.timeline.push(Moment {
                at,
                source: "service",
                what: format!("{} ({node})", entry["summary"].as_str().unwrap_or_default()),
            });
        }
        let breakers: Vec<&Value> = ops.iter().filter(|e| e["kind"] == "breaker").collect();
        let first_open = breakers
            .iter()
            .filter(|e| {
                e["summary"]
                    .as_str()
                    .is_some_and(|s| s.contains("→ open") || s.contains("-> open"))
            })
            .filter_map(|e| ops_time(e))
            .min();
        match drill {
            Some(entries) => draft.fill_from_drill(entries, first_open),
            None => draft.fill_from_ops(&breakers, first_open),
        }
        draft.timeline.sort_by_key(|m| m.at);
        draft
    }

    fn fill_from_ops(&mut self, breakers: &[&Value], first_open: Option<DateTime<Utc>>) {
        let subjects: Vec<String> = {
            let mut subjects: Vec<String> = breakers
                .iter()
                .filter_map(|e| e["subject"].as_str().map(str::to_owned))
                .collect();
            subjects.sort();
            subjects.dedup();
            subjects
        };
        self.summary.push(format!(
            "Between {} and {} the operational journal recorded {} entries, {} of them breaker transitions{}.",
            fmt_time(self.window.0),
            fmt_time(self.window.1),
            self.timeline.len(),
            breakers.len(),
            if subjects.is_empty() {
                String::new()
            } else {
                format!(" (dependencies: {})", subjects.join(", "))
            }
        ));
        self.impact = vec![
            ("Duration".into(), duration_between(self.window.0, self.window.1)),
            (
                "Failed requests".into(),
                "not in the journal: read the request metrics".into(),
            ),
            (
                "Delayed webhooks".into(),
                "not in the journal: read the delivery log".into(),
            ),
            (
                "Data lost".into(),
                "unknown: run `holdfast subscriptions audit` and the order reconciler".into(),
            ),
        ];
        self.detection = match first_open {
            Some(at) => format!(
                "The first alert-worthy signal was a breaker opening at {}; the first operator action is not in the journal: add it.",
                at.format("%H:%M:%S")
            ),
            None => "No breaker opened in this window; the first alert-worthy signal is not in the journal.".into(),
        };
        self.root_cause = subjects
            .iter()
            .map(|s| format!("The `{s}` dependency tripped its breaker: find out why it failed or slowed."))
            .collect();
        if self.root_cause.is_empty() {
            self.root_cause
                .push("Nothing in the operational journal points at a cause.".into());
        }
        self.actions
            .push("Fill in owners and dates; add what the journal cannot know.".into());
    }

    fn fill_from_drill(&mut self, entries: &[Entry], first_open: Option<DateTime<Utc>>) {
        let mut scenario = String::new();
        let mut incident = String::new();
        let mut verdict = (Verdict::Undecided, String::new());
        let mut faults: Vec<FaultSeen> = Vec::new();
        let mut refused_deliveries = None;
        for entry in entries {
            match &entry.event {
                Event::Start {
                    scenario: name,
                    incident: story,
                    ..
                } => {
                    scenario = name.clone();
                    incident = story.clone();
                }
                Event::Inject {
                    fault, target, detail, ..
                } => faults.push(FaultSeen {
                    name: fault.clone(),
                    target: target.clone(),
                    detail: detail.clone(),
                    on: entry.wall,
                    off: None,
                    affected: None,
                }),
                Event::Heal { fault, .. } => {
                    if let Some(f) = faults.iter_mut().rev().find(|f| &f.name == fault && f.off.is_none()) {
                        f.off = Some(entry.wall);
                    }
                }
                Event::Effect {
                    fault,
                    affected,
                    detail,
                    ..
                } => {
                    if let Some(f) = faults.iter_mut().rev().find(|f| &f.name == fault) {
                        f.affected = Some(*affected);
                    }
                    if let Some(refused) = detail["deliveries_refused"].as_u64() {
                        refused_deliveries = Some(refused_deliveries.unwrap_or(0) + refused);
                    }
                }
                Event::Verdict { verdict: v, reason } => verdict = (*v, reason.clone()),
                _ => {}
            }
            if let Some(line) = drill_moment(&entry.event) {
                self.timeline.push(Moment {
                    at: entry.wall,
                    source: "drill",
                    what: line,
                });
            }
        }
        self.title = format!(
            "Postmortem: drill `{scenario}`, {}",
            self.window
                .0
                .map(|t| t.format("%B %-d, %Y").to_string())
                .unwrap_or_default()
        );
        let timeline = Timeline::from_entries(entries, f64::INFINITY);
        let start = entries.first().map(|e| e.wall);
        let at = |t_ms: f64| start.map(|s| s + chrono::Duration::milliseconds(t_ms as i64));
        let fault_span = timeline.phases.get(&Phase::Fault).copied();
        let impact_end_ms = timeline
            .metric("recovery.steady_s", "all")
            .zip(timeline.phases.get(&Phase::Heal))
            .map(|(steady, (_, heal_end))| heal_end + steady * 1000.0)
            .or_else(|| timeline.phases.get(&Phase::Heal).map(|(_, end)| *end));
        let window: Vec<(f64, f64)> = fault_span
            .map(|(start_ms, _)| (start_ms, impact_end_ms.unwrap_or(timeline.end_ms)))
            .into_iter()
            .collect();
        let checkouts = timeline.requests_in(Op::Checkout, &window);
        let reads = timeline.requests_in(Op::Read, &window);
        let failed = |requests: &[crate::drill::metrics::Request]| {
            requests
                .iter()
                .filter(|r| matches!(r.class(), Class::Shed | Class::Error))
                .count()
        };
        let degraded = checkouts.iter().filter(|r| r.status == 202).count();
        let (failed_checkouts, failed_reads) = (failed(&checkouts), failed(&reads));
        let duration = window
            .first()
            .map(|(s, e)| {
                format!(
                    "{} s ({} to {})",
                    number((e - s) / 1000.0),
                    fmt_time(at(*s)),
                    fmt_time(at(*e))
                )
            })
            .unwrap_or_else(|| "no fault phase".into());
        let baseline_p99 = timeline.metric("checkout.p99_ms", "baseline");
        let fault_p99 = timeline.metric("checkout.p99_ms", "fault");
        if failed_checkouts > 0
            || baseline_p99
                .zip(fault_p99)
                .is_some_and(|(base, fault)| fault > 2.0 * base + 50.0)
        {
            self.endpoints.push(format!(
                "`POST /api/v1/orders`: {failed_checkouts} of {} failed, p99 {} ms (baseline {} ms), {degraded} taken for later (202)",
                checkouts.len(),
                fault_p99.map(number).unwrap_or_default(),
                baseline_p99.map(number).unwrap_or_default()
            ));
        }
        let read_base = timeline.metric("read.p99_ms", "baseline");
        let read_fault = timeline.metric("read.p99_ms", "fault");
        if failed_reads > 0
            || read_base
                .zip(read_fault)
                .is_some_and(|(base, fault)| fault > 2.0 * base + 50.0)
        {
            self.endpoints.push(format!(
                "`GET /api/v1/orders/{{id}}`: {failed_reads} of {} failed, p99 {} ms (baseline {} ms)",
                reads.len(),
                read_fault.map(number).unwrap_or_default(),
                read_base.map(number).unwrap_or_default()
            ));
        }
        let lost = entries.iter().find_map(|e| match &e.event {
            Event::Invariant(i) if i.name == "no_lost_orders" => Some(i.clone()),
            _ => None,
        });
        let broken: Vec<String> = entries
            .iter()
            .filter_map(|e| match &e.event {
                Event::Invariant(i) if i.status != InvariantStatus::Holds => {
                    Some(format!("{}: {}", i.name, i.observed))
                }
                _ => None,
            })
            .collect();
        self.impact = vec![
            ("Duration".into(), duration),
            (
                "Failed requests".into(),
                format!(
                    "{failed_checkouts} of {} checkouts, {failed_reads} of {} order reads",
                    checkouts.len(),
                    reads.len()
                ),
            ),
            (
                "Affected endpoints".into(),
                if self.endpoints.is_empty() {
                    "none".into()
                } else {
                    self.endpoints.len().to_string()
                },
            ),
            (
                "Delayed webhooks".into(),
                refused_deliveries.map_or_else(
                    || "none refused by the partner".to_owned(),
                    |n| format!("{n} deliveries refused by the partner, then retried"),
                ),
            ),
            (
                "Data lost".into(),
                match (&lost, broken.is_empty()) {
                    (Some(lost), true) => format!("none ({})", lost.observed),
                    (_, false) => broken.join("; "),
                    (None, true) => "not checked".into(),
                },
            ),
        ];
        let fault_words: Vec<String> = faults.iter().map(|f| format!("{} ({})", f.name, f.target)).collect();
        self.summary.push(format!(
            "Drill `{scenario}` injected {}. Over the {} of impact, {failed_checkouts} of {} checkouts failed and \
             {degraded} were taken for later processing; the drill's verdict is {}: {}.",
            if fault_words.is_empty() {
                "no fault".to_owned()
            } else {
                fault_words.join(" and ")
            },
            self.impact[0].1,
            checkouts.len(),
            verdict.0.as_str().to_uppercase(),
            verdict.1
        ));
        if !incident.is_empty() {
            self.summary.push(format!("It replays: {incident}"));
        }
        let first_action = faults.iter().filter_map(|f| f.off).min();
        let first_signal = first_open.or_else(|| {
            timeline
                .requests
                .iter()
                .find(|r| {
                    fault_span.is_some_and(|(s, _)| r.t_ms >= s) && matches!(r.class(), Class::Shed | Class::Error)
                })
                .and_then(|r| at(r.t_ms))
        });
        self.detection = match (first_signal, first_action) {
            (Some(signal), Some(action)) => format!(
                "First alert-worthy signal at {} ({}); first operator action (the heal) at {}: a gap of {} s.",
                signal.format("%H:%M:%S%.3f"),
                if first_open.is_some() {
                    "a breaker opened"
                } else {
                    "the first failed checkout"
                },
                action.format("%H:%M:%S%.3f"),
                number((action - signal).num_milliseconds() as f64 / 1000.0)
            ),
            (None, Some(_)) => "No alert-worthy signal: no breaker opened and no checkout failed.".into(),
            _ => "Not known: the drill records no heal.".into(),
        };
        self.root_cause = faults
            .iter()
            .map(|f| {
                format!(
                    "`{}` on {}: {}; on from {} to {}; it affected {}.",
                    f.name,
                    f.target,
                    f.detail,
                    f.on.format("%H:%M:%S%.3f"),
                    f.off
                        .map_or_else(|| "the end".to_owned(), |t| t.format("%H:%M:%S%.3f").to_string()),
                    f.affected.map_or_else(
                        || "an unknown number of".to_owned(),
                        |a| format!("{a} connections, deliveries or calls")
                    )
                )
            })
            .collect();
        if self.root_cause.is_empty() {
            self.root_cause.push("No fault was injected.".into());
        }
        self.actions = action_items(entries);
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# {}\n", self.title);
        let _ = writeln!(md, "**Status:** {}  ", self.status);
        let _ = writeln!(
            md,
            "**Window:** {} to {} (UTC)\n\n---\n\n## Summary\n",
            fmt_time(self.window.0),
            fmt_time(self.window.1)
        );
        for paragraph in &self.summary {
            let _ = writeln!(md, "{paragraph}\n");
        }
        md.push_str("---\n\n## Customer impact\n\n");
        table(
            &mut md,
            &["Metric", "Value"],
            self.impact
                .iter()
                .map(|(metric, value)| vec![metric.clone(), value.clone()]),
        );
        if !self.endpoints.is_empty() {
            let _ = writeln!(md, "\n**Affected endpoints:**");
            for endpoint in &self.endpoints {
                let _ = writeln!(md, "- {endpoint}");
            }
        }
        md.push_str("\n---\n\n## Timeline (UTC)\n\n");
        table(
            &mut md,
            &["Time", "Source", "Event"],
            self.timeline.iter().map(|moment| {
                vec![
                    moment.at.format("%H:%M:%S%.3f").to_string(),
                    moment.source.to_owned(),
                    moment.what.clone(),
                ]
            }),
        );
        let _ = writeln!(md, "\n**Detection gap:** {}\n\n---\n\n## Root cause\n", self.detection);
        for cause in &self.root_cause {
            let _ = writeln!(md, "- {cause}");
        }
        md.push_str("\n---\n\n## Action items\n\n");
        table(
            &mut md,
            &["#", "Action", "Owner", "Due", "Status"],
            self.actions.iter().enumerate().map(|(n, action)| {
                vec![
                    (n + 1).to_string(),
                    action.clone(),
                    String::new(),
                    String::new(),
                    "Open".to_owned(),
                ]
            }),
        );
        md
    }

    pub fn html(&self) -> String {
        let e = escape;
        let mut html = format!(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{}</title>\n<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}</style></head><body>\n<h1>{}</h1>\n<p><b>Status:</b> {}<br><b>Window:</b> {} to {} (UTC)</p>\n<h2>Summary</h2>\n",
            e(&self.title),
            e(&self.title),
            e(&self.status),
            e(&fmt_time(self.window.0)),
            e(&fmt_time(self.window.1))
        );
        for paragraph in &self.summary {
            let _ = writeln!(html, "<p>{}</p>", e(paragraph));
        }
        html.push_str("<h2>Customer impact</h2>\n<table><tr><th>Metric</th><th>Value</th></tr>\n");
        for (metric, value) in &self.impact {
            let _ = writeln!(html, "<tr><td>{}</td><td>{}</td></tr>", e(metric), e(value));
        }
        html.push_str("</table>\n");
        if !self.endpoints.is_empty() {
            html.push_str("<p><b>Affected endpoints:</b></p><ul>\n");
            for endpoint in &self.endpoints {
                let _ = writeln!(html, "<li>{}</li>", e(endpoint));
            }
            html.push_str("</ul>\n");
        }
        html.push_str("<h2>Timeline (UTC)</h2>\n<table><tr><th>Time</th><th>Source</th><th>Event</th></tr>\n");
        for moment in &self.timeline {
            let _ = writeln!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                moment.at.format("%H:%M:%S%.3f"),
                moment.source,
                e(&moment.what)
            );
        }
        let _ = writeln!(
            html,
            "</table>\n<p><b>Detection gap:</b> {}</p>\n<h2>Root cause</h2>\n<ul>",
            e(&self.detection)
        );
        for cause in &self.root_cause {
            let _ = writeln!(html, "<li>{}</li>", e(cause));
        }
        html.push_str("</ul>\n<h2>Action items</h2>\n<table><tr><th>#</th><th>Action</th><th>Owner</th><th>Due</th><th>Status</th></tr>\n");
        for (n, action) in self.actions.iter().enumerate() {
            let _ = writeln!(
                html,
                "<tr><td>{}</td><td>{}</td><td></td><td></td><td>Open</td></tr>",
                n + 1,
                e(action)
            );
        }
        html.push_str("</table>\n</body></html>\n");
        html
    }
}

/// One action item per failed gate (from what it protects) and broken
/// invariant; a fault that affected nothing asks for a better drill.
fn action_items(entries: &[Entry]) -> Vec<String> {
    let mut actions = Vec::new();
    for entry in entries {
        match &entry.event {
            Event::Gate(gate) if !gate.ok && gate.kind == GateKind::SteadyState => actions.push(format!(
                "Run the drill again where the service starts healthy ({}: {})",
                gate.name,
                gate.observed.map(number).unwrap_or_else(|| "nothing measured".into())
            )),
            Event::Gate(gate) if !gate.ok && gate.kind != GateKind::Effect => actions.push(format!(
                "Restore: {} (gate \"{}\": `{}` over {} was {}, rule {})",
                if gate.protects.is_empty() {
                    "the service level this gate holds"
                } else {
                    gate.protects.as_str()
                },
                gate.name,
                gate.metric,
                gate.window,
                gate.observed.map(number).unwrap_or_else(|| "nothing measured".into()),
                gate.rule
            )),
            Event::Gate(gate) if !gate.ok => actions.push(format!(
                "Make the drill's fault take effect ({}): as it ran, it proved nothing",
                gate.name
            )),
            Event::Invariant(i) if i.status != InvariantStatus::Holds => actions.push(format!(
                "Fix what broke {}: {}",
                i.name,
                i.samples.first().cloned().unwrap_or_default()
            )),
            _ => {}
        }
    }
    if actions.is_empty() {
        actions.push("None from the drill: every gate and invariant held.".into());
    }
    actions
}

/// A drill event worth a timeline row.
fn drill_moment(event: &Event) -> Option<String> {
    Some(match event {
        Event::Phase {
            phase,
            edge: crate::drill::journal::Edge::Start,
        } => format!("{} phase begins", phase.as_str()),
        Event::Inject { fault, target, .. } => format!("fault `{fault}` injected on {target}"),
        Event::Heal { fault, ok, .. } => {
            format!("fault `{fault}` healed{}", if *ok { "" } else { " (the heal failed)" })
        }
        Event::Process { name, action, .. } if action != "started" => format!("{name} {action}"),
        Event::Stop { reason } => reason.clone(),
        Event::Settle { drained, seconds, .. } => {
            if *drained {
                format!("cold path drained {} s after the load", number(*seconds))
            } else {
                format!("cold path still not drained {} s after the load", number(*seconds))
            }
        }
        Event::Verdict { verdict, .. } => format!("drill verdict: {}", verdict.as_str()),
        _ => return None,
    })
}

fn fmt_time(time: Option<DateTime<Utc>>) -> String {
    time.map_or_else(|| "?".to_owned(), |t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
}

fn duration_between(since: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>) -> String {
    match (since, until) {
        (Some(s), Some(u)) => format!("{} s", number((u - s).num_milliseconds() as f64 / 1000.0)),
        _ => "?".into(),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Writes `postmortem.md` for a drill into its report folder, from its journal
/// and the operational journal it saved.
pub fn write_for_drill(dir: &Path, entries: &[Entry]) -> anyhow::Result<()> {
    let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
        return Ok(());
    };
    let draft = Draft::build(
        first.wall,
        last.wall + chrono::Duration::milliseconds(1),
        &saved_ops_journal(entries),
        Some(entries),
    );
    std::fs::write(dir.join("postmortem.md"), draft.markdown())
        .with_context(|| format!("writing {}/postmortem.md", dir.display()))
}
