//! Durability you can show (SPEC section 10): under `strace`, an export makes each file durable
//! before its rename (`fsync`), its directory after, and the store's WAL is synced once the
//! files are in place (the manifest's commit). The power-cut tests (`powercut.rs`) show that
//! this is enough.

use crate::support::{Env, available};

/// One traced system call: its name and its arguments as strace prints them.
struct Call {
    name: String,
    args: String,
}

fn calls(trace: &str) -> Vec<Call> {
    trace
        .lines()
        .filter_map(|line| {
            // `1234 fsync(5</data/x.json>) = 0`: skip the pid, keep the call.
            let call = line
                .split_once(' ')
                .map_or(line, |(_, rest)| rest)
                .trim_start();
            let (name, args) = call.split_once('(')?;
            // A call another thread interrupted is kept where it began.
            if line.contains("resumed>") {
                return None;
            }
            Some(Call {
                name: name.to_string(),
                args: args.to_string(),
            })
        })
        .collect()
}

#[test]
fn an_export_makes_each_file_durable_before_its_rename_and_the_manifest_after() {
    if !available(
        "EDGECRON_REQUIRE_STRACE",
        &["/usr/bin/strace"],
        "tracing an export's system calls",
    ) {
        return;
    }
    let env = Env::new().with("EXPORT_BATCH_SIZE", "400");
    env.run_json(&["demo", "--rows", "1200"], 0);
    let trace_path = env.data_dir().join("strace.txt");
    let traced = env
        .command_under(
            &[
                "/usr/bin/strace",
                "-f",
                "-y",
                "-e",
                "trace=openat,rename,renameat,renameat2,fsync,fdatasync,syncfs",
                "-o",
                &trace_path.to_string_lossy(),
            ],
            &["run", "export-interactions"],
        )
        .output()
        .unwrap();
    assert!(traced.status.success(), "{traced:?}");
    let trace = std::fs::read_to_string(&trace_path).unwrap();
    let calls = calls(&trace);
    let renames: Vec<usize> = calls
        .iter()
        .enumerate()
        .filter(|(_, call)| call.name.starts_with("rename") && call.args.contains("/exports/"))
        .map(|(at, _)| at)
        .collect();
    assert!(
        renames.len() >= 4,
        "{} renames into exports/",
        renames.len()
    );
    let durable = |call: &Call, path: &str| {
        call.name == "syncfs" || (call.name.contains("sync") && call.args.contains(path))
    };
    for &at in &renames {
        // The staged file: the rename's first argument.
        let staged = calls[at]
            .args
            .split('"')
            .find(|part| part.contains(".export-staging"))
            .unwrap_or_else(|| panic!("no staged source in {}", calls[at].args))
            .to_string();
        let created = calls[..at]
            .iter()
            .rposition(|call| call.name == "openat" && call.args.contains(&staged))
            .unwrap_or_else(|| panic!("{staged} never opened"));
        assert!(
            calls[created..at].iter().any(|call| durable(call, &staged)),
            "{staged} renamed before it was made durable"
        );
    }
    let last = *renames.last().unwrap();
    let manifest = last
        + calls[last..]
            .iter()
            .position(|call| call.name.contains("sync") && call.args.contains("edgecron.db-wal"))
            .expect("the store's WAL was not synced after the files were in place");
    for &at in &renames {
        // The partition directory the rename put a name in: durable before the manifest.
        let target = calls[at]
            .args
            .split('"')
            .rfind(|part| part.contains("/exports/"))
            .expect("a target in exports/");
        let dir = format!("{}>", target.rsplit_once('/').expect("a directory").0);
        assert!(
            calls[at..manifest]
                .iter()
                .any(|call| call.name == "syncfs"
                    || (call.name == "fsync" && call.args.contains(&dir))),
            "{dir} was not made durable after the rename into it, before the manifest's commit"
        );
    }
}
