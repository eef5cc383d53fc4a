//! The processes of one drill: holdfast nodes started from the `holdfast`
//! binary as children (so one can be killed for real), each on a fresh
//! database; the sandbox payment provider and the partner's webhook receiver
//! (real HTTP servers on loopback ports, in the drill's own process so it can
//! read what they saw); the fault proxies between a node and what it calls;
//! and NATS JetStream servers. Whatever [`Rig::start`] started, [`Rig::stop`]
//! stops, and a rig dropped without it still kills its children.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use holdfast_sandbox::{PaymentsConfig, SandboxPayments};
use holdfast_service::{Config, Sources};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::journal::{Event, Journal};
use super::process::{Exit, Process, free_port};
use super::scenario::{Backend, Placement, Scenario};
use crate::load::Driver;
use crate::partner::Partner;
use crate::proxy::Proxy;

/// The webhook secret the sandbox signs with and the nodes verify with.
const PAYMENTS_WEBHOOK_SECRET: &str = "whsec_holdfast_sandbox";
/// How long a node may take to answer `/readyz` after it was started.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// How long a node may take to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// The name of the partner's endpoint on the receiver (`/hooks/partner`).
pub const PARTNER_HOOK: &str = "partner";

/// Where the nodes' databases go.
#[derive(Debug, Clone)]
pub enum DatabaseChoice {
    Sqlite,
    /// Scratch databases on this PostgreSQL server.
    Postgres {
        admin_url: String,
    },
}

