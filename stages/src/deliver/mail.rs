//! Customer emails: the confirmation notify renders into the outbox, and the sink that takes
//! it as a mail sender would (one RFC 5322 message file per email; no SMTP here).

use chrono::{DateTime, Utc};
use orderflow_domain::Order;
use orderflow_stores::Delivery;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The email's template name, and its event in the outbox.
pub const CONFIRMATION: &str = "order_shipped";

/// Keeps a value safe inside a header: letters, digits and `.-_@+` only.
fn header_safe(text: &str) -> String {
    text.chars()
        .take(128)
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_@+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The shipping confirmation for `order` as an RFC 5322 message (plain text, UTF-8). The
/// customer's address is left to the mail sender, which knows it: `To` names the customer id.
pub fn render_confirmation(order: &Order, now: DateTime<Utc>) -> String {
    let customer = header_safe(&order.customer_id);
    let mut body = format!("Hello,\r\n\r\nyour order {} has shipped.\r\n\r\n", order.id);
    for line in &order.lines {
        body.push_str(&format!("  {} x {}\r\n", line.quantity, line.sku));
    }
    if let Some(pricing) = &order.pricing {
        body.push_str(&format!("\r\nTotal: {}\r\n", pricing.total));
    }
    if let Some(shipment) = &order.shipment {
        body.push_str(&format!(
            "Carrier: {}\r\nTracking number: {}\r\n",
            shipment.carrier, shipment.tracking_number
        ));
    }
    body.push_str("\r\nThank you for your order.\r\n");
    format!(
        "Message-ID: <{id}.{CONFIRMATION}@orderflow>\r\n\
         Date: {date}\r\n\
         From: orderflow <no-reply@orderflow.invalid>\r\n\
         To: customer {customer} <{customer}@customers.invalid>\r\n\
         Subject: Your order {id} has shipped\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\
         X-Orderflow-Order: {id}\r\n\
         X-Orderflow-Customer: {customer}\r\n\
         \r\n{body}",
        id = order.id,
        date = now.to_rfc2822(),
    )
}

/// A directory a mail sender takes messages from: one `<message id>.eml` file per email,
/// written whole (a temporary file, synced, then renamed), so a reader never sees half of one.
#[derive(Debug, Clone)]
pub struct MailSink {
    dir: PathBuf,
}

impl MailSink {
    /// A sink writing into `dir` (created when missing).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Writes a round's emails: every file first, then each synced (on a journalling file
    /// system the first sync carries the others' data, so a round costs about one), then
    /// renamed into place and the directory synced once. One result per message, in order.
    pub async fn write_all(&self, messages: &[Delivery]) -> Vec<Result<(), String>> {
        let dir = self.dir.clone();
        let files: Vec<(String, String)> = messages
            .iter()
            .map(|m| (format!("{}.eml", header_safe(&m.id)), m.payload.clone()))
            .collect();
        let count = files.len();
        let shown = self.dir.display().to_string();
        match tokio::task::spawn_blocking(move || write_files(&dir, &files)).await {
            Ok(results) => results
                .into_iter()
                .map(|r| r.map_err(|e| format!("cannot write to {shown}: {e}")))
                .collect(),
            Err(e) => vec![Err(format!("the mail writer stopped: {e}")); count],
        }
    }
}

/// The blocking part of [`MailSink::write_all`].
fn write_files(dir: &Path, files: &[(String, String)]) -> Vec<std::io::Result<()>> {
    if let Err(e) = std::fs::create_dir_all(dir) {
        return files
            .iter()
            .map(|_| Err(std::io::Error::new(e.kind(), e.to_string())))
            .collect();
    }
    let staged: Vec<std::io::Result<(std::fs::File, PathBuf)>> = files
        .iter()
        .map(|(name, text)| {
            let path = dir.join(format!(".{name}.tmp"));
            let mut file = std::fs::File::create(&path)?;
            file.write_all(text.as_bytes())?;
            Ok((file, path))
        })
        .collect();
    let mut results: Vec<std::io::Result<()>> = staged
        .into_iter()
        .zip(files)
        .map(|(staged, (name, _))| {
            let (file, path) = staged?;
            file.sync_all()?;
            std::fs::rename(&path, dir.join(name))
        })
        .collect();
    if let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        for r in results.iter_mut().filter(|r| r.is_ok()) {
            *r = Err(std::io::Error::new(e.kind(), e.to_string()));
        }
    }
    results
}
