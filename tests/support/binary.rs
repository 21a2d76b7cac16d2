//! The real `stickless run` binary as a child process, its log kept line by line.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_stickless");

/// Writes a configuration file into a directory of this test process; `name` may have
/// folders of its own.
pub fn write_config(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stickless-bin-{}", std::process::id()));
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap_or(&dir)).expect("temp dir");
    std::fs::write(&path, text).expect("write config");
    path
}

/// A `stickless run` child; its addresses come from its "listening on" log line (text or
/// JSON logs alike).
pub struct Instance {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Instance {
    pub fn start(config: &Path) -> Instance {
        Instance::start_with(config, &[])
    }

    /// With extra environment variables (`STICKLESS_LOG`, `NOTIFY_SOCKET`, …).
    pub fn start_with(config: &Path, env: &[(&str, &str)]) -> Instance {
        let mut command = Command::new(BIN);
        command
            .args(["run", "--config"])
            .arg(config)
            .env("STICKLESS_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("spawn stickless run");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (addr, admin) = loop {
            let line = lines
                .next()
                .expect("stickless exited before listening")
                .expect("read log");
            log.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(line.clone());
            if let Some(rest) = line.split("listening on ").nth(1) {
                let addr = address(rest).expect("listen address");
                let admin = line.split("admin").nth(1).and_then(address);
                break (addr, admin);
            }
        };
        // Keep draining the log so the child never blocks on a full pipe.
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                kept.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        Instance {
            child,
            addr,
            admin,
            log,
        }
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits (up to 10 s) for a log line containing `needle`.
    pub fn wait_for_log(&self, needle: &str) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(line) = self.log().into_iter().find(|l| l.contains(needle)) {
                return Some(line);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// How many log lines contain `needle`.
    pub fn count_log(&self, needle: &str) -> usize {
        self.log().iter().filter(|l| l.contains(needle)).count()
    }

    pub fn signal(&self, signal: &str) {
        super::send_signal(self.child.id(), signal);
    }

    /// The exit code, waiting up to 10 s.
    pub fn wait(&mut self) -> Option<i32> {
        for _ in 0..200 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first `ip:port` at the start of `text`, after any `=`, `:`, quotes or spaces.
fn address(text: &str) -> Option<SocketAddr> {
    let start = text.trim_start_matches(['=', ':', '"', ' ']);
    let end = start
        .find(|c: char| !(c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '[' | ']')))
        .unwrap_or(start.len());
    start[..end].parse().ok()
}
