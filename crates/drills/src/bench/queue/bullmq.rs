//! BullMQ on Redis beside `holdfast bench queue`: runs the Node script in
//! `crates/drills/bullmq/` with the same jobs and concurrency and reads the
//! JSON line it prints. What it needs from outside (node, npm, Redis) is
//! checked first, so a missing piece is a printed reason to skip, never a
//! failure of the Holdfast measurement.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;

const SCRIPT: &str = "bench.mjs";
/// Long enough for the default 20,000 jobs on a slow machine; a hung script
/// must not hang the benchmark.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(15 * 60);
const NPM_CI_TIMEOUT: Duration = Duration::from_secs(5 * 60);

pub struct Settings<'a> {
    pub jobs: u64,
    pub concurrency: u32,
    pub redis_url: &'a str,
}

/// The line `bench.mjs` prints.
#[derive(Debug, Deserialize)]
pub struct Figures {
    pub bullmq_version: String,
    pub redis_version: String,
    pub appendonly: Option<String>,
    pub appendfsync: Option<String>,
    pub enqueue_jobs_per_s: f64,
    pub processed_jobs_per_s: f64,
    pub completed: u64,
    pub distinct_processed: u64,
    pub duplicates: u64,
    pub left_in_queue: u64,
    pub timed_out: bool,
    pub jobs: u64,
    pub concurrency: u32,
}

pub enum Outcome {
    Ran(Figures),
    /// Something it needs is missing; the reason says what.
    Skipped(String),
    /// It started and did not finish properly.
    Failed(String),
}

/// The script's folder, found from the source tree this crate was built in.
fn script_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("bullmq")
}

pub async fn run(settings: &Settings<'_>) -> Outcome {
    let dir = script_dir();
    if !dir.join(SCRIPT).is_file() {
        return Outcome::Skipped(format!("{} is missing", dir.join(SCRIPT).display()));
    }
    for tool in ["node", "npm"] {
        if let Err(why) = tool_answers(tool).await {
            return Outcome::Skipped(why);
        }
    }
    if let Err(why) = redis_answers(settings.redis_url).await {
        return Outcome::Skipped(why);
    }
    // npm writes node_modules/.package-lock.json last, so its absence also
    // catches an install that was interrupted halfway.
    if !dir.join("node_modules").join(".package-lock.json").is_file()
        && let Err(why) = npm_ci(&dir).await
    {
        return Outcome::Skipped(why);
    }
    match run_script(&dir, settings).await {
        Ok(figures) => Outcome::Ran(figures),
        Err(why) => Outcome::Failed(why),
    }
}

