//! Toxics: the faults a proxy applies to the bytes it forwards, with Toxiproxy's
//! names, defaults and JSON shape so that anyone who has driven Toxiproxy can drive
//! this one.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::ProxyError;

/// Which direction of a connection a toxic acts on, named as in Toxiproxy:
/// `upstream` is client → upstream, `downstream` is upstream → client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Upstream,
    /// Toxiproxy's default: most faults worth drilling are in the answer (a slow or
    /// missing response), not in the request.
    #[default]
    Downstream,
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stream::Upstream => "upstream",
            Stream::Downstream => "downstream",
        })
    }
}

/// What a toxic does. Durations are milliseconds, rates KB/s (1 KB = 1024 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToxicKind {
    /// Delays each chunk by `latency_ms` ± up to `jitter_ms`, measured from when the
    /// proxy read it, so a long transfer is delayed once rather than once per chunk.
    Latency { latency_ms: u64, jitter_ms: u64 },
    /// Drops every byte in its direction: the peer hears nothing. After `timeout_ms`
    /// the connection is closed; `0` holds it open until the toxic is removed. This is
    /// "accepts connections and never answers".
    Timeout { timeout_ms: u64 },
    /// Resets the connection (RST, via `SO_LINGER` 0) to the peer this direction writes
    /// to, `timeout_ms` after the toxic reached the connection.
    ResetPeer { timeout_ms: u64 },
    /// Limits the direction to `rate_kb` KB/s.
    Bandwidth { rate_kb: u64 },
}

impl ToxicKind {
    /// The Toxiproxy `type` string.
    pub fn type_name(&self) -> &'static str {
        match self {
            ToxicKind::Latency { .. } => "latency",
            ToxicKind::Timeout { .. } => "timeout",
            ToxicKind::ResetPeer { .. } => "reset_peer",
            ToxicKind::Bandwidth { .. } => "bandwidth",
        }
    }

    /// The Toxiproxy `attributes` object.
    fn attributes(&self) -> Value {
        match *self {
            ToxicKind::Latency { latency_ms, jitter_ms } => json!({ "latency": latency_ms, "jitter": jitter_ms }),
            ToxicKind::Timeout { timeout_ms } | ToxicKind::ResetPeer { timeout_ms } => {
                json!({ "timeout": timeout_ms })
            }
            ToxicKind::Bandwidth { rate_kb } => json!({ "rate": rate_kb }),
        }
    }

    fn from_attributes(type_name: &str, attributes: Value) -> Result<Self, ProxyError> {
        fn parse<T: for<'de> Deserialize<'de>>(type_name: &str, attributes: Value) -> Result<T, ProxyError> {
            serde_json::from_value(attributes)
                .map_err(|e| ProxyError::InvalidToxic(format!("attributes of a {type_name} toxic: {e}")))
        }
        // Missing attributes are 0, as in Toxiproxy; unknown ones are refused, because
        // a misspelt `latency_ms` silently meaning "no latency" would void a drill.
        #[derive(Deserialize, Default)]
        #[serde(default, deny_unknown_fields)]
        struct LatencyAttrs {
            latency: u64,
            jitter: u64,
        }
        #[derive(Deserialize, Default)]
        #[serde(default, deny_unknown_fields)]
        struct TimeoutAttrs {
            timeout: u64,
        }
        #[derive(Deserialize, Default)]
        #[serde(default, deny_unknown_fields)]
        struct RateAttrs {
            rate: u64,
        }
        let kind = match type_name {
            "latency" => {
                let a: LatencyAttrs = parse(type_name, attributes)?;
                ToxicKind::Latency {
                    latency_ms: a.latency,
                    jitter_ms: a.jitter,
                }
            }
            "timeout" => ToxicKind::Timeout {
                timeout_ms: parse::<TimeoutAttrs>(type_name, attributes)?.timeout,
            },
            "reset_peer" => ToxicKind::ResetPeer {
                timeout_ms: parse::<TimeoutAttrs>(type_name, attributes)?.timeout,
            },
            "bandwidth" => ToxicKind::Bandwidth {
                rate_kb: parse::<RateAttrs>(type_name, attributes)?.rate,
            },
            other => {
                return Err(ProxyError::InvalidToxic(format!(
                    "unknown toxic type `{other}` (expected latency, timeout, reset_peer or bandwidth)"
                )));
            }
        };
        Ok(kind)
    }
}

