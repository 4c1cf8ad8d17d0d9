//! What a tenant's retention policies say: the strictest positive retention among those not
//! on legal hold, and the data classes a hold protects from every deletion.

use crate::jobs::{JobCtx, JobError};

/// A data class a retention policy names, and the table its rows live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::jobs) enum Class {
    DecisionTraces,
    InteractionHistory,
    AiAttachments,
}

impl Class {
    const ALL: [Class; 3] = [
        Class::DecisionTraces,
        Class::InteractionHistory,
        Class::AiAttachments,
    ];

    pub(in crate::jobs) fn table(self) -> &'static str {
        match self {
            Class::DecisionTraces => "decision_traces",
            Class::InteractionHistory => "interaction_history",
            Class::AiAttachments => "ai_attachments",
        }
    }

    /// Its place in [`Class::ALL`] and in a tenant's counts.
    pub(in crate::jobs) fn index(self) -> usize {
        match self {
            Class::DecisionTraces => 0,
            Class::InteractionHistory => 1,
            Class::AiAttachments => 2,
        }
    }

    /// The key of its count in results and audit rows.
    pub(in crate::jobs) fn key(self) -> &'static str {
        match self {
            Class::DecisionTraces => "decisionTraces",
            Class::InteractionHistory => "interactionHistory",
            Class::AiAttachments => "aiAttachments",
        }
    }
}

/// What a tenant's policies say.
#[derive(Debug, Default, PartialEq)]
pub(in crate::jobs) struct Retention {
    /// The strictest positive `retention_days` among the policies not on hold.
    pub(in crate::jobs) days: Option<i64>,
    /// Classes on legal hold, protected from every deletion.
    pub(in crate::jobs) held: Vec<Class>,
    /// A hold on `all`/`*`, or on a class this job does not know (held, to be safe).
    pub(in crate::jobs) whole_tenant_held: Option<String>,
}

impl Retention {
    pub(in crate::jobs) fn purged_classes(&self) -> Vec<Class> {
        if self.whole_tenant_held.is_some() {
            return Vec::new();
        }
        Class::ALL
            .into_iter()
            .filter(|class| !self.held.contains(class))
            .collect()
    }
}

/// Reads the tenant's policies: which classes are held, and the strictest positive retention
/// among the policies not on hold.
pub(in crate::jobs) fn retention(ctx: &JobCtx<'_>, tenant_id: &str) -> Result<Retention, JobError> {
    let conn = ctx.store.conn()?;
    let mut statement = conn.prepare(
        "SELECT data_class, retention_days, COALESCE(legal_hold, 0) <> 0 FROM retention_policies
          WHERE tenant_id = ?1",
    )?;
    let policies = statement
        .query_map([tenant_id], |row| {
            Ok((
                row.get::<_, Option<String>>(0)?.unwrap_or_default(),
                row.get::<_, Option<i64>>(1)?,
                row.get::<_, bool>(2)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut retention = Retention::default();
    for (class, days, on_hold) in policies {
        let name = class.trim().to_ascii_lowercase();
        if !on_hold {
            if let Some(days) = days.filter(|days| *days > 0) {
                retention.days = Some(retention.days.map_or(days, |strictest| strictest.min(days)));
            }
            continue;
        }
        match Class::ALL.into_iter().find(|known| known.table() == name) {
            Some(class) => retention.held.push(class),
            None if name == "all" || name == "*" => {
                retention.whole_tenant_held =
                    Some(format!("legal hold on {class:?}: the whole tenant"));
            }
            None => {
                retention.whole_tenant_held = Some(format!(
                    "legal hold on unknown data_class {class:?}: the whole tenant is held"
                ));
            }
        }
    }
    Ok(retention)
}
