//! Warnings and errors logged with `tracing` (by library code that has no `Printer` at hand, or a
//! dependency) reach the person through the [`Printer`], like every other message: `warning: …`
//! above the progress bar in text, `{"level":"warn","message":…}` with `--log-format json`, and
//! escaped the same way. Only the diagnostic levels (`RUST_LOG=debug` and the like) keep
//! tracing's own format, for maintainers.

use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::{Map, Value, json};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use super::Printer;

/// The layer that hands warnings and errors to the Printer.
pub struct ToPrinter(pub Arc<Printer>);

/// An event's message and its other fields.
#[derive(Default)]
struct Fields {
    message: String,
    others: Map<String, Value>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message.push_str(value),
            name => {
                self.others.insert(name.to_owned(), json!(value));
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => {
                let _ = write!(self.message, "{value:?}");
            }
            name => {
                self.others
                    .insert(name.to_owned(), json!(format!("{value:?}")));
            }
        }
    }
}

impl<S: Subscriber> Layer<S> for ToPrinter {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut text = fields.message;
        for (name, value) in &fields.others {
            let value = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_owned);
            let _ = write!(text, " {name}={value}");
        }
        let (level, kind) = match *event.metadata().level() {
            Level::ERROR => ("error", "error"),
            _ => ("warn", "warning"),
        };
        if level == "error" {
            self.0.error(&text, &[]);
        } else {
            self.0.event(level, kind, &text, fields.others);
        }
    }
}
