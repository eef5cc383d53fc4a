//! The shape of the public API: what callers and the service rely on.

use std::error::Error as _;
use std::time::Duration;

use holdfast_resilience::{CallError, CallOptions, Policy, Registry};

use crate::support::{Fault, config, policy};

#[test]
fn policies_and_their_calls_can_cross_threads() {
    fn assert_send<T: Send>(_: &T) {}
    fn assert_shared<T: Send + Sync>() {}
    assert_shared::<Policy>();
    assert_shared::<Registry>();
    let policy = policy(config());
    let call = policy.call(CallOptions::idempotent(), || async { Ok::<_, Fault>(()) });
    assert_send(&call);
}

#[test]
fn call_errors_explain_themselves() {
    let open: CallError<Fault> = CallError::BreakerOpen {
        retry_after: Duration::from_millis(1500),
    };
    assert_eq!(
        open.to_string(),
        "dependency circuit breaker is open (retry after 1500 ms)"
    );
    assert_eq!(
        (open.reason(), open.retry_after()),
        ("breaker_open", Some(Duration::from_millis(1500)))
    );
    assert!(open.is_unavailable());

    let full: CallError<Fault> = CallError::BulkheadFull;
    assert_eq!(
        (full.reason(), full.retry_after(), full.is_unavailable()),
        ("bulkhead", None, true)
    );
    assert_eq!(CallError::<Fault>::DeadlineExceeded.reason(), "deadline");

    let transient = CallError::Failed(Fault::Transient);
    assert!(
        transient.is_unavailable(),
        "a transient failure after retries is an outage"
    );
    assert_eq!(
        transient.source().map(ToString::to_string),
        Some("Transient".to_owned())
    );
    let definitive = CallError::Failed(Fault::Definitive);
    assert!(!definitive.is_unavailable(), "a definitive answer is not");
    assert_eq!(definitive.into_failure(), Some(Fault::Definitive));
}

#[test]
fn call_options_read_as_intended() {
    assert!(!CallOptions::default().idempotent);
    assert!(!CallOptions::non_idempotent().idempotent);
    let deadline = tokio::time::Instant::now();
    let options = CallOptions::idempotent().with_deadline(deadline);
    assert_eq!(
        options,
        CallOptions {
            deadline: Some(deadline),
            idempotent: true
        }
    );
}
