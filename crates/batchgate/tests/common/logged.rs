//! A `batchgate` process with its log lines collected (optionally under a file-descriptor
//! limit), for tests of what the process writes and how it holds up.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A `batchgate` process whose log lines (stderr) are collected as they come.
pub struct Logged {
    pub child: Child,
    pub url: String,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Logged {
    /// `batchgate ARGS` under `ulimit -n fds`, logging at `rust_log`.
    pub fn start(fds: u32, rust_log: &str, args: &[&str]) -> Logged {
        let script = format!("ulimit -n {fds} && exec \"$0\" \"$@\"");
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(script)
            .arg(env!("CARGO_BIN_EXE_batchgate"))
            .args(args)
            .env("RUST_LOG", rust_log);
        Logged::spawn(command)
    }

    /// Spawns `command` (a batchgate process) with its stderr collected, and waits for the
    /// address it announces. `BATCHGATE_TEST_LOGS` set: the lines are echoed too.
    pub fn spawn(mut command: Command) -> Logged {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn batchgate");
        let stderr = child.stderr.take().expect("stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let kept = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("BATCHGATE_TEST_LOGS").is_some() {
                    eprintln!("{line}");
                }
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let url: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                    let _ = tx.send(url);
                }
                kept.lock().expect("lines").push(line);
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("batchgate did not report its address");
        Logged { child, url, lines }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }

    /// The first log line containing `needle`.
    pub fn line(&self, needle: &str) -> Option<String> {
        self.lines
            .lock()
            .expect("lines")
            .iter()
            .find(|l| l.contains(needle))
            .cloned()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
