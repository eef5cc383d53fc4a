//! `journal.jsonl`: one JSON object a line for everything a drill did and
//! saw (processes, phases, every request, breaker changes, injections and
//! heals, what each fault affected, gates, invariants, the verdict), each with
//! its monotonic time since the drill began (`t_ms`) and the wall clock
//! (`wall`). The reports, the plot and the postmortem are all drawn from it,
//! so what they say can be checked line by line.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One line of the journal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// Milliseconds since the drill began, on the monotonic clock.
    pub t_ms: f64,
    pub wall: DateTime<Utc>,
    #[serde(flatten)]
    pub event: Event,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Baseline,
    Fault,
    Heal,
    Recovery,
}

impl Phase {
    pub const ALL: [Phase; 4] = [Phase::Baseline, Phase::Fault, Phase::Heal, Phase::Recovery];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Baseline => "baseline",
            Phase::Fault => "fault",
            Phase::Heal => "heal",
            Phase::Recovery => "recovery",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Edge {
    Start,
    End,
}

/// What the load sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Checkout,
    Read,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Checkout => "checkout",
            Op::Read => "read",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    /// The drill could not decide: a process would not start, it was
    /// interrupted, a fault had no effect, or an outcome stayed unknown.
    Undecided,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Undecided => "undecided",
        }
    }

    /// 0 pass, 1 breach, 2 undecided.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Pass => 0,
            Verdict::Fail => 1,
            Verdict::Undecided => 2,
        }
    }
}

/// What a gate is for, which decides what its failure means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateKind {
    /// A service level: failing it is a breach.
    Slo,
    /// Proof that a fault took effect: failing it leaves the drill undecided.
    Effect,
    /// A stop condition that ended the fault early: a breach.
    Stop,
    /// The steady state before the fault: failing it (an overloaded machine,
    /// a service already unwell) leaves the drill undecided.
    SteadyState,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateResult {
    pub name: String,
    pub kind: GateKind,
    pub metric: String,
    pub window: String,
    /// The rule in words, e.g. `<= 1.5 x baseline (4.1) + 10 = 16.2`.
    pub rule: String,
    /// The limit the observed value was held to.
    pub threshold: Option<f64>,
    /// `None` when the window had nothing to measure.
    pub observed: Option<f64>,
    pub ok: bool,
    #[serde(default)]
    pub protects: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvariantStatus {
    Holds,
    Broken,
    /// Not settled: an outcome stayed unknown (a payment still processing).
    Indeterminate,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvariantResult {
    pub name: String,
    pub status: InvariantStatus,
    /// What was counted, in one line.
    pub observed: String,
    pub ok: bool,
    /// A few examples of what broke it.
    #[serde(default)]
    pub samples: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Start {
        scenario: String,
        summary: String,
        incident: String,
        backend: String,
        quick: bool,
        seed: u64,
        /// The configuration keys every node ran with, beyond the defaults.
        config: Vec<String>,
    },
    Process {
        name: String,
        role: String,
        /// `started`, `stopped`, `killed`, `refused`, …
        action: String,
        detail: String,
    },
    Phase {
        phase: Phase,
        edge: Edge,
    },
    Inject {
        fault: String,
        target: String,
        detail: String,
        time_limit_ms: u64,
    },
    Heal {
        fault: String,
        target: String,
        detail: String,
        ok: bool,
    },
    /// One request of the load, stamped when it was sent.
    Request {
        op: Op,
        /// 0: no answer (connection refused or reset, client timeout, or not
        /// sent because too many were in flight).
        status: u16,
        ms: f64,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        retry_after: bool,
        node: usize,
    },
    Breaker {
        node: String,
        dependency: String,
        state: String,
    },
    /// What a fault affected, from the proxy's record or the stand-in's counters.
    Effect {
        fault: String,
        target: String,
        /// Connections, deliveries or calls it reached.
        affected: u64,
        detail: serde_json::Value,
    },
    Stop {
        reason: String,
    },
    /// A yes-or-no fact a fault established (a node refused to start, …),
    /// which gates read as `check.NAME`.
    Check {
        name: String,
        ok: bool,
        detail: String,
    },
    Settle {
        drained: bool,
        seconds: f64,
        pending: String,
    },
    Gate(GateResult),
    Invariant(InvariantResult),
    /// The service's own operational journal over the drill, for the postmortem.
    OpsJournal {
        node: String,
        entries: Vec<serde_json::Value>,
    },
    Verdict {
        verdict: Verdict,
        reason: String,
    },
    Note {
        message: String,
    },
}

/// The journal being written. Clones share one file.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

struct Inner {
    started: Instant,
    // A std mutex: each critical section writes one line, with no `.await`.
    state: Mutex<State>,
}

struct State {
    file: BufWriter<File>,
    entries: Vec<Entry>,
    failed: bool,
}

impl Journal {
    /// Creates (or truncates) `path`; times count from now.
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                started: Instant::now(),
                state: Mutex::new(State {
                    file: BufWriter::new(file),
                    entries: Vec::new(),
                    failed: false,
                }),
            }),
        })
    }

    /// Milliseconds since the drill began.
    pub fn now_ms(&self) -> f64 {
        self.ms_at(Instant::now())
    }

    pub fn ms_at(&self, instant: Instant) -> f64 {
        instant.saturating_duration_since(self.inner.started).as_secs_f64() * 1000.0
    }

    pub fn record(&self, event: Event) {
        let entry = Entry {
            t_ms: self.now_ms(),
            wall: Utc::now(),
            event,
        };
        self.push(entry, true);
    }

    /// A request, stamped with when it was sent rather than when it ended.
    pub fn record_request(&self, sent: Instant, event: Event) {
        let elapsed = chrono::Duration::from_std(sent.elapsed()).unwrap_or_default();
        let entry = Entry {
            t_ms: self.ms_at(sent),
            wall: Utc::now() - elapsed,
            event,
        };
        // Requests are many: they reach the disk with the next other entry.
        self.push(entry, false);
    }

    fn push(&self, entry: Entry, flush: bool) {
        let mut state = self.inner.state.lock().unwrap_or_else(PoisonError::into_inner);
        let written = serde_json::to_writer(&mut state.file, &entry)
            .map_err(std::io::Error::from)
            .and_then(|()| state.file.write_all(b"\n"))
            .and_then(|()| if flush { state.file.flush() } else { Ok(()) });
        if let Err(error) = written
            && !state.failed
        {
            // Keep going: the entries in memory still make the reports.
            state.failed = true;
            tracing::warn!(%error, "cannot write the drill journal");
        }
        state.entries.push(entry);
    }

    /// Everything recorded so far.
    pub fn entries(&self) -> Vec<Entry> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entries
            .clone()
    }

    pub fn flush(&self) {
        let mut state = self.inner.state.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = state.file.flush();
    }

    /// Reads a journal file back.
    pub fn read(path: &Path) -> anyhow::Result<Vec<Entry>> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut entries = Vec::new();
        for (number, line) in BufReader::new(file).lines().enumerate() {
            let line = line.with_context(|| format!("reading {}", path.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            let entry = serde_json::from_str(&line)
                .with_context(|| format!("{} line {}: not a journal entry", path.display(), number + 1))?;
            entries.push(entry);
        }
        Ok(entries)
    }
}
