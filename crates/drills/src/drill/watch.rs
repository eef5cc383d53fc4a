//! What the drill watches while it runs: each order node's circuit breakers
//! (`GET /api/v1/ops/breakers`, every change journaled, for the plot's band
//! and the `breaker_open:` windows), and a progress bar per phase.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinHandle;

use super::journal::{Event, Journal, Phase};
use super::traffic::Live;
use crate::load::Driver;

const POLL: Duration = Duration::from_millis(200);

/// Polls the breakers until dropped.
pub struct BreakerWatch {
    task: JoinHandle<()>,
}

impl BreakerWatch {
    /// `nodes`: (name, admin driver) of each order node.
    pub fn start(nodes: Vec<(String, Driver)>, journal: &Journal) -> Self {
        let journal = journal.clone();
        let task = tokio::spawn(async move {
            let mut last: BTreeMap<(String, String), String> = BTreeMap::new();
            loop {
                for (name, admin) in &nodes {
                    // A node that does not answer (killed, overloaded) keeps its last states.
                    let Ok(Ok(answer)) = tokio::time::timeout(POLL * 5, admin.get("/api/v1/ops/breakers")).await else {
                        continue;
                    };
                    for breaker in answer.body["data"].as_array().into_iter().flatten() {
                        let (Some(dependency), Some(state)) = (breaker["name"].as_str(), breaker["state"].as_str())
                        else {
                            continue;
                        };
                        let key = (name.clone(), dependency.to_owned());
                        if last.get(&key).map(String::as_str) != Some(state) {
                            last.insert(key, state.to_owned());
                            journal.record(Event::Breaker {
                                node: name.clone(),
                                dependency: dependency.to_owned(),
                                state: state.to_owned(),
                            });
                        }
                    }
                }
                tokio::time::sleep(POLL).await;
            }
        });
        Self { task }
    }
}

impl Drop for BreakerWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A progress bar for one phase of known length; without a terminal, one
/// line when the phase ends.
pub struct PhaseBar {
    bar: ProgressBar,
    phase: Phase,
    started: Instant,
    live: Arc<Live>,
}

impl PhaseBar {
    pub fn start(scenario: &str, phase: Phase, length: Duration, live: Arc<Live>) -> Self {
        let bar = ProgressBar::new(u64::try_from(length.as_millis()).unwrap_or(u64::MAX).max(1));
        bar.set_style(
            ProgressStyle::with_template("{prefix:<24} {bar:30.cyan/blue} {elapsed:>4} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_prefix(format!("{scenario} {}", phase.as_str()));
        Self {
            bar,
            phase,
            started: Instant::now(),
            live,
        }
    }

    pub fn tick(&self) {
        self.bar
            .set_position(u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX));
        self.bar.set_message(self.live.summary());
    }

    pub fn finish(self, note: &str) {
        self.bar.finish_and_clear();
        let line = format!(
            "  {:<9} {:>5.1} s  {}{}",
            self.phase.as_str(),
            self.started.elapsed().as_secs_f64(),
            self.live.summary(),
            if note.is_empty() {
                String::new()
            } else {
                format!("  ({note})")
            }
        );
        println!("{line}");
    }
}
