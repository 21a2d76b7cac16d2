//! Real Redis topologies for the tests, all on 127.0.0.1 and free ports: TLS with an ACL user,
//! a six-node cluster, a Sentinel-managed primary and replica, plain standalone servers. Each
//! comes with the faults operators meet (SIGKILL, SIGSTOP, restarts, failovers, slot
//! migrations, role swaps), and `Load` drives steady traffic through the proxy while one is
//! injected, then reports the 503 window and checks that no acknowledged write was lost.
//!
//! Every process is killed on drop, every temp dir removed (set `STICKLESS_KEEP_TOPOLOGY=1` to
//! keep them, with the servers' logs, for a post-mortem), and every wait is bounded in time.
//! Admin commands go through `redis-cli` (under `timeout`, so a frozen node cannot hang a
//! test), which speaks TLS whether or not the project's redis crate does.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::{free_port, RawRequest, RawResponse};

// ---------------------------------------------------------------------------------------------
// Temp dirs and waiting

/// A directory removed (with everything in it) on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        loop {
            let path = std::env::temp_dir().join(format!(
                "stickless-{tag}-{}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed),
                free_port()
            ));
            if std::fs::create_dir(&path).is_ok() {
                return TempDir { path };
            }
        }
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// A sub-directory, created.
    pub fn subdir(&self, name: &str) -> PathBuf {
        let path = self.path.join(name);
        std::fs::create_dir_all(&path).expect("create sub-directory");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("STICKLESS_KEEP_TOPOLOGY").is_some() {
            eprintln!("kept {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Polls `check` every 50 ms until it holds; panics with `what` after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `check` every 50 ms until it is `Ok`; panics with `what` and the last reason after
/// `limit`.
pub fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> Result<(), String>) {
    let started = Instant::now();
    let deadline = started + limit;
    let debug = std::env::var_os("STICKLESS_TOPOLOGY_DEBUG").is_some();
    let mut last = String::new();
    loop {
        let why = match check() {
            Ok(()) => return,
            Err(why) => why,
        };
        if debug && why != last {
            eprintln!("[{:>6} ms] {what}: {why}", started.elapsed().as_millis());
            last.clone_from(&why);
        }
        if Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for {what}: {why}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A free port for a server, below the kernel's ephemeral range: the thousands of short
/// client connections the load tests open cannot take it between its choice and the server's
/// bind (as they can take one from `free_port`). Distinct within this process; the start is
/// spread by process id so concurrent test binaries rarely meet.
pub fn server_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<usize>().ok())
        .unwrap_or(32768);
    let low = 10_000;
    if ephemeral_start <= low + 1000 {
        return free_port();
    }
    let span = ephemeral_start - low;
    let seed = std::process::id() as usize * 7919;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(low + (seed + n) % span).expect("a port");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    free_port()
}

/// `n` distinct server ports.
fn free_ports(n: usize) -> Vec<u16> {
    (0..n).map(|_| server_port()).collect()
}

/// A path as the `&str` config files and command lines want.
pub fn path_of(path: &Path) -> String {
    path.to_str().expect("UTF-8 temp path").to_owned()
}

// ---------------------------------------------------------------------------------------------
// Certificates

/// A CA, a server certificate for 127.0.0.1 / localhost and a client certificate, made with
/// `openssl` into a temp dir.
pub struct Certs {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A second CA that signed nothing here: trusting it must fail the handshake.
    pub other_ca: PathBuf,
    pub dir: TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl on PATH");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Certs {
    pub fn generate() -> Certs {
        let dir = TempDir::new("certs");
        let d = &dir.path;
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        for (name, cn) in [("ca", "stickless test CA"), ("other-ca", "unrelated CA")] {
            let mut args = vec!["req", "-x509", "-nodes", "-days", "2"];
            args.extend(ec);
            let key = format!("{name}.key");
            let crt = format!("{name}.crt");
            let subj = format!("/CN={cn}");
            args.extend(["-keyout", &key, "-out", &crt, "-subj", &subj]);
            args.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
            args.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
            openssl(d, &args);
        }
        for (name, cn, usage, serial) in [
            ("server", "localhost", "serverAuth", "2"),
            ("client", "stickless", "clientAuth", "3"),
        ] {
            let key = format!("{name}.key");
            let csr = format!("{name}.csr");
            let crt = format!("{name}.crt");
            let ext = format!("{name}.ext");
            let subj = format!("/CN={cn}");
            let mut args = vec!["req", "-new", "-nodes"];
            args.extend(ec);
            args.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
            openssl(d, &args);
            let mut extensions = String::from(
                "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n",
            );
            extensions.push_str(&format!("extendedKeyUsage={usage}\n"));
            if name == "server" {
                extensions.push_str("subjectAltName=IP:127.0.0.1,DNS:localhost\n");
            }
            std::fs::write(d.join(&ext), extensions).expect("write extensions");
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.crt",
                    "-CAkey",
                    "ca.key",
                    "-set_serial",
                    serial,
                    "-days",
                    "2",
                    "-out",
                    &crt,
                    "-extfile",
                    &ext,
                ],
            );
        }
        Certs {
            ca: d.join("ca.crt"),
            server_cert: d.join("server.crt"),
            server_key: d.join("server.key"),
            client_cert: d.join("client.crt"),
            client_key: d.join("client.key"),
            other_ca: d.join("other-ca.crt"),
            dir,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Admin access and nodes

/// How the test itself talks to one server: `redis-cli`, optionally over TLS and as a user.
#[derive(Clone, Debug)]
pub struct Admin {
    pub port: u16,
    pub ca: Option<PathBuf>,
    /// Client certificate and key, for servers that demand one.
    pub cert: Option<(PathBuf, PathBuf)>,
    pub user: Option<(String, String)>,
}

impl Admin {
    pub fn plain(port: u16) -> Admin {
        Admin {
            port,
            ca: None,
            cert: None,
            user: None,
        }
    }

    /// Runs one command; `Ok(stdout)` or `Err(what redis-cli printed)`. Never takes more than
    /// about 3 s, even against a frozen server.
    pub fn try_cmd(&self, args: &[&str]) -> Result<String, String> {
        let mut command = Command::new("timeout");
        command.args(["-s", "KILL", "3", "redis-cli", "-h", "127.0.0.1", "-e"]);
        command.args(["-p", &self.port.to_string(), "--no-auth-warning"]);
        if let Some(ca) = &self.ca {
            command.args(["--tls", "--cacert", &path_of(ca)]);
        }
        if let Some((cert, key)) = &self.cert {
            command.args(["--cert", &path_of(cert), "--key", &path_of(key)]);
        }
        if let Some((user, pass)) = &self.user {
            command.args(["--user", user, "--pass", pass]);
        }
        let output = command
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("timeout and redis-cli on PATH");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "{stdout}{}(exit {:?})",
                String::from_utf8_lossy(&output.stderr),
                output.status.code()
            ))
        }
    }

    /// Several commands on one connection (one per line, redis-cli syntax), e.g. a write
    /// followed by `WAIT`, which counts only its own connection's writes. Their replies, one
    /// per line.
    pub fn pipe(&self, commands: &str) -> String {
        use std::io::Write;
        let mut command = Command::new("timeout");
        command.args(["-s", "KILL", "5", "redis-cli", "-h", "127.0.0.1"]);
        command.args(["-p", &self.port.to_string(), "--no-auth-warning"]);
        if let Some(ca) = &self.ca {
            command.args(["--tls", "--cacert", &path_of(ca)]);
        }
        if let Some((cert, key)) = &self.cert {
            command.args(["--cert", &path_of(cert), "--key", &path_of(key)]);
        }
        if let Some((user, pass)) = &self.user {
            command.args(["--user", user, "--pass", pass]);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("timeout and redis-cli on PATH");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(commands.as_bytes())
            .expect("write commands");
        drop(stdin);
        let output = child.wait_with_output().expect("redis-cli");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn cmd(&self, args: &[&str]) -> String {
        self.try_cmd(args)
            .unwrap_or_else(|e| panic!("redis-cli -p {} {args:?}: {e}", self.port))
    }

    /// `INFO <section>` as a map.
    pub fn info(&self, section: &str) -> HashMap<String, String> {
        parse_info(&self.cmd(&["INFO", section]))
    }

    pub fn try_info(&self, section: &str) -> Option<HashMap<String, String>> {
        self.try_cmd(&["INFO", section])
            .ok()
            .map(|s| parse_info(&s))
    }

    pub fn role(&self) -> Option<String> {
        self.try_info("replication")?.get("role").cloned()
    }
}

fn parse_info(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.trim_end().split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// One `redis-server` process (data node or Sentinel) started with fixed arguments, so it can
/// be killed and started again on the same port with the same files.
pub struct Node {
    pub port: u16,
    pub admin: Admin,
    pub name: String,
    args: Vec<String>,
    log: PathBuf,
    child: Mutex<Option<Child>>,
}

impl Node {
    /// Starts `redis-server <args>` and waits until it answers PING.
    pub fn start(name: &str, port: u16, args: Vec<String>, admin: Admin, log: PathBuf) -> Node {
        let node = Node {
            port,
            admin,
            name: name.to_owned(),
            args,
            log,
            child: Mutex::new(None),
        };
        node.spawn();
        node
    }

    fn spawn(&self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut child = Command::new("redis-server")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("redis-server on PATH");
        let deadline = Instant::now() + Duration::from_secs(10);
        let pid = child.id().to_string();
        loop {
            // Ours, not another process that took the port between `free_port` and the bind.
            let answered = self.admin.try_info("server");
            if answered.is_some_and(|i| i.get("process_id") == Some(&pid)) {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{} (port {}) exited at start-up ({status}):\n{}",
                    self.name,
                    self.port,
                    self.log_tail()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} did not answer on port {}", self.name, self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        *self.child.lock().expect("lock") = Some(child);
    }

    /// The last lines of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    pub fn is_running(&self) -> bool {
        self.child.lock().expect("lock").is_some()
    }

    pub fn pid(&self) -> u32 {
        self.child
            .lock()
            .expect("lock")
            .as_ref()
            .map(Child::id)
            .expect("node running")
    }

    /// SIGKILL, and wait for the process to be gone. A no-op when it is not running.
    pub fn kill(&self) {
        if let Some(mut child) = self.child.lock().expect("lock").take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again with the same arguments (and files) after `kill`.
    pub fn revive(&self) {
        assert!(!self.is_running(), "{} is still running", self.name);
        self.spawn();
    }

    /// SIGKILL then start again on the same port.
    pub fn restart(&self) {
        self.kill();
        self.spawn();
    }

    /// SIGSTOP: sockets stay open, nothing is answered.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after `freeze`.
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        super::send_signal(self.pid(), signal);
    }

    pub fn cmd(&self, args: &[&str]) -> String {
        self.admin.cmd(args)
    }

    pub fn try_cmd(&self, args: &[&str]) -> Result<String, String> {
        self.admin.try_cmd(args)
    }

    pub fn info(&self, section: &str) -> HashMap<String, String> {
        self.admin.info(section)
    }

    /// `connected_clients` from `INFO clients` (this inspection's own connection included).
    pub fn connected_clients(&self) -> u64 {
        self.info("clients")["connected_clients"]
            .parse()
            .expect("a number")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.get_mut().ok().and_then(Option::take) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Arguments every data node gets: loopback only, no persistence unless asked.
fn base_args(port: u16, dir: &Path) -> Vec<String> {
    [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--protected-mode",
        "no",
        "--save",
        "",
        "--appendonly",
        "no",
        // Replicas sync at once rather than after the default 5 s of waiting for company.
        "--repl-diskless-sync-delay",
        "0",
        "--dir",
        &path_of(dir),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn owned(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Waits until `replica` reports an up link to `primary`, has its replication offset, and the
/// primary lists it online.
fn wait_replica_synced(replica: &Admin, primary: &Admin, limit: Duration) {
    wait_for("the replica to sync", limit, || {
        let (Some(r), Some(p)) = (
            replica.try_info("replication"),
            primary.try_info("replication"),
        ) else {
            return false;
        };
        // The primary only counts a replica for WAIT once it lists it `online` (after the
        // replica's first ACK, up to a second after the sync).
        let online = format!("port={},state=online", replica.port);
        r.get("master_port").map(String::as_str) == Some(&primary.port.to_string())
            && r.get("master_link_status").map(String::as_str) == Some("up")
            && r.get("master_repl_offset") == p.get("master_repl_offset")
            && p.iter()
                .any(|(k, v)| k.starts_with("slave") && v.contains(&online))
    });
}

// ---------------------------------------------------------------------------------------------
// Standalone

/// A plain `redis-server` with its own dir (so `durable()` survives restarts).
pub struct Standalone {
    pub node: Node,
    pub dir: TempDir,
}

impl Standalone {
    pub fn start(extra: &[&str]) -> Standalone {
        let dir = TempDir::new("standalone");
        let port = server_port();
        let mut args = base_args(port, &dir.path);
        args.extend(owned(extra));
        let node = Node::start(
            "standalone",
            port,
            args,
            Admin::plain(port),
            dir.join("redis.log"),
        );
        Standalone { node, dir }
    }

    /// AOF with `appendfsync always`: every acknowledged write survives a SIGKILL + restart.
    pub fn durable() -> Standalone {
        Standalone::start(&["--appendonly", "yes", "--appendfsync", "always"])
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.node.port)
    }
}

/// Starts two plain data nodes on `ports[0]` and `ports[1]`, the second a replica of the
/// first, and waits until the replica is in sync.
fn primary_and_replica(dir: &TempDir, names: [&str; 2], ports: &[u16]) -> (Node, Node) {
    let primary = Node::start(
        names[0],
        ports[0],
        base_args(ports[0], &dir.subdir(names[0])),
        Admin::plain(ports[0]),
        dir.join(&format!("{}.log", names[0])),
    );
    let mut args = base_args(ports[1], &dir.subdir(names[1]));
    args.extend(owned(&["--replicaof", "127.0.0.1", &ports[0].to_string()]));
    let replica = Node::start(
        names[1],
        ports[1],
        args,
        Admin::plain(ports[1]),
        dir.join(&format!("{}.log", names[1])),
    );
    wait_replica_synced(&replica.admin, &primary.admin, Duration::from_secs(15));
    (primary, replica)
}

/// A primary and a replica of it (plain), for durability (`WAIT`) tests.
pub struct Replicated {
    pub primary: Node,
    pub replica: Node,
    pub dir: TempDir,
}

impl Replicated {
    pub fn start() -> Replicated {
        let dir = TempDir::new("replicated");
        let (primary, replica) = primary_and_replica(&dir, ["primary", "replica"], &free_ports(2));
        // Even listed online, a replica fresh from a full sync only gets the command stream
        // (and so answers WAIT) after its first ACK, up to a second later.
        wait_for("WAIT to count the replica", Duration::from_secs(10), || {
            let probe = primary
                .admin
                .pipe("SET harness-probe 1\nDEL harness-probe\nWAIT 1 100\n");
            probe.lines().last() == Some("1")
        });
        Replicated {
            primary,
            replica,
            dir,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.primary.port)
    }
}

// ---------------------------------------------------------------------------------------------
// TLS + ACL

pub const ACL_USER: &str = "stickless";
pub const ACL_PASSWORD: &str = "s3cret-test-pass";
pub const ADMIN_USER: &str = "admin";
pub const ADMIN_PASSWORD: &str = "admin-test-pass";

/// Exactly what the proxy may run: its keys, its commands, connection set-up. The README's
/// minimal rule, word for word, so the documented rule is the tested one.
pub const ACL_RULES: &str = "resetchannels ~stickless:* -@all +ping +hello +auth +select +wait \
                             +hgetall +pttl +pexpire +del +exists +hset +hdel +eval +evalsha \
                             +script|load +zadd +zrem +zrange +zrangebyscore +zremrangebyscore \
                             +pexpireat +xadd";

/// The admin commands renamed away; the admin reaches them under `<name>-ADMIN-7f3a`.
pub const RENAMED: [&str; 5] = ["CONFIG", "KEYS", "FLUSHALL", "FLUSHDB", "DEBUG"];

pub fn renamed(command: &str) -> String {
    format!("{command}-ADMIN-7f3a")
}

/// `redis-server` with TLS only (`--port 0`), the ACL user `stickless`, the default user off,
/// an `admin` user for the test's own inspection, and the admin commands renamed.
pub struct TlsRedis {
    pub node: Node,
    pub port: u16,
    pub certs: Certs,
    pub dir: TempDir,
}

impl TlsRedis {
    /// Client certificates optional.
    pub fn start() -> TlsRedis {
        TlsRedis::start_with("optional")
    }

    /// `tls-auth-clients yes`: the handshake needs a client certificate signed by the CA.
    pub fn start_requiring_client_cert() -> TlsRedis {
        TlsRedis::start_with("yes")
    }

    fn start_with(auth_clients: &str) -> TlsRedis {
        let certs = Certs::generate();
        let dir = TempDir::new("tls");
        let port = server_port();
        let mut conf = format!(
            "port 0\ntls-port {port}\nbind 127.0.0.1\nprotected-mode no\nsave \"\"\n\
             appendonly no\ndir {dir}\n\
             tls-cert-file {cert}\ntls-key-file {key}\ntls-ca-cert-file {ca}\n\
             tls-auth-clients {auth_clients}\n\
             user default off\n\
             user {ADMIN_USER} on >{ADMIN_PASSWORD} ~* &* +@all\n\
             user {ACL_USER} on >{ACL_PASSWORD} {ACL_RULES}\n",
            dir = path_of(&dir.path),
            cert = path_of(&certs.server_cert),
            key = path_of(&certs.server_key),
            ca = path_of(&certs.ca),
        );
        for command in RENAMED {
            conf.push_str(&format!("rename-command {command} {}\n", renamed(command)));
        }
        let conf_path = dir.join("redis.conf");
        std::fs::write(&conf_path, conf).expect("write redis.conf");
        let mut admin = TlsRedis::admin_for(port, &certs);
        if auth_clients == "yes" {
            admin.cert = Some((certs.client_cert.clone(), certs.client_key.clone()));
        }
        let node = Node::start(
            "tls-redis",
            port,
            vec![path_of(&conf_path)],
            admin,
            dir.join("redis.log"),
        );
        TlsRedis {
            node,
            port,
            certs,
            dir,
        }
    }

    fn admin_for(port: u16, certs: &Certs) -> Admin {
        Admin {
            port,
            ca: Some(certs.ca.clone()),
            cert: None,
            user: Some((ADMIN_USER.into(), ADMIN_PASSWORD.into())),
        }
    }

    /// `rediss://stickless:<password>@127.0.0.1:<port>/0`
    pub fn url(&self) -> String {
        format!(
            "rediss://{ACL_USER}:{ACL_PASSWORD}@127.0.0.1:{}/0",
            self.port
        )
    }

    /// `rediss://127.0.0.1:<port>/0`, for credentials given apart.
    pub fn bare_url(&self) -> String {
        format!("rediss://127.0.0.1:{}/0", self.port)
    }

    /// A command as `admin`, over TLS.
    pub fn admin(&self, args: &[&str]) -> String {
        self.node.cmd(args)
    }

    /// The same command as the restricted `stickless` user.
    pub fn as_acl_user(&self, args: &[&str]) -> Result<String, String> {
        let mut admin = self.node.admin.clone();
        admin.user = Some((ACL_USER.into(), ACL_PASSWORD.into()));
        admin.try_cmd(args)
    }

    /// Keys matching the pattern, through the renamed `KEYS`.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .admin(&[&renamed("KEYS"), pattern])
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        keys.sort();
        keys
    }

    /// Entries in `ACL LOG` (denied commands, keys or authentications).
    pub fn acl_log(&self) -> String {
        self.admin(&["ACL", "LOG"])
    }
}

// ---------------------------------------------------------------------------------------------
// Cluster

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
pub struct ClusterNode {
    pub id: String,
    pub port: u16,
    pub flags: Vec<String>,
    pub master_id: Option<String>,
    pub slots: Vec<(u16, u16)>,
}

impl ClusterNode {
    pub fn is_master(&self) -> bool {
        self.flags.iter().any(|f| f == "master")
    }
    pub fn is_failed(&self) -> bool {
        self.flags.iter().any(|f| f == "fail" || f == "fail?")
    }
}

fn parse_cluster_nodes(text: &str) -> Vec<ClusterNode> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                return None;
            }
            let port = fields[1]
                .split('@')
                .next()?
                .rsplit(':')
                .next()?
                .parse()
                .ok()?;
            let slots = fields[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|n| (n, n)),
                })
                .collect();
            Some(ClusterNode {
                id: fields[0].to_owned(),
                port,
                flags: fields[2].split(',').map(str::to_owned).collect(),
                master_id: (fields[3] != "-").then(|| fields[3].to_owned()),
                slots,
            })
        })
        .collect()
}

