//! A `holdfast serve` process for the tests that kill one: started from the
//! built binary in its own directory (so no `holdfast.toml` is read) with
//! none of the developer's `HOLDFAST_…` settings, its output in a log file
//! that is printed when the test fails, and killed and reaped when dropped,
//! so a failing assertion leaves nothing running.

use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

const SIGKILL: i32 = 9;

pub struct Served {
    name: String,
    child: Child,
    log: PathBuf,
    base_url: String,
}

impl Served {
    /// `holdfast serve --listen <a free port> EXTRA…` in `dir`, with `env`;
    /// its output goes to `dir/NAME.log`.
    pub fn start(name: &str, extra: &[&str], env: &[(&str, String)], dir: &Path) -> Self {
        let log = dir.join(format!("{name}.log"));
        let output = File::create(&log).expect("log file");
        let listen = format!("127.0.0.1:{}", free_port());
        let mut command = Command::new(env!("CARGO_BIN_EXE_holdfast"));
        for (key, _) in std::env::vars().filter(|(key, _)| key.starts_with("HOLDFAST_")) {
            command.env_remove(key);
        }
        command
            .args(["serve", "--listen", &listen])
            .args(extra)
            .current_dir(dir)
            .envs(env.iter().map(|(key, value)| (*key, value.as_str())))
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("log file"))
            .stderr(output);
        Self {
            name: name.to_owned(),
            child: command.spawn().expect("holdfast starts"),
            log,
            base_url: format!("http://{listen}"),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!("process {} exited early ({status}):\n{}", self.name, self.output());
        }
    }

    /// `Child::kill` sends SIGKILL on Unix: the process gets no chance to
    /// finish its call, give up its lease or run any shutdown code.
    pub fn kill_9(&mut self) {
        self.child.kill().expect("kill -9");
        let status = self.child.wait().expect("reap");
        assert_eq!(status.signal(), Some(SIGKILL), "process {}: {status}", self.name);
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- output of process {} ---\n{}", self.name, self.output());
        }
    }
}

/// A bounded wait: each `tick` sleeps 50 ms, and panics once `limit` has
/// passed since `start`.
pub struct Deadline {
    what: &'static str,
    started: Instant,
    limit: Duration,
}

impl Deadline {
    pub fn start(what: &'static str, limit: Duration) -> Self {
        Self {
            what,
            started: Instant::now(),
            limit,
        }
    }

    pub async fn tick(&self) {
        assert!(
            self.started.elapsed() < self.limit,
            "timed out after {:?} waiting until {}",
            self.limit,
            self.what
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
