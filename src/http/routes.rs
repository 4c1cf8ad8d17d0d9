//! The routing `match` and the handlers: each parses, authenticates and asks the runner or
//! the store, then answers JSON. No SQL and no job internals here.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::json;

use super::admission::{App, READ_METHODS, admit, allow, query_params, read, refuse, run_reply};
use super::auth::{Realm, SESSION_COOKIE, SESSION_SECONDS};
use super::dsar;
use super::html;
use super::prometheus;
use super::status_page;
use super::strip;
use super::wire::{Reply, Request};
use crate::export::reported::{ReportError, record_reported};
use crate::runner::{RunParams, Trigger};
use crate::status::history::{self, HistoryError};
use crate::status::{self, job_statuses};
use crate::store::export_metrics::Recorded;

/// How long one reading of the store serves `/metrics`: scrapers at any rate cost the store one
/// reading per this time, and never hold the workers `/healthz` and triggers need.
const SCRAPE_REUSE: Duration = Duration::from_secs(2);

const DEFAULT_RUNS_LIMIT: i64 = 50;
const MAX_RUNS_LIMIT: i64 = 1_000;

const TRIGGER_METHODS: &[&str] = &["GET", "POST"];

/// The parameters a trigger takes, in the query or the JSON body.
const TRIGGER_PARAMS: &[&str] = &["dryRun", "startDate", "endDate"];
const LIST_PARAMS: &[&str] = &["job", "limit"];

/// Routes HEAD answers as GET without the body: those safe to GET. A trigger runs a job on
/// GET, so HEAD there stays a 405 (RFC 9110 9.2.1: HEAD is safe).
const HEAD_AS_GET: &[&str] = &[
    "/healthz",
    "/metrics",
    "/",
    "/login",
    "/api/v1/jobs",
    "/api/v1/runs",
    "/api/v1/occurrences",
];

/// The secrets a protected route takes, by path; `None` for the open routes (`/healthz`,
/// `/metrics`), the status page and its login form (a cookie or a form body), and unknown
/// paths (a 404).
fn realm_of(app: &App, path: &str) -> Option<Realm> {
    match path {
        "/api/v1/jobs"
        | "/api/v1/runs"
        | "/api/v1/occurrences"
        | "/api/v1/export-metrics"
        | "/api/v1/dsar/erase"
        | "/api/v1/dsar/access" => Some(Realm::Cron),
        "/api/cron/tick" => Some(Realm::LegacyTick),
        "/api/admin/maintenance" => Some(Realm::Maintenance),
        _ if path.starts_with("/api/v1/cron/") => Some(Realm::Cron),
        _ => app
            .jobs
            .iter()
            .any(|job| job.legacy_routes().contains(&path))
            .then_some(Realm::Cron),
    }
}

/// Checks a protected route's secret on the request head, before its body is read or a
/// `100 Continue` sent: an unauthenticated body is never buffered. The handlers check again
/// (the same headers, so the same answer).
pub fn gate(app: &App, head: &Request) -> Option<Reply> {
    let realm = realm_of(app, &head.path)?;
    app.auth
        .verify(head, realm)
        .err()
        .map(|refused| refuse(app, head, refused))
}

/// Answers one request read in full (the listener has already checked its framing and limits).
pub fn handle(app: &App, request: &Request) -> Reply {
    if request.method == "HEAD" && HEAD_AS_GET.contains(&request.path.as_str()) {
        return handle(app, &request.as_get()).without_body();
    }
    match request.path.as_str() {
        "/healthz" => allow(request, READ_METHODS).unwrap_or_else(|| health(app)),
        "/metrics" => allow(request, READ_METHODS).unwrap_or_else(|| scrape(app)),
        "/" => allow(request, READ_METHODS).unwrap_or_else(|| status(app, request)),
        "/login" => match request.method.as_str() {
            "GET" => html(200, status_page::login(None)),
            _ if cross_site(request) => Reply::error(403, "cross-site form posts are refused"),
            _ => allow(request, &["POST"]).unwrap_or_else(|| login(app, request)),
        },
        "/logout" if cross_site(request) => Reply::error(403, "cross-site form posts are refused"),
        "/logout" => allow(request, &["POST"]).unwrap_or_else(|| logout(request)),
        "/api/v1/jobs" => read(app, request, &[], |app, _| jobs(app)),
        "/api/v1/runs" => read(app, request, LIST_PARAMS, runs),
        "/api/v1/occurrences" => read(app, request, LIST_PARAMS, occurrences),
        "/api/cron/tick" => trigger(
            app,
            request,
            Route {
                job: "cron-tick",
                methods: TRIGGER_METHODS,
                realm: Realm::LegacyTick,
                body: BodyMeans::Event,
            },
        ),
        "/api/v1/export-metrics" => record_export_metric(app, request),
        "/api/v1/dsar/erase" => dsar::erase(app, request),
        "/api/v1/dsar/access" => dsar::access(app, request),
        "/api/admin/maintenance" => trigger(
            app,
            request,
            Route {
                job: "maintenance",
                methods: READ_METHODS,
                realm: Realm::Maintenance,
                body: BodyMeans::Parameters,
            },
        ),
        path => match path.strip_prefix("/api/v1/cron/") {
            Some(job) => trigger(app, request, Route::cron(job)),
            // The paths the systems edgecron replaces served a job at (their schedulers'
            // configurations call them), with the same secret, methods and parameters.
            None => match app
                .jobs
                .iter()
                .find(|job| job.legacy_routes().contains(&path))
            {
                Some(job) => trigger(app, request, Route::cron(job.name())),
                None => Reply::error(404, format!("no route {path}")),
            },
        },
    }
}

