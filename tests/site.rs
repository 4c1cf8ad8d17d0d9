//! Sites (SPEC section 9): a store bound to its host and site id, refused elsewhere until
//! adopted, and the site in `/metrics` and in alerts.

use serde_json::Value;

use crate::support::{Env, wait_until};

fn site(env: &Env, args: &[&str]) -> String {
    let output = env.run(&[&["site"], args].concat());
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

#[test]
fn a_store_started_with_another_site_id_does_no_work_until_adopted() {
    let env = Env::new().with("EDGECRON_SITE_ID", "edge-1");
    env.run_json(&["run", "cleanup"], 0);
    assert_eq!(site(&env, &[]), "edge-1");
    let env = env.with("EDGECRON_SITE_ID", "edge-2");
    let refused = env.run(&["run", "cleanup"]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    for named in ["edge-1", "edge-2", "edgecron site adopt"] {
        assert!(stderr.contains(named), "{stderr}");
    }
    assert_eq!(site(&env, &["adopt"]), "edge-2");
    env.run_json(&["run", "cleanup"], 0);
    assert_eq!(site(&env, &[]), "edge-2");
    // The run history names the site each run worked for.
    let runs = env.run_json(&["runs", "cleanup", "--json"], 0);
    let sites: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|run| run["site"].as_str().unwrap())
        .collect();
    assert_eq!(sites, ["edge-2", "edge-1"]);
}

#[test]
fn a_store_copied_to_another_machine_does_no_work_until_adopted() {
    // Another machine, as a copy from an image sees it: its own /etc/machine-id, bound over
    // the real one in a private mount namespace (needs root and unshare).
    let root = unsafe { libc::geteuid() } == 0;
    if !root || !std::path::Path::new("/etc/machine-id").exists() {
        eprintln!("skipped: needs root and /etc/machine-id to stand in another machine");
        return;
    }
    let env = Env::new();
    env.run_json(&["run", "cleanup"], 0);
    let original = site(&env, &[]);
    let other_id = env.data_dir().join("other-machine-id");
    std::fs::write(&other_id, "0123456789abcdef0123456789abcdef\n").unwrap();
    let elsewhere = |args: &[&str]| {
        let binary = env!("CARGO_BIN_EXE_edgecron");
        let script = format!(
            "mount --bind {} /etc/machine-id && exec {binary} {}",
            other_id.display(),
            args.join(" ")
        );
        env.command_under(&["unshare", "--mount", "--", "sh", "-c", &script], &[])
            .output()
            .unwrap()
    };
    let refused = elsewhere(&["run", "cleanup"]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(&original) && stderr.contains("edgecron site adopt"),
        "{stderr}"
    );
    let adopted = elsewhere(&["site", "adopt"]);
    assert!(adopted.status.success(), "{adopted:?}");
    let new_site = String::from_utf8_lossy(&adopted.stdout).trim().to_string();
    assert_ne!(new_site, original);
    assert!(elsewhere(&["run", "cleanup"]).status.success());
    // Back on the first machine, the store is now the other's.
    assert_eq!(env.run(&["run", "cleanup"]).status.code(), Some(2));
}

#[test]
fn the_site_is_in_metrics_and_in_every_alert() {
    let env = Env::new()
        .with("EDGECRON_SITE_ID", "edge-7")
        .with("EDGECRON_LOG_FORMAT", "json");
    let server = env.serve();
    let metrics = server.get("/metrics");
    assert!(
        metrics
            .body
            .contains("edgecron_site_info{site=\"edge-7\"} 1"),
        "{}",
        metrics.body
    );
    // Two of two application exports failed: the failure alert.
    for n in 0..2 {
        let metric = format!(
            r#"{{"export_id":"site-{n}","user_id":"u","format":"csv","status":"failed","duration_ms":5}}"#
        );
        assert_eq!(
            server
                .trigger("POST", "/api/v1/export-metrics", Some(&metric))
                .status,
            201
        );
    }
    let today = chrono::Utc::now().date_naive();
    let range = format!(r#"{{"startDate":"{today}","endDate":"{today}"}}"#);
    server.trigger(
        "POST",
        "/api/v1/cron/export-metrics-aggregate",
        Some(&range),
    );
    wait_until(std::time::Duration::from_secs(10), || {
        server.log().lines().any(|line| {
            serde_json::from_str::<Value>(line).is_ok_and(|line| {
                line["type"] == "export_failure_alert" && line["site"] == "edge-7"
            })
        })
    });
}
