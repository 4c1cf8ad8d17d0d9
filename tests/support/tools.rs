//! Outside tools a test drives (a browser, promtool, Spark): present, or the test is skipped,
//! unless `.ci/run` said they must be there.

use std::path::Path;
use std::process::Command;

/// Whether every one of `tools` exists; when one is missing the test is skipped with a line
/// saying so, unless `require` is set (CI), where a missing tool fails it.
pub fn available(require: &str, tools: &[&str], why: &str) -> bool {
    let missing: Vec<&&str> = tools
        .iter()
        .filter(|tool| !Path::new(tool).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os(require).is_none(),
        "{require} is set but {missing:?} is missing"
    );
    eprintln!("skipped: {why} needs {missing:?} (`.ci/run` installs them)");
    false
}

/// Whether python3 imports `module`.
pub fn python_has(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|output| output.status.success())
}

/// Runs a Python `script` with `args`; it prints one JSON value, which is answered. A failing
/// script fails the test with what it said (`modules`, the packages it needs, name the fix).
pub fn python_json<T: serde::de::DeserializeOwned>(
    modules: &str,
    script: &str,
    args: &[&str],
) -> T {
    let output = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3");
    assert!(
        output.status.success(),
        "{modules} (pip install {modules}): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the script prints one JSON value")
}
