//! The journal writer: a background task that turns the breakers'
//! transitions into `breaker` entries of the operational event journal
//! (`Store::journal()`), from which `holdfast postmortem` drafts a timeline.
//!
//! It must never slow a request. The breakers publish on a broadcast channel,
//! which never blocks the sender; this task holds what it received in a
//! bounded buffer and writes it in the background, retrying with backoff
//! while the database is down. When the buffer is full, new entries are
//! dropped, counted, logged and noted in the journal once writes succeed
//! again; a receiver that falls behind the channel notes how many
//! transitions it missed. On shutdown it writes what it holds, within
//! [`FLUSH_WITHIN`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use holdfast_resilience::{Registry, Transition};
use holdfast_store::{NewJournalEntry, SharedStore, StoreError};
use serde_json::json;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Entries held in memory while the database is unreachable. Breakers
/// change state a handful of times per incident, so this is hours of a
/// flapping dependency.
pub const CAPACITY: usize = 1_000;
/// Most entries written in one transaction.
const BATCH: usize = 100;
const FIRST_RETRY: Duration = Duration::from_millis(250);
const LAST_RETRY: Duration = Duration::from_secs(30);
/// How long shutdown waits for the last writes; `Application::run` gives
/// each background task 5 s.
pub const FLUSH_WITHIN: Duration = Duration::from_secs(3);

/// What the journal calls this process: `hostname:pid` where `HOSTNAME` is
/// set (containers, most shells), else the address it listens on.
pub fn node_name(listening: SocketAddr) -> String {
    match std::env::var("HOSTNAME") {
        Ok(host) if !host.is_empty() => format!("{host}:{}", std::process::id()),
        _ => listening.to_string(),
    }
}

/// Subscribes to `dependencies`' transitions now, so none published after
/// this call is missed, and writes them until `stop`.
pub fn spawn(store: SharedStore, dependencies: &Registry, node: String, stop: watch::Receiver<bool>) -> JoinHandle<()> {
    let writer = Writer {
        store,
        pending: Pending::new(CAPACITY, node.clone()),
        node,
    };
    tokio::spawn(writer.run(dependencies.subscribe(), stop))
}

struct Writer {
    store: SharedStore,
    node: String,
    pending: Pending,
}

/// A batch being written in its own task, so receiving goes on meanwhile.
type InFlight = JoinHandle<(Vec<NewJournalEntry>, Result<(), StoreError>)>;

impl Writer {
    #[allow(
        clippy::expect_used,
        reason = "the select! branch that polls `in_flight` runs only when it is Some"
    )]
    async fn run(mut self, mut transitions: Receiver<Transition>, mut stop: watch::Receiver<bool>) {
        let mut in_flight: Option<InFlight> = None;
        let mut failures = 0u32;
        let mut retry_at = Instant::now();
        loop {
            if in_flight.is_none() && !self.pending.is_empty() && Instant::now() >= retry_at {
                let batch = self.pending.take(BATCH);
                in_flight = Some(self.write(batch));
            }
            tokio::select! {
                _ = stop.wait_for(|stopped| *stopped) => break,
                received = transitions.recv() => match received {
                    Ok(transition) => self.pending.push(breaker_entry(&transition, &self.node)),
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "the journal fell behind the breakers' transitions");
                        metrics::counter!("holdfast_journal_entries_total", "outcome" => "missed").increment(missed);
                        self.pending.push(missed_entry(missed, Utc::now(), &self.node));
                    }
                    Err(RecvError::Closed) => break,
                },
                joined = async { in_flight.as_mut().expect("guarded by the condition").await },
                    if in_flight.is_some() =>
                {
                    in_flight = None;
                    if self.settle(joined) {
                        failures = 0;
                    } else {
                        failures = failures.saturating_add(1);
                        retry_at = Instant::now() + backoff(failures);
                    }
                }
                _ = tokio::time::sleep_until(retry_at),
                    if in_flight.is_none() && !self.pending.is_empty() && Instant::now() < retry_at => {}
            }
        }
        self.flush(transitions, in_flight).await;
    }

    fn write(&self, batch: Vec<NewJournalEntry>) -> InFlight {
        let store = self.store.clone();
        tokio::spawn(async move {
            let outcome = store.journal().record(&batch).await;
            (batch, outcome)
        })
    }

    /// Takes a finished write's outcome: a failed batch goes back to the
    /// front of the buffer, so entries are written in the order received.
    fn settle(
        &mut self,
        joined: Result<(Vec<NewJournalEntry>, Result<(), StoreError>), tokio::task::JoinError>,
    ) -> bool {
        self.pending.in_flight = 0;
        match joined {
            Ok((batch, Ok(()))) => {
                metrics::counter!("holdfast_journal_entries_total", "outcome" => "written")
                    .increment(batch.len() as u64);
                true
            }
            Ok((batch, Err(error))) => {
                tracing::warn!(
                    entries = batch.len() + self.pending.len(),
                    error = %error,
                    "journal write failed; holding the entries and retrying"
                );
                self.pending.put_back(batch);
                false
            }
            Err(error) => {
                tracing::error!(error = %error, "journal write task failed");
                false
            }
        }
    }

    /// Shutdown: waits for the write in flight, takes what the channel
    /// still holds and writes everything once, all within [`FLUSH_WITHIN`].
    async fn flush(mut self, mut transitions: Receiver<Transition>, in_flight: Option<InFlight>) {
        let deadline = Instant::now() + FLUSH_WITHIN;
        if let Some(write) = in_flight {
            match tokio::time::timeout_at(deadline, write).await {
                Ok(joined) => {
                    self.settle(joined);
                }
                Err(_) => tracing::warn!("a journal write outlived shutdown; its entries may be lost"),
            }
        }
        loop {
            match transitions.try_recv() {
                Ok(transition) => self.pending.push(breaker_entry(&transition, &self.node)),
                Err(TryRecvError::Lagged(missed)) => {
                    self.pending.push(missed_entry(missed, Utc::now(), &self.node));
                }
                Err(_) => break,
            }
        }
        while !self.pending.is_empty() {
            let batch = self.pending.take(BATCH);
            let count = batch.len();
            self.pending.in_flight = 0;
            match tokio::time::timeout_at(deadline, self.store.journal().record(&batch)).await {
                Ok(Ok(())) => {
                    metrics::counter!("holdfast_journal_entries_total", "outcome" => "written").increment(count as u64);
                }
                failed => {
                    let lost = count + self.pending.len();
                    let why = match failed {
                        Ok(Err(error)) => error.to_string(),
                        _ => format!("not written within {} ms", FLUSH_WITHIN.as_millis()),
                    };
                    tracing::error!(lost, error = %why, "journal entries lost at shutdown");
                    return;
                }
            }
        }
    }
}

