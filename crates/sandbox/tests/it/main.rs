//! Integration tests: the real sandboxes on 127.0.0.1:0, driven over HTTP, with a
//! recording webhook receiver standing in for Holdfast.

mod payments;
mod support;
mod warehouse;
mod webhooks;
