//! The routing `match` and the handlers: each parses, authenticates and asks the runner or
//! the store, then answers JSON. No SQL and no job internals here.

use std::io::Read;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};
use tiny_http::{Header, Method, Request, Response};

use super::auth::{Auth, Realm, SESSION_COOKIE, SESSION_SECONDS};
use super::prometheus;
use super::status_page;
use crate::export::metrics;
use crate::jobs::RunParams;
use crate::runner::{RunError, Runner};
use crate::scheduler::PlannedJob;
use crate::status::job_statuses;
use crate::store::runs::{RunStatus, Trigger};

/// What the handlers share.
pub struct App {
    pub runner: Arc<Runner>,
    pub auth: Auth,
    pub planned: Vec<PlannedJob>,
}

pub const MAX_BODY_BYTES: usize = 1024 * 1024;
const MAX_HEAD_BYTES: usize = 64 * 1024;
const DEFAULT_RUNS_LIMIT: i64 = 50;
const MAX_RUNS_LIMIT: i64 = 1_000;

/// A response before it is written.
struct Reply {
    status: u16,
    body: String,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
}

impl Reply {
    fn json(status: u16, body: &Value) -> Reply {
        Reply {
            status,
            body: body.to_string(),
            content_type: "application/json",
            headers: Vec::new(),
        }
    }

    fn text(status: u16, body: String, content_type: &'static str) -> Reply {
        Reply {
            status,
            body,
            content_type,
            headers: Vec::new(),
        }
    }

    /// 303 See Other: after a form post, or to the login form.
    fn redirect(location: &str) -> Reply {
        Reply::text(303, String::new(), "text/plain; charset=utf-8")
            .with_header("Location", location)
    }

    fn error(status: u16, message: impl std::fmt::Display) -> Reply {
        Reply::json(status, &json!({"ok": false, "error": message.to_string()}))
    }

    fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }
}

pub fn handle(app: &App, mut request: Request) {
    let reply = route(app, &mut request);
    let mut response = Response::from_string(reply.body).with_status_code(reply.status);
    let headers = [
        ("Content-Type", reply.content_type.to_string()),
        ("Cache-Control", "no-store".to_string()),
    ];
    for (name, value) in headers.into_iter().chain(reply.headers) {
        if let Ok(header) = Header::from_bytes(name.as_bytes(), value.as_bytes()) {
            response.add_header(header);
        }
    }
    if let Err(error) = request.respond(response) {
        log::debug!("http: the client left before the response was written: {error}");
    }
}

const TRIGGER_METHODS: &[Method] = &[Method::Get, Method::Post];
const READ_METHODS: &[Method] = &[Method::Get];

fn route(app: &App, request: &mut Request) -> Reply {
    if head_bytes(request) > MAX_HEAD_BYTES {
        return Reply::error(431, format!("request head over {MAX_HEAD_BYTES} bytes"));
    }
    let url = request.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((url.as_str(), ""));
    match path {
        "/healthz" => allow(request, READ_METHODS).unwrap_or_else(|| health(app)),
        "/metrics" => allow(request, READ_METHODS).unwrap_or_else(|| scrape(app)),
        "/" => allow(request, READ_METHODS).unwrap_or_else(|| status(app, request)),
        "/login" => match request.method() {
            Method::Get => html(200, status_page::login(None)),
            _ if cross_site(request) => Reply::error(403, "cross-site form posts are refused"),
            _ => allow(request, &[Method::Post]).unwrap_or_else(|| login(app, request)),
        },
        "/logout" if cross_site(request) => Reply::error(403, "cross-site form posts are refused"),
        "/logout" => allow(request, &[Method::Post]).unwrap_or_else(|| logout(request)),
        "/api/v1/jobs" => read(app, request, jobs),
        "/api/v1/runs" => read(app, request, |app| runs(app, query)),
        "/api/jobs/telemetry-daily" => trigger(
            app,
            request,
            "telemetry-daily",
            query,
            TRIGGER_METHODS,
            Realm::Cron,
        ),
        "/api/cron/tick" => trigger(
            app,
            request,
            "cron-tick",
            query,
            TRIGGER_METHODS,
            Realm::LegacyTick,
        ),
        "/api/v1/export-metrics" => record_export_metric(app, request),
        "/api/admin/maintenance" => trigger(
            app,
            request,
            "maintenance",
            query,
            READ_METHODS,
            Realm::Maintenance,
        ),
        _ => match path.strip_prefix("/api/v1/cron/") {
            Some(job) => trigger(app, request, job, query, TRIGGER_METHODS, Realm::Cron),
            None => Reply::error(404, format!("no route {path}")),
        },
    }
}

/// `None` when the method is allowed; a 405 naming the allowed ones otherwise.
fn allow(request: &Request, methods: &[Method]) -> Option<Reply> {
    if methods.contains(request.method()) {
        return None;
    }
    let allowed: Vec<String> = methods.iter().map(|method| method.to_string()).collect();
    Some(
        Reply::error(405, format!("{} is not allowed here", request.method()))
            .with_header("Allow", allowed.join(", ")),
    )
}