/// Six `redis-server`s in cluster mode: three primaries, one replica each.
pub struct Cluster {
    pub nodes: Vec<Node>,
    /// Node ids, by index into `nodes` (stable across restarts: nodes-<port>.conf).
    pub ids: Vec<String>,
    pub dir: TempDir,
}

impl Cluster {
    pub fn start() -> Cluster {
        let dir = TempDir::new("cluster");
        let ports = free_ports(12);
        let mut nodes = Vec::new();
        for i in 0..6 {
            let (port, bus) = (ports[i], ports[i + 6]);
            let mut args = base_args(port, &dir.subdir(&format!("node-{port}")));
            let conf = path_of(&dir.join(&format!("nodes-{port}.conf")));
            args.extend(owned(&[
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                &bus.to_string(),
                "--cluster-config-file",
                &conf,
                "--cluster-node-timeout",
                "1000",
            ]));
            nodes.push(Node::start(
                &format!("cluster-{i}"),
                port,
                args,
                Admin::plain(port),
                dir.join(&format!("node-{port}.log")),
            ));
        }
        let mut create = Command::new("timeout");
        create.args(["-s", "KILL", "30", "redis-cli", "--cluster", "create"]);
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        let output = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli");
        assert!(
            output.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let ids = nodes
            .iter()
            .map(|n| n.cmd(&["CLUSTER", "MYID"]).trim().to_owned())
            .collect();
        let cluster = Cluster { nodes, ids, dir };
        cluster.wait_healthy(Duration::from_secs(30));
        cluster
    }

    /// `redis+cluster://` with the first three nodes as seeds.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self.nodes[..3]
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    fn index_of_id(&self, id: &str) -> usize {
        self.ids
            .iter()
            .position(|i| i == id)
            .unwrap_or_else(|| panic!("unknown node id {id}"))
    }

    /// `CLUSTER NODES` as seen by the first running node that answers.
    pub fn view(&self) -> Vec<ClusterNode> {
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            if let Ok(text) = node.try_cmd(&["CLUSTER", "NODES"]) {
                return parse_cluster_nodes(&text);
            }
        }
        panic!("no cluster node answers");
    }

