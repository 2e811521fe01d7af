//! The gateway's event stream (`GET /v1/events`): a parser of the server-sent events wire
//! format and the typed events it carries.

use serde::Deserialize;
use serde_json::Value;

/// The type of an event, from its `event:` field.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventKind {
    /// `session.status_changed`: `faceswap_status` changed.
    StatusChanged,
    /// `session.closed`: the session closed (`reason` says why).
    Closed,
    /// `session.lost`: the session's upstream create had an unknown outcome.
    Lost,
    /// `webhook.endpoint_disabled`: a webhook endpoint kept failing and was disabled.
    WebhookEndpointDisabled,
    /// `resource.archived`: a generated resource of a session was archived and can be
    /// downloaded with [`crate::Client::resource`].
    ResourceArchived,
    /// A type this client version does not know.
    Other(String),
}

impl EventKind {
    /// The kind named by the wire type.
    pub fn parse(name: &str) -> Self {
        match name {
            "session.status_changed" => Self::StatusChanged,
            "session.closed" => Self::Closed,
            "session.lost" => Self::Lost,
            "webhook.endpoint_disabled" => Self::WebhookEndpointDisabled,
            "resource.archived" => Self::ResourceArchived,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The wire name.
    pub fn as_str(&self) -> &str {
        match self {
            Self::StatusChanged => "session.status_changed",
            Self::Closed => "session.closed",
            Self::Lost => "session.lost",
            Self::WebhookEndpointDisabled => "webhook.endpoint_disabled",
            Self::ResourceArchived => "resource.archived",
            Self::Other(name) => name,
        }
    }
}

/// One event of the tenant, as the event stream and webhooks deliver it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The event id: pass it as `last_event_id` to resume after this event. For webhooks it
    /// is the `webhook-id` (`evt_<id>`).
    pub id: String,
    /// What happened.
    pub kind: EventKind,
    /// When, RFC 3339.
    pub timestamp: String,
    /// The event's payload (`_id`, `faceswap_status`, `reason`, …).
    pub data: Value,
}

/// The JSON body of an event (`data:` of the stream, the body of a webhook).
#[derive(Debug, Deserialize)]
pub(crate) struct Message {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) timestamp: String,
    #[serde(default)]
    pub(crate) data: Value,
}

impl Event {
    pub(crate) fn from_message(id: String, msg: Message) -> Self {
        Self {
            id,
            kind: EventKind::parse(&msg.kind),
            timestamp: msg.timestamp,
            data: msg.data,
        }
    }

    /// The session the event is about (`ses_…`), if any.
    pub fn session_id(&self) -> Option<&str> {
        self.data.get("_id").and_then(Value::as_str)
    }

    /// The session's `faceswap_status` after the event, if it carries one.
    pub fn faceswap_status(&self) -> Option<faceswap_wire::FaceswapStatus> {
        let n = self.data.get("faceswap_status")?.as_u64()?;
        faceswap_wire::FaceswapStatus::try_from(u8::try_from(n).ok()?).ok()
    }
}

