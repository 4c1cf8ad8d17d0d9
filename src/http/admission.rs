//! What every handler shares: the app's state, and a route's admission (its method, the trigger
//! secret, its query parameters) before a handler answers; and a run request's reply.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::auth::{Auth, Realm, Refused};
use super::wire::{Reply, Request};
use crate::clock::Clock;
use crate::config::Config;
use crate::jobs::Registry;
use crate::runner::{Completed, RunError, Runner, answered};
use crate::status::{PlannedJob, Sources};
use crate::store::Store;

/// What the handlers share: the runner that runs what a trigger asks for, and what the read
/// model reads.
pub struct App {
    pub runner: Arc<Runner>,
    pub store: Store,
    pub config: Arc<Config>,
    pub clock: Arc<dyn Clock>,
    pub jobs: Arc<Registry>,
    pub auth: Auth,
    pub planned: Vec<PlannedJob>,
    /// The last `/metrics` exposition and when it was read from the store.
    pub scrapes: Mutex<Option<(Instant, String)>>,
}

impl App {
    pub(super) fn sources(&self) -> Sources<'_> {
        Sources {
            store: &self.store,
            jobs: &self.jobs,
            config: &self.config,
            clock: self.clock.as_ref(),
        }
    }
}

pub(super) const READ_METHODS: &[&str] = &["GET"];

/// `None` when the method is allowed; a 405 naming the allowed ones otherwise.
pub(super) fn allow(request: &Request, methods: &[&str]) -> Option<Reply> {
    if methods.contains(&request.method.as_str()) {
        return None;
    }
    Some(
        Reply::error(405, format!("{} is not allowed here", request.method))
            .with_header("Allow", methods.join(", ")),
    )
}

/// A refused authentication: counted, logged, and answered 401 (400 for several secrets).
pub(super) fn refuse(app: &App, request: &Request, refused: Refused) -> Reply {
    app.auth.note_refusal(request, refused);
    match refused {
        Refused::Several => Reply::error(
            refused.status(),
            "present one secret: several Authorization/X-Cron-Secret headers are refused",
        ),
        Refused::Missing | Refused::Wrong => Reply::error(
            refused.status(),
            "missing or wrong secret (Authorization: Bearer <secret> or X-Cron-Secret)",
        )
        .with_header("WWW-Authenticate", "Bearer"),
    }
}

/// The query's parameters, as strictly as a body's fields: each one `allowed`, at most once;
/// a 400 naming any other, so a mistyped `dryrun` never starts a real run.
pub(super) fn query_params(
    query: &str,
    allowed: &[&str],
) -> Result<BTreeMap<String, String>, Reply> {
    let mut params = BTreeMap::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if !allowed.contains(&key.as_ref()) {
            let expected = if allowed.is_empty() {
                "this route takes none".to_string()
            } else {
                format!("expected one of {}", allowed.join(", "))
            };
            return Err(Reply::error(
                400,
                format!("unknown query parameter {key:?} ({expected})"),
            ));
        }
        if params.insert(key.to_string(), value.into_owned()).is_some() {
            return Err(Reply::error(
                400,
                format!("query parameter {key:?} is given more than once"),
            ));
        }
    }
    Ok(params)
}

/// An authenticated read-only route taking the query parameters `allowed`.
pub(super) fn read(
    app: &App,
    request: &Request,
    allowed: &[&str],
    answer: impl FnOnce(&App, BTreeMap<String, String>) -> Reply,
) -> Reply {
    match admit(app, request, READ_METHODS, allowed) {
        Ok(params) => answer(app, params),
        Err(reply) => reply,
    }
}

/// Checks a route behind the trigger secret: its method, the secret, then its query
/// parameters (only `allowed` ones); answers them, or the refusal.
pub(super) fn admit(
    app: &App,
    request: &Request,
    methods: &[&str],
    allowed: &[&str],
) -> Result<BTreeMap<String, String>, Reply> {
    if let Some(refusal) = allow(request, methods) {
        return Err(refusal);
    }
    if let Err(refused) = app.auth.verify(request, Realm::Cron) {
        return Err(refuse(app, request, refused));
    }
    query_params(&request.query, allowed)
}

/// A run request's answer as a reply: its status and body as the runner decided them.
pub(super) fn run_reply(result: Result<Completed, RunError>) -> Reply {
    let (answer, body) = answered(result);
    Reply::json(answer.http_status(), &body)
}
