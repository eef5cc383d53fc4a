//! Integration tests of the SDK against a scripted local HTTP server that plays the
//! remote Holdfast API and records every request it receives.

mod calls;
mod fake;
mod retries;
