//! One drill, start to verdict: start the rig, drive the load through four
//! phases (baseline, fault, heal, recovery), let the cold path drain, check
//! the invariants and the gates, and write the reports. The faults are healed
//! and the processes stopped on every way out: the end of the fault phase, a
//! stop condition, an error, or Ctrl-C (which leaves the drill undecided).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::faults::Faults;
use super::invariants;
use super::journal::{Edge, Event, GateKind, GateResult, InvariantStatus, Journal, Phase, Verdict};
use super::metrics::{self, Timeline};
use super::report;
use super::rig::{DatabaseChoice, PARTNER_HOOK, Rig, RigOptions};
use super::scenario::{Durations, Scenario};
use super::traffic::{self, Acked, Catalogue, Live, Traffic};
use super::watch::{BreakerWatch, PhaseBar};
use crate::coldpath;
use crate::load::Driver;

/// How often phases look at the clock, the stop conditions and the bar.
const TICK: Duration = Duration::from_millis(250);
/// Load before the baseline begins, which no phase counts.
const WARM_UP: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub holdfast: PathBuf,
    pub database: DatabaseChoice,
    pub overrides: Vec<(String, String)>,
    pub quick: bool,
    pub seed: u64,
    /// The scenario's report goes to `reports/<scenario>/`.
    pub reports: PathBuf,
}

/// How one drill ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub scenario: String,
    pub verdict: Verdict,
    pub reason: String,
    pub dir: PathBuf,
    pub elapsed: Duration,
}

/// Why the load ended before its time.
enum Cut {
    Interrupted(Phase),
    Failed(anyhow::Error),
}

/// What the phases produced.
struct Driven {
    acked: Vec<Acked>,
    catalogue: Catalogue,
    stopped_early: Option<String>,
}

/// Runs `scenario` and writes its reports; `interrupted` turns true on Ctrl-C.
pub async fn run(scenario: &Scenario, options: &RunOptions, interrupted: &watch::Receiver<bool>) -> Outcome {
    let started = Instant::now();
    let dir = options.reports.join(&scenario.name);
    let outcome = |verdict, reason: String| Outcome {
        scenario: scenario.name.clone(),
        verdict,
        reason,
        dir: dir.clone(),
        elapsed: started.elapsed(),
    };
    if let Err(error) = std::fs::create_dir_all(&dir) {
        return outcome(Verdict::Undecided, format!("cannot create {}: {error}", dir.display()));
    }
    let journal = match Journal::create(&dir.join("journal.jsonl")) {
        Ok(journal) => journal,
        Err(error) => return outcome(Verdict::Undecided, format!("{error:#}")),
    };
    let (verdict, reason) = drill(scenario, options, &journal, interrupted).await;
    journal.record(Event::Verdict {
        verdict,
        reason: reason.clone(),
    });
    journal.flush();
    if let Err(error) = report::write_scenario(&dir, &journal.entries()) {
        return outcome(Verdict::Undecided, format!("writing the reports: {error:#}"));
    }
    outcome(verdict, reason)
}