    /// What each node says it is, asked of itself: indices of the running primaries.
    pub fn primaries(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i].is_running() && self.self_view(i).is_some_and(|n| n.is_master())
            })
            .collect()
    }

    fn self_view(&self, i: usize) -> Option<ClusterNode> {
        let text = self.nodes[i].try_cmd(&["CLUSTER", "NODES"]).ok()?;
        parse_cluster_nodes(&text)
            .into_iter()
            .find(|n| n.flags.iter().any(|f| f == "myself"))
    }

    /// The running replica of primary `i`.
    pub fn replica_of(&self, i: usize) -> usize {
        let id = &self.ids[i];
        (0..self.nodes.len())
            .find(|&r| {
                self.nodes[r].is_running()
                    && self
                        .self_view(r)
                        .is_some_and(|n| n.master_id.as_ref() == Some(id))
            })
            .unwrap_or_else(|| panic!("node {i} has no running replica"))
    }

    /// Every running node: `cluster_state:ok`, the same slot owners, every running replica
    /// linked and caught up.
    pub fn wait_healthy(&self, limit: Duration) {
        wait_until("a healthy cluster", limit, || self.health());
    }

    fn health(&self) -> Result<(), String> {
        let mut owners = None;
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            let name = &node.name;
            let info = node
                .try_cmd(&["CLUSTER", "INFO"])
                .ok()
                .map(|t| parse_info(&t));
            let state = info.as_ref().and_then(|i| i.get("cluster_state").cloned());
            if state.as_deref() != Some("ok") {
                return Err(format!("{name}: cluster_state {state:?}"));
            }
            let text = node
                .try_cmd(&["CLUSTER", "NODES"])
                .map_err(|e| format!("{name}: {e}"))?;
            let view = parse_cluster_nodes(&text);
            let mine: BTreeMap<String, Vec<(u16, u16)>> = view
                .iter()
                .filter(|n| n.is_master() && !n.slots.is_empty())
                .map(|n| (n.id.clone(), n.slots.clone()))
                .collect();
            if owners.get_or_insert_with(|| mine.clone()) != &mine {
                return Err(format!(
                    "{name} sees other slot owners: {mine:?} vs {owners:?}"
                ));
            }
            let me = view
                .iter()
                .find(|n| n.flags.iter().any(|f| f == "myself"))
                .ok_or_else(|| format!("{name}: no myself line"))?;
            if !me.is_master() {
                let link = node
                    .admin
                    .try_info("replication")
                    .and_then(|r| r.get("master_link_status").cloned());
                if link.as_deref() != Some("up") {
                    return Err(format!("{name}: master_link_status {link:?}"));
                }
            }
        }
        Ok(())
    }

    /// SIGKILL primary `i`, wait for its replica's promotion and a healthy cluster; returns
    /// the index of the new primary. The killed node stays down (`nodes[i].revive()` brings it
    /// back, as a replica).
    pub fn kill_primary(&self, i: usize) -> usize {
        let replica = self.replica_of(i);
        wait_replica_synced(
            &self.nodes[replica].admin,
            &self.nodes[i].admin,
            Duration::from_secs(10),
        );
        self.nodes[i].kill();
        wait_for("the replica's promotion", Duration::from_secs(20), || {
            self.self_view(replica).is_some_and(|n| n.is_master())
        });
        self.wait_healthy(Duration::from_secs(20));
        replica
    }

    /// `CLUSTER FAILOVER` on replica `r` (a coordinated switch: no write lost); waits until it
    /// is a primary and the cluster is healthy.
    pub fn failover(&self, r: usize) {
        self.nodes[r].cmd(&["CLUSTER", "FAILOVER"]);
        wait_for("the manual failover", Duration::from_secs(20), || {
            self.self_view(r).is_some_and(|n| n.is_master())
        });
        self.wait_healthy(Duration::from_secs(20));
    }

    pub fn slot_of(&self, key: &str) -> u16 {
        let node = self
            .nodes
            .iter()
            .find(|n| n.is_running())
            .expect("a running node");
        node.cmd(&["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("a slot number")
    }

    /// The index of the primary serving `slot`.
    pub fn owner_of(&self, slot: u16) -> usize {
        let view = self.view();
        let owner = view
            .iter()
            .find(|n| {
                n.is_master()
                    && !n.is_failed()
                    && n.slots.iter().any(|&(a, b)| a <= slot && slot <= b)
            })
            .unwrap_or_else(|| panic!("no owner for slot {slot}"));
        self.index_of_id(&owner.id)
    }

    /// Moves the slots of `keys` to primary `to`, keys and all, the way `redis-cli --cluster
    /// reshard` does: IMPORTING/MIGRATING, MIGRATE batches, then SETSLOT NODE everywhere.
    /// Returns how many slots moved.
    pub fn move_slots_of(&self, keys: &[String], to: usize) -> usize {
        let slots: BTreeSet<u16> = keys.iter().map(|k| self.slot_of(k)).collect();
        let mut moved = 0;
        for slot in slots {
            let from = self.owner_of(slot);
            if from == to {
                continue;
            }
            self.move_slot(slot, from, to);
            moved += 1;
        }
        self.wait_healthy(Duration::from_secs(20));
        moved
    }

    /// Moves one slot from primary `from` to primary `to`.
    pub fn move_slot(&self, slot: u16, from: usize, to: usize) {
        let s = slot.to_string();
        let (source, target) = (&self.nodes[from], &self.nodes[to]);
        target.cmd(&["CLUSTER", "SETSLOT", &s, "IMPORTING", &self.ids[from]]);
        source.cmd(&["CLUSTER", "SETSLOT", &s, "MIGRATING", &self.ids[to]]);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let keys = source.cmd(&["CLUSTER", "GETKEYSINSLOT", &s, "100"]);
            let keys: Vec<&str> = keys.lines().filter(|l| !l.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "slot {slot} did not drain");
            let port = target.port.to_string();
            let mut migrate = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            migrate.extend(keys);
            source.cmd(&migrate);
        }
        // Target first, then source, then every other primary (as redis-cli does).
        let target_id = &self.ids[to];
        target.cmd(&["CLUSTER", "SETSLOT", &s, "NODE", target_id]);
        source.cmd(&["CLUSTER", "SETSLOT", &s, "NODE", target_id]);
        for other in self.primaries() {
            if other != from && other != to {
                let _ = self.nodes[other].try_cmd(&["CLUSTER", "SETSLOT", &s, "NODE", target_id]);
            }
        }
    }

    /// Moves one slot from primary `from` to primary `to` one key at a time, the way an
    /// online resharding does it, calling `between` after IMPORTING/MIGRATING are set, after
    /// each key, and after the slot has been handed over; keys created meanwhile (on the
    /// target, by `ASK`) stay where they are. Returns how many keys were migrated.
    pub fn migrate_slot_key_by_key(
        &self,
        slot: u16,
        from: usize,
        to: usize,
        mut between: impl FnMut(&str),
    ) -> usize {
        let s = slot.to_string();
        let (source, target) = (&self.nodes[from], &self.nodes[to]);
        target.cmd(&["CLUSTER", "SETSLOT", &s, "IMPORTING", &self.ids[from]]);
        source.cmd(&["CLUSTER", "SETSLOT", &s, "MIGRATING", &self.ids[to]]);
        between("importing/migrating set");
        let port = target.port.to_string();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut migrated = 0;
        loop {
            let key = source.cmd(&["CLUSTER", "GETKEYSINSLOT", &s, "1"]);
            let Some(key) = key.lines().find(|l| !l.is_empty()) else {
                break;
            };
            assert!(Instant::now() < deadline, "slot {slot} did not drain");
            let key = key.to_owned();
            let answer =
                source.cmd(&["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS", &key]);
            // NOKEY: the key expired or was deleted between the two commands.
            assert!(matches!(answer.trim(), "OK" | "NOKEY"), "MIGRATE: {answer}");
            migrated += 1;
            between("a key migrated");
        }
        let target_id = &self.ids[to];
        target.cmd(&["CLUSTER", "SETSLOT", &s, "NODE", target_id]);
        source.cmd(&["CLUSTER", "SETSLOT", &s, "NODE", target_id]);
        for other in self.primaries() {
            if other != from && other != to {
                let _ = self.nodes[other].try_cmd(&["CLUSTER", "SETSLOT", &s, "NODE", target_id]);
            }
        }
        between("slot handed over");
        migrated
    }

    /// A command sent to the primary that owns `key`'s slot.
    pub fn on_owner(&self, key: &str, args: &[&str]) -> String {
        self.nodes[self.owner_of(self.slot_of(key))].cmd(args)
    }

    /// Every key on every running primary.
    pub fn all_keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        for i in self.primaries() {
            keys.extend(
                self.nodes[i]
                    .cmd(&["KEYS", "*"])
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned),
            );
        }
        keys.sort();
        keys
    }
}

