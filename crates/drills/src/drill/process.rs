//! Child processes a drill starts (holdfast nodes, NATS servers): each in a
//! process group of its own, so a Ctrl-C at the terminal reaches the drill
//! alone and the drill heals before it stops them; killed if the drill's
//! handle is dropped; and, on Linux, killed by the kernel if the drill itself
//! dies, so no run leaves a process behind.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::process::{Child, Command};

/// A running child and the file its output goes to.
pub struct Process {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

/// How a child ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    Running,
    Exited(String),
}

impl Process {
    /// Starts `program ARGS` with `env` added to this process's environment
    /// minus every `HOLDFAST_…` variable (a node gets only the configuration
    /// the drill chose), in `cwd`, writing stdout and stderr to `log`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
        cwd: &Path,
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        let out = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone().with_context(|| format!("opening {}", log.display()))?;
        let mut command = Command::new(program);
        command
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .process_group(0);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("HOLDFAST_") {
                command.env_remove(key);
            }
        }
        command.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        die_with_parent(&mut command);
        let child = command
            .spawn()
            .with_context(|| format!("starting {name} ({})", program.display()))?;
        Ok(Self {
            name: name.to_owned(),
            child: Some(child),
            log,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    pub fn exit(&mut self) -> Exit {
        match self.child.as_mut().map(Child::try_wait) {
            None => Exit::Exited("stopped".into()),
            Some(Ok(None)) => Exit::Running,
            Some(Ok(Some(status))) => Exit::Exited(status.to_string()),
            Some(Err(error)) => Exit::Exited(format!("cannot tell: {error}")),
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub async fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else { return };
        if let Some(pid) = child.id() {
            signal(pid, libc::SIGTERM);
        }
        if tokio::time::timeout(grace, child.wait()).await.is_err() {
            let _ = child.kill().await;
        }
    }

    /// SIGKILL, and waits for it to be gone.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// The last `lines` lines of its output, for an error message.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

fn signal(pid: u32, signal: i32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    // SAFETY: kill(2) with a pid this process started and has not reaped yet
    // (the Child still holds it), so the pid cannot have been reused.
    unsafe {
        libc::kill(pid, signal);
    }
}

#[cfg(target_os = "linux")]
fn die_with_parent(command: &mut Command) {
    // SAFETY: prctl is async-signal-safe and the closure touches no memory of
    // the parent; it only asks the kernel to SIGKILL the child when the thread
    // that spawned it exits. Drills spawn from the runtime's worker threads,
    // which live as long as the drill.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_command: &mut Command) {}

/// A free port on the loopback interface (bound, read, released).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}
