//! `holdfast queue`: the durable queues from a shell, straight on the
//! configured database (no running service needed).

use std::path::PathBuf;

use chrono::Utc;
use clap::{Args, Subcommand};
use holdfast_store::{JobId, Redrive, SharedStore};

use super::serve::{init_logs_quiet, load};

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Depth of every queue (ready, in flight, delayed, dead) and the outbox lag.
    Stats(FormatArgs),
    /// Dead letters: list them, or return them to their queue.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// The dead letters of one queue, oldest first, with their last error.
    List(DlqListArgs),
    /// Return dead letters to their queue with a fresh receive count.
    Redrive(DlqRedriveArgs),
}

#[derive(Debug, Args)]
pub struct FormatArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct DlqListArgs {
    /// The queue: fulfillment, webhooks, events, …
    #[arg(long)]
    queue: String,
    #[arg(long, default_value_t = 50)]
    limit: i64,
    #[command(flatten)]
    format: FormatArgs,
}

#[derive(Debug, Args)]
pub struct DlqRedriveArgs {
    #[arg(long)]
    queue: String,
    /// Only these jobs (repeatable); all of the queue's dead letters without it.
    #[arg(long = "job", value_name = "JOB_ID")]
    jobs: Vec<String>,
}

pub async fn run(config: Option<PathBuf>, command: QueueCommand) -> anyhow::Result<u8> {
    init_logs_quiet();
    let config = load(config, Vec::new())?;
    let store = holdfast_store::connect(&config.connect_options())
        .await
        .map_err(|e| anyhow::anyhow!("config key `database.url`: {e}"))?;
    match command {
        QueueCommand::Stats(format) => stats(&store, &format).await,
        QueueCommand::Dlq {
            command: DlqCommand::List(args),
        } => list(&store, &args).await,
        QueueCommand::Dlq {
            command: DlqCommand::Redrive(args),
        } => redrive(&store, &args).await,
    }
}

async fn stats(store: &SharedStore, format: &FormatArgs) -> anyhow::Result<u8> {
    let now = Utc::now();
    let queues = store.queue().stats(now).await?;
    let outbox = store.outbox().lag(now).await?;
    if format.json {
        println!("{}", serde_json::json!({ "queues": queues, "outbox": outbox }));
        return Ok(0);
    }
    println!(
        "{:<16} {:>8} {:>10} {:>8} {:>6} {:>16}",
        "queue", "ready", "in_flight", "delayed", "dead", "oldest_ready_s"
    );
    for q in &queues {
        let oldest = q.oldest_ready_age_s.map_or("-".to_owned(), |s| s.to_string());
        println!(
            "{:<16} {:>8} {:>10} {:>8} {:>6} {:>16}",
            q.queue, q.ready, q.in_flight, q.delayed, q.dead, oldest
        );
    }
    if queues.is_empty() {
        println!("(no jobs in any queue)");
    }
    let lag = outbox.oldest_age_s.map_or("-".to_owned(), |s| format!("{s} s"));
    println!("outbox: {} unpublished, oldest {lag}", outbox.unpublished);
    Ok(0)
}

async fn list(store: &SharedStore, args: &DlqListArgs) -> anyhow::Result<u8> {
    if !(1..=10_000).contains(&args.limit) {
        anyhow::bail!("--limit must be between 1 and 10000, got {}", args.limit);
    }
    let jobs = store.queue().dead_letters(&args.queue, args.limit).await?;
    if args.format.json {
        let rows: Vec<_> = jobs
            .iter()
            .map(|job| {
                serde_json::json!({
                    "id": job.id, "group_key": job.group_key, "payload": job.payload,
                    "receive_count": job.receive_count, "last_error": job.last_error,
                    "created_at": job.created_at, "dead_since": job.visible_at,
                })
            })
            .collect();
        println!("{}", serde_json::Value::from(rows));
        return Ok(0);
    }
    for job in &jobs {
        println!(
            "{} group={} receives={} created={} error={}",
            job.id,
            job.group_key,
            job.receive_count,
            job.created_at.to_rfc3339(),
            job.last_error.as_deref().unwrap_or("-")
        );
    }
    println!("{} dead letter(s) in {}", jobs.len(), args.queue);
    Ok(0)
}

async fn redrive(store: &SharedStore, args: &DlqRedriveArgs) -> anyhow::Result<u8> {
    let which = if args.jobs.is_empty() {
        Redrive::All
    } else {
        Redrive::Jobs(
            args.jobs
                .iter()
                .map(|raw| {
                    JobId::parse(raw).ok_or_else(|| anyhow::anyhow!("--job {raw:?}: not a job id (job_<32 hex>)"))
                })
                .collect::<anyhow::Result<_>>()?,
        )
    };
    let moved = store.queue().redrive(&args.queue, &which, Utc::now()).await?;
    println!("redrove {moved} job(s) in {}", args.queue);
    Ok(0)
}
