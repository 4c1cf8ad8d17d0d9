//! The data-subject routes (SPEC section 3): `POST /api/v1/dsar/erase` runs an erasure as
//! `edgecron erase` does; `GET /api/v1/dsar/access` answers the document `edgecron access`
//! prints. Both take the trigger secret.

use serde::Deserialize;

use super::admission::{App, admit, read, run_reply};
use super::wire::{Reply, Request};
use crate::jobs::DataSubject;
use crate::runner::Trigger;

/// The erase route's body: `{"tenantId","customerId","dryRun"?}`, nothing else.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EraseBody {
    tenant_id: String,
    customer_id: String,
    #[serde(default)]
    dry_run: bool,
}

pub fn erase(app: &App, request: &Request) -> Reply {
    if let Err(reply) = admit(app, request, &["POST"], &[]) {
        return reply;
    }
    let body: EraseBody = match serde_json::from_slice(&request.body) {
        Ok(body) => body,
        Err(error) => {
            return Reply::error(
                400,
                format!("the body must be {{\"tenantId\",\"customerId\",\"dryRun\"?}}: {error}"),
            );
        }
    };
    let Some(subject) = subject(body.tenant_id, body.customer_id) else {
        return Reply::error(400, "tenantId and customerId must not be empty");
    };
    run_reply(app.runner.erase(subject, Trigger::Http, body.dry_run))
}

pub fn access(app: &App, request: &Request) -> Reply {
    read(
        app,
        request,
        &["tenantId", "customerId"],
        |app, mut params| {
            let tenant = params.remove("tenantId").unwrap_or_default();
            let customer = params.remove("customerId").unwrap_or_default();
            let Some(subject) = subject(tenant, customer) else {
                return Reply::error(400, "tenantId and customerId are required");
            };
            match app.runner.access(&subject) {
                Ok(document) => Reply::json(200, &document),
                Err(error) => Reply::error(500, error),
            }
        },
    )
}

fn subject(tenant_id: String, customer_id: String) -> Option<DataSubject> {
    (!tenant_id.is_empty() && !customer_id.is_empty()).then_some(DataSubject {
        tenant_id,
        customer_id,
    })
}