/// What a trigger route's POST body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyMeans {
    /// The run's parameters, and nothing else.
    Parameters,
    /// Whatever JSON the caller's scheduler sends (an EventBridge scheduled event, say): its
    /// run parameters are read, any other field is ignored.
    Event,
}

/// A route that runs a job.
struct Route<'a> {
    job: &'a str,
    methods: &'a [&'a str],
    realm: Realm,
    body: BodyMeans,
}

impl Route<'_> {
    fn cron(job: &str) -> Route<'_> {
        Route {
            job,
            methods: TRIGGER_METHODS,
            realm: Realm::Cron,
            body: BodyMeans::Parameters,
        }
    }
}

fn trigger(app: &App, request: &Request, route: Route<'_>) -> Reply {
    if let Some(refusal) = allow(request, route.methods) {
        return refusal;
    }
    if !app.config.cron_enabled {
        return Reply::error(503, "CRON_ENABLED=false: triggers are switched off");
    }
    if let Err(refused) = app.auth.verify(request, route.realm) {
        return refuse(app, request, refused);
    }
    let params = match trigger_params(request, route.body) {
        Ok(params) => params,
        Err(reply) => return reply,
    };
    run_reply(app.runner.run_job(route.job, Trigger::Http, params))
}

/// A trigger's JSON body: `{"startDate":"2024-01-01","endDate":"2024-01-31","dryRun":true}`.
/// Unknown keys are refused: a mistyped `dryrun` must not start a real run.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TriggerBody {
    start_date: Option<String>,
    end_date: Option<String>,
    /// Given, it must be a JSON boolean: a `null` or a `"yes"` never starts a real run.
    #[serde(default, deserialize_with = "a_boolean")]
    dry_run: Option<bool>,
}

fn a_boolean<'de, D: serde::Deserializer<'de>>(value: D) -> Result<Option<bool>, D::Error> {
    bool::deserialize(value).map(Some)
}

/// A trigger's parameters from its query and (on POST) its JSON body; one given in both is
/// as ambiguous as one given twice, and refused the same way.
fn trigger_params(request: &Request, means: BodyMeans) -> Result<RunParams, Reply> {
    let mut body = if request.method == "POST" {
        parse_body(&request.body, means)?
    } else {
        TriggerBody::default()
    };
    for (key, value) in query_params(&request.query, TRIGGER_PARAMS)? {
        let given_in_body = match key.as_str() {
            "dryRun" => body.dry_run.replace(parse_flag(&value)?).is_some(),
            "startDate" => body.start_date.replace(value).is_some(),
            "endDate" => body.end_date.replace(value).is_some(),
            // `query_params` admits nothing else.
            _ => false,
        };
        if given_in_body {
            return Err(Reply::error(
                400,
                format!("{key} is given in both the query and the body"),
            ));
        }
    }
    RunParams::from_text(
        body.dry_run.unwrap_or(false),
        body.start_date.as_deref(),
        body.end_date.as_deref(),
    )
    .map_err(|message| Reply::error(400, message))
}

fn parse_flag(value: &str) -> Result<bool, Reply> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(Reply::error(
            400,
            format!("dryRun: expected true or false, got {other:?}"),
        )),
    }
}

fn parse_body(bytes: &[u8], means: BodyMeans) -> Result<TriggerBody, Reply> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(TriggerBody::default());
    }
    let malformed =
        |error: serde_json::Error| Reply::error(400, format!("malformed JSON body: {error}"));
    if means == BodyMeans::Parameters {
        return serde_json::from_slice(bytes).map_err(malformed);
    }
    let serde_json::Value::Object(mut event) = serde_json::from_slice(bytes).map_err(malformed)?
    else {
        return Ok(TriggerBody::default());
    };
    // A run parameter in an event is still read strictly: a `dryRun` must never be ignored.
    event.retain(|key, _| TRIGGER_PARAMS.contains(&key.as_str()));
    serde_json::from_value(serde_json::Value::Object(event)).map_err(malformed)
}

/// `POST /api/v1/export-metrics`: the application records one export's metric.
fn record_export_metric(app: &App, request: &Request) -> Reply {
    if let Err(reply) = admit(app, request, &["POST"], &[]) {
        return reply;
    }
    match record_reported(&app.store, &request.body, app.clock.as_ref()) {
        Ok(Recorded::New(id)) => Reply::json(201, &json!({"ok": true, "id": id})),
        // The same export reported again: recorded once, answered as the first time was.
        Ok(Recorded::Repeated(id)) => {
            Reply::json(200, &json!({"ok": true, "id": id, "repeated": true}))
        }
        Err(ReportError::Invalid(message)) => Reply::error(400, message),
        Err(ReportError::Store(error)) => Reply::error(500, error),
    }
}

