//! A local SIEM intake on 127.0.0.1 that speaks each backend's wire format as the real one
//! does (Splunk HEC, Datadog logs, Elastic bulk), checks what it is sent, and injects the
//! failures a real intake has: 5xx, 429 with `Retry-After`, dropped connections, per-item
//! refusals.
//!
//! A row whose `action` is `poison` is refused for good; for Elastic, `busy` is throttled
//! (item 429) the first time it is sent and `forbidden` is refused for want of rights (403).

use std::collections::{HashSet, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Env;

pub const API_KEY: &str = "intake-key-123";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Splunk,
    Datadog,
    Elastic,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Splunk => "splunk",
            Kind::Datadog => "datadog",
            Kind::Elastic => "elastic",
        }
    }
}

/// What the intake does to one request instead of handling it.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    Status(u16),
    /// 429 with `Retry-After: <seconds>`.
    Throttle(u64),
    /// Reads the request, then closes the connection without answering.
    Drop,
}

#[derive(Default)]
struct State {
    faults: VecDeque<Fault>,
    /// Rows taken, by `id`, in arrival order (duplicates kept).
    received: Vec<String>,
    /// Elastic: documents indexed, by `_id`.
    indexed: HashSet<String>,
    /// Elastic: `busy` rows already throttled once.
    throttled: HashSet<String>,
    /// Wire-format problems found in requests; a correct client causes none.
    violations: Vec<String>,
    requests: u64,
    /// When each request arrived.
    arrivals: Vec<Instant>,
    /// A body over this is refused with 413, as a proxy in front of an intake would.
    max_body: Option<usize>,
    /// Splunk with indexer acknowledgement on.
    ack: Option<Acks>,
}

/// HEC indexer acknowledgement: each request taken gets the next `ackId`; the one numbered
/// `never` is never acknowledged, as when an indexer dies before writing it.
#[derive(Default)]
struct Acks {
    next: u64,
    never: u64,
    /// Rows of acknowledged requests, by `id`, in the order they were taken.
    acknowledged: Vec<String>,
    /// Each ackId given out, with its rows.
    given: Vec<(u64, Vec<String>)>,
}

