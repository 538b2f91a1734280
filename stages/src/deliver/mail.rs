//! Customer emails: the confirmation notify renders into the outbox, and the sink that takes
//! it as a mail sender would (one RFC 5322 message file per email; no SMTP here).

use chrono::{DateTime, Utc};
use orderflow_domain::Order;
use orderflow_stores::Delivery;
use std::io::Write;
use std::path::PathBuf;

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

    /// Writes one email; an error is the try's failure (status none, the reason).
    pub async fn write(&self, message: &Delivery) -> Result<(), (Option<u16>, String)> {
        let dir = self.dir.clone();
        let name = format!("{}.eml", header_safe(&message.id));
        let text = message.payload.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            let staged = dir.join(format!(".{name}.tmp"));
            let mut file = std::fs::File::create(&staged)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&staged, dir.join(&name))?;
            std::fs::File::open(&dir)?.sync_all()
        })
        .await
        .map_err(|e| (None, format!("the mail writer stopped: {e}")))?
        .map_err(|e| (None, format!("cannot write to {}: {e}", self.dir.display())))
    }
}