/// The entries waiting to be written and being written, at most `capacity`
/// of them.
struct Pending {
    entries: VecDeque<NewJournalEntry>,
    /// Taken for the write in flight; they count against the capacity
    /// until it succeeds or they are put back.
    in_flight: usize,
    capacity: usize,
    node: String,
    /// Dropped since the last notice, with the first drop's time.
    dropped: u64,
    first_dropped_at: Option<DateTime<Utc>>,
}

impl Pending {
    fn new(capacity: usize, node: String) -> Self {
        Self {
            entries: VecDeque::new(),
            in_flight: 0,
            capacity,
            node,
            dropped: 0,
            first_dropped_at: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.dropped == 0
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    /// Keeps the oldest entries when full: the start of an incident is what
    /// a timeline needs most, and the current state is at
    /// `/api/v1/ops/breakers` anyway.
    fn push(&mut self, entry: NewJournalEntry) {
        if self.entries.len() + self.in_flight < self.capacity {
            self.entries.push_back(entry);
            return;
        }
        if self.dropped == 0 {
            tracing::warn!(
                capacity = self.capacity,
                "journal buffer full; dropping new entries until the database takes them"
            );
        }
        tracing::debug!(kind = %entry.kind, subject = %entry.subject, summary = %entry.summary, "journal entry dropped");
        metrics::counter!("holdfast_journal_entries_total", "outcome" => "dropped").increment(1);
        self.dropped += 1;
        self.first_dropped_at.get_or_insert(entry.at);
    }

    /// Up to `limit` of the oldest entries; a notice of what was dropped
    /// goes at the end of the batch that makes room (it is the one entry
    /// allowed past the capacity, so the gap is never silent).
    fn take(&mut self, limit: usize) -> Vec<NewJournalEntry> {
        let count = limit.min(self.entries.len());
        let mut batch: Vec<NewJournalEntry> = self.entries.drain(..count).collect();
        if self.dropped > 0 && batch.len() < limit {
            let since = self.first_dropped_at.take().unwrap_or_else(Utc::now);
            tracing::warn!(
                dropped = self.dropped,
                "journal entries were dropped while the buffer was full"
            );
            batch.push(dropped_entry(self.dropped, since, Utc::now(), &self.node));
            self.dropped = 0;
        }
        self.in_flight = batch.len();
        batch
    }

    /// Returns a batch that failed to the front, in its order.
    fn put_back(&mut self, batch: Vec<NewJournalEntry>) {
        self.in_flight = 0;
        for entry in batch.into_iter().rev() {
            self.entries.push_front(entry);
        }
    }
}

fn backoff(failures: u32) -> Duration {
    FIRST_RETRY
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1)))
        .min(LAST_RETRY)
}

