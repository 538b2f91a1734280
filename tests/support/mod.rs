//! Starts the built `orderflow` binary on a free port with its own data directory, and talks to
//! it over HTTP like a storefront would.

#![allow(dead_code)]

use futures::StreamExt;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const SECRET: &str = "e2e-test-secret-0123456789";
pub const BIN: &str = env!("CARGO_BIN_EXE_orderflow");

/// A running `orderflow serve`.
pub struct App {
    child: Child,
    pub base: String,
    pub data: PathBuf,
    pub client: reqwest::Client,
}

/// Writes a catalog of `(sku, price_minor, stock)` to `dir/catalog.json`.
pub fn write_catalog(dir: &Path, items: &[(&str, i64, u64)]) -> PathBuf {
    let items: Vec<Value> = items
        .iter()
        .map(|(sku, price, stock)| {
            json!({"sku": sku, "name": format!("Item {sku}"), "price_minor": price, "category": "test",
                   "weight_grams": 100, "stock": stock})
        })
        .collect();
    let path = dir.join("catalog.json");
    std::fs::write(
        &path,
        json!({"currency": "USD", "items": items}).to_string(),
    )
    .expect("write catalog");
    path
}

fn common_args<'a>(cmd: &'a mut Command, data: &Path, catalog: &Path) -> &'a mut Command {
    cmd.arg("--data-dir")
        .arg(data)
        .arg("--catalog")
        .arg(catalog)
        .arg("--jwt-secret")
        .arg(SECRET)
        .env("ORDERFLOW_CONFIG", "/dev/null")
        .env("ORDERFLOW_RETRY_BASE_MS", "5")
        .env("ORDERFLOW_RETRY_MAX_MS", "200")
        // The tests drive the pipeline harder than one customer or one address would; the
        // limits have their own tests, which set them back.
        .env("ORDERFLOW_LIMITS_CUSTOMER_PER_SECOND", "0")
        .env("ORDERFLOW_LIMITS_IP_PER_SECOND", "0")
        .env("ORDERFLOW_LIMITS_MAX_BACKLOG", "0")
}

/// Spawns `orderflow ARGS…` with stdout piped (for its banner) and stderr appended to
/// `DATA.stderr.log`.
fn spawn(data: &Path, catalog: &Path, env: &[(&str, &str)], args: &[&str]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data.with_extension("stderr.log"))
        .expect("stderr log");
    let mut cmd = Command::new(BIN);
    common_args(&mut cmd, data, catalog)
        .args(args)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
    cmd.spawn().expect("the orderflow binary starts")
}

impl App {
    /// Starts `orderflow serve` on `data` and waits for its banner.
    pub fn start(data: &Path, catalog: &Path) -> App {
        Self::start_with(data, catalog, &[])
    }

    /// Starts `orderflow serve` with extra environment variables.
    pub fn start_with(data: &Path, catalog: &Path, env: &[(&str, &str)]) -> App {
        Self::start_command(data, catalog, env, &["serve"])
    }

