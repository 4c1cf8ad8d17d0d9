//! What lake engines read of the exports: Spark over both formats, with partition discovery.

use std::process::Command;

use crate::support::{Env, available, drain_exports, python_has};

/// Spark reads one tenant's table (its `year=/month=/day=` directories) per root, unioned:
/// the count, the distinct ids and the column types.
const SPARK_READ: &str = r#"
import functools, glob, json, sys
from pyspark.sql import SparkSession
spark = (SparkSession.builder.master("local[1]").appName("edgecron-test")
         .config("spark.ui.enabled", "false").config("spark.sql.session.timeZone", "UTC")
         .config("spark.driver.bindAddress", "127.0.0.1").config("spark.driver.host", "127.0.0.1")
         .getOrCreate())
spark.sparkContext.setLogLevel("ERROR")
result = {}
for name, root in [("ndjson", sys.argv[1]), ("parquet", sys.argv[2])]:
    tables = sorted(glob.glob(root + "/exports/*/interaction_history"))
    read = spark.read.json if name == "ndjson" else spark.read.parquet
    frame = functools.reduce(lambda a, b: a.unionByName(b), [read(table) for table in tables])
    result[name] = {"rows": frame.count(), "ids": frame.select("id").distinct().count(),
                    "partitions": frame.select("tenant_id", "year", "month", "day").distinct().count(),
                    "types": {f.name: f.dataType.simpleString() for f in frame.schema.fields}}
spark.stop()
print(json.dumps(result))
"#;

#[test]
fn spark_reads_ndjson_and_parquet_exports_with_partition_discovery() {
    if !available(
        "EDGECRON_REQUIRE_SPARK",
        &["/usr/bin/java"],
        "the Spark test",
    ) {
        return;
    }
    if !python_has("pyspark") {
        assert!(
            std::env::var_os("EDGECRON_REQUIRE_SPARK").is_none(),
            "EDGECRON_REQUIRE_SPARK is set but pyspark is missing"
        );
        eprintln!("skipped: the Spark test needs pyspark (`.ci/run` installs it)");
        return;
    }
    let ndjson = Env::new().with("EXPORT_BATCH_SIZE", "500");
    let parquet = Env::new()
        .with("EXPORT_BATCH_SIZE", "500")
        .with("EXPORT_FORMAT", "parquet");
    for env in [&ndjson, &parquet] {
        env.run_json(&["demo", "--rows", "2000"], 0);
        drain_exports(env);
    }
    let output = Command::new("python3")
        .args(["-c", SPARK_READ])
        .arg(ndjson.data_dir())
        .arg(parquet.data_dir())
        .output()
        .expect("python3");
    assert!(
        output.status.success(),
        "spark: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let read: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    for (name, env) in [("ndjson", &ndjson), ("parquet", &parquet)] {
        let expected = env.query_i64(
            "SELECT COUNT(*) FROM interaction_history h JOIN tenants t ON t.id = h.tenant_id WHERE t.active = 1",
        );
        let partitions = env.query_i64(
            "SELECT COUNT(DISTINCT h.tenant_id || substr(h.created_at, 1, 10)) FROM interaction_history h
               JOIN tenants t ON t.id = h.tenant_id WHERE t.active = 1",
        );
        assert_eq!(read[name]["rows"], expected, "{read}");
        assert_eq!(read[name]["ids"], expected, "{read}");
        assert_eq!(read[name]["partitions"], partitions, "{read}");
    }
    assert_eq!(
        read["parquet"]["types"]["created_at"], "timestamp",
        "{read}"
    );
    assert_eq!(read["parquet"]["types"]["payload"], "string", "{read}");
    assert_eq!(read["parquet"]["types"]["day"], "int", "{read}");
}