async fn drill(
    scenario: &Scenario,
    options: &RunOptions,
    journal: &Journal,
    interrupted: &watch::Receiver<bool>,
) -> (Verdict, String) {
    let durations = scenario.phases.durations(options.quick);
    journal.record(Event::Start {
        scenario: scenario.name.clone(),
        summary: scenario.summary.clone(),
        incident: scenario.incident.clone(),
        backend: options.database.backend().as_str().to_owned(),
        quick: options.quick,
        seed: options.seed,
        config: scenario
            .config_pairs()
            .into_iter()
            .chain(options.overrides.iter().cloned())
            .map(|(k, v)| format!("{k} = {v}"))
            .collect(),
    });
    let rig_options = RigOptions {
        holdfast: options.holdfast.clone(),
        database: options.database.clone(),
        overrides: options.overrides.clone(),
        logs: options.reports.join(&scenario.name).join("logs"),
    };
    let mut stop_watch = interrupted.clone();
    let mut rig = tokio::select! {
        rig = Rig::start(scenario, &rig_options, journal) => match rig {
            Ok(rig) => rig,
            Err(error) => return (Verdict::Undecided, format!("could not start the drill's processes: {error:#}")),
        },
        _ = stop_watch.wait_for(|stop| *stop) => return (Verdict::Undecided, "interrupted while starting".to_owned()),
    };
    let mut faults = Faults::default();
    let driven = {
        let mut stop_watch = interrupted.clone();
        let phases = drive(scenario, &durations, options.seed, &rig, &mut faults, journal);
        tokio::select! {
            driven = phases => driven.map_err(Cut::Failed),
            phase = interrupted_in(&mut stop_watch, journal) => Err(Cut::Interrupted(phase)),
        }
    };
    // Whatever happened above, nothing stays broken.
    faults.heal_all(&rig, journal).await;
    faults.record_effects(&rig, journal);
    let mut verdict = match driven {
        Ok(driven) => judge(scenario, &durations, &rig, driven, journal, interrupted).await,
        Err(Cut::Interrupted(phase)) => (
            Verdict::Undecided,
            format!("interrupted during the {} phase; faults healed", phase.as_str()),
        ),
        Err(Cut::Failed(error)) => (Verdict::Undecided, format!("the drill failed: {error:#}")),
    };
    fetch_ops_journal(&rig, journal).await;
    let left = faults.left_behind(&rig);
    rig.stop().await;
    let running = rig.running_children();
    journal.record(Event::Note {
        message: if left.is_empty() && running.is_empty() {
            "cleanup: every fault healed, every proxy clean, every process stopped".to_owned()
        } else {
            format!("cleanup: left behind {left:?}, still running {running:?}")
        },
    });
    if (!left.is_empty() || !running.is_empty()) && verdict.0 == Verdict::Pass {
        verdict = (
            Verdict::Undecided,
            "the drill could not clean up after itself".to_owned(),
        );
    }
    verdict
}

/// The phase the journal is in, once `stop` turns true.
async fn interrupted_in(stop: &mut watch::Receiver<bool>, journal: &Journal) -> Phase {
    let _ = stop.wait_for(|stop| *stop).await;
    let mut phase = Phase::Baseline;
    for entry in journal.entries() {
        if let Event::Phase {
            phase: p,
            edge: Edge::Start,
        } = entry.event
        {
            phase = p;
        }
    }
    journal.record(Event::Stop {
        reason: format!("interrupted (Ctrl-C) during the {} phase", phase.as_str()),
    });
    phase
}