/// A named fault on one direction of every connection of a proxy.
///
/// Built with [`Toxic::latency`], [`Toxic::timeout`], [`Toxic::reset_peer`] or
/// [`Toxic::bandwidth`]; the name defaults to Toxiproxy's `<type>_<stream>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Toxic {
    pub name: String,
    pub kind: ToxicKind,
    pub stream: Stream,
    /// The probability, decided once per connection, that the toxic applies to it.
    pub toxicity: f64,
}

impl Toxic {
    /// A toxic on the downstream direction, applying to every connection.
    pub fn new(kind: ToxicKind) -> Self {
        let stream = Stream::Downstream;
        Self {
            name: default_name(&kind, stream),
            kind,
            stream,
            toxicity: 1.0,
        }
    }

    pub fn latency(latency_ms: u64, jitter_ms: u64) -> Self {
        Self::new(ToxicKind::Latency { latency_ms, jitter_ms })
    }

    /// `timeout(0)`: the dependency hangs until the toxic is removed.
    pub fn timeout(timeout_ms: u64) -> Self {
        Self::new(ToxicKind::Timeout { timeout_ms })
    }

    pub fn reset_peer(timeout_ms: u64) -> Self {
        Self::new(ToxicKind::ResetPeer { timeout_ms })
    }

    pub fn bandwidth(rate_kb: u64) -> Self {
        Self::new(ToxicKind::Bandwidth { rate_kb })
    }

    /// Moves the toxic to `stream`, renaming it too if it still has its default name.
    pub fn on(mut self, stream: Stream) -> Self {
        if self.name == default_name(&self.kind, self.stream) {
            self.name = default_name(&self.kind, stream);
        }
        self.stream = stream;
        self
    }

    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    pub fn with_toxicity(mut self, toxicity: f64) -> Self {
        self.toxicity = toxicity;
        self
    }

    /// Refuses what Toxiproxy would take but cannot mean anything useful.
    pub(super) fn validate(&self) -> Result<(), ProxyError> {
        if self.name.is_empty() {
            return Err(ProxyError::InvalidToxic("a toxic needs a non-empty name".into()));
        }
        if !(0.0..=1.0).contains(&self.toxicity) {
            return Err(ProxyError::InvalidToxic(format!(
                "toxicity must be between 0 and 1, not {}",
                self.toxicity
            )));
        }
        if self.kind == (ToxicKind::Bandwidth { rate_kb: 0 }) {
            // Toxiproxy reads 0 as "unlimited", which is never what a drill meant.
            return Err(ProxyError::InvalidToxic(
                "a bandwidth toxic needs a rate above 0 KB/s".into(),
            ));
        }
        Ok(())
    }