impl DatabaseChoice {
    pub fn backend(&self) -> Backend {
        match self {
            DatabaseChoice::Sqlite => Backend::Sqlite,
            DatabaseChoice::Postgres { .. } => Backend::Postgres,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RigOptions {
    /// The `holdfast` binary the nodes run.
    pub holdfast: PathBuf,
    pub database: DatabaseChoice,
    /// `--set` pairs, applied to every node after the scenario's `[config]`.
    pub overrides: Vec<(String, String)>,
    /// Where the nodes' logs go.
    pub logs: PathBuf,
}

/// The `max_client_conn` a drill's PgBouncer starts with, and heals back to.
pub const PGBOUNCER_MAX_CLIENT_CONN: u32 = 200;

/// One holdfast node.
pub struct Node {
    pub name: String,
    pub role: &'static str,
    pub base_url: String,
    pub admin_key: String,
    pub database_url: String,
    /// The configuration it runs with, as (dotted key, value).
    pub settings: Vec<(String, String)>,
    process: Process,
    listen: String,
}

impl Node {
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    pub fn is_running(&mut self) -> bool {
        self.process.exit() == Exit::Running
    }

    pub fn admin(&self) -> anyhow::Result<Driver> {
        Driver::new(&self.base_url, &self.admin_key)
    }
}

/// A server task in the drill's process and the switch that stops it.
struct Served {
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Served {
    async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = self.task.await;
    }
}

enum ScratchDatabase {
    /// A file in the work folder, removed with it.
    Sqlite,
    Postgres {
        admin_url: String,
        url: String,
    },
}

pub struct Rig {
    pub orders: Vec<Node>,
    pub inventory: Option<Node>,
    pub proxies: BTreeMap<String, Proxy>,
    pub payments: SandboxPayments,
    pub payments_url: String,
    pub partner: Option<Partner>,
    pub nats: Vec<Process>,
    /// The client URL of each NATS server.
    pub nats_urls: Vec<String>,
    /// The JetStream stream the nodes publish to.
    pub stream: String,
    /// The PgBouncer between the order nodes and PostgreSQL, when the topology has one.
    pub pgbouncer: Option<holdfast_store::scratch::ScratchPgBouncer>,
    payments_server: Option<Served>,
    databases: Vec<ScratchDatabase>,
    work: PathBuf,
    options: RigOptions,
    journal: Journal,
}

impl Rig {
    /// Starts every process of `scenario`'s topology, in dependency order, and
    /// waits until each answers. On failure, stops what it had started.
    pub async fn start(scenario: &Scenario, options: &RigOptions, journal: &Journal) -> anyhow::Result<Rig> {
        let work = std::env::temp_dir().join(format!("holdfast-drill-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
        std::fs::create_dir_all(&options.logs).with_context(|| format!("creating {}", options.logs.display()))?;
        // Nodes read ./holdfast.toml when it exists; the work folder has none,
        // and the settings are checked against this empty file the same way.
        std::fs::write(work.join("empty.toml"), "").context("writing the work folder")?;
        let mut rig = Rig {
            orders: Vec::new(),
            inventory: None,
            proxies: BTreeMap::new(),
            payments: SandboxPayments::new(PaymentsConfig {
                webhook_secret: PAYMENTS_WEBHOOK_SECRET.to_owned(),
                ..PaymentsConfig::default()
            }),
            payments_url: String::new(),
            partner: None,
            nats: Vec::new(),
            nats_urls: Vec::new(),
            stream: format!("DRILL_{}", scenario.name.replace('-', "_").to_uppercase()),
            pgbouncer: None,
            payments_server: None,
            databases: Vec::new(),
            work,
            options: options.clone(),
            journal: journal.clone(),
        };
        match rig.bring_up(scenario).await {
            Ok(()) => Ok(rig),
            Err(error) => {
                rig.stop().await;
                Err(error)
            }
        }
    }

    async fn bring_up(&mut self, scenario: &Scenario) -> anyhow::Result<()> {
        self.start_payments().await?;
        if scenario.topology.payments_proxy {
            let upstream = self.payments_url.trim_start_matches("http://").to_owned();
            let proxy = self.start_proxy("payments", upstream).await?;
            self.payments_url = format!("http://{}", proxy.local_addr());
        }
        if scenario.topology.nats > 0 {
            self.start_nats(scenario.topology.nats).await?;
        }
        let mut extra = Vec::new();
        if scenario.topology.inventory == Placement::Remote {
            let database_url = self.new_database("inventory").await?;
            let settings = self.settings(scenario, &database_url, &[])?;
            let node = self
                .start_node("inventory", "inventory", database_url, settings)
                .await?;
            let upstream = node.base_url.trim_start_matches("http://").to_owned();
            extra.push(("inventory.mode".to_owned(), "remote".to_owned()));
            extra.push(("inventory.api_key".to_owned(), node.admin_key.clone()));
            self.inventory = Some(node);
            let proxy = self.start_proxy("inventory", upstream).await?;
            extra.push(("inventory.url".to_owned(), format!("http://{}", proxy.local_addr())));
        }
        let database_url = self.new_database("orders").await?;
        let nodes_url = if scenario.topology.database_proxy {
            self.proxied_database(&database_url).await?
        } else if scenario.topology.pgbouncer {
            extra.push(("database.pgbouncer".to_owned(), "transaction".to_owned()));
            self.start_pgbouncer(&database_url)?
        } else {
            database_url.clone()
        };
        for n in 0..scenario.topology.order_nodes {
            let settings = self.settings(scenario, &nodes_url, &extra)?;
            let node = self
                .start_node(&format!("orders-{}", n + 1), "all", database_url.clone(), settings)
                .await?;
            self.orders.push(node);
        }
        let first = &self.orders[0];
        self.payments
            .set_webhook_url(Some(format!("{}/api/v1/payments/webhook", first.base_url)));
        if scenario.topology.partner {
            let partner = Partner::start().await?;
            partner
                .register(&first.admin()?, PARTNER_HOOK, &["*"])
                .await
                .context("registering the partner's webhook endpoint")?;
            self.journal.record(Event::Process {
                name: "partner".into(),
                role: "webhook receiver".into(),
                action: "started".into(),
                detail: format!("{}/hooks/{PARTNER_HOOK}, every event type", partner.base_url),
            });
            self.partner = Some(partner);
        }
        Ok(())
    }

    async fn start_payments(&mut self) -> anyhow::Result<()> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        self.payments_url = format!("http://{}", listener.local_addr()?);
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(self.payments.clone().serve(listener, async move {
            let _ = rx.await;
        }));
        self.payments_server = Some(Served {
            shutdown: Some(tx),
            task,
        });
        self.journal.record(Event::Process {
            name: "payments".into(),
            role: "sandbox payment provider".into(),
            action: "started".into(),
            detail: self.payments_url.clone(),
        });
        Ok(())
    }

    /// Starts a PgBouncer in transaction mode in front of the PostgreSQL
    /// server of `database_url` and returns the same URL through it.
    fn start_pgbouncer(&mut self, database_url: &str) -> anyhow::Result<String> {
        use holdfast_store::scratch::{PgBouncerSettings, ScratchPgBouncer};
        anyhow::ensure!(
            ScratchPgBouncer::installed(),
            "this drill needs PgBouncer, and `pgbouncer` is not on the PATH (Debian: apt-get install pgbouncer)"
        );
        let settings = PgBouncerSettings {
            pool_mode: "transaction",
            max_client_conn: PGBOUNCER_MAX_CLIENT_CONN,
            default_pool_size: 20,
        };
        let bouncer =
            ScratchPgBouncer::start(database_url, &settings).map_err(|e| anyhow::anyhow!("starting PgBouncer: {e}"))?;
        let url = bouncer.url_for(database_url).map_err(|e| anyhow::anyhow!(e))?;
        self.journal.record(Event::Process {
            name: "pgbouncer".into(),
            role: "connection pooler (transaction mode)".into(),
            action: "started".into(),
            detail: format!(
                "127.0.0.1:{}, max_client_conn {PGBOUNCER_MAX_CLIENT_CONN}, default_pool_size 20",
                bouncer.port()
            ),
        });
        self.pgbouncer = Some(bouncer);
        Ok(url)
    }

    /// Starts the proxy `database` in front of the PostgreSQL server of
    /// `database_url` and returns the same URL through it.
    async fn proxied_database(&mut self, database_url: &str) -> anyhow::Result<String> {
        let mut url = url::Url::parse(database_url).context("the order database URL")?;
        if !url.scheme().starts_with("postgres") {
            anyhow::bail!("a database proxy needs PostgreSQL; this drill runs on {}", url.scheme());
        }
        let host = url.host_str().unwrap_or("127.0.0.1").to_owned();
        let upstream = format!("{host}:{}", url.port().unwrap_or(5432));
        let proxy = self.start_proxy("database", upstream).await?;
        let local = proxy.local_addr();
        url.set_host(Some(&local.ip().to_string()))
            .context("the database proxy's address")?;
        url.set_port(Some(local.port()))
            .map_err(|()| anyhow::anyhow!("the database proxy's port"))?;
        Ok(url.to_string())
    }

    async fn start_proxy(&mut self, name: &str, upstream: String) -> anyhow::Result<Proxy> {
        let proxy = Proxy::start("127.0.0.1:0".parse()?, upstream.clone())
            .await
            .with_context(|| format!("starting the {name} proxy"))?;
        self.journal.record(Event::Process {
            name: format!("proxy.{name}"),
            role: "fault proxy".into(),
            action: "started".into(),
            detail: format!("{} -> {upstream}", proxy.local_addr()),
        });
        self.proxies.insert(name.to_owned(), proxy.clone());
        Ok(proxy)
    }

    /// `count` JetStream servers; more than one form a cluster.
    async fn start_nats(&mut self, count: u32) -> anyhow::Result<()> {
        let ports: Vec<(u16, u16, u16)> = (0..count)
            .map(|_| Ok((free_port()?, free_port()?, free_port()?)))
            .collect::<anyhow::Result<_>>()?;
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, cluster, _)| format!("nats://127.0.0.1:{cluster}"))
            .collect();
        for (n, (client, cluster, monitor)) in ports.iter().enumerate() {
            let name = format!("nats-{}", n + 1);
            let store = self.work.join(&name);
            let mut args: Vec<String> = [
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &client.to_string(),
                "-m",
                &monitor.to_string(),
                "-n",
                &name,
                "-sd",
                &store.display().to_string(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            if count > 1 {
                args.extend([
                    "--cluster_name".to_owned(),
                    "drill".to_owned(),
                    "--cluster".to_owned(),
                    format!("nats://127.0.0.1:{cluster}"),
                    "--routes".to_owned(),
                    routes.join(","),
                ]);
            }
            let log = self.options.logs.join(format!("{name}.log"));
            let process = Process::spawn(&name, Path::new("nats-server"), &args, &[], &self.work, log)?;
            self.journal.record(Event::Process {
                name: name.clone(),
                role: "NATS JetStream".into(),
                action: "started".into(),
                detail: format!("nats://127.0.0.1:{client} (pid {})", process.pid().unwrap_or(0)),
            });
            self.nats.push(process);
            self.nats_urls.push(format!("nats://127.0.0.1:{client}"));
        }
        for (n, (_, _, monitor)) in ports.iter().enumerate() {
            let url = format!("http://127.0.0.1:{monitor}/healthz?js-enabled-only=true");
            wait_for_http(&url, &mut self.nats[n], READY_WITHIN).await?;
        }
        Ok(())
    }

    async fn new_database(&mut self, name: &str) -> anyhow::Result<String> {
        match &self.options.database {
            DatabaseChoice::Sqlite => {
                self.databases.push(ScratchDatabase::Sqlite);
                Ok(format!("sqlite://{}/{name}.db", self.work.display()))
            }
            DatabaseChoice::Postgres { admin_url } => {
                let url = holdfast_store::scratch::create_database(admin_url, "drill")
                    .await
                    .with_context(|| {
                        format!(
                            "creating a scratch database on {}",
                            holdfast_store::describe_target(admin_url)
                        )
                    })?;
                self.databases.push(ScratchDatabase::Postgres {
                    admin_url: admin_url.clone(),
                    url: url.clone(),
                });
                Ok(url)
            }
        }
    }

    /// A node's configuration: what the topology needs, then the scenario's
    /// `[config]`, then `--set`; checked as the node will load it, so a bad
    /// key is refused before anything starts.
    fn settings(
        &self,
        scenario: &Scenario,
        database_url: &str,
        extra: &[(String, String)],
    ) -> anyhow::Result<Vec<(String, String)>> {
        let mut settings = vec![
            ("database.url".to_owned(), database_url.to_owned()),
            ("payments.url".to_owned(), self.payments_url.clone()),
            ("payments.webhook_secret".to_owned(), PAYMENTS_WEBHOOK_SECRET.to_owned()),
            ("log.level".to_owned(), "warn".to_owned()),
        ];
        if let Some(url) = self.nats_urls.first() {
            settings.push(("events.nats_url".to_owned(), url.clone()));
            settings.push(("events.stream".to_owned(), self.stream.clone()));
        }
        settings.extend(extra.iter().cloned());
        settings.extend(scenario.config_pairs());
        settings.extend(self.options.overrides.iter().cloned());
        Config::load(&Sources {
            file: Some(self.work.join("empty.toml")),
            env: false,
            overrides: settings.clone(),
        })
        .map_err(|error| anyhow::anyhow!("the nodes' configuration (scenario [config] and --set): {error}"))?;
        Ok(settings)
    }

    async fn start_node(
        &mut self,
        name: &str,
        role: &'static str,
        database_url: String,
        settings: Vec<(String, String)>,
    ) -> anyhow::Result<Node> {
        let listen = format!("127.0.0.1:{}", free_port()?);
        let admin_key = holdfast_service::http::auth::generate_key();
        let process = self.spawn_node(name, role, &listen, &settings, &admin_key)?;
        let mut node = Node {
            name: name.to_owned(),
            role,
            base_url: format!("http://{listen}"),
            admin_key,
            database_url,
            settings,
            process,
            listen,
        };
        wait_ready(&self.journal, &mut node).await?;
        Ok(node)
    }

    fn spawn_node(
        &self,
        name: &str,
        role: &str,
        listen: &str,
        settings: &[(String, String)],
        admin_key: &str,
    ) -> anyhow::Result<Process> {
        let mut env: Vec<(String, String)> = settings
            .iter()
            .map(|(key, value)| (env_name(key), value.clone()))
            .collect();
        env.push(("HOLDFAST_BOOTSTRAP_ADMIN_KEY".to_owned(), admin_key.to_owned()));
        // The drill's partner receiver listens on 127.0.0.1; a scenario's
        // `--set` may still say otherwise, since it comes after.
        env.insert(0, (env_name("webhooks.allow_private_networks"), "true".to_owned()));
        let args: Vec<String> = ["serve", "--role", role, "--listen", listen]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let log = self.options.logs.join(format!("{name}.log"));
        Process::spawn(name, &self.options.holdfast, &args, &env, &self.work, log)
    }

    /// Deploys one more order node whose `database.url` has `host` instead of
    /// the real host, waits (at most `within`) for it to exit, and runs
    /// `holdfast preflight` on the same configuration.
    pub async fn deploy_misconfigured(&self, host: &str, within: Duration) -> anyhow::Result<Misconfigured> {
        let node = self.orders.first().ok_or_else(|| anyhow::anyhow!("no order node"))?;
        let mut url = url::Url::parse(&node.database_url).context("the order database URL")?;
        url.set_host(Some(host))
            .with_context(|| format!("{host} as a database host"))?;
        let mut settings = node.settings.clone();
        settings.push(("database.url".to_owned(), url.to_string()));
        let listen = format!("127.0.0.1:{}", free_port()?);
        let name = "orders-mistyped";
        let started = Instant::now();
        let mut process = self.spawn_node(name, "all", &listen, &settings, &node.admin_key)?;
        let status = loop {
            if let Exit::Exited(status) = process.exit() {
                break Some(status);
            }
            if started.elapsed() > within {
                process.kill().await;
                break None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let refused_after = started.elapsed();
        let log = process.log_tail(20);
        self.journal.record(Event::Process {
            name: name.to_owned(),
            role: "all".to_owned(),
            action: if status.is_some() { "refused" } else { "killed" }.to_owned(),
            detail: match &status {
                Some(status) => format!(
                    "exited ({status}) after {:.1} s: {}",
                    refused_after.as_secs_f64(),
                    log.replace('\n', " ")
                ),
                None => format!("still running after {} s; killed", within.as_secs()),
            },
        });
        let preflight = self.preflight(&settings).await?;
        Ok(Misconfigured {
            exited: status.filter(|s| !s.contains("exit status: 0")),
            log,
            preflight_code: preflight.0,
            preflight_output: preflight.1,
        })
    }

    /// `holdfast preflight` with `settings`, as a pipeline would run it after a deploy.
    async fn preflight(&self, settings: &[(String, String)]) -> anyhow::Result<(Option<i32>, String)> {
        let mut command = tokio::process::Command::new(&self.options.holdfast);
        command
            .arg("preflight")
            .current_dir(&self.work)
            .kill_on_drop(true)
            .stdin(std::process::Stdio::null());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("HOLDFAST_") {
                command.env_remove(key);
            }
        }
        command.envs(settings.iter().map(|(key, value)| (env_name(key), value.clone())));
        let output = tokio::time::timeout(Duration::from_secs(60), command.output())
            .await
            .map_err(|_| anyhow::anyhow!("holdfast preflight did not finish within 60 s"))?
            .context("running holdfast preflight")?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        self.journal.record(Event::Process {
            name: "preflight".into(),
            role: "post-deploy check".into(),
            action: format!("exited {}", output.status.code().unwrap_or(-1)),
            detail: text.replace('\n', " / "),
        });
        Ok((output.status.code(), text))
    }

    /// Kills order node `index` with SIGKILL.
    pub async fn kill_node(&mut self, index: usize) -> anyhow::Result<()> {
        let node = self
            .orders
            .get_mut(index)
            .ok_or_else(|| anyhow::anyhow!("no order node {}", index + 1))?;
        let pid = node.pid().unwrap_or(0);
        node.process.kill().await;
        self.journal.record(Event::Process {
            name: node.name.clone(),
            role: node.role.to_owned(),
            action: "killed".into(),
            detail: format!("SIGKILL to pid {pid}"),
        });
        Ok(())
    }

    /// Starts order node `index` again on the same port and database.
    pub async fn restart_node(&mut self, index: usize) -> anyhow::Result<()> {
        let node = self
            .orders
            .get(index)
            .ok_or_else(|| anyhow::anyhow!("no order node {}", index + 1))?;
        let process = self.spawn_node(&node.name, node.role, &node.listen, &node.settings, &node.admin_key)?;
        let mut old = std::mem::replace(&mut self.orders[index].process, process);
        old.kill().await;
        wait_ready(&self.journal, &mut self.orders[index]).await
    }

    /// The first order node's configuration as a `Config`, for connecting to
    /// its database from the drill.
    pub fn orders_config(&self) -> anyhow::Result<Config> {
        let node = self.orders.first().ok_or_else(|| anyhow::anyhow!("no order node"))?;
        let mut settings = node.settings.clone();
        // The drill reads with a few connections of its own.
        settings.push(("database.pools.read.max_connections".to_owned(), "4".to_owned()));
        settings.push(("database.pools.write.max_connections".to_owned(), "2".to_owned()));
        settings.push(("database.pools.worker.max_connections".to_owned(), "2".to_owned()));
        Ok(Config::load(&Sources {
            file: Some(self.work.join("empty.toml")),
            env: false,
            overrides: settings,
        })?)
    }

    /// Stops everything, clients before servers, and removes the scratch
    /// databases and the work folder. Safe to call on a half-started rig.
    pub async fn stop(&mut self) {
        for node in self.orders.iter_mut().chain(self.inventory.as_mut()) {
            node.process.stop(STOP_GRACE).await;
            self.journal.record(Event::Process {
                name: node.name.clone(),
                role: node.role.to_owned(),
                action: "stopped".into(),
                detail: String::new(),
            });
        }
        for proxy in self.proxies.values() {
            proxy.remove_all_toxics();
            proxy.stop().await;
        }
        if let Some(partner) = self.partner.take() {
            let _ = partner.stop().await;
        }
        if let Some(served) = self.payments_server.take() {
            served.stop().await;
        }
        for process in &mut self.nats {
            process.stop(STOP_GRACE).await;
        }
        if let Some(mut bouncer) = self.pgbouncer.take() {
            tokio::task::spawn_blocking(move || bouncer.stop()).await.ok();
        }
        for database in self.databases.drain(..) {
            if let ScratchDatabase::Postgres { admin_url, url } = database
                && let Err(error) = holdfast_store::scratch::drop_database(&admin_url, &url).await
            {
                self.journal.record(Event::Note {
                    message: format!("could not drop the scratch database: {error}"),
                });
            }
        }
        let _ = std::fs::remove_dir_all(&self.work);
    }

    /// Pids of every child still running, for the report that nothing was left behind.
    pub fn running_children(&mut self) -> Vec<String> {
        let mut running = Vec::new();
        for node in self.orders.iter_mut().chain(self.inventory.as_mut()) {
            if node.is_running() {
                running.push(node.name.clone());
            }
        }
        for process in &mut self.nats {
            if process.exit() == Exit::Running {
                running.push(process.name.clone());
            }
        }
        running
    }
}

/// What became of a node deployed with a mistyped database host.
#[derive(Debug, Clone)]
pub struct Misconfigured {
    /// How it exited, when it refused to start (a non-zero exit).
    pub exited: Option<String>,
    /// The end of its log.
    pub log: String,
    pub preflight_code: Option<i32>,
    pub preflight_output: String,
}

/// Waits for a node's `/readyz` to answer 200; a node that exits first fails
/// with the end of its log, which names what it refused.
async fn wait_ready(journal: &Journal, node: &mut Node) -> anyhow::Result<()> {
    let url = format!("{}/readyz", node.base_url);
    let waited = wait_for_http(&url, &mut node.process, READY_WITHIN).await;
    journal.record(Event::Process {
        name: node.name.clone(),
        role: node.role.to_owned(),
        action: if waited.is_ok() { "started" } else { "refused" }.to_owned(),
        detail: match &waited {
            Ok(()) => format!("{} (pid {})", node.base_url, node.pid().unwrap_or(0)),
            Err(error) => format!("{error:#}"),
        },
    });
    waited.with_context(|| format!("starting node {} ({} role)", node.name, node.role))
}

/// `dependencies.inventory.deadline_ms` → `HOLDFAST_DEPENDENCIES__INVENTORY__DEADLINE_MS`.
pub fn env_name(key: &str) -> String {
    format!("HOLDFAST_{}", key.replace('.', "__").to_ascii_uppercase())
}

/// Polls `url` until it answers 200, `process` exits, or `within` passes.
async fn wait_for_http(url: &str, process: &mut Process, within: Duration) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let started = Instant::now();
    loop {
        if let Exit::Exited(status) = process.exit() {
            anyhow::bail!(
                "{} exited ({status}) before it was ready:\n{}",
                process.name,
                process.log_tail(15)
            );
        }
        if let Ok(response) = http.get(url).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        if started.elapsed() > within {
            anyhow::bail!(
                "{} did not answer {url} within {} s:\n{}",
                process.name,
                within.as_secs(),
                process.log_tail(15)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
