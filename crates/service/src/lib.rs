//! The Holdfast service as a library: `Application::build(config)` connects
//! and migrates, `run(listener, shutdown)` serves. `main.rs` only parses
//! flags; tests start the real thing on `127.0.0.1:0`.

pub mod config;
pub mod deadline;
pub mod http;
pub mod journal;
pub mod local;
pub mod pipeline;
pub mod preflight;
pub mod providers;
pub mod startup;
pub mod telemetry;
pub mod workers;

pub use config::{Config, ConfigError, Sources};
pub use startup::{Application, Role, StartupError};
