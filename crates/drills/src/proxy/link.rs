//! One proxied connection: two pipes (client → upstream and upstream → client), each
//! a reader feeding a writer through a small queue, with the writer applying the
//! toxics of its direction as they are at each chunk.
//!
//! The reader stamps each chunk with the time it arrived and the writer releases it
//! at stamp + latency, so a latency toxic delays a long transfer once instead of once
//! per chunk, as with Toxiproxy. The writer also wakes on every change to the toxic
//! set, so a timeout or reset reaches an idle keep-alive connection on time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};

use std::sync::Arc;

use super::{Counters, Effect, Stream, ToxicKind, ToxicSet};

/// Bytes read per chunk. Small enough that latency is applied with fine grain,
/// large enough that an unfaulted connection costs little.
const CHUNK_BYTES: usize = 16 * 1024;

/// Chunks a reader may run ahead of its writer: enough to keep a delayed stream
/// flowing (256 KB in flight), bounded so a slow writer pushes back on the sender.
const CHUNKS_IN_FLIGHT: usize = 16;

/// How a connection ended; `Reset` names the direction whose peer gets the RST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// Both sides closed their writing half.
    Eof,
    /// An error, or a timeout toxic's deadline.
    Close,
    Reset(Stream),
}

/// Forwards between `client` and `upstream` until both are done or a toxic ends it.
pub(super) async fn run(
    mut client: TcpStream,
    mut upstream: TcpStream,
    toxics: watch::Receiver<ToxicSet>,
    counters: &Counters,
) -> End {
    // One roll per connection decides which partial-toxicity toxics apply to it.
    let seed: u64 = rand::random();
    let end = {
        let (client_read, client_write) = client.split();
        let (upstream_read, upstream_write) = upstream.split();
        let to_upstream = Pipe {
            stream: Stream::Upstream,
            seed,
            toxics: toxics.clone(),
            bytes: &counters.bytes_upstream,
        }
        .run(client_read, upstream_write);
        let to_client = Pipe {
            stream: Stream::Downstream,
            seed,
            toxics,
            bytes: &counters.bytes_downstream,
        }
        .run(upstream_read, client_write);
        both_ways(to_upstream, to_client).await
    };
    // Borrowed halves do not close anything when dropped, so the socket is still whole
    // here and an abortive close sends RST rather than FIN then RST.
    let reset = match end {
        End::Reset(Stream::Downstream) => Some(&client),
        End::Reset(Stream::Upstream) => Some(&upstream),
        End::Eof | End::Close => None,
    };
    if let Some(socket) = reset {
        let _ = socket.set_zero_linger();
    }
    end
}

/// Waits for both directions to reach EOF, or for the first that ends otherwise.
async fn both_ways(to_upstream: impl Future<Output = End>, to_client: impl Future<Output = End>) -> End {
    tokio::pin!(to_upstream, to_client);
    let (mut upstream_open, mut client_open) = (true, true);
    while upstream_open || client_open {
        let end = tokio::select! {
            end = &mut to_upstream, if upstream_open => { upstream_open = false; end }
            end = &mut to_client, if client_open => { client_open = false; end }
        };
        if end != End::Eof {
            return end;
        }
    }
    End::Eof
}

struct Chunk {
    data: Vec<u8>,
    read_at: Instant,
}

struct Pipe<'a> {
    stream: Stream,
    seed: u64,
    toxics: watch::Receiver<ToxicSet>,
    bytes: &'a AtomicU64,
}

/// The toxics of one direction at one moment, folded into what the writer must do.
#[derive(Debug, Default)]
struct Plan {
    /// Drop the bytes (a timeout toxic).
    drop_data: bool,
    latency_ms: u64,
    jitter_ms: u64,
    rate_kb: Option<u64>,
    /// The earliest timeout or reset, and how it ends the connection.
    deadline: Option<(Instant, End)>,
    /// The toxics that act on the bytes (drop, delay, throttle), to count them.
    acting: Vec<Arc<Effect>>,
}

