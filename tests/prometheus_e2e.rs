//! The dashboards and alerts against a real Prometheus (Debian `prometheus`): it scrapes
//! `orderflow serve` (embedded) and a split deployment (`ingest`, a stage worker, `project` over
//! tansu and Redis) under a short load, loads `dashboards/alerts.yml`, and then every PromQL
//! expression of every dashboard panel must return data, every alert rule must evaluate without
//! error, and a poison record must set the dead-letter alert off.

mod support;

use bytes::Bytes;
use orderflow_pipeline::{KafkaConfig, KafkaLog, Log, Message};
use orderflow_testkit::{KafkaBroker, PrometheusServer, RedisServer};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::{App, Worker, checkout, token, write_catalog};

/// The test's Prometheus: scrapes `targets` every second and evaluates the repository's
/// alert rules every second.
struct Prometheus {
    server: PrometheusServer,
}

impl Prometheus {
    fn start(dir: &Path, targets: &[(&str, &str)]) -> Self {
        let rules = repo().join("dashboards").join("alerts.yml");
        let mut config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n",
            rules.display()
        );
        for (job, target) in targets {
            let host = target.trim_start_matches("http://");
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: ['{host}']\n"
            ));
        }
        Self {
            server: PrometheusServer::start(dir, &config),
        }
    }

    async fn get(&self, client: &reqwest::Client, path: &str, query: &[(&str, &str)]) -> Value {
        client
            .get(format!("{}{path}", self.server.url()))
            .query(query)
            .send()
            .await
            .unwrap_or_else(|e| panic!("prometheus {path}: {e}"))
            .json()
            .await
            .expect("prometheus answers JSON")
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `expr` of every panel of every dashboard in `dashboards/grafana/`, with Grafana's
/// variables put in as Grafana would (intervals of a minute; "all" for template variables).
fn panel_queries() -> Vec<(String, String)> {
    fn collect(value: &Value, board: &str, out: &mut Vec<(String, String)>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(expr)) = map.get("expr") {
                    out.push((board.to_owned(), expr.clone()));
                }
                for v in map.values() {
                    collect(v, board, out);
                }
            }
            Value::Array(items) => items.iter().for_each(|v| collect(v, board, out)),
            _ => {}
        }
    }
    let dir = repo().join("dashboards").join("grafana");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("dashboards/grafana exists") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).expect("read dashboard");
            let board: Value = serde_json::from_str(&text).expect("dashboard is JSON");
            collect(&board, &path.display().to_string(), &mut out);
        }
    }
    out.into_iter()
        .map(|(board, expr)| (board, grafana_variables(&expr)))
        .collect()
}

/// `expr` with Grafana's interval variables as one minute and every template variable as
/// "any value" (the dashboards match them with `=~`).
fn grafana_variables(expr: &str) -> String {
    let mut expr = expr
        .replace("$__rate_interval", "1m")
        .replace("${__rate_interval}", "1m")
        .replace("$__interval", "1m")
        .replace("$__range", "5m");
    while let Some(start) = expr.find('$') {
        let rest = &expr[start + 1..];
        let len = if let Some(inner) = rest.strip_prefix('{') {
            inner.find('}').map_or(rest.len(), |i| i + 2)
        } else {
            rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len())
        };
        expr.replace_range(start..start + 1 + len, ".*");
    }
    expr
}

