//! Typed client for the Holdfast API.
//!
//! The client generates an `Idempotency-Key` for every order it creates and reuses it
//! across its own retries, so a timeout never turns into a second order. Retries use
//! exponential backoff with full jitter, honour `Retry-After`, and happen only for
//! idempotent calls: `GET`s, and `POST`s that carry an idempotency key. The wire types
//! are written here, independently of the server's, and meet the server on the wire.
//!
//! ```no_run
//! # async fn demo() -> Result<(), holdfast_client::Error> {
//! use holdfast_client::Client;
//! let client = Client::new("http://127.0.0.1:8080", "hf_storefront_key");
//! let inventory = client.get_inventory("MUG-1").await?;
//! println!("{} available", inventory.available);
//! # Ok(()) }
//! ```

mod client;
mod endpoints;
mod error;
mod retry;
mod types;

pub use client::{Client, ClientBuilder};
pub use error::{Error, FieldError, Problem};
pub use retry::RetryPolicy;
pub use types::*;
