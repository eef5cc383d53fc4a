//! Webhook signatures, in one place for everyone who signs or checks them:
//! the service (verifying its payment provider's Stripe-Signature, signing
//! partner deliveries), the sandbox (signing as a provider, verifying as a
//! partner) and the drills. It depends on no other Holdfast crate.
//!
//! - [`stripe`]: `Stripe-Signature: t=…,v1=…` (HMAC-SHA256 of `"{t}.{body}"`
//!   with the shared secret), with a timestamp tolerance against replays.
//! - [`standard_webhooks`]: the Standard Webhooks headers `webhook-id`,
//!   `webhook-timestamp` and `webhook-signature`, keyed with the decoded part
//!   of a `whsec_…` secret of 24 to 64 bytes, the one rule for partner secrets.

pub mod standard_webhooks;
pub mod stripe;

pub use standard_webhooks::{SecretError, SignedHeaders, VerifyError, WebhookHeaders, WebhookSecret};
pub use stripe::{SignatureError, stripe_signature_header, verify_stripe_signature};