impl Plan {
    fn end_at(&mut self, at: Instant, end: End) {
        if self.deadline.is_none_or(|(earliest, _)| at < earliest) {
            self.deadline = Some((at, end));
        }
    }

    fn delay(&self) -> Duration {
        let jitter = if self.jitter_ms == 0 {
            0
        } else {
            let jitter = i64::try_from(self.jitter_ms).unwrap_or(i64::MAX);
            rand::thread_rng().gen_range(-jitter..=jitter)
        };
        let ms = i64::try_from(self.latency_ms)
            .unwrap_or(i64::MAX)
            .saturating_add(jitter);
        Duration::from_millis(u64::try_from(ms).unwrap_or(0))
    }
}

/// A toxic's milliseconds as a duration, capped at 30 days: the API takes any `u64`,
/// and an absurd value should mean "forever", not overflow an `Instant`.
fn millis(ms: u64) -> Duration {
    const CAP_MS: u64 = 30 * 24 * 3600 * 1000;
    Duration::from_millis(ms.min(CAP_MS))
}

/// When each toxic first reached this pipe: timeouts count from then, as they do in
/// Toxiproxy, so a toxic added mid-connection gets its full `timeout_ms`.
#[derive(Default)]
struct Clocks(Vec<(u64, Instant)>);

impl Clocks {
    /// When the toxic reached this pipe, and whether that is now.
    fn started(&mut self, id: u64) -> (Instant, bool) {
        if let Some((_, at)) = self.0.iter().find(|(known, _)| *known == id) {
            return (*at, false);
        }
        let now = Instant::now();
        self.0.push((id, now));
        (now, true)
    }
}

impl Pipe<'_> {
    async fn run(mut self, reader: impl AsyncRead + Unpin, writer: impl AsyncWrite + Unpin) -> End {
        let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
        let read = read_chunks(reader, tx);
        let write = self.write_chunks(writer, rx);
        tokio::pin!(read, write);
        let mut reading = true;
        loop {
            tokio::select! {
                end = &mut write => return end,
                result = &mut read, if reading => {
                    reading = false;
                    if result.is_err() {
                        return End::Close;
                    }
                }
            }
        }
    }

    async fn write_chunks(&mut self, mut writer: impl AsyncWrite + Unpin, mut rx: mpsc::Receiver<Chunk>) -> End {
        let mut clocks = Clocks::default();
        let mut paced_until = Instant::now();
        let (mut watching, mut source_open) = (true, true);
        loop {
            let plan = self.plan(&mut clocks);
            if let Some((at, end)) = plan.deadline
                && at <= Instant::now()
            {
                return end;
            }
            // A hung dependency does not close either: its EOF waits with its bytes.
            if !source_open && !plan.drop_data {
                let _ = writer.shutdown().await;
                return End::Eof;
            }
            let deadline = plan.deadline.map(|(at, _)| at);
            let chunk = tokio::select! {
                biased;
                changed = self.toxics.changed(), if watching => {
                    // The sender is gone only when the proxy itself is; keep the last set.
                    watching = changed.is_ok();
                    continue;
                }
                _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => continue,
                chunk = rx.recv(), if source_open => chunk,
                else => return End::Close,
            };
            let Some(chunk) = chunk else {
                source_open = false;
                continue;
            };
            let len = chunk.data.len() as u64;
            for effect in &plan.acting {
                effect.bytes.fetch_add(len, Ordering::Relaxed);
            }
            if plan.drop_data {
                continue;
            }
            let delay = plan.delay();
            if !delay.is_zero() {
                sleep_until(chunk.read_at + delay).await;
            }
            let written = match plan.rate_kb {
                Some(rate_kb) => write_paced(&mut writer, &chunk.data, rate_kb, &mut paced_until).await,
                None => writer.write_all(&chunk.data).await,
            };
            if written.is_err() {
                return End::Close;
            }
            self.bytes.fetch_add(chunk.data.len() as u64, Ordering::Relaxed);
        }
    }

    fn plan(&mut self, clocks: &mut Clocks) -> Plan {
        let set = self.toxics.borrow_and_update().clone();
        clocks.0.retain(|(id, _)| set.iter().any(|t| t.id == *id));
        let mut plan = Plan::default();
        for active in set.iter().filter(|t| t.toxic.stream == self.stream) {
            if !applies(self.seed, active.id, active.toxic.toxicity) {
                continue;
            }
            let (started, first) = clocks.started(active.id);
            if first {
                active.effect.connections.fetch_add(1, Ordering::Relaxed);
            }
            match active.toxic.kind {
                ToxicKind::Latency { latency_ms, jitter_ms } => {
                    plan.latency_ms = plan.latency_ms.saturating_add(latency_ms);
                    plan.jitter_ms = plan.jitter_ms.saturating_add(jitter_ms);
                    plan.acting.push(active.effect.clone());
                }
                ToxicKind::Timeout { timeout_ms } => {
                    plan.drop_data = true;
                    plan.acting.push(active.effect.clone());
                    if timeout_ms > 0 {
                        plan.end_at(started + millis(timeout_ms), End::Close);
                    }
                }
                ToxicKind::ResetPeer { timeout_ms } => {
                    plan.end_at(started + millis(timeout_ms), End::Reset(self.stream));
                }
                ToxicKind::Bandwidth { rate_kb } => {
                    plan.rate_kb = Some(plan.rate_kb.map_or(rate_kb, |slowest| slowest.min(rate_kb)));
                    plan.acting.push(active.effect.clone());
                }
            }
        }
        plan
    }
}

