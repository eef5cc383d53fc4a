//! The operational event journal: entries written in one call come back
//! oldest first, filtered by time range and kind, limited, with their
//! detail intact.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use holdfast_store::{JournalEntry, JournalQuery, NewJournalEntry};
use serde_json::json;

use crate::both_backends;
use crate::helpers::{open, secs, t0};

fn entry(at: DateTime<Utc>, kind: &str, subject: &str) -> NewJournalEntry {
    NewJournalEntry {
        at,
        kind: kind.into(),
        subject: subject.into(),
        summary: format!("{subject} {kind} at {at}"),
        detail: json!({ "subject": subject, "nested": { "calls": 21 } }),
        node: "test-host:42".into(),
    }
}

fn all() -> JournalQuery {
    JournalQuery {
        since: None,
        until: None,
        kind: None,
        limit: 100,
    }
}

fn subjects(entries: &[JournalEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.subject.as_str()).collect()
}

both_backends!(entries_come_back_oldest_first_and_filtered, |backend| async move {
    let store = open(backend).await;
    let journal = store.store.journal();
    let now = t0();
    // Written out of time order, as a retried write after an outage would be.
    journal
        .record(&[entry(now, "breaker", "c"), entry(now + secs(5), "breaker", "d")])
        .await
        .expect("record");
    journal
        .record(&[
            entry(now - secs(10), "breaker", "a"),
            entry(now - secs(5), "journal", "b"),
        ])
        .await
        .expect("record");

    let listed = journal.list(&all()).await.expect("list");
    assert_eq!(subjects(&listed), ["a", "b", "c", "d"]);
    let first = &listed[0];
    assert_eq!(first.at, now - secs(10));
    assert_eq!(first.kind, "breaker");
    assert_eq!(first.summary, format!("a breaker at {}", now - secs(10)));
    assert_eq!(first.detail, json!({ "subject": "a", "nested": { "calls": 21 } }));
    assert_eq!(first.node, "test-host:42");
    assert!(listed[2].seq < listed[0].seq, "seq is write order, not time order");

    let window = JournalQuery {
        since: Some(now - secs(5)),
        until: Some(now + secs(5)),
        ..all()
    };
    assert_eq!(
        subjects(&journal.list(&window).await.expect("list")),
        ["b", "c"],
        "since is inclusive, until exclusive"
    );
    let since = JournalQuery {
        since: Some(now),
        ..all()
    };
    assert_eq!(subjects(&journal.list(&since).await.expect("list")), ["c", "d"]);
    let until = JournalQuery {
        until: Some(now),
        ..all()
    };
    assert_eq!(subjects(&journal.list(&until).await.expect("list")), ["a", "b"]);
    let breakers = JournalQuery {
        kind: Some("breaker".into()),
        ..all()
    };
    assert_eq!(subjects(&journal.list(&breakers).await.expect("list")), ["a", "c", "d"]);
    let limited = JournalQuery {
        kind: Some("breaker".into()),
        limit: 2,
        ..all()
    };
    assert_eq!(
        subjects(&journal.list(&limited).await.expect("list")),
        ["a", "c"],
        "the limit keeps the oldest"
    );
    let none = JournalQuery {
        kind: Some("shedding".into()),
        ..all()
    };
    assert!(journal.list(&none).await.expect("list").is_empty());
    store.drop_database().await;
});

both_backends!(times_within_a_second_order_and_filter_exactly, |backend| async move {
    let store = open(backend).await;
    let journal = store.store.journal();
    // A whole second and fractions of it: SQLite keeps these as text of
    // different lengths, which must still compare as times.
    let second = t0().duration_trunc(TimeDelta::seconds(1)).expect("truncate");
    let millis = TimeDelta::milliseconds;
    journal
        .record(&[
            entry(second + millis(1_000), "breaker", "d"),
            entry(second + millis(500), "breaker", "c"),
            entry(second, "breaker", "a"),
            entry(second + millis(1), "breaker", "b"),
        ])
        .await
        .expect("record");
    assert_eq!(
        subjects(&journal.list(&all()).await.expect("list")),
        ["a", "b", "c", "d"]
    );
    let after_whole_second = JournalQuery {
        since: Some(second + millis(1)),
        until: Some(second + millis(1_000)),
        ..all()
    };
    assert_eq!(
        subjects(&journal.list(&after_whole_second).await.expect("list")),
        ["b", "c"]
    );
    journal.record(&[]).await.expect("an empty batch writes nothing");
    assert_eq!(journal.list(&all()).await.expect("list").len(), 4);
    store.drop_database().await;
});