// ---------------------------------------------------------------------------------------------
// Sentinel

pub const MASTER_NAME: &str = "mymaster";

/// Two data nodes (initially `data[0]` primary, `data[1]` its replica) and three Sentinels
/// monitoring them as `mymaster` with quorum 2.
pub struct SentinelSet {
    pub data: Vec<Node>,
    pub sentinels: Vec<Node>,
    pub dir: TempDir,
}

impl SentinelSet {
    pub fn start() -> SentinelSet {
        let dir = TempDir::new("sentinel");
        let ports = free_ports(5);
        let (primary, replica) = primary_and_replica(&dir, ["data-0", "data-1"], &ports);
        let mut sentinels = Vec::new();
        for (i, &port) in ports[2..].iter().enumerate() {
            let sdir = dir.subdir(&format!("sentinel-{i}"));
            let conf = sdir.join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {}\n\
                     sentinel resolve-hostnames no\n\
                     sentinel monitor {MASTER_NAME} 127.0.0.1 {} 2\n\
                     sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                     sentinel failover-timeout {MASTER_NAME} 5000\n\
                     sentinel parallel-syncs {MASTER_NAME} 1\n",
                    path_of(&sdir),
                    ports[0]
                ),
            )
            .expect("write sentinel.conf");
            sentinels.push(Node::start(
                &format!("sentinel-{i}"),
                port,
                vec![path_of(&conf), "--sentinel".into()],
                Admin::plain(port),
                dir.join(&format!("sentinel-{i}.log")),
            ));
        }
        let set = SentinelSet {
            data: vec![primary, replica],
            sentinels,
            dir,
        };
        set.wait_known(0, Duration::from_secs(30));
        set
    }

    /// `redis+sentinel://s1,s2,s3/mymaster/0`
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis+sentinel://{}/{MASTER_NAME}/0", hosts.join(","))
    }

    /// What one Sentinel says about the master: field → value.
    fn sentinel_master(sentinel: &Node) -> Option<HashMap<String, String>> {
        let text = sentinel
            .try_cmd(&["SENTINEL", "MASTER", MASTER_NAME])
            .ok()?;
        let lines: Vec<&str> = text.lines().collect();
        Some(
            lines
                .chunks(2)
                .filter(|c| c.len() == 2)
                .map(|c| (c[0].to_owned(), c[1].to_owned()))
                .collect(),
        )
    }

    /// The primary's index in `data` according to the Sentinels (all must agree).
    pub fn primary_index(&self) -> Option<usize> {
        let mut agreed = None;
        for sentinel in &self.sentinels {
            let master = SentinelSet::sentinel_master(sentinel)?;
            let port: u16 = master.get("port")?.parse().ok()?;
            let index = self.data.iter().position(|d| d.port == port)?;
            if *agreed.get_or_insert(index) != index {
                return None;
            }
        }
        agreed
    }

    pub fn primary(&self) -> &Node {
        &self.data[self.primary_index().expect("sentinels agree on a primary")]
    }

    /// Waits until every Sentinel names `data[primary]` as the master, that node reports
    /// `role:master`, and the other data node, when running, is its linked replica: what a
    /// client resolving through Sentinel needs.
    pub fn wait_stable(&self, primary: usize, limit: Duration) {
        let what = format!("Sentinel to settle on data-{primary}");
        wait_until(&what, limit, || self.stable(primary, false));
    }

    /// `wait_stable`, and every Sentinel also knows the two others and lists the replica, so
    /// that it can fail over again.
    pub fn wait_known(&self, primary: usize, limit: Duration) {
        let what = format!("Sentinel to know everything about data-{primary}");
        wait_until(&what, limit, || self.stable(primary, true));
    }

    fn stable(&self, primary: usize, fully: bool) -> Result<(), String> {
        let other = 1 - primary;
        let replica_running = self.data[other].is_running();
        let port = self.data[primary].port.to_string();
        for sentinel in &self.sentinels {
            let name = &sentinel.name;
            let master = SentinelSet::sentinel_master(sentinel)
                .ok_or_else(|| format!("{name}: no answer about {MASTER_NAME}"))?;
            let field = |k: &str| master.get(k).map(String::as_str).unwrap_or_default();
            if field("port") != port || field("flags") != "master" {
                return Err(format!(
                    "{name}: master port {} flags {}",
                    field("port"),
                    field("flags")
                ));
            }
            if fully && field("num-other-sentinels") != "2" {
                return Err(format!(
                    "{name}: {} other sentinels",
                    field("num-other-sentinels")
                ));
            }
            if fully && replica_running && !self.sentinel_sees_replica(sentinel, other) {
                return Err(format!("{name}: does not list data-{other} as a replica"));
            }
        }
        let role = self.data[primary].admin.role();
        if role.as_deref() != Some("master") {
            return Err(format!("data-{primary}: role {role:?}"));
        }
        if replica_running {
            let replication = self.data[other]
                .admin
                .try_info("replication")
                .ok_or_else(|| format!("data-{other}: no answer"))?;
            let get = |k: &str| replication.get(k).map(String::as_str).unwrap_or_default();
            if get("role") != "slave"
                || get("master_port") != port
                || get("master_link_status") != "up"
            {
                return Err(format!(
                    "data-{other}: role {} of {} link {}",
                    get("role"),
                    get("master_port"),
                    get("master_link_status")
                ));
            }
        }
        Ok(())
    }

    fn sentinel_sees_replica(&self, sentinel: &Node, index: usize) -> bool {
        let Ok(text) = sentinel.try_cmd(&["SENTINEL", "REPLICAS", MASTER_NAME]) else {
            return false;
        };
        // Flattened: one replica's fields as alternating key / value lines; find the port of
        // ours and its flags.
        let lines: Vec<&str> = text.lines().collect();
        let port = self.data[index].port.to_string();
        let mut current_port = None;
        for pair in lines.chunks(2).filter(|c| c.len() == 2) {
            match pair[0] {
                "port" => current_port = Some(pair[1]),
                "flags" if current_port == Some(port.as_str()) => return pair[1] == "slave",
                _ => {}
            }
        }
        false
    }

    /// `SENTINEL FAILOVER mymaster`; waits until the replica has taken over and the old
    /// primary replicates from it. Returns the new primary's index.
    pub fn failover(&self) -> usize {
        let old = self.primary_index().expect("a primary");
        self.sentinels[0].cmd(&["SENTINEL", "FAILOVER", MASTER_NAME]);
        self.wait_stable(1 - old, Duration::from_secs(30));
        1 - old
    }

    /// SIGKILL the primary; waits until the Sentinels promote the replica. The old primary
    /// stays down (`data[i].revive()` brings it back; Sentinel then makes it a replica).
    /// Returns the new primary's index.
    pub fn kill_primary(&self) -> usize {
        let old = self.primary_index().expect("a primary");
        wait_replica_synced(
            &self.data[1 - old].admin,
            &self.data[old].admin,
            Duration::from_secs(10),
        );
        self.data[old].kill();
        self.wait_stable(1 - old, Duration::from_secs(30));
        1 - old
    }

    /// Swaps the roles by hand with `REPLICAOF`, behind Sentinel's back: writes on the
    /// primary are paused until the replica has caught up, the replica is promoted
    /// (`REPLICAOF NO ONE`), the old primary is made its replica, and the pause is lifted, so
    /// clients still connected to the old primary get `READONLY` for their writes. Then the
    /// operator re-points the Sentinels (`SENTINEL REMOVE` + `MONITOR`, one Sentinel at a
    /// time): left alone, Sentinel only notices a master turned replica after 20 s and more.
    /// Returns the new primary's index.
    pub fn swap_roles(&self) -> usize {
        let old = self.primary_index().expect("a primary");
        let new = 1 - old;
        let (primary, replica) = (&self.data[old], &self.data[new]);
        primary.cmd(&["CLIENT", "PAUSE", "5000", "WRITE"]);
        wait_replica_synced(&replica.admin, &primary.admin, Duration::from_secs(5));
        replica.cmd(&["REPLICAOF", "NO", "ONE"]);
        primary.cmd(&["REPLICAOF", "127.0.0.1", &replica.port.to_string()]);
        primary.cmd(&["CLIENT", "UNPAUSE"]);
        self.repoint_sentinels(new);
        self.wait_known(new, Duration::from_secs(30));
        new
    }

    /// Makes every Sentinel monitor `data[primary]` as `mymaster`, one after the other.
    pub fn repoint_sentinels(&self, primary: usize) {
        let port = self.data[primary].port.to_string();
        for sentinel in &self.sentinels {
            sentinel.cmd(&["SENTINEL", "REMOVE", MASTER_NAME]);
            sentinel.cmd(&["SENTINEL", "MONITOR", MASTER_NAME, "127.0.0.1", &port, "2"]);
            sentinel.cmd(&[
                "SENTINEL",
                "SET",
                MASTER_NAME,
                "down-after-milliseconds",
                "1000",
                "failover-timeout",
                "5000",
                "parallel-syncs",
                "1",
            ]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Steady load

/// One request the load driver made.
#[derive(Debug, Clone, Copy)]
pub struct Event {
    /// Start, in ms since the load started.
    pub at_ms: u64,
    pub took_ms: u64,
    /// HTTP status; 0 when no response came (connection error or the client gave up).
    pub status: u16,
    pub write: bool,
    pub retry_after: bool,
}

/// An acknowledged write that was not there when read later.
#[derive(Debug, Clone)]
pub struct LostWrite {
    pub session: String,
    pub n: u64,
    /// When its 200 came, in ms since the load started.
    pub acked_at_ms: u64,
}

struct User {
    id: String,
    events: Vec<Event>,
    /// Every acknowledged counter and when its 200 came, oldest first.
    acks: Vec<(u64, u64)>,
    /// The highest counter a 200 acknowledged (and not yet found lost).
    acked: u64,
    lost_writes: Vec<LostWrite>,
    /// Reads that answered 200 with a value below `acked`.
    stale_reads: Vec<String>,
    /// Times the session vanished (a 200 without it, or a new cookie issued).
    lost_session: Vec<String>,
}

impl User {
    /// A read found `n` while `acked` was acknowledged: counters above `n` were lost.
    fn found(&mut self, n: u64, at_ms: u128, when: &str) {
        if n >= self.acked {
            return;
        }
        self.stale_reads.push(format!(
            "{}: {when} at {at_ms} ms read n={n} after n={} was acknowledged",
            self.id, self.acked
        ));
        let session = self.id.clone();
        self.lost_writes
            .extend(
                self.acks
                    .iter()
                    .filter(|&&(counter, _)| counter > n)
                    .map(|&(counter, at)| LostWrite {
                        session: session.clone(),
                        n: counter,
                        acked_at_ms: at,
                    }),
            );
        self.acks.retain(|&(counter, _)| counter <= n);
        self.acked = n;
    }
}

/// Steady traffic through the proxy from `sessions` logged-in users: each alternates a read
/// and a write that sets attribute `n` to its next counter, every ~20 ms, and records what
/// happened: every status, and every acknowledged write a later read no longer finds (the
/// proxy reads the primary only, so a read below an acknowledged counter means that write was
/// lost). `stop` then reads each session once more.
pub struct Load {
    addr: SocketAddr,
    started: Instant,
    stop: Arc<AtomicBool>,
    users: Vec<JoinHandle<User>>,
    ids: Vec<String>,
    faults: Vec<(String, u64, u64)>,
}

/// What one request came back as; `None` when no response came within 15 s.
async fn send(request: RawRequest) -> Option<RawResponse> {
    let sent = tokio::spawn(tokio::time::timeout(
        Duration::from_secs(15),
        request.send(),
    ));
    sent.await.ok()?.ok()
}

impl Load {
    /// Logs in `sessions` users (with `n = 0`) and starts their loops.
    pub async fn start(addr: SocketAddr, sessions: usize) -> Load {
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let mut ids = Vec::new();
        for _ in 0..sessions {
            let response = RawRequest::new(addr, "GET", "/login")
                .reply("X-Session-Set-N", "0")
                .reply("X-Session-Set-User", "load")
                .send()
                .await;
            assert_eq!(response.status, 200, "login before the fault: {response:?}");
            ids.push(response.issued_session().expect("a session cookie"));
        }
        let users = ids
            .iter()
            .cloned()
            .map(|id| {
                let stop = stop.clone();
                tokio::spawn(user_loop(addr, id, started, stop))
            })
            .collect();
        Load {
            addr,
            started,
            stop,
            users,
            ids,
            faults: Vec::new(),
        }
    }

    /// The session ids.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// The store keys of the sessions (`<prefix>:session:<id>`).
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        self.ids
            .iter()
            .map(|id| format!("{prefix}:session:{id}"))
            .collect()
    }

    /// Lets the load run for `how_long`.
    pub async fn run_for(&self, how_long: Duration) {
        tokio::time::sleep(how_long).await;
    }

    /// Runs a (blocking) fault while the load goes on, recording when it ran. Needs the
    /// multi-thread runtime.
    pub fn fault<T>(&mut self, name: &str, fault: impl FnOnce() -> T) -> T {
        let from = self.started.elapsed().as_millis() as u64;
        let result = tokio::task::block_in_place(fault);
        let to = self.started.elapsed().as_millis() as u64;
        self.faults.push((name.to_owned(), from, to));
        result
    }

    /// Starts, lets 1 s of load pass, injects `fault` (given the session ids), and keeps the
    /// load going until both `duration` has passed since the start and 3 s since the fault
    /// ended; then stops and checks.
    pub async fn run(
        addr: SocketAddr,
        sessions: usize,
        duration: Duration,
        name: &str,
        fault: impl FnOnce(&[String]),
    ) -> LoadReport {
        let mut load = Load::start(addr, sessions).await;
        load.run_for(Duration::from_secs(1)).await;
        let ids = load.ids.clone();
        load.fault(name, || fault(&ids));
        let until = (load.started + duration).max(Instant::now() + Duration::from_secs(3));
        tokio::time::sleep_until(until.into()).await;
        load.stop().await
    }

    /// Stops the loops, then reads every session back (for up to 10 s per session while the
    /// store recovers) and checks it holds at least its last acknowledged counter.
    pub async fn stop(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut users = Vec::new();
        for task in self.users {
            users.push(task.await.expect("load task"));
        }
        for user in &mut users {
            verify(self.addr, self.started, user).await;
        }
        let mut report = LoadReport {
            sessions: users.len(),
            load_ms: self.started.elapsed().as_millis() as u64,
            faults: self.faults,
            ..LoadReport::default()
        };
        for user in users {
            for event in &user.events {
                report.requests += 1;
                if event.write {
                    report.writes += 1;
                }
                match event.status {
                    200 => report.ok += 1,
                    status => {
                        if status == 503 {
                            report.unavailable += 1;
                            if !event.retry_after {
                                report.without_retry_after += 1;
                            }
                        } else {
                            *report.other.entry(status).or_default() += 1;
                        }
                        let (start, end) = (event.at_ms, event.at_ms + event.took_ms);
                        report.window = Some(match report.window {
                            None => (start, end),
                            Some((a, b)) => (a.min(start), b.max(end)),
                        });
                    }
                }
                report.slowest_ms = report.slowest_ms.max(event.took_ms);
            }
            report.stale_reads.extend(user.stale_reads);
            report.lost_sessions.extend(user.lost_session);
            report.lost_writes.extend(user.lost_writes);
        }
        report
    }
}

async fn user_loop(addr: SocketAddr, id: String, started: Instant, stop: Arc<AtomicBool>) -> User {
    let mut user = User {
        id,
        events: Vec::new(),
        acks: Vec::new(),
        acked: 0,
        lost_writes: Vec::new(),
        stale_reads: Vec::new(),
        lost_session: Vec::new(),
    };
    let mut next = 1u64;
    let mut write = false;
    while !stop.load(Ordering::Relaxed) {
        let mut request = RawRequest::new(addr, "GET", if write { "/w" } else { "/r" })
            .header("Cookie", &format!("SESSION={}", user.id));
        if write {
            request = request.reply("X-Session-Set-N", &next.to_string());
        }
        let at = started.elapsed();
        let response = send(request).await;
        let took = started.elapsed() - at;
        let status = response.as_ref().map_or(0, |r| r.status);
        user.events.push(Event {
            at_ms: at.as_millis() as u64,
            took_ms: took.as_millis() as u64,
            status,
            write,
            retry_after: response
                .as_ref()
                .is_some_and(|r| r.header("retry-after").is_some()),
        });
        if let Some(response) = response.filter(|r| r.status == 200) {
            let at_ms = at.as_millis();
            if let Some(new) = response.issued_session() {
                user.lost_session.push(format!(
                    "{}: at {at_ms} ms a new session was issued (the old one was gone)",
                    user.id
                ));
                user.id = new;
            }
            if write {
                user.acked = next;
                user.acks.push((next, started.elapsed().as_millis() as u64));
            } else {
                match response
                    .backend_saw("x-session-n")
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    Some(n) => user.found(n, at_ms, "during the load"),
                    None => user.lost_session.push(format!(
                        "{}: at {at_ms} ms a read was served without the session",
                        user.id
                    )),
                }
            }
        }
        if write {
            next += 1;
        }
        write = !write;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    user
}

/// Reads the session back once the load has stopped, retrying for up to 10 s.
async fn verify(addr: SocketAddr, started: Instant, user: &mut User) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = String::new();
    while Instant::now() < deadline {
        let request = RawRequest::new(addr, "GET", "/verify")
            .header("Cookie", &format!("SESSION={}", user.id));
        match send(request).await {
            Some(response) if response.status == 200 => {
                let at_ms = started.elapsed().as_millis();
                match response
                    .backend_saw("x-session-n")
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    Some(n) => user.found(n, at_ms, "after the load"),
                    None => user.lost_session.push(format!(
                        "{}: gone after the load (acknowledged n={})",
                        user.id, user.acked
                    )),
                }
                return;
            }
            Some(response) => last = format!("status {}", response.status),
            None => last = "no response".into(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    user.lost_session
        .push(format!("{}: unreadable after the load ({last})", user.id));
}

/// What a `Load` saw. `Display` prints it on one line for `--nocapture` runs.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    pub sessions: usize,
    pub load_ms: u64,
    pub requests: usize,
    pub writes: usize,
    pub ok: usize,
    /// 503s.
    pub unavailable: usize,
    /// 503s without `Retry-After`.
    pub without_retry_after: usize,
    /// Other non-200 statuses (0: no response) and how often.
    pub other: BTreeMap<u16, usize>,
    /// First start to last end of a non-200 request, in ms since the load started.
    pub window: Option<(u64, u64)>,
    pub slowest_ms: u64,
    /// `(name, from_ms, to_ms)` of each fault.
    pub faults: Vec<(String, u64, u64)>,
    /// Acknowledged writes a later read did not find.
    pub lost_writes: Vec<LostWrite>,
    /// The reads that found them missing.
    pub stale_reads: Vec<String>,
    /// Sessions that vanished or could not be read back.
    pub lost_sessions: Vec<String>,
}

impl LoadReport {
    /// Length of the non-200 window (0 when there was none).
    pub fn window_ms(&self) -> u64 {
        self.window.map_or(0, |(a, b)| b - a)
    }

    /// First to last acknowledgement of a lost write, in ms since the load started.
    pub fn lost_window(&self) -> Option<(u64, u64)> {
        let times = self.lost_writes.iter().map(|w| w.acked_at_ms);
        Some((times.clone().min()?, times.max()?))
    }

    /// The fault cost at most a `limit`-long window of 503s (nothing but 503s, each with
    /// `Retry-After`), and no acknowledged write or session was lost.
    pub fn assert_healthy(&self, limit: Duration) {
        self.assert_loss_at_most(limit, None);
    }

    /// `assert_healthy`, except that acknowledged writes may have been lost if all were
    /// acknowledged within one span of at most `lost` (a failover's inherent gap).
    pub fn assert_loss_at_most(&self, limit: Duration, lost: Option<Duration>) {
        assert!(self.ok > 0, "no request succeeded: {self}");
        assert!(
            self.window_ms() < limit.as_millis() as u64,
            "503 window too long: {self}"
        );
        assert!(self.other.is_empty(), "statuses other than 200/503: {self}");
        assert_eq!(
            self.without_retry_after, 0,
            "503 without Retry-After: {self}"
        );
        assert!(
            self.lost_sessions.is_empty(),
            "sessions lost: {:?}\n{self}",
            self.lost_sessions
        );
        match (self.lost_window(), lost) {
            (None, _) => {}
            (Some((a, b)), Some(allowed)) if b - a <= allowed.as_millis() as u64 => {}
            (Some(_), _) => panic!(
                "acknowledged writes lost (allowed span {lost:?}): {:?}\n{self}",
                self.stale_reads
            ),
        }
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} sessions, {} requests ({} writes) in {} ms: {} ok, {} x 503",
            self.sessions, self.requests, self.writes, self.load_ms, self.ok, self.unavailable
        )?;
        for (status, count) in &self.other {
            write!(f, ", {count} x {status}")?;
        }
        match self.window {
            Some((a, b)) => write!(f, "; non-200 window {} ms ({a}..{b} ms)", b - a)?,
            None => write!(f, "; no non-200 at all")?,
        }
        for (name, from, to) in &self.faults {
            write!(f, "; fault `{name}` {from}..{to} ms")?;
        }
        write!(f, "; slowest {} ms; ", self.slowest_ms)?;
        match self.lost_window() {
            Some((a, b)) => write!(
                f,
                "{} acknowledged writes LOST (acknowledged {a}..{b} ms)",
                self.lost_writes.len()
            )?,
            None => write!(f, "no acknowledged write lost")?,
        }
        write!(f, "; {} sessions lost", self.lost_sessions.len())
    }
}