    /// The Toxiproxy JSON form: `{name, type, stream, toxicity, attributes}`.
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "type": self.kind.type_name(),
            "stream": self.stream,
            "toxicity": self.toxicity,
            "attributes": self.kind.attributes(),
        })
    }

    /// Parses a Toxiproxy toxic creation body. `name` defaults to `<type>_<stream>`,
    /// `stream` to downstream and `toxicity` to 1.
    pub fn from_json(body: Value) -> Result<Self, ProxyError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct ToxicIn {
            name: Option<String>,
            #[serde(rename = "type")]
            type_name: String,
            #[serde(default)]
            stream: Stream,
            toxicity: Option<f64>,
            #[serde(default)]
            attributes: Option<Map<String, Value>>,
        }
        let input: ToxicIn = serde_json::from_value(body).map_err(|e| ProxyError::InvalidToxic(e.to_string()))?;
        let kind = ToxicKind::from_attributes(&input.type_name, Value::Object(input.attributes.unwrap_or_default()))?;
        let mut toxic = Toxic::new(kind).on(input.stream);
        if let Some(name) = input.name {
            toxic.name = name;
        }
        toxic.toxicity = input.toxicity.unwrap_or(1.0);
        toxic.validate()?;
        Ok(toxic)
    }

    /// Applies a Toxiproxy toxic update body: `attributes` are merged into the current
    /// ones and `toxicity` replaced; the name, type and stream cannot change.
    pub fn updated_from_json(&self, body: Value) -> Result<Self, ProxyError> {
        let Value::Object(mut fields) = body else {
            return Err(ProxyError::InvalidToxic("a toxic update must be a JSON object".into()));
        };
        let mut attributes = match self.kind.attributes() {
            Value::Object(current) => current,
            _ => Map::new(),
        };
        match fields.remove("attributes") {
            Some(Value::Object(changes)) => attributes.extend(changes),
            Some(Value::Null) | None => {}
            Some(_) => return Err(ProxyError::InvalidToxic("`attributes` must be an object".into())),
        }
        let mut unchanged = |key: &str, current: Value| match fields.remove(key) {
            Some(given) if given != current => Err(ProxyError::InvalidToxic(format!(
                "a toxic's `{key}` cannot change; delete it and add a new one"
            ))),
            _ => Ok(()),
        };
        unchanged("name", json!(self.name))?;
        unchanged("type", json!(self.kind.type_name()))?;
        unchanged("stream", json!(self.stream))?;
        let toxicity = match fields.remove("toxicity") {
            Some(value) => value
                .as_f64()
                .ok_or_else(|| ProxyError::InvalidToxic("`toxicity` must be a number".into()))?,
            None => self.toxicity,
        };
        if let Some(key) = fields.keys().next() {
            return Err(ProxyError::InvalidToxic(format!(
                "unknown field `{key}` in a toxic update"
            )));
        }
        let toxic = Toxic {
            name: self.name.clone(),
            kind: ToxicKind::from_attributes(self.kind.type_name(), Value::Object(attributes))?,
            stream: self.stream,
            toxicity,
        };
        toxic.validate()?;
        Ok(toxic)
    }
}

fn default_name(kind: &ToxicKind, stream: Stream) -> String {
    format!("{}_{stream}", kind.type_name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_toxiproxy_bodies_with_its_defaults() {
        let toxic = Toxic::from_json(json!({"type": "latency", "attributes": {"latency": 250, "jitter": 10}}));
        assert_eq!(toxic.ok(), Some(Toxic::latency(250, 10)));
        let upstream = Toxic::from_json(json!({"type": "timeout", "stream": "upstream", "toxicity": 0.5}));
        let expected = Toxic::timeout(0).on(Stream::Upstream).with_toxicity(0.5);
        assert_eq!(upstream.ok(), Some(expected.clone()));
        assert_eq!(expected.name, "timeout_upstream");
    }

    #[test]
    fn refuses_what_would_void_a_drill() {
        for body in [
            json!({"type": "latency", "attributes": {"latency_ms": 100}}),
            json!({"type": "slow_close"}),
            json!({"type": "latency", "toxicity": 1.5}),
            json!({"type": "bandwidth", "attributes": {"rate": 0}}),
            json!({"type": "latency", "stream": "sideways"}),
            json!({"type": "latency", "attributes": {"latency": -5}}),
            json!({"type": "latency", "name": ""}),
        ] {
            assert!(
                matches!(Toxic::from_json(body.clone()), Err(ProxyError::InvalidToxic(_))),
                "{body}"
            );
        }
    }

    #[test]
    fn an_update_merges_attributes_and_keeps_identity() {
        let toxic = Toxic::latency(100, 20).named("slow");
        let updated = toxic.updated_from_json(json!({"attributes": {"latency": 300}, "toxicity": 0.25}));
        assert_eq!(
            updated.ok(),
            Some(Toxic::latency(300, 20).named("slow").with_toxicity(0.25))
        );
        assert!(toxic.updated_from_json(json!({"type": "timeout"})).is_err());
        assert!(toxic.updated_from_json(json!({"name": "fast"})).is_err());
        assert!(toxic.updated_from_json(json!({"name": "slow"})).is_ok());
    }
}
