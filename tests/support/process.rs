//! A child process with its output in a log file: started, watched until
//! it is ready, signalled and stopped. Failures are values (with the log's
//! tail), so a test can panic on them and a bench can report them; the
//! process is killed if dropped without `stop`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// Lines of the log a failure message shows.
const TAIL: usize = 20;

/// A started process.
pub struct Process {
    /// What it is, for messages (`otel-audit serve`, `rotel`).
    name: &'static str,
    child: Option<Child>,
    /// Its log file (stdout and stderr, appended).
    log: PathBuf,
}

impl Process {
    /// Starts `command` with stdout and stderr appended to `log`.
    pub fn spawn(name: &'static str, mut command: Command, log: &Path) -> Result<Process, String> {
        let open = || std::fs::OpenOptions::new().create(true).append(true).open(log);
        let stdout = open().map_err(|e| format!("{}: {e}", log.display()))?;
        let stderr = open().map_err(|e| format!("{}: {e}", log.display()))?;
        let child = command
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start {name} ({:?}): {e}", command.get_program()))?;
        Ok(Process { name, child: Some(child), log: log.to_owned() })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of the log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Fails with the log's tail if the process has exited.
    pub fn check_running(&mut self) -> Result<(), String> {
        let Some(child) = self.child.as_mut() else { return Err(format!("{} is not running", self.name)) };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!("{} exited with {status}:\n{}", self.name, self.log_tail(TAIL))),
            Err(e) => Err(format!("{}: {e}", self.name)),
        }
    }

    /// Polls `ready` every 50 ms while the process runs; fails if it exits
    /// or if `ready` still fails after `timeout` (`not_ready` says how).
    pub fn wait_until(
        &mut self,
        timeout: Duration,
        not_ready: &str,
        mut ready: impl FnMut() -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_running()?;
            if ready() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let seconds = timeout.as_secs();
                return Err(format!("{} {not_ready} after {seconds} s:\n{}", self.name, self.log_tail(TAIL)));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `signal` (a `kill` name: `HUP`, `TERM`, ...).
    pub fn signal(&self, signal: &str) -> Result<(), String> {
        let pid = self.pid().to_string();
        let status = Command::new("kill").args([&format!("-{signal}"), &pid]).status().map_err(|e| e.to_string())?;
        if status.success() { Ok(()) } else { Err(format!("kill -{signal} {pid}: {status}")) }
    }

    /// SIGTERM, then wait (at most 60 s) for the exit; SIGKILL after that.
    pub fn stop(mut self) -> Result<ExitStatus, String> {
        let Some(mut child) = self.child.take() else { return Err(format!("{} is not running", self.name)) };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("{} ignored SIGTERM for 60 s:\n{}", self.name, self.log_tail(TAIL)));
                }
            }
        }
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill9(mut self) {
        let mut child = self.child.take().expect("a running process");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