fn unauthorized() -> Reply {
    Reply::error(
        401,
        "missing or wrong secret (Authorization: Bearer <secret> or X-Cron-Secret)",
    )
    .with_header("WWW-Authenticate", "Bearer")
}

/// An authenticated read-only route.
fn read(app: &App, request: &Request, answer: impl FnOnce(&App) -> Reply) -> Reply {
    if let Some(refusal) = allow(request, READ_METHODS) {
        return refusal;
    }
    if !app.auth.allows(request, Realm::Cron) {
        return unauthorized();
    }
    answer(app)
}

fn trigger(
    app: &App,
    request: &mut Request,
    job: &str,
    query: &str,
    methods: &[Method],
    realm: Realm,
) -> Reply {
    if let Some(refusal) = allow(request, methods) {
        return refusal;
    }
    if !app.runner.config().cron_enabled {
        return Reply::error(503, "CRON_ENABLED=false: triggers are switched off");
    }
    if !app.auth.allows(request, realm) {
        return unauthorized();
    }
    let params = match trigger_params(request, query) {
        Ok(params) => params,
        Err(reply) => return reply,
    };
    match app.runner.run(job, Trigger::Http, params) {
        Ok(completed) if completed.status == RunStatus::Failed => Reply::json(500, &completed.body),
        Ok(completed) => Reply::json(200, &completed.body),
        Err(error) => Reply::json(run_error_status(&error), &error.body()),
    }
}

fn run_error_status(error: &RunError) -> u16 {
    match error {
        RunError::UnknownJob(_) => 404,
        RunError::InvalidParams(_) => 400,
        RunError::AlreadyRunning { .. } => 409,
        RunError::ShuttingDown => 503,
        RunError::Store(_) => 500,
    }
}

/// A trigger's JSON body: `{"startDate":"2024-01-01","endDate":"2024-01-31","dryRun":true}`.
/// Unknown keys are refused: a mistyped `dryrun` must not start a real run.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TriggerBody {
    start_date: Option<String>,
    end_date: Option<String>,
    dry_run: Option<bool>,
}

fn trigger_params(request: &mut Request, query: &str) -> Result<RunParams, Reply> {
    let mut body = if *request.method() == Method::Post {
        parse_body(request)?
    } else {
        TriggerBody::default()
    };
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "dryRun" => {
                let dry_run = match value.as_ref() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    other => {
                        return Err(Reply::error(
                            400,
                            format!("dryRun: expected true or false, got {other:?}"),
                        ));
                    }
                };
                body.dry_run.get_or_insert(dry_run);
            }
            "startDate" => {
                body.start_date.get_or_insert(value.into_owned());
            }
            "endDate" => {
                body.end_date.get_or_insert(value.into_owned());
            }
            _ => {}
        }
    }
    RunParams::from_text(
        body.dry_run.unwrap_or(false),
        body.start_date.as_deref(),
        body.end_date.as_deref(),
    )
    .map_err(|message| Reply::error(400, message))
}

fn parse_body(request: &mut Request) -> Result<TriggerBody, Reply> {
    let bytes = read_body(request)?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(TriggerBody::default());
    }
    serde_json::from_slice(&bytes)
        .map_err(|error| Reply::error(400, format!("malformed JSON body: {error}")))
}

/// The request body, at most `MAX_BODY_BYTES` (413 beyond).
fn read_body(request: &mut Request) -> Result<Vec<u8>, Reply> {
    if request
        .body_length()
        .is_some_and(|length| length > MAX_BODY_BYTES)
    {
        return Err(Reply::error(
            413,
            format!("body over {MAX_BODY_BYTES} bytes"),
        ));
    }
    let mut bytes = Vec::new();
    let limit = MAX_BODY_BYTES as u64 + 1;
    if let Err(error) = request.as_reader().take(limit).read_to_end(&mut bytes) {
        return Err(Reply::error(400, format!("reading the body: {error}")));
    }
    if bytes.len() > MAX_BODY_BYTES {
        return Err(Reply::error(
            413,
            format!("body over {MAX_BODY_BYTES} bytes"),
        ));
    }
    Ok(bytes)
}

/// `POST /api/v1/export-metrics`: the application records one export's metric.
fn record_export_metric(app: &App, request: &mut Request) -> Reply {
    if let Some(refusal) = allow(request, &[Method::Post]) {
        return refusal;
    }
    if !app.auth.allows(request, Realm::Cron) {
        return unauthorized();
    }
    let body = match read_body(request) {
        Ok(body) => body,
        Err(reply) => return reply,
    };
    let metric = match metrics::parse_reported(&body, app.runner.clock()) {
        Ok(metric) => metric,
        Err(message) => return Reply::error(400, message),
    };
    match metrics::record(app.runner.store(), &metric) {
        Ok(id) => Reply::json(201, &json!({"ok": true, "id": id})),
        Err(error) => Reply::error(500, error),
    }
}