/// One dispatched server-sent event, before its data is interpreted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawEvent {
    /// `id:` (the last one seen on the stream, as the format says).
    pub id: Option<String>,
    /// `event:`; `message` when absent.
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// An incremental parser of the `text/event-stream` format: feed it bytes as they arrive and
/// take the events it completes. Comments (keep-alives) and `retry:` are skipped.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    last_id: Option<String>,
    event: Option<String>,
    data: Option<String>,
    /// A `\r` ended the previous chunk: a `\n` starting the next one belongs to it.
    pending_cr: bool,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds received bytes; returns the events they complete, in order.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<RawEvent> {
        let mut chunk = chunk;
        if self.pending_cr {
            self.pending_cr = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        let mut start = 0;
        let mut i = 0;
        while i < self.buf.len() {
            let b = self.buf[i];
            if b == b'\n' || b == b'\r' {
                let line = String::from_utf8_lossy(&self.buf[start..i]).into_owned();
                let mut next = i + 1;
                if b == b'\r' {
                    match self.buf.get(next) {
                        Some(b'\n') => next += 1,
                        None => self.pending_cr = true,
                        Some(_) => {}
                    }
                }
                if let Some(ev) = self.line(&line) {
                    out.push(ev);
                }
                start = next;
                i = next;
            } else {
                i += 1;
            }
        }
        self.buf.drain(..start);
        out
    }

    fn line(&mut self, line: &str) -> Option<RawEvent> {
        if line.is_empty() {
            return self.dispatch();
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            "event" => self.event = Some(value.to_owned()),
            // An id with NUL is ignored, as the format says.
            "id" if !value.contains('\0') => self.last_id = Some(value.to_owned()),
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<RawEvent> {
        let event = self.event.take();
        let data = self.data.take()?;
        Some(RawEvent {
            id: self.last_id.clone(),
            event: event
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "message".to_owned()),
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn all(chunks: &[&[u8]]) -> Vec<RawEvent> {
        let mut p = SseParser::new();
        chunks.iter().flat_map(|c| p.feed(c)).collect()
    }

    fn ev(id: Option<&str>, event: &str, data: &str) -> RawEvent {
        RawEvent {
            id: id.map(str::to_owned),
            event: event.into(),
            data: data.into(),
        }
    }

    #[test]
    fn events_are_dispatched_on_a_blank_line_with_their_id_type_and_data() {
        let got = all(&[b"id: 7\nevent: session.closed\ndata: {\"a\":1}\n\n"]);
        assert_eq!(got, vec![ev(Some("7"), "session.closed", "{\"a\":1}")]);
    }

    #[test]
    fn comments_and_unknown_fields_are_skipped_and_data_lines_are_joined() {
        let got = all(&[b": keep-alive\n\nretry: 5\ndata: a\ndata:b\nfoo: x\n\n"]);
        assert_eq!(got, vec![ev(None, "message", "a\nb")]);
    }

    #[test]
    fn any_split_of_the_bytes_and_any_line_ending_gives_the_same_events() {
        let whole: &[u8] =
            b"id: 1\r\nevent: e\r\ndata: x\r\n\r\nid: 2\rdata: y\r\r:c\n\nid: 3\ndata: z\n\n";
        let expected = vec![
            ev(Some("1"), "e", "x"),
            ev(Some("2"), "message", "y"),
            ev(Some("3"), "message", "z"),
        ];
        for size in 1..=whole.len() {
            let chunks: Vec<&[u8]> = whole.chunks(size).collect();
            assert_eq!(all(&chunks), expected, "chunks of {size}");
        }
    }

    #[test]
    fn an_event_without_data_is_not_dispatched_and_the_id_carries_over() {
        let got = all(&[b"id: 4\nevent: x\n\ndata: d\n\n"]);
        assert_eq!(got, vec![ev(Some("4"), "message", "d")]);
        // An unfinished event is held back until its blank line arrives.
        assert!(all(&[b"data: pending\n"]).is_empty());
    }

    #[test]
    fn a_message_becomes_a_typed_event() {
        let msg: Message = serde_json::from_str(
            r#"{"type":"session.status_changed","timestamp":"t","data":{"_id":"ses_1","faceswap_status":2}}"#,
        )
        .unwrap();
        let e = Event::from_message("9".into(), msg);
        assert_eq!(e.kind, EventKind::StatusChanged);
        assert_eq!(e.session_id(), Some("ses_1"));
        assert_eq!(
            e.faceswap_status(),
            Some(faceswap_wire::FaceswapStatus::Processing)
        );
        assert_eq!(EventKind::parse("x.y"), EventKind::Other("x.y".into()));
        for kind in [
            EventKind::StatusChanged,
            EventKind::Closed,
            EventKind::Lost,
            EventKind::WebhookEndpointDisabled,
            EventKind::ResourceArchived,
        ] {
            assert_eq!(EventKind::parse(kind.as_str()), kind);
        }
    }
}