fn health(app: &App) -> Reply {
    match app.store.ping() {
        Ok(()) => Reply::json(200, &json!({"status": "ok"})),
        Err(error) => Reply::json(
            503,
            &json!({"status": "unavailable", "error": error.to_string()}),
        ),
    }
}

fn html(status: u16, body: String) -> Reply {
    let mut reply = Reply::text(status, body, "text/html; charset=utf-8");
    for (name, value) in html::SECURITY_HEADERS {
        reply = reply.with_header(name, value);
    }
    reply
}

/// The status page; without a session or secret, a redirect to the login form.
fn status(app: &App, request: &Request) -> Reply {
    if !app.auth.allows_page(request, app.clock.now()) {
        return Reply::redirect("/login");
    }
    let now = app.clock.now();
    let facts = match status::page_facts(app.sources(), &app.planned, now - strip::SPAN) {
        Ok(facts) => facts,
        Err(error) => return Reply::error(500, error),
    };
    let marks = strip::marks(&facts.occurrences, &facts.runs);
    let data = status_page::PageData {
        durations: &facts.durations,
        marks: &marks,
        failures: &facts.failures,
        now,
    };
    html(200, status_page::page(&facts.jobs, &data))
}

/// The login form's POST: a valid secret sets the session cookie and goes back to `/`.
fn login(app: &App, request: &Request) -> Reply {
    let secret = form_urlencoded::parse(&request.body)
        .find(|(key, _)| key == "secret")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    let Some(session) = app.auth.session_for(&secret, app.clock.now()) else {
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
    let behind_tls = request
        .headers("x-forwarded-proto")
        .any(|value| value.eq_ignore_ascii_case("https"));
    if behind_tls { "; Secure" } else { "" }
}

/// A form POST another site made the browser send (`Sec-Fetch-Site`, else `Origin` against
/// `Host`): refused, so no page elsewhere can sign a user in or out.
fn cross_site(request: &Request) -> bool {
    if let Some(site) = request.header("sec-fetch-site") {
        return !matches!(site, "same-origin" | "none");
    }
    match (request.header("origin"), request.header("host")) {
        (Some(origin), Some(host)) => {
            origin != format!("http://{host}") && origin != format!("https://{host}")
        }
        _ => false,
    }
}

fn scrape(app: &App) -> Reply {
    // One scraper reads the store while the others wait for its reading, not for their own.
    let mut last = app
        .scrapes
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((read_at, text)) = last.as_ref()
        && read_at.elapsed() < SCRAPE_REUSE
    {
        return Reply::text(200, text.clone(), prometheus::CONTENT_TYPE);
    }
    match status::scrape::snapshot(app.sources()) {
        Ok(snapshot) => {
            let text = prometheus::render(&snapshot, app.auth.refusals());
            *last = Some((Instant::now(), text.clone()));
            Reply::text(200, text, prometheus::CONTENT_TYPE)
        }
        Err(error) => Reply::error(500, error),
    }
}

fn jobs(app: &App) -> Reply {
    match job_statuses(app.sources(), &app.planned) {
        Ok(statuses) => Reply::json(200, &json!(statuses)),
        Err(error) => Reply::error(500, error),
    }
}

/// `job` and `limit` of a history listing: a known job, a limit in range.
fn list_params(mut params: BTreeMap<String, String>) -> Result<(Option<String>, i64), Reply> {
    let job = params.remove("job");
    let limit = match params.remove("limit") {
        None => DEFAULT_RUNS_LIMIT,
        Some(value) => match value.parse::<i64>() {
            Ok(number) if (1..=MAX_RUNS_LIMIT).contains(&number) => number,
            _ => {
                return Err(Reply::error(
                    400,
                    format!("limit: expected 1 to {MAX_RUNS_LIMIT}, got {value:?}"),
                ));
            }
        },
    };
    Ok((job, limit))
}

/// A history listing as a reply: 404 for a job edgecron does not have.
fn history_reply<T: serde::Serialize>(listed: Result<T, HistoryError>) -> Reply {
    match listed {
        Ok(records) => Reply::json(200, &json!(records)),
        Err(error @ HistoryError::UnknownJob(_)) => Reply::error(404, error),
        Err(HistoryError::Store(error)) => Reply::error(500, error),
    }
}

fn runs(app: &App, params: BTreeMap<String, String>) -> Reply {
    let (job, limit) = match list_params(params) {
        Ok(params) => params,
        Err(reply) => return reply,
    };
    history_reply(history::runs(&app.store, &app.jobs, job.as_deref(), limit))
}

fn occurrences(app: &App, params: BTreeMap<String, String>) -> Reply {
    let (job, limit) = match list_params(params) {
        Ok(params) => params,
        Err(reply) => return reply,
    };
    history_reply(history::occurrences(
        &app.store,
        &app.jobs,
        job.as_deref(),
        limit,
    ))
}