fn head_bytes(request: &Request) -> usize {
    request.url().len()
        + request
            .headers()
            .iter()
            .map(|header| header.field.as_str().as_str().len() + header.value.as_str().len() + 4)
            .sum::<usize>()
}

fn health(app: &App) -> Reply {
    match app.runner.store().ping() {
        Ok(()) => Reply::json(200, &json!({"status": "ok"})),
        Err(error) => Reply::json(
            503,
            &json!({"status": "unavailable", "error": error.to_string()}),
        ),
    }
}

fn html(status: u16, body: String) -> Reply {
    let mut reply = Reply::text(status, body, "text/html; charset=utf-8");
    for (name, value) in status_page::SECURITY_HEADERS {
        reply = reply.with_header(name, value);
    }
    reply
}

/// The status page; without a session or secret, a redirect to the login form.
fn status(app: &App, request: &Request) -> Reply {
    if !app.auth.allows_page(request, app.runner.clock().now()) {
        return Reply::redirect("/login");
    }
    let store = app.runner.store();
    let page = job_statuses(&app.runner, &app.planned).and_then(|jobs| {
        let durations = jobs
            .iter()
            .map(|job| Ok((job.name, store.recent_durations(job.name, 30)?)))
            .collect::<Result<_, crate::store::StoreError>>()?;
        let failures = store.recent_failures(10)?;
        let now = crate::clock::to_store_text(app.runner.clock().now());
        Ok(status_page::page(&jobs, &durations, &failures, &now))
    });
    match page {
        Ok(page) => html(200, page),
        Err(error) => Reply::error(500, error),
    }
}

/// The login form's POST: a valid secret sets the session cookie and goes back to `/`.
fn login(app: &App, request: &mut Request) -> Reply {
    let body = match read_body(request) {
        Ok(body) => body,
        Err(reply) => return reply,
    };
    let secret = form_urlencoded::parse(&body)
        .find(|(key, _)| key == "secret")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    let Some(session) = app.auth.session_for(&secret, app.runner.clock().now()) else {
        return html(
            401,
            status_page::login(Some("That secret is not accepted.")),
        );
    };
    Reply::redirect("/").with_header(
            "Set-Cookie",
            format!(
                "{SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECONDS}{}",
                secure_attribute(request)
            ),
        )
}

fn logout(request: &Request) -> Reply {
    Reply::redirect("/login").with_header(
        "Set-Cookie",
        format!(
            "{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
            secure_attribute(request)
        ),
    )
}

/// `; Secure` behind a TLS-terminating proxy (which says so in `X-Forwarded-Proto`).
fn secure_attribute(request: &Request) -> &'static str {
    let behind_tls = request.headers().iter().any(|header| {
        header.field.equiv("x-forwarded-proto")
            && header.value.as_str().eq_ignore_ascii_case("https")
    });
    if behind_tls { "; Secure" } else { "" }
}

/// A form POST another site made the browser send (`Sec-Fetch-Site`, else `Origin` against
/// `Host`): refused, so no page elsewhere can sign a user in or out.
fn cross_site(request: &Request) -> bool {
    let header = |name: &'static str| {
        request
            .headers()
            .iter()
            .find(|header| header.field.equiv(name))
            .map(|header| header.value.as_str().to_string())
    };
    if let Some(site) = header("sec-fetch-site") {
        return !matches!(site.as_str(), "same-origin" | "none");
    }
    match (header("origin"), header("host")) {
        (Some(origin), Some(host)) => {
            origin != format!("http://{host}") && origin != format!("https://{host}")
        }
        _ => false,
    }
}

fn scrape(app: &App) -> Reply {
    match prometheus::snapshot(&app.runner) {
        Ok(snapshot) => Reply::text(200, prometheus::render(&snapshot), prometheus::CONTENT_TYPE),
        Err(error) => Reply::error(500, error),
    }
}

fn jobs(app: &App) -> Reply {
    match job_statuses(&app.runner, &app.planned) {
        Ok(statuses) => Reply::json(200, &json!(statuses)),
        Err(error) => Reply::error(500, error),
    }
}

fn runs(app: &App, query: &str) -> Reply {
    let mut job = None;
    let mut limit = DEFAULT_RUNS_LIMIT;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "job" => job = Some(value.into_owned()),
            "limit" => match value.parse::<i64>() {
                Ok(number) if (1..=MAX_RUNS_LIMIT).contains(&number) => limit = number,
                _ => {
                    return Reply::error(
                        400,
                        format!("limit: expected 1 to {MAX_RUNS_LIMIT}, got {value:?}"),
                    );
                }
            },
            _ => {}
        }
    }
    if let Some(name) = &job
        && app.runner.jobs().get(name).is_none()
    {
        return Reply::error(404, format!("no job named {name:?}"));
    }
    match app.runner.store().list_runs(job.as_deref(), limit) {
        Ok(runs) => Reply::json(200, &json!(runs)),
        Err(error) => Reply::error(500, error),
    }
}