async fn tool_answers(tool: &str) -> Result<(), String> {
    let mut command = Command::new(tool);
    command.arg("--version");
    match run_with_timeout(&mut command, Duration::from_secs(60)).await {
        Ok(output) if output.status.success() => Ok(()),
        Ok(output) => Err(format!("`{tool} --version` exited with {}", output.status)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Err(format!("{tool} is not on PATH")),
        Err(error) => Err(format!("`{tool} --version` could not run: {error}")),
    }
}

/// Sends `PING` and expects a Redis reply. An error reply (such as
/// `NOAUTH`) still proves Redis is there; the script authenticates with the
/// URL's credentials.
async fn redis_answers(redis_url: &str) -> Result<(), String> {
    let url = url::Url::parse(redis_url).map_err(|e| format!("--redis-url {redis_url:?} is not a URL: {e}"))?;
    if url.scheme() != "redis" {
        return Err(format!(
            "--redis-url must be redis://host:port, not {}://",
            url.scheme()
        ));
    }
    let host = url.host_str().unwrap_or("127.0.0.1");
    let port = url.port().unwrap_or(6379);
    let answer = tokio::time::timeout(Duration::from_secs(3), async {
        let mut stream = TcpStream::connect((host, port)).await?;
        stream.write_all(b"PING\r\n").await?;
        let mut reply = [0_u8; 64];
        let read = stream.read(&mut reply).await?;
        std::io::Result::Ok(reply[..read].to_vec())
    })
    .await;
    match answer {
        Ok(Ok(reply)) if reply.starts_with(b"+PONG") || reply.starts_with(b"-") => Ok(()),
        Ok(Ok(reply)) => Err(format!(
            "{host}:{port} answered PING with {:?}, not like Redis",
            String::from_utf8_lossy(&reply)
        )),
        Ok(Err(error)) => Err(format!("Redis at {host}:{port} is unreachable: {error}")),
        Err(_) => Err(format!("Redis at {host}:{port} did not answer PING within 3 s")),
    }
}

async fn npm_ci(dir: &Path) -> Result<(), String> {
    println!(
        "  (installing the BullMQ script's packages: npm ci in {})",
        dir.display()
    );
    let mut command = Command::new("npm");
    command.args(["ci", "--silent"]).current_dir(dir);
    match run_with_timeout(&mut command, NPM_CI_TIMEOUT).await {
        Ok(output) if output.status.success() => Ok(()),
        Ok(output) => Err(format!(
            "`npm ci --silent` in {} exited with {}: {} (run `npm ci` there to see why)",
            dir.display(),
            output.status,
            tail(&output.stderr)
        )),
        Err(error) => Err(format!("`npm ci` in {} could not run: {error}", dir.display())),
    }
}

async fn run_script(dir: &Path, settings: &Settings<'_>) -> Result<Figures, String> {
    println!(
        "  (running BullMQ: {} jobs, Worker concurrency {})",
        settings.jobs, settings.concurrency
    );
    let mut command = Command::new("node");
    command
        .arg(SCRIPT)
        .args(["--jobs", &settings.jobs.to_string()])
        .args(["--concurrency", &settings.concurrency.to_string()])
        // Through the environment, so a password in the URL stays out of
        // the process list.
        .env("REDIS_URL", settings.redis_url)
        .current_dir(dir);
    let output = run_with_timeout(&mut command, SCRIPT_TIMEOUT)
        .await
        .map_err(|e| format!("node {SCRIPT} could not run: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "node {SCRIPT} exited with {}: {}",
            output.status,
            tail(&output.stderr)
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or("");
    serde_json::from_str(line).map_err(|e| format!("node {SCRIPT} printed {line:?}, not its JSON figures: {e}"))
}

/// Runs a command to completion, killing it if it outlives `limit`.
async fn run_with_timeout(command: &mut Command, limit: Duration) -> std::io::Result<Output> {
    command.kill_on_drop(true).stdin(std::process::Stdio::null());
    match tokio::time::timeout(limit, command.output()).await {
        Ok(output) => output,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no result within {} s", limit.as_secs()),
        )),
    }
}

/// The last lines of a command's stderr, for an error message.
fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().filter(|line| !line.trim().is_empty()).collect();
    let last = lines[lines.len().saturating_sub(5)..].join(" | ");
    if last.is_empty() { "(no output)".into() } else { last }
}

/// Whether Redis, as configured, would keep an acknowledged job through a
/// crash; the comparison is only fair when this is read beside the figures.
fn redis_durability(figures: &Figures) -> String {
    match (figures.appendonly.as_deref(), figures.appendfsync.as_deref()) {
        (Some("yes"), Some("always")) => "appendonly yes, appendfsync always: durable per write".into(),
        (Some("yes"), Some(fsync)) => {
            format!("appendonly yes, appendfsync {fsync}: up to a second of jobs can be lost")
        }
        (Some("no"), _) => "appendonly no: jobs live in memory only, not durable".into(),
        _ => "persistence settings unreadable (CONFIG GET refused)".into(),
    }
}

pub fn print(outcome: &Outcome, holdfast_jobs_per_s: f64) {
    let figures = match outcome {
        Outcome::Ran(figures) => figures,
        Outcome::Skipped(why) => {
            println!("  BullMQ skipped: {why}");
            return;
        }
        Outcome::Failed(why) => {
            println!("  BullMQ failed: {why}");
            return;
        }
    };
    println!(
        "  BullMQ {} on Redis {}, Worker concurrency {} ({})",
        figures.bullmq_version,
        figures.redis_version,
        figures.concurrency,
        redis_durability(figures)
    );
    println!(
        "  BullMQ enqueue          {:>8.0} jobs/s (one add per call, {} producers)",
        figures.enqueue_jobs_per_s, figures.concurrency
    );
    println!("  BullMQ processed        {:>8.0} jobs/s", figures.processed_jobs_per_s);
    let exactly_once = figures.completed == figures.jobs
        && figures.distinct_processed == figures.jobs
        && figures.duplicates == 0
        && figures.left_in_queue == 0
        && !figures.timed_out;
    if !exactly_once {
        println!(
            "  BullMQ did not process every job exactly once: {} completed, {} distinct, {} duplicates, {} left{}",
            figures.completed,
            figures.distinct_processed,
            figures.duplicates,
            figures.left_in_queue,
            if figures.timed_out { ", timed out" } else { "" }
        );
    }
    let ratio = holdfast_jobs_per_s / figures.processed_jobs_per_s;
    println!(
        "  ratio Holdfast / BullMQ {ratio:>8.2}   goal >= 1.00 -> {}",
        super::verdict(ratio >= 1.0)
    );
}