/// The `orderflow_*` metric names in a PromQL expression, as exported (a histogram's
/// `_bucket`/`_sum`/`_count` series included).
fn metric_names(query: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = query;
    while let Some(at) = rest.find("orderflow_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// Posts `count` checkouts to `app`: mostly approved, some declined, some of the low SKU.
async fn load(app: &App, customer: &str, count: usize) {
    let bodies: Vec<Value> = (0..count)
        .map(|i| match i % 5 {
            0 => checkout(&[("SKU-A", 1)], "tok_decline"),
            1 => checkout(&[("SKU-L", 1)], "tok_visa"),
            _ => checkout(&[("SKU-A", 2)], "tok_visa"),
        })
        .collect();
    let ids = app.accept_all(customer, bodies, 32).await;
    // One cancel right behind its checkout (202 while it is on its way, 409 once it shipped;
    // 404 while the order is not shown yet, which over Kafka at the start takes a while).
    let mut cancel = app.cancel(customer, &ids[2]).await;
    for _ in 0..300 {
        if cancel.0 != 404 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        cancel = app.cancel(customer, &ids[2]).await;
    }
    assert!(
        cancel.0 == 202 || cancel.0 == 409,
        "cancel: {} {}",
        cancel.0,
        cancel.1
    );
    // One refused request (no token): a problem, and a 4xx on the route.
    let refused = app
        .client
        .post(app.url("/v1/checkouts"))
        .send()
        .await
        .expect("request");
    assert_eq!(refused.status().as_u16(), 401);
    let views = app
        .await_terminal(customer, &ids, Duration::from_secs(120))
        .await;
    // And a refund of a cent of one completed order, paid by the refund step.
    if let Some(done) = views.iter().find(|v| v["status"] == "completed") {
        let id = done["order_id"].as_str().expect("id");
        let body =
            serde_json::json!({"amount": {"currency": "USD", "minor": 1}, "reason": "goodwill"});
        let admin = token("ops", "admin");
        // Split processes without ScyllaDB read the Redis hot view, which a projector flush
        // replaces: a 404 in that moment is tried again.
        let mut answer = app.refund(&admin, id, id, &body).await;
        for _ in 0..50 {
            if answer.0 != 404 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            answer = app.refund(&admin, id, id, &body).await;
        }
        assert_eq!(answer.0, 202, "refund: {}", answer.1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_and_alert_evaluates_and_a_poison_record_fires_the_dlq_alert() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    // SKU-L starts under the low-stock threshold (100), so its gauge exists.
    let catalog = write_catalog(d, &[("SKU-A", 1000, 1_000_000), ("SKU-L", 500, 60)]);
    // The backlog bound on (the tests' default turns the limits off), so its gauge exists.
    let serve = App::start_with(
        &d.join("serve"),
        &catalog,
        &[("ORDERFLOW_LIMITS_MAX_BACKLOG", "1000000")],
    );

    let broker = KafkaBroker::start();
    let redis = RedisServer::start();
    let (url, redis_url) = (broker.url(), redis.url());
    let env = [
        ("ORDERFLOW_LOG", url.as_str()),
        ("ORDERFLOW_REDIS", redis_url.as_str()),
        ("ORDERFLOW_LOG_PARTITIONS", "2"),
        ("ORDERFLOW_KAFKA_SESSION_TIMEOUT_MS", "6000"),
        ("ORDERFLOW_LIMITS_MAX_BACKLOG", "1000000"),
    ];
    let with_log = |args: &[&'static str]| -> Vec<&str> {
        let mut all = vec!["--log", url.as_str()];
        all.extend_from_slice(args);
        all
    };
    let ingest = App::start_command(&d.join("ingest"), &catalog, &env, &with_log(&["ingest"]));
    let stages = Worker::start(
        &d.join("stages"),
        &catalog,
        &env,
        &with_log(&[
            "stage", "validate", "reserve", "price", "charge", "ship", "notify", "refund",
        ]),
    );
    let project = Worker::start(&d.join("project"), &catalog, &env, &with_log(&["project"]));

    let prometheus = Prometheus::start(
        d,
        &[
            ("serve", serve.base.as_str()),
            ("ingest", ingest.base.as_str()),
            ("stages", stages.base.as_str()),
            ("project", project.base.as_str()),
        ],
    );
    let client = reqwest::Client::new();
    let customer = token("cust-prom", "checkout orders:read");
    // A WebSocket follower, so the open-sockets gauge exists (it closes once the order is final).
    let follow = |app: &App, id: &str| {
        let ws = app.base.replace("http://", "ws://");
        format!("{ws}/v1/orders/{id}/ws?access_token={customer}")
    };
    let held = serve
        .accept_all(&customer, vec![checkout(&[("SKU-A", 1)], "tok_visa")], 1)
        .await;
    let (_socket, _) = tokio_tungstenite::connect_async(follow(&serve, &held[0]))
        .await
        .expect("websocket");
    load(&serve, &customer, 200).await;
    load(&ingest, &customer, 100).await;

    // Every panel's query returns data once Prometheus has a few scrapes.
    let queries = panel_queries();
    assert!(
        queries.len() >= 10,
        "the dashboards have panels: {queries:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut empty: Vec<(String, String)> = queries.clone();
    while !empty.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(2)).await;
        // Keep a trickle of orders flowing so rates are not all zero.
        load(&serve, &customer, 10).await;
        load(&ingest, &customer, 10).await;
        let mut still = Vec::new();
        for (board, expr) in empty {
            let answer = prometheus
                .get(&client, "/api/v1/query", &[("query", expr.as_str())])
                .await;
            assert_eq!(
                answer["status"], "success",
                "{board}: the query does not parse or evaluate: {expr}\n{answer}"
            );
            if answer["data"]["result"]
                .as_array()
                .is_none_or(|r| r.is_empty())
            {
                still.push((board, expr));
            }
        }
        empty = still;
    }
    assert!(
        empty.is_empty(),
        "{} panel queries returned no data within 60 s:\n{}",
        empty.len(),
        empty
            .iter()
            .map(|(b, e)| format!("{b}: {e}"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Every alert rule is loaded and evaluates without error.
    let rules = prometheus.get(&client, "/api/v1/rules", &[]).await;
    let all: Vec<&Value> = rules["data"]["groups"]
        .as_array()
        .expect("rule groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .collect();
    assert!(all.len() >= 7, "the alert rules are loaded: {rules}");
    for rule in &all {
        assert_eq!(rule["health"], "ok", "rule does not evaluate: {rule}");
        // A misspelled metric evaluates fine and never fires: every metric a rule names must
        // exist.
        let query = rule["query"].as_str().expect("query");
        for metric in metric_names(query) {
            let found = prometheus
                .get(
                    &client,
                    "/api/v1/series",
                    &[("match[]", &format!("{{__name__=\"{metric}\"}}"))],
                )
                .await;
            assert!(
                found["data"].as_array().is_some_and(|s| !s.is_empty()),
                "rule {} names {metric}, which no process exports: {query}",
                rule["name"]
            );
        }
    }
    // One alert per stage that dead-lettered: validate and the projector both read
    // orders.accepted, and each gives up on the poison record.
    let dead_letter_alert = |alerts: &Value, stage: Option<&str>| -> Option<Value> {
        alerts["data"]["alerts"].as_array().and_then(|list| {
            list.iter()
                .find(|a| {
                    a["labels"]["alertname"] == "OrderflowDeadLettersGrowing"
                        && stage.is_none_or(|s| a["labels"]["stage"] == s)
                })
                .cloned()
        })
    };
    let before = prometheus.get(&client, "/api/v1/alerts", &[]).await;
    assert!(
        dead_letter_alert(&before, None).is_none(),
        "the dead-letter alert is quiet before the poison record: {before}"
    );

    // A poison record on the split deployment's log: validate dead-letters it at once, and the
    // dead-letter alert goes pending or firing.
    let mut config = KafkaConfig::from_url(&url, 2).expect("url");
    config.replication_factor = 1;
    let log = KafkaLog::connect(config).expect("kafka client");
    log.append(vec![Message {
        topic: "orders.accepted".into(),
        key: Bytes::from_static(b"poison"),
        value: Bytes::from_static(b"\x00not an order{"),
        headers: vec![],
        decoded: None,
    }])
    .await
    .expect("append the poison record");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let alerts = prometheus.get(&client, "/api/v1/alerts", &[]).await;
        if let Some(alert) = dead_letter_alert(&alerts, Some("validate")) {
            assert!(
                alert["state"] == "pending" || alert["state"] == "firing",
                "{alert}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no dead-letter alert within 60 s: {alerts}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