    /// Starts `orderflow ARGS… --listen 127.0.0.1:0` (`serve`, `ingest`, with extra flags) and
    /// waits for its banner.
    pub fn start_command(data: &Path, catalog: &Path, env: &[(&str, &str)], args: &[&str]) -> App {
        let mut all = args.to_vec();
        all.extend(["--listen", "127.0.0.1:0"]);
        let mut child = spawn(data, catalog, env, &all);
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("orderflow listening on ") {
                    let _ = tx.send(rest.trim().to_owned());
                }
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(base) => base,
            Err(_) => {
                let _ = child.kill();
                let log =
                    std::fs::read_to_string(data.with_extension("stderr.log")).unwrap_or_default();
                panic!("orderflow did not start within 60 s; stderr:\n{log}");
            }
        };
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()
            .expect("client");
        App {
            child,
            base,
            data: data.to_owned(),
            client,
        }
    }

    /// `kill -9`: no chance to flush or commit anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "orderflow exited with {status}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "orderflow did not stop within 15 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process id (for reading its memory from `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The process's `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    /// Posts `count` checkouts of one `SKU-A` one at a time, `pause` apart (so a chore reading the
    /// backlog sees each); returns each answer's status and body.
    pub async fn checkouts_spaced(
        &self,
        token: &str,
        count: usize,
        pause: Duration,
    ) -> Vec<(u16, Value)> {
        let mut answers = Vec::with_capacity(count);
        for _ in 0..count {
            let answer = self
                .checkout(token, &checkout(&[("SKU-A", 1)], "tok_visa"))
                .await
                .expect("answers");
            answers.push(answer);
            tokio::time::sleep(pause).await;
        }
        answers
    }

    /// Posts a checkout; returns the status and body.
    pub async fn checkout(
        &self,
        token: &str,
        body: &Value,
    ) -> Result<(u16, Value), reqwest::Error> {
        let response = self
            .client
            .post(self.url("/v1/checkouts"))
            .bearer_auth(token)
            .json(body)
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// Posts every checkout body, `concurrency` requests in flight at once; returns each answer's
    /// status and body, in the order of `bodies`.
    pub async fn post_all(
        &self,
        token: &str,
        bodies: Vec<Value>,
        concurrency: usize,
    ) -> Vec<(u16, Value)> {
        let mut answers: Vec<(usize, (u16, Value))> =
            futures::stream::iter(bodies.into_iter().enumerate())
                .map(|(i, body)| async move {
                    let answer = self
                        .checkout(token, &body)
                        .await
                        .expect("request completes");
                    (i, answer)
                })
                .buffer_unordered(concurrency)
                .collect()
                .await;
        answers.sort_unstable_by_key(|(i, _)| *i);
        answers.into_iter().map(|(_, answer)| answer).collect()
    }

    /// [`post_all`](Self::post_all) where every checkout must be accepted (202): the order ids,
    /// in the order of `bodies`.
    pub async fn accept_all(
        &self,
        token: &str,
        bodies: Vec<Value>,
        concurrency: usize,
    ) -> Vec<String> {
        self.post_all(token, bodies, concurrency)
            .await
            .into_iter()
            .map(|(status, answer)| {
                assert_eq!(status, 202, "checkout refused: {answer}");
                answer["order_id"].as_str().expect("order id").to_owned()
            })
            .collect()
    }

    /// Polls until every order is terminal and none of its refunds is pending; returns their
    /// views.
    pub async fn await_terminal(
        &self,
        token: &str,
        ids: &[String],
        within: Duration,
    ) -> Vec<Value> {
        let deadline = Instant::now() + within;
        let mut pending: Vec<String> = ids.to_vec();
        let mut done = Vec::with_capacity(ids.len());
        while !pending.is_empty() {
            assert!(
                Instant::now() < deadline,
                "{} of {} orders not terminal in time, e.g. {}",
                pending.len(),
                ids.len(),
                pending[0]
            );
            let views: Vec<(String, Option<Value>)> = futures::stream::iter(pending.clone())
                .map(|id| async move {
                    let response = self
                        .client
                        .get(self.url(&format!("/v1/orders/{id}")))
                        .bearer_auth(token)
                        .send()
                        .await;
                    let view = match response {
                        Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
                        _ => None,
                    };
                    (id, view)
                })
                .buffer_unordered(64)
                .collect()
                .await;
            pending.clear();
            for (id, view) in views {
                match view {
                    Some(v) if is_settled(&v) => done.push(v),
                    _ => pending.push(id),
                }
            }
            if !pending.is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        done
    }

    /// `POST /v1/orders/{id}/cancel`: the status and body.
    pub async fn cancel(&self, token: &str, id: &str) -> (u16, Value) {
        let response = self
            .client
            .post(self.url(&format!("/v1/orders/{id}/cancel")))
            .bearer_auth(token)
            .send()
            .await
            .expect("cancel");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `POST /v1/admin/orders/{id}/refunds` with `key` as the `Idempotency-Key`.
    pub async fn refund(&self, admin: &str, id: &str, key: &str, body: &Value) -> (u16, Value) {
        let response = self
            .client
            .post(self.url(&format!("/v1/admin/orders/{id}/refunds")))
            .bearer_auth(admin)
            .header("idempotency-key", key)
            .json(body)
            .send()
            .await
            .expect("refund");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// One order's view as its owner sees it (`GET /v1/orders/{id}`).
    pub async fn view(&self, token: &str, id: &str) -> Value {
        self.client
            .get(self.url(&format!("/v1/orders/{id}")))
            .bearer_auth(token)
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json")
    }

    /// A SKU's stock level through the admin API.
    pub async fn stock(&self, admin: &str, sku: &str) -> Value {
        let r = self
            .client
            .get(self.url(&format!("/v1/admin/stock/{sku}")))
            .bearer_auth(admin)
            .send()
            .await
            .expect("stock");
        assert!(r.status().is_success());
        r.json().await.expect("json")
    }
}

/// Checkouts posted in the background while a test kills or stops the app: counts the accepted
/// ones as they come and hands their order ids over at the end. A request that fails (the app
/// is gone) or is not answered 202 was never accepted and is not counted.
pub struct Load {
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl Load {
    /// Starts posting `bodies` to `app`'s checkout endpoint, `concurrency` requests in flight.
    pub fn spawn(app: &App, token: &str, bodies: Vec<Value>, concurrency: usize) -> Load {
        let accepted = Arc::new(AtomicUsize::new(0));
        let (client, url, token, counter) = (
            app.client.clone(),
            app.url("/v1/checkouts"),
            token.to_owned(),
            Arc::clone(&accepted),
        );
        let task = tokio::spawn(async move {
            futures::stream::iter(bodies)
                .map(|body| {
                    let (client, url, token, counter) = (&client, &url, &token, &counter);
                    async move {
                        let response = client
                            .post(url)
                            .bearer_auth(token)
                            .json(&body)
                            .send()
                            .await
                            .ok()?;
                        if response.status().as_u16() != 202 {
                            return None;
                        }
                        let answer: Value = response.json().await.ok()?;
                        counter.fetch_add(1, Ordering::Relaxed);
                        answer["order_id"].as_str().map(str::to_owned)
                    }
                })
                .buffer_unordered(concurrency)
                .filter_map(|id| async move { id })
                .collect()
                .await
        });
        Load { accepted, task }
    }

    /// How many checkouts were accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Waits for every body to be sent (or refused); the ids of the accepted orders.
    pub async fn finish(self) -> Vec<String> {
        self.task.await.expect("sender joins")
    }
}

/// A running `orderflow stage NAMES…` worker: no API, only `/metrics`, `/healthz` and
/// `/readyz` on its own free port.
pub struct Worker {
    child: Child,
    pub data: PathBuf,
    /// `http://127.0.0.1:PORT` of its operational routes.
    pub base: String,
}

impl Worker {
    /// Starts `orderflow ARGS… --listen 127.0.0.1:0` that runs stages only, and waits for its
    /// banner.
    pub fn start(data: &Path, catalog: &Path, env: &[(&str, &str)], args: &[&str]) -> Worker {
        let mut all = args.to_vec();
        all.extend(["--listen", "127.0.0.1:0"]);
        let mut child = spawn(data, catalog, env, &all);
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut base = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("orderflow listening on ") {
                    base = Some(rest.trim().to_owned());
                }
                if line.starts_with("orderflow worker running stages") {
                    let _ = tx.send(base.clone().unwrap_or_default());
                }
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(90)) {
            Ok(base) => base,
            Err(_) => {
                let _ = child.kill();
                let log =
                    std::fs::read_to_string(data.with_extension("stderr.log")).unwrap_or_default();
                panic!("orderflow {args:?} did not start within 90 s; stderr:\n{log}");
            }
        };
        Worker {
            child,
            data: data.to_owned(),
            base,
        }
    }

    /// `kill -9`: no chance to finish, commit or leave the group.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The worker's exit status, if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("wait")
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a one-shot `orderflow ARGS…` command (`dlq list`, `dlq replay`) with the test's secret
/// and config; returns success and stdout + stderr.
pub fn run_command(
    data: &Path,
    catalog: &Path,
    env: &[(&str, &str)],
    args: &[&str],
) -> (bool, String) {
    let mut cmd = Command::new(BIN);
    common_args(&mut cmd, data, catalog)
        .args(args)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied());
    let out = cmd.output().expect("orderflow runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Mints a token with the binary's own `token` command.
pub fn token(sub: &str, scope: &str) -> String {
    let out = Command::new(BIN)
        .args([
            "token",
            "--sub",
            sub,
            "--scope",
            scope,
            "--jwt-secret",
            SECRET,
        ])
        .env("ORDERFLOW_CONFIG", "/dev/null")
        .output()
        .expect("token runs");
    assert!(
        out.status.success(),
        "token failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// Runs `orderflow audit` against a Redis ledger (it needs nothing else, so the app may run).
pub fn audit_redis(redis_url: &str) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["--redis", redis_url, "audit"])
        .env("ORDERFLOW_CONFIG", "/dev/null")
        .output()
        .expect("audit runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Runs `orderflow audit` on a stopped app's data directory.
pub fn audit(data: &Path, catalog: &Path) -> (bool, String) {
    let mut cmd = Command::new(BIN);
    common_args(&mut cmd, data, catalog).arg("audit");
    let out = cmd.output().expect("audit runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A checkout body.
pub fn checkout(lines: &[(&str, u32)], token: &str) -> Value {
    let lines: Vec<Value> = lines
        .iter()
        .map(|(sku, q)| json!({"sku": sku, "quantity": q}))
        .collect();
    json!({
        "currency": "USD",
        "lines": lines,
        "shipping_address": {"name": "Ada Lovelace", "line1": "1 Main St", "city": "San Francisco",
                             "region": "CA", "postal_code": "94107", "country": "US"},
        "coupon_codes": [],
        "payment": {"token": token}
    })
}

/// Whether an order view is terminal (completed, rejected, cancelled) with no refund pending.
pub fn is_settled(view: &Value) -> bool {
    let terminal =
        ["completed", "rejected", "cancelled"].contains(&view["status"].as_str().unwrap_or(""));
    let pending = view["refunds"]
        .as_array()
        .is_some_and(|r| r.iter().any(|r| r["status"] == "pending"));
    terminal && !pending
}

/// Asserts that `view`'s timeline holds exactly one terminal status (completed, rejected or
/// cancelled).
pub fn assert_one_terminal(view: &Value) {
    let terminal = view["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .filter(|t| {
            ["completed", "rejected", "cancelled"].contains(&t["status"].as_str().unwrap_or(""))
        })
        .count();
    assert_eq!(terminal, 1, "exactly one terminal state: {view}");
}

/// Asserts that the first `accepted` answers are 202 and every later one 503 `overloaded`.
pub fn assert_shed_after(answers: &[(u16, Value)], accepted: usize) {
    let statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
    assert!(
        statuses[..accepted].iter().all(|s| *s == 202),
        "{statuses:?}"
    );
    for (status, body) in &answers[accepted..] {
        assert_eq!(*status, 503, "{statuses:?}");
        assert_eq!(body["type"], "/problems/overloaded", "{body}");
    }
}

/// A WebSocket follower of one order.
pub type Follower =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Follows order `id` on `base` (`GET /v1/orders/{id}/ws`) with `token` in the query.
pub async fn follow_order(base: &str, id: &str, token: &str) -> Follower {
    let url = format!(
        "{}/v1/orders/{id}/ws?access_token={token}",
        base.replacen("http://", "ws://", 1)
    );
    let (socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrade accepted");
    socket
}

/// Every message a follower gets until the server closes (or nothing comes for `idle`), and
/// the close code.
pub async fn read_follower(socket: &mut Follower, idle: Duration) -> (Vec<Value>, Option<u16>) {
    use tokio_tungstenite::tungstenite::Message;
    let mut messages = Vec::new();
    while let Ok(Some(frame)) = tokio::time::timeout(idle, socket.next()).await {
        match frame.expect("frame") {
            Message::Text(text) => {
                messages.push(serde_json::from_str(text.as_str()).expect("json"))
            }
            Message::Close(frame) => return (messages, frame.map(|f| u16::from(f.code))),
            _ => {}
        }
    }
    (messages, None)
}