pub struct Intake {
    kind: Kind,
    pub port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Intake {
    /// An intake behind a proxy that refuses bodies over `max_body` bytes with 413.
    pub fn start_limited(kind: Kind, max_body: usize) -> Intake {
        let intake = Intake::start(kind, &[]);
        intake.state.lock().unwrap().max_body = Some(max_body);
        intake
    }

    pub fn start(kind: Kind, faults: &[Fault]) -> Intake {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind intake");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let state = Arc::new(Mutex::new(State {
            faults: faults.iter().copied().collect(),
            ..State::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (Arc::clone(&state), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => serve(kind, stream, &state),
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Intake {
            kind,
            port,
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// A Splunk intake with indexer acknowledgement on, that never acknowledges the request
    /// it gives ackId `never`.
    pub fn start_acknowledging(never: u64) -> Intake {
        let intake = Intake::start(Kind::Splunk, &[]);
        intake.state.lock().unwrap().ack = Some(Acks {
            never,
            ..Acks::default()
        });
        intake
    }

    /// Points `env` at this intake.
    pub fn configure(&self, env: Env) -> Env {
        let env = env
            .with("SIEM_BACKEND", self.kind.name())
            .with("SIEM_ENDPOINT", &format!("http://127.0.0.1:{}", self.port))
            .with("SIEM_API_KEY", API_KEY);
        if self.state.lock().unwrap().ack.is_some() {
            return env.with("SIEM_SPLUNK_ACK", "true");
        }
        env
    }

    /// With acknowledgement: the rows of acknowledged requests, in order.
    pub fn acknowledged(&self) -> Vec<String> {
        let state = self.state.lock().unwrap();
        state
            .ack
            .as_ref()
            .map(|ack| ack.acknowledged.clone())
            .unwrap_or_default()
    }

    /// With acknowledgement: the rows HEC took in the request it never acknowledged.
    pub fn never_acknowledged(&self) -> Vec<String> {
        let state = self.state.lock().unwrap();
        let Some(ack) = &state.ack else {
            return Vec::new();
        };
        ack.given
            .iter()
            .find(|(id, _)| *id == ack.never)
            .map(|(_, rows)| rows.clone())
            .unwrap_or_default()
    }

    pub fn backend(&self) -> &'static str {
        self.kind.name()
    }

    pub fn received(&self) -> Vec<String> {
        self.state.lock().unwrap().received.clone()
    }

    pub fn violations(&self) -> Vec<String> {
        self.state.lock().unwrap().violations.clone()
    }

    pub fn requests(&self) -> u64 {
        self.state.lock().unwrap().requests
    }

    pub fn arrivals(&self) -> Vec<Instant> {
        self.state.lock().unwrap().arrivals.clone()
    }

    pub fn faults_left(&self) -> usize {
        self.state.lock().unwrap().faults.len()
    }

    /// Elastic: documents already indexed (as if an earlier acknowledgement was lost).
    pub fn already_indexed(&self, ids: &[&str]) {
        let mut state = self.state.lock().unwrap();
        for id in ids {
            state.indexed.insert(id.to_string());
            state.received.push(id.to_string());
        }
    }
}

impl Drop for Intake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One HTTP request as read off a connection.
pub(super) struct Request {
    pub(super) path: String,
    headers: Vec<(String, String)>,
    pub(super) body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

fn serve(kind: Kind, mut stream: TcpStream, state: &Mutex<State>) {
    stream.set_nonblocking(false).expect("blocking");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let Some(request) = read_request(&mut stream) else {
        return;
    };
    let mut state = state.lock().unwrap();
    state.requests += 1;
    state.arrivals.push(Instant::now());
    if state.max_body.is_some_and(|max| request.body.len() > max) {
        drop(state);
        let _ = stream.write_all(
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        return;
    }
    let (status, extra, body) = match state.faults.pop_front() {
        Some(Fault::Drop) => return,
        Some(Fault::Status(status)) => (status, String::new(), json!({"error": "injected"})),
        Some(Fault::Throttle(seconds)) => (
            429,
            format!("Retry-After: {seconds}\r\n"),
            json!({"error": "slow down"}),
        ),
        None => {
            let (status, body) = match kind {
                Kind::Splunk => splunk(&request, &mut state),
                Kind::Datadog => datadog(&request, &mut state),
                Kind::Elastic => elastic(&request, &mut state),
            };
            (status, String::new(), body)
        }
    };
    drop(state);
    let body = body.to_string();
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body.as_bytes());
}

/// Reads one request (head and `Content-Length` body); `None` if it is cut short or malformed.
pub(super) fn read_request(stream: &mut TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let length: usize = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        path,
        headers,
        body,
    })
}

/// HEC: stacked JSON events; processing stops at the first bad one, whose position the
/// answer gives as `invalid-event-number`.
fn splunk(request: &Request, state: &mut State) -> (u16, Value) {
    if request.path == "/services/collector/ack" && state.ack.is_some() {
        return splunk_ack_status(request, state);
    }
    if state.ack.is_some() && request.header("x-splunk-request-channel").is_none() {
        return (400, json!({"text": "Data channel is missing", "code": 10}));
    }
    if request.path != "/services/collector/event" {
        return (
            404,
            json!({"text": "The requested URL was not found", "code": 404}),
        );
    }
    if request.header("authorization") != Some(&format!("Splunk {API_KEY}")) {
        return (401, json!({"text": "Invalid authorization", "code": 3}));
    }
    let events = serde_json::Deserializer::from_slice(&request.body).into_iter::<Value>();
    for (number, event) in events.enumerate() {
        let Ok(event) = event else {
            return (
                400,
                json!({"text": "Invalid data format", "code": 6, "invalid-event-number": number}),
            );
        };
        let well_formed = event["time"].is_number()
            && event["host"].is_string()
            && event["source"] == "edgecron"
            && event["sourcetype"].is_string()
            && event["event"]["id"].is_string();
        if !well_formed {
            state.violations.push(format!("splunk event {event}"));
        }
        if event["event"]["action"] == "poison" {
            return (
                400,
                json!({"text": "Invalid data format", "code": 6, "invalid-event-number": number}),
            );
        }
        state.received.push(
            event["event"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    let Some(ack) = state.ack.as_mut() else {
        return (200, json!({"text": "Success", "code": 0}));
    };
    // Every request is whole here (no poison): its rows are the last ones received.
    let taken = serde_json::Deserializer::from_slice(&request.body)
        .into_iter::<Value>()
        .count();
    let rows = state.received[state.received.len() - taken..].to_vec();
    let id = ack.next;
    ack.next += 1;
    if id != ack.never {
        ack.acknowledged.extend(rows.iter().cloned());
    }
    ack.given.push((id, rows));
    (200, json!({"text": "Success", "code": 0, "ackId": id}))
}

/// `/services/collector/ack`: which of the asked ackIds the indexers have.
fn splunk_ack_status(request: &Request, state: &mut State) -> (u16, Value) {
    if request.header("authorization") != Some(&format!("Splunk {API_KEY}")) {
        return (401, json!({"text": "Invalid authorization", "code": 3}));
    }
    if request.header("x-splunk-request-channel").is_none() {
        return (400, json!({"text": "Data channel is missing", "code": 10}));
    }
    let asked: Value = serde_json::from_slice(&request.body).unwrap_or_default();
    let Some(ack) = &state.ack else {
        return (400, json!({"text": "ACK is disabled", "code": 14}));
    };
    let mut statuses = serde_json::Map::new();
    for id in asked["acks"].as_array().into_iter().flatten() {
        if let Some(id) = id.as_u64() {
            let known = ack.given.iter().any(|(given, _)| *given == id);
            statuses.insert(id.to_string(), json!(known && id != ack.never));
        }
    }
    (200, json!({ "acks": statuses }))
}

/// Datadog logs: a gzipped JSON array within the intake's limits, answered 202; a bad entry
/// fails the whole request with 400, naming none.
fn datadog(request: &Request, state: &mut State) -> (u16, Value) {
    if request.path != "/api/v2/logs" {
        return (404, json!({"errors": ["Not found"]}));
    }
    if request.header("dd-api-key") != Some(API_KEY) {
        return (403, json!({"errors": ["Forbidden"]}));
    }
    if request.header("content-encoding") != Some("gzip") {
        state.violations.push("datadog body not gzipped".into());
    }
    let mut json = Vec::new();
    if flate2::read::GzDecoder::new(&request.body[..])
        .read_to_end(&mut json)
        .is_err()
    {
        return (400, json!({"errors": ["Malformed gzip"]}));
    }
    if json.len() > 5_000_000 {
        return (413, json!({"errors": ["Payload too large"]}));
    }
    let Ok(Value::Array(entries)) = serde_json::from_slice::<Value>(&json) else {
        return (400, json!({"errors": ["Bad request"]}));
    };
    if entries.len() > 1_000 {
        return (400, json!({"errors": ["Too many entries"]}));
    }
    if entries.iter().any(|entry| entry["action"] == "poison") {
        return (400, json!({"errors": ["Bad request"]}));
    }
    let oldest = chrono::Utc::now().timestamp_millis() - 18 * 3_600_000;
    for entry in &entries {
        let size = entry.to_string().len();
        if size > 1_000_000 {
            state
                .violations
                .push(format!("datadog entry of {size} bytes truncated"));
        }
        if entry["timestamp"].as_i64().is_none_or(|time| time < oldest) {
            state
                .violations
                .push(format!("datadog entry {} dropped as too old", entry["id"]));
        }
        if !(entry["ddsource"].is_string()
            && entry["hostname"].is_string()
            && entry["message"].is_string())
        {
            state
                .violations
                .push(format!("datadog entry {}", entry["id"]));
        }
        state
            .received
            .push(entry["id"].as_str().unwrap_or_default().to_string());
    }
    (202, json!({}))
}

/// Elastic bulk: `create` action and document pairs, answered 200 with a result per item.
fn elastic(request: &Request, state: &mut State) -> (u16, Value) {
    if request.path != "/_bulk" {
        return (404, json!({"error": "no handler"}));
    }
    if request.header("authorization") != Some(&format!("ApiKey {API_KEY}")) {
        return (
            401,
            json!({"error": {"type": "security_exception"}, "status": 401}),
        );
    }
    if request.header("content-type") != Some("application/x-ndjson") {
        state.violations.push("elastic content type".into());
    }
    if !request.body.ends_with(b"\n") {
        return (
            400,
            json!({"error": {"type": "illegal_argument_exception", "reason": "The bulk request must be terminated by a newline [\\n]"}}),
        );
    }
    let lines: Vec<Value> = match request
        .body
        .split(|&byte| byte == b'\n')
        .filter(|line| !line.is_empty())
        .map(serde_json::from_slice)
        .collect()
    {
        Ok(lines) => lines,
        Err(_) => return (400, json!({"error": {"type": "x_content_parse_exception"}})),
    };
    let mut items = Vec::new();
    let mut errors = false;
    for pair in lines.chunks(2) {
        let [action, document] = pair else {
            return (
                400,
                json!({"error": {"type": "action_request_validation_exception"}}),
            );
        };
        let id = action["create"]["_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if document["id"] != id.as_str() || !action["create"]["_index"].is_string() {
            state
                .violations
                .push(format!("elastic item {action} {document}"));
        }
        let (status, error) = if state.indexed.contains(&id) {
            (
                409,
                Some(
                    json!({"type": "version_conflict_engine_exception", "reason": format!("[{id}]: version conflict, document already exists")}),
                ),
            )
        } else if document["action"] == "forbidden" {
            (
                403,
                Some(
                    json!({"type": "security_exception", "reason": "action [indices:data/write/bulk[s]] is unauthorized"}),
                ),
            )
        } else if document["action"] == "poison" {
            (
                400,
                Some(
                    json!({"type": "mapper_parsing_exception", "reason": "failed to parse field [details]"}),
                ),
            )
        } else if document["action"] == "busy" && state.throttled.insert(id.clone()) {
            (
                429,
                Some(
                    json!({"type": "es_rejected_execution_exception", "reason": "rejected execution"}),
                ),
            )
        } else {
            state.indexed.insert(id.clone());
            state.received.push(id.clone());
            (201, None)
        };
        errors |= status != 201;
        let mut result = json!({"_index": action["create"]["_index"], "_id": id, "status": status});
        if let Some(error) = error {
            result["error"] = error;
        } else {
            result["result"] = json!("created");
        }
        items.push(json!({"create": result}));
    }
    (200, json!({"took": 1, "errors": errors, "items": items}))
}
