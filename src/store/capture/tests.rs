//! Tests of the capture: the walk and the queue, and a gap's healing and recovery.

use crate::store::Store;

/// Rows inserted as the application does, one autocommit insert each.
fn insert(store: &Store, ids: &[&str]) {
    let conn = store.conn().unwrap();
    for id in ids {
        conn.execute(
            "INSERT INTO interaction_history (id, tenant_id) VALUES (?1, 't')",
            [id],
        )
        .unwrap();
    }
}

/// The ids in the interaction queue, in `seq` order.
fn captured(store: &Store) -> Vec<String> {
    let conn = store.conn().unwrap();
    let mut statement = conn
        .prepare("SELECT item_id FROM interaction_capture ORDER BY seq")
        .unwrap();
    statement
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

mod walk {
    use super::super::*;
    use super::{captured, insert};
    use crate::store::test_support::temp_store;

    fn walk_rows(store: &Store, step: &WalkStep) -> Vec<String> {
        let conn = store.conn().unwrap();
        let sql = format!(
            "SELECT id FROM interaction_history WHERE {} ORDER BY id",
            step.condition(Source::Interactions, "id")
        );
        let params = step.params();
        let mut statement = conn.prepare(&sql).unwrap();
        statement
            .query_map(bind(&params).as_slice(), |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn nothing_is_captured_before_a_consumer_begins() {
        let (_dir, store) = temp_store();
        insert(&store, &["a", "b"]);
        assert!(captured(&store).is_empty());
        assert_eq!(backlog::backlog(&store, Source::Interactions).unwrap(), 2);
    }

    #[test]
    fn the_noted_backlog_changes_only_when_it_is_counted_again() {
        let (_dir, store) = temp_store();
        let noted = |store: &Store| noted_backlog(store, Source::Interactions).unwrap().rows;
        insert(&store, &["a", "b"]);
        assert_eq!(noted(&store), 0, "nothing noted yet");
        assert_eq!(note_backlog(&store, Source::Interactions).unwrap(), 2);
        insert(&store, &["c"]);
        assert_eq!(noted(&store), 2, "a read counts nothing");
        note_backlog(&store, Source::Interactions).unwrap();
        assert_eq!(noted(&store), 3);
    }

    #[test]
    fn a_walk_and_the_capture_see_every_row_once() {
        let (_dir, store) = temp_store();
        insert(&store, &["b", "d", "f", "h"]);
        let step = begin_walk(&store, Source::Interactions, "export", 2)
            .unwrap()
            .unwrap();
        assert_eq!(step.to, Some(Value::Text("d".into())));
        // After the reservation: inside the reserved range it is captured, beyond it it is not.
        insert(&store, &["a", "c", "g"]);
        assert_eq!(captured(&store), ["a", "c"]);
        assert_eq!(walk_rows(&store, &step), ["b", "d"]);
        // A rerun before the step is finished gets the same step.
        assert_eq!(
            begin_walk(&store, Source::Interactions, "export", 2).unwrap(),
            Some(step.clone())
        );
        {
            let mut conn = store.conn().unwrap();
            let tx = conn.transaction().unwrap();
            finish_walk(&tx, Source::Interactions, &WalkProgress::Done).unwrap();
            tx.commit().unwrap();
        }
        let last = begin_walk(&store, Source::Interactions, "export", 10)
            .unwrap()
            .unwrap();
        assert_eq!(last.to, None, "the step runs to the end");
        assert!(state(&store, Source::Interactions).unwrap().live);
        insert(&store, &["z"]);
        assert_eq!(captured(&store), ["a", "c", "z"]);
        assert_eq!(walk_rows(&store, &last), ["f", "g", "h"]);
        assert_eq!(backlog::backlog(&store, Source::Interactions).unwrap(), 6);
    }

    #[test]
    fn a_step_extended_piece_by_piece_stays_one_step() {
        let (_dir, store) = temp_store();
        insert(&store, &["a", "b", "c", "d", "e"]);
        let first = begin_walk(&store, Source::Interactions, "export", 2)
            .unwrap()
            .unwrap();
        insert(&store, &["aa"]);
        let second = extend_walk(&store, Source::Interactions, "export", &first, 2)
            .unwrap()
            .unwrap();
        assert_eq!(second.from, Some(Value::Text("b".into())));
        assert_eq!(second.to, Some(Value::Text("d".into())));
        assert_eq!(walk_rows(&store, &second), ["c", "d"]);
        assert_eq!(captured(&store), ["aa"], "inside the reserved range");
        let pending = state(&store, Source::Interactions)
            .unwrap()
            .pending
            .unwrap();
        assert_eq!(pending.from, None);
        assert_eq!(pending.to, Some(Value::Text("d".into())));
        let last = extend_walk(&store, Source::Interactions, "export", &pending, 2)
            .unwrap()
            .unwrap();
        assert_eq!(
            (last.to.clone(), walk_rows(&store, &last)),
            (None, vec!["e".to_string()])
        );
        assert_eq!(
            extend_walk(&store, Source::Interactions, "export", &last, 2).unwrap(),
            None
        );
    }

    #[test]
    fn stopping_part_way_keeps_the_rest_of_the_step() {
        let (_dir, store) = temp_store();
        insert(&store, &["a", "b", "c"]);
        let step = begin_walk(&store, Source::Interactions, "siem", 3)
            .unwrap()
            .unwrap();
        {
            let mut conn = store.conn().unwrap();
            let tx = conn.transaction().unwrap();
            let progress = WalkProgress::StoppedAfter(Value::Text("a".into()));
            finish_walk(&tx, Source::Interactions, &progress).unwrap();
            tx.commit().unwrap();
        }
        let rest = begin_walk(&store, Source::Interactions, "siem", 3)
            .unwrap()
            .unwrap();
        assert_eq!(rest.from, Some(Value::Text("a".into())));
        assert_eq!(rest.mark, step.mark);
        assert_eq!(walk_rows(&store, &rest), ["b", "c"]);
    }

    #[test]
    fn a_restart_drops_the_old_queue_and_walks_again() {
        let (_dir, store) = temp_store();
        insert(&store, &["a"]);
        begin_walk(&store, Source::Interactions, "splunk", 5).unwrap();
        insert(&store, &["b"]);
        assert_eq!(captured(&store), ["b"]);
        restart(&store, Source::Interactions, "elastic", FirstWalk::Delivers).unwrap();
        assert!(captured(&store).is_empty());
        let step = begin_walk(&store, Source::Interactions, "elastic", 5)
            .unwrap()
            .unwrap();
        assert_eq!(walk_rows(&store, &step), ["a", "b"]);
    }
}

mod gap {
    use super::super::Source;
    use super::super::gap::*;
    use super::{captured, insert};
    use crate::store::alerts::{self, Outbox};
    use crate::store::capture::{WalkProgress, begin_walk, finish_walk, state};
    use crate::store::test_support::temp_store;
    use crate::store::{Store, StoreError};

    fn queued(store: &Store) -> Vec<String> {
        let mut ids = captured(store);
        ids.sort();
        ids
    }

    fn alerts(outbox: Outbox) -> GapAlerts<'static> {
        GapAlerts {
            outbox,
            now: chrono::Utc::now(),
            opened: &|source, _| serde_json::json!({"type": "capture_gap", "table": source.table()}),
            resolved: &|_, gap| serde_json::json!({"type": "capture_gap_resolved", "recovered": gap.recovered}),
        }
    }

    /// A consumer that has walked the whole table and taken every row.
    fn consumed(store: &Store) {
        begin_walk(store, Source::Interactions, "export", 100).unwrap();
        let mut conn = store.conn().unwrap();
        let tx = conn.transaction().unwrap();
        finish_walk(&tx, Source::Interactions, &WalkProgress::Done).unwrap();
        tx.commit().unwrap();
    }

    #[test]
    fn intact_triggers_cost_one_look_up_and_open_nothing() {
        let (_dir, store) = temp_store();
        assert!(triggers_intact(&store.conn().unwrap(), Source::Interactions).unwrap());
        assert!(triggers_intact(&store.conn().unwrap(), Source::Audit).unwrap());
        assert_eq!(
            heal(&store, Source::Interactions, &alerts(Outbox::Skip)).unwrap(),
            None
        );
    }

    #[test]
    fn triggers_dropped_before_any_consumer_began_come_back_without_a_gap() {
        let (_dir, store) = temp_store();
        store
            .conn()
            .unwrap()
            .execute_batch("DROP TRIGGER interaction_history_capture")
            .unwrap();
        assert_eq!(
            heal(&store, Source::Interactions, &alerts(Outbox::Skip)).unwrap(),
            None
        );
        assert!(triggers_intact(&store.conn().unwrap(), Source::Interactions).unwrap());
        assert_eq!(state(&store, Source::Interactions).unwrap().gap, None);
    }

    #[test]
    fn a_changed_trigger_is_replaced_and_the_rows_it_missed_are_queued_once() {
        let (_dir, store) = temp_store();
        insert(&store, &["a", "b"]);
        consumed(&store);
        insert(&store, &["c"]);
        // Someone's trigger of the same name that captures nothing.
        store
            .conn()
            .unwrap()
            .execute_batch(
                "DROP TRIGGER interaction_history_capture;
                 CREATE TRIGGER interaction_history_capture AFTER INSERT ON interaction_history
                 BEGIN SELECT 1; END;",
            )
            .unwrap();
        insert(&store, &["d", "aa"]);
        let raised = heal(&store, Source::Interactions, &alerts(Outbox::Queue)).unwrap();
        assert_eq!(raised.unwrap()["type"], "capture_gap");
        assert_eq!(
            alerts::pending(&store).unwrap(),
            1,
            "committed with the gap"
        );
        // Healed: caught by the triggers again, and left to the queue.
        insert(&store, &["e"]);
        assert_eq!(queued(&store), ["c", "e"]);
        let recovery = recover_gap(
            &store,
            Source::Interactions,
            |known: &mut KnownIds| -> Result<(), StoreError> {
                known.add("a")?;
                known.add("b")
            },
            &|| false,
            &alerts(Outbox::Queue),
        )
        .unwrap();
        assert_eq!(
            recovery,
            Some(Recovery::Done {
                recovered: 2,
                alert: serde_json::json!({"type": "capture_gap_resolved", "recovered": 2})
            })
        );
        assert_eq!(queued(&store), ["aa", "c", "d", "e"]);
        assert_eq!(state(&store, Source::Interactions).unwrap().gap, None);
        assert_eq!(alerts::pending(&store).unwrap(), 2);
        let again = recover_gap(
            &store,
            Source::Interactions,
            |_: &mut KnownIds| -> Result<(), StoreError> { Ok(()) },
            &|| false,
            &alerts(Outbox::Skip),
        )
        .unwrap();
        assert_eq!(again, None);
    }

    #[test]
    fn a_stopped_recovery_goes_on_where_it_was() {
        let (_dir, store) = temp_store();
        consumed(&store);
        store
            .conn()
            .unwrap()
            .execute_batch("DROP TRIGGER interaction_history_capture")
            .unwrap();
        insert(&store, &["x"]);
        heal(&store, Source::Interactions, &alerts(Outbox::Skip)).unwrap();
        let none = |_: &mut KnownIds| -> Result<(), StoreError> { Ok(()) };
        let stopped = recover_gap(
            &store,
            Source::Interactions,
            none,
            &|| true,
            &alerts(Outbox::Skip),
        );
        assert_eq!(stopped.unwrap(), Some(Recovery::Stopped { recovered: 0 }));
        assert!(state(&store, Source::Interactions).unwrap().gap.is_some());
        let done = recover_gap(
            &store,
            Source::Interactions,
            none,
            &|| false,
            &alerts(Outbox::Skip),
        );
        assert!(matches!(
            done.unwrap(),
            Some(Recovery::Done { recovered: 1, .. })
        ));
        assert_eq!(queued(&store), ["x"]);
    }
}