/// The four phases under load.
async fn drive(
    scenario: &Scenario,
    durations: &Durations,
    seed: u64,
    rig: &Rig,
    faults: &mut Faults,
    journal: &Journal,
) -> anyhow::Result<Driven> {
    let admin = rig.orders[0].admin()?;
    let catalogue = traffic::prepare_catalogue(&admin, &scenario.load).await?;
    let key = admin.storefront_key().await?;
    let timeout = Duration::from_millis(scenario.load.timeout_ms);
    let drivers = rig
        .orders
        .iter()
        .map(|node| Driver::with_timeout(&node.base_url, &key, timeout))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let watched = rig
        .orders
        .iter()
        .map(|node| Ok((node.name.clone(), node.admin()?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let _breakers = BreakerWatch::start(watched, journal);
    let traffic = Traffic::start(drivers, &scenario.load, &catalogue, seed, journal);
    let live = traffic.live.clone();

    // Connections, pools and caches warm up before the baseline counts.
    tokio::time::sleep(WARM_UP).await;
    timed_phase(scenario, Phase::Baseline, durations.baseline, &live, journal).await;
    check_steady_state(scenario, journal)?;
    let stopped_early = fault_phase(scenario, durations.fault, rig, faults, &live, journal).await?;
    bar_phase(scenario, Phase::Heal, durations.heal_limit, &live, journal, async {
        anyhow::ensure!(faults.heal_all(rig, journal).await, "a heal failed; see the journal");
        Ok(())
    })
    .await?;
    timed_phase(scenario, Phase::Recovery, durations.recovery, &live, journal).await;
    let acked = traffic.stop().await;
    Ok(Driven {
        acked,
        catalogue,
        stopped_early,
    })
}

/// The fault phase: each fault injected at its time and healed at the end of
/// its own length; a stop condition ends the phase early.
async fn fault_phase(
    scenario: &Scenario,
    length: Duration,
    rig: &Rig,
    faults: &mut Faults,
    live: &Arc<Live>,
    journal: &Journal,
) -> anyhow::Result<Option<String>> {
    journal.record(Event::Phase {
        phase: Phase::Fault,
        edge: Edge::Start,
    });
    let bar = PhaseBar::start(&scenario.name, Phase::Fault, length, live.clone());
    let mut pending: Vec<_> = scenario.faults.iter().collect();
    pending.sort_by_key(|f| f.at);
    let started = Instant::now();
    let mut stopped = None;
    loop {
        let elapsed = started.elapsed();
        while let Some(fault) = pending.first().copied().filter(|f| f.at <= elapsed) {
            pending.remove(0);
            faults.inject(rig, fault, fault.limit_in(length), journal).await?;
        }
        faults.pulse(rig);
        faults.heal_ended(rig, length, elapsed, journal).await;
        if let Some(reason) = stop_condition(scenario, live) {
            journal.record(Event::Stop { reason: reason.clone() });
            stopped = Some(reason);
            break;
        }
        if elapsed >= length {
            break;
        }
        bar.tick();
        tokio::time::sleep(TICK.min(length - elapsed)).await;
    }
    journal.record(Event::Phase {
        phase: Phase::Fault,
        edge: Edge::End,
    });
    bar.finish(stopped.as_deref().unwrap_or_default());
    Ok(stopped)
}

/// The baseline must look healthy before a fault is worth injecting.
fn check_steady_state(scenario: &Scenario, journal: &Journal) -> anyhow::Result<()> {
    let timeline = Timeline::from_entries(&journal.entries(), scenario.load.late_after_ms as f64);
    let spec = &scenario.steady_state;
    let checks = [
        ("checkout.error_rate", spec.max_error_rate, "checkout error rate"),
        ("checkout.p99_ms", spec.max_p99_ms, "checkout p99 (ms)"),
    ];
    let mut unsteady = Vec::new();
    for (metric, max, label) in checks {
        let observed = timeline.metric(metric, "baseline");
        let ok = observed.is_some_and(|value| value <= max);
        journal.record(Event::Gate(GateResult {
            name: format!("steady state before the fault: {label}"),
            kind: GateKind::SteadyState,
            metric: metric.to_owned(),
            window: "baseline".to_owned(),
            rule: format!("<= {}", metrics::number(max)),
            threshold: Some(max),
            observed,
            ok,
            protects: String::new(),
        }));
        if !ok {
            unsteady.push(format!(
                "{label} {} over the baseline (at most {})",
                observed.map_or_else(|| "unmeasured".to_owned(), metrics::number),
                metrics::number(max)
            ));
        }
    }
    anyhow::ensure!(
        unsteady.is_empty(),
        "not in a steady state before the fault ({}): an overloaded machine or an unwell service; no fault injected",
        unsteady.join(", ")
    );
    Ok(())
}

/// Whether a stop condition holds now; its reason if so.
fn stop_condition(scenario: &Scenario, live: &Live) -> Option<String> {
    let max = scenario.stop.max_error_rate?;
    let window = Duration::from_secs_f64(scenario.stop.window_s.max(0.5));
    let (rate, answered) = live.error_rate(window);
    (answered >= 10 && rate > max).then(|| {
        format!(
            "stop condition: checkout error rate {:.0}% over the last {} s is above {:.0}%",
            rate * 100.0,
            metrics::number(window.as_secs_f64()),
            max * 100.0
        )
    })
}

/// A phase of fixed length under load.
async fn timed_phase(scenario: &Scenario, phase: Phase, length: Duration, live: &Arc<Live>, journal: &Journal) {
    journal.record(Event::Phase {
        phase,
        edge: Edge::Start,
    });
    let bar = PhaseBar::start(&scenario.name, phase, length, live.clone());
    let started = Instant::now();
    while started.elapsed() < length {
        bar.tick();
        tokio::time::sleep(TICK.min(length.saturating_sub(started.elapsed()))).await;
    }
    journal.record(Event::Phase { phase, edge: Edge::End });
    bar.finish("");
}

/// A phase that lasts as long as `work`, at most `limit`.
async fn bar_phase(
    scenario: &Scenario,
    phase: Phase,
    limit: Duration,
    live: &Arc<Live>,
    journal: &Journal,
    work: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    journal.record(Event::Phase {
        phase,
        edge: Edge::Start,
    });
    let bar = PhaseBar::start(&scenario.name, phase, limit, live.clone());
    let result = tokio::time::timeout(limit, work).await;
    journal.record(Event::Phase { phase, edge: Edge::End });
    bar.finish("");
    match result {
        Ok(result) => result,
        Err(_) => anyhow::bail!(
            "the {} phase did not finish within {} s",
            phase.as_str(),
            limit.as_secs()
        ),
    }
}

/// After the load: drain, invariants, gates, verdict.
async fn judge(
    scenario: &Scenario,
    durations: &Durations,
    rig: &Rig,
    driven: Driven,
    journal: &Journal,
    interrupted: &watch::Receiver<bool>,
) -> (Verdict, String) {
    let mut stop = interrupted.clone();
    let checked = tokio::select! {
        checked = check_invariants(scenario, durations, rig, driven.acked, &driven.catalogue, journal) => checked,
        _ = stop.wait_for(|stop| *stop) => return (Verdict::Undecided, "interrupted while checking the invariants".to_owned()),
    };
    let invariants = match checked {
        Ok(invariants) => invariants,
        Err(error) => return (Verdict::Undecided, format!("could not check the invariants: {error:#}")),
    };
    let entries = journal.entries();
    let timeline = Timeline::from_entries(&entries, scenario.load.late_after_ms as f64);
    // Journaled after the baseline already; they count in the verdict.
    let steady: Vec<GateResult> = entries
        .iter()
        .filter_map(|e| match &e.event {
            Event::Gate(gate) if gate.kind == GateKind::SteadyState => Some(gate.clone()),
            _ => None,
        })
        .collect();
    let mut gates: Vec<GateResult> = scenario.gates.iter().map(|g| metrics::evaluate(g, &timeline)).collect();
    gates.extend(effect_gates(&entries));
    if let Some(reason) = &driven.stopped_early {
        gates.push(GateResult {
            name: "no stop condition".into(),
            kind: GateKind::Stop,
            metric: "stop".into(),
            window: "fault".into(),
            rule: reason.clone(),
            threshold: None,
            observed: None,
            ok: false,
            protects: "the drill ends the fault early when the service is failing badly".into(),
        });
    }
    for gate in &gates {
        journal.record(Event::Gate(gate.clone()));
    }
    gates.extend(steady);
    verdict(&gates, &invariants)
}

fn verdict(gates: &[GateResult], invariants: &[super::journal::InvariantResult]) -> (Verdict, String) {
    let breached: Vec<&str> = gates
        .iter()
        .filter(|g| !g.ok && !matches!(g.kind, GateKind::Effect | GateKind::SteadyState))
        .map(|g| g.name.as_str())
        .chain(
            invariants
                .iter()
                .filter(|i| i.status == InvariantStatus::Broken)
                .map(|i| i.name.as_str()),
        )
        .collect();
    if !breached.is_empty() {
        return (Verdict::Fail, format!("breached: {}", breached.join("; ")));
    }
    let unsure: Vec<&str> = gates
        .iter()
        .filter(|g| !g.ok)
        .map(|g| g.name.as_str())
        .chain(
            invariants
                .iter()
                .filter(|i| i.status == InvariantStatus::Indeterminate)
                .map(|i| i.name.as_str()),
        )
        .collect();
    if !unsure.is_empty() {
        return (Verdict::Undecided, format!("could not decide: {}", unsure.join("; ")));
    }
    (
        Verdict::Pass,
        format!("{} gates and {} invariants hold", gates.len(), invariants.len()),
    )
}

/// One gate per fault: it must have affected something, or the drill proved nothing.
fn effect_gates(entries: &[super::journal::Entry]) -> Vec<GateResult> {
    entries
        .iter()
        .filter_map(|entry| match &entry.event {
            Event::Effect { fault, affected, .. } => Some(GateResult {
                name: format!("the fault took effect: {fault}"),
                kind: GateKind::Effect,
                metric: "affected".into(),
                window: "fault".into(),
                rule: ">= 1 connection, delivery or call affected".into(),
                threshold: Some(1.0),
                observed: Some(*affected as f64),
                ok: *affected >= 1,
                protects: String::new(),
            }),
            _ => None,
        })
        .collect()
}

async fn check_invariants(
    scenario: &Scenario,
    durations: &Durations,
    rig: &Rig,
    acked: Vec<Acked>,
    catalogue: &Catalogue,
    journal: &Journal,
) -> anyhow::Result<Vec<super::journal::InvariantResult>> {
    let config = rig.orders_config()?;
    let store = holdfast_store::connect(&config.connect_options()).await?;
    let receiver = rig.partner.as_ref().map(|p| p.receiver.clone()).unwrap_or_default();
    let since = Instant::now();
    let drained = coldpath::wait(&store, &receiver, PARTNER_HOOK, since, since + durations.settle).await?;
    let pending = if drained.in_time {
        String::new()
    } else {
        describe_pending(&coldpath::pending(&store).await?)
    };
    journal.record(Event::Settle {
        drained: drained.in_time,
        seconds: drained.elapsed.as_secs_f64(),
        pending,
    });
    let admin = rig.orders[0].admin()?;
    let evidence = invariants::gather(rig, &store, acked, catalogue, &admin, drained.in_time).await?;
    let results = invariants::check(&evidence, scenario);
    for result in &results {
        journal.record(Event::Invariant(result.clone()));
    }
    Ok(results)
}

fn describe_pending(pending: &coldpath::Pending) -> String {
    let queues: Vec<String> = pending
        .queues
        .iter()
        .filter(|q| q.ready + q.in_flight + q.delayed + q.dead > 0)
        .map(|q| {
            format!(
                "{}: {} ready, {} in flight, {} delayed, {} dead",
                q.queue, q.ready, q.in_flight, q.delayed, q.dead
            )
        })
        .collect();
    let orders: Vec<String> = pending
        .orders
        .iter()
        .map(|(status, n)| format!("{} {n}", status.as_str()))
        .collect();
    format!(
        "{} events not relayed; queues: {}; orders: {}",
        pending.unpublished_events,
        if queues.is_empty() {
            "empty".to_owned()
        } else {
            queues.join("; ")
        },
        orders.join(", ")
    )
}

/// The service's operational journal since the drill began, from the first
/// order node that answers.
async fn fetch_ops_journal(rig: &Rig, journal: &Journal) {
    let since = journal
        .entries()
        .first()
        .map(|e| e.wall - chrono::Duration::seconds(1))
        .unwrap_or_else(chrono::Utc::now);
    let since = since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    for node in &rig.orders {
        let Ok(admin) = node.admin() else { continue };
        let path = format!("/api/v1/ops/journal?since={}&limit=1000", url_encode(&since));
        if let Ok(answer) = admin.get(&path).await
            && answer.status == 200
        {
            let entries = answer.body["entries"].as_array().cloned().unwrap_or_default();
            journal.record(Event::OpsJournal {
                node: node.name.clone(),
                entries,
            });
            return;
        }
    }
}

fn url_encode(text: &str) -> String {
    text.replace('+', "%2B").replace(':', "%3A")
}