async fn read_chunks(mut reader: impl AsyncRead + Unpin, tx: mpsc::Sender<Chunk>) -> std::io::Result<()> {
    loop {
        let mut data = vec![0; CHUNK_BYTES];
        let n = reader.read(&mut data).await?;
        if n == 0 {
            return Ok(());
        }
        data.truncate(n);
        let chunk = Chunk {
            data,
            read_at: Instant::now(),
        };
        if tx.send(chunk).await.is_err() {
            return Ok(());
        }
    }
}

/// Writes in slices of a tenth of a second's worth, as Toxiproxy does, spacing them so
/// the direction never runs faster than `rate_kb`. An idle pipe earns no burst.
async fn write_paced(
    writer: &mut (impl AsyncWrite + Unpin),
    data: &[u8],
    rate_kb: u64,
    paced_until: &mut Instant,
) -> std::io::Result<()> {
    let bytes_per_second = rate_kb.saturating_mul(1024);
    let slice = usize::try_from(bytes_per_second / 10).unwrap_or(usize::MAX).max(1);
    for part in data.chunks(slice) {
        *paced_until = (*paced_until).max(Instant::now());
        sleep_until(*paced_until).await;
        writer.write_all(part).await?;
        *paced_until += Duration::from_secs_f64(part.len() as f64 / bytes_per_second as f64);
    }
    Ok(())
}

/// Whether a toxic of `toxicity` applies to the connection of `seed`: a fixed
/// pseudo-random draw per (connection, toxic), so the answer does not change from one
/// chunk to the next.
fn applies(seed: u64, toxic_id: u64, toxicity: f64) -> bool {
    if toxicity >= 1.0 {
        return true;
    }
    // splitmix64's finaliser: a cheap, well-mixed hash of the pair.
    let mut z = seed ^ toxic_id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z as f64 / u64::MAX as f64) < toxicity
}

#[cfg(test)]
mod tests {
    use super::applies;

    #[test]
    fn toxicity_applies_to_about_its_share_of_connections() {
        let hits = (0..10_000u64)
            .filter(|seed| applies(seed.wrapping_mul(7919), 3, 0.3))
            .count();
        assert!((2_500..3_500).contains(&hits), "{hits}");
        assert!((0..100u64).all(|seed| !applies(seed, 3, 0.0)));
        assert!((0..100u64).all(|seed| applies(seed, 3, 1.0)));
    }
}