fn calls(n: u64) -> String {
    if n == 1 {
        "1 call".to_owned()
    } else {
        format!("{n} calls")
    }
}

/// `payments breaker closed → open: failure rate 0.62 over 21 calls`.
pub fn breaker_entry(transition: &Transition, node: &str) -> NewJournalEntry {
    let (from, to) = (transition.from.as_str(), transition.to.as_str());
    NewJournalEntry {
        at: DateTime::<Utc>::from(transition.at),
        kind: "breaker".into(),
        subject: transition.dependency.clone(),
        summary: format!(
            "{} breaker {from} → {to}: failure rate {:.2} over {}",
            transition.dependency,
            transition.failure_rate,
            calls(transition.calls_in_window)
        ),
        detail: json!({
            "dependency": transition.dependency,
            "from": from,
            "to": to,
            "failure_rate": transition.failure_rate,
            "calls_in_window": transition.calls_in_window,
        }),
        node: node.to_owned(),
    }
}

fn missed_entry(missed: u64, at: DateTime<Utc>, node: &str) -> NewJournalEntry {
    NewJournalEntry {
        at,
        kind: "journal".into(),
        subject: "breaker".into(),
        summary: format!("missed {missed} breaker transitions: the journal fell behind"),
        detail: json!({ "missed": missed }),
        node: node.to_owned(),
    }
}

fn dropped_entry(dropped: u64, since: DateTime<Utc>, at: DateTime<Utc>, node: &str) -> NewJournalEntry {
    NewJournalEntry {
        at,
        kind: "journal".into(),
        subject: "buffer".into(),
        summary: format!(
            "dropped {dropped} journal entries from {since}: the database was unreachable and the buffer full"
        ),
        detail: json!({ "dropped": dropped, "first_dropped_at": since }),
        node: node.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use holdfast_resilience::BreakerState;

    use super::*;

    fn transition(from: BreakerState, to: BreakerState, calls: u64) -> Transition {
        Transition {
            dependency: "payments".into(),
            from,
            to,
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            failure_rate: 0.619,
            calls_in_window: calls,
        }
    }

    #[test]
    fn a_transition_reads_as_one_line() {
        let entry = breaker_entry(&transition(BreakerState::Closed, BreakerState::Open, 21), "host:1");
        assert_eq!(
            entry.summary,
            "payments breaker closed → open: failure rate 0.62 over 21 calls"
        );
        assert_eq!(entry.kind, "breaker");
        assert_eq!(entry.subject, "payments");
        assert_eq!(entry.detail["to"], "open");
        assert_eq!(entry.at.timestamp(), 1_700_000_000);
        let one = breaker_entry(&transition(BreakerState::HalfOpen, BreakerState::Closed, 1), "host:1");
        assert!(one.summary.ends_with("over 1 call"), "{}", one.summary);
    }

    #[test]
    fn a_full_buffer_keeps_the_oldest_and_notes_the_drop() {
        let mut pending = Pending::new(3, "host:1".into());
        for n in 0..5 {
            pending.push(missed_entry(n, Utc::now(), "host:1"));
        }
        assert_eq!(pending.len(), 3);
        let first = pending.take(2);
        let missed: Vec<_> = first.iter().map(|e| e.detail["missed"].as_u64()).collect();
        assert_eq!(
            missed,
            [Some(0), Some(1)],
            "the oldest first, no notice while the batch is full"
        );
        let second = pending.take(2);
        assert_eq!(second.len(), 2);
        assert_eq!(second[0].detail["missed"], 2);
        assert_eq!(second[1].subject, "buffer");
        assert_eq!(second[1].detail["dropped"], 2);
        assert!(pending.is_empty());
    }

    #[test]
    fn a_failed_batch_goes_back_in_order() {
        let mut pending = Pending::new(10, "host:1".into());
        for n in 0..4 {
            pending.push(missed_entry(n, Utc::now(), "host:1"));
        }
        let batch = pending.take(2);
        pending.put_back(batch);
        let again: Vec<_> = pending.take(10).iter().map(|e| e.detail["missed"].as_u64()).collect();
        assert_eq!(again, [Some(0), Some(1), Some(2), Some(3)]);
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        assert_eq!(backoff(1), Duration::from_millis(250));
        assert_eq!(backoff(2), Duration::from_millis(500));
        assert_eq!(backoff(20), LAST_RETRY);
    }
}
