//! AWS as AWS users have it, against `moto_server` on 127.0.0.1: credentials from a profile of
//! `~/.aws/config` / `~/.aws/credentials` (static keys, `credential_process`) with none in the environment, and
//! the Delta tables registered in the Glue Data Catalog (`--glue-database`), read back with boto3
//! (`tests/consumer/glue_check.py`).
#![cfg(feature = "external")]
// Needs moto[server] and boto3 from what scripts/test.sh installs (cargo test --features external).

mod common;

use std::fs;
use std::path::Path;

use common::*;

/// The variables a test of credentials must not inherit: with them, the profile would never be read.
const KEYS: [&str; 6] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
];

/// Runs `load INPUT -o URL` with the server's endpoint, no keys in the environment, the instance metadata
/// service disabled, and the profile files of `home`: (exit code, stderr).
fn load_with_profile(moto: &Moto, home: &Path, profile: Option<&str>, url: &str) -> (i32, String) {
    let mut cmd = bin();
    for k in KEYS {
        cmd.env_remove(k);
    }
    cmd.env("AWS_ENDPOINT_URL", &moto.endpoint)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", home.join("config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.join("credentials"))
        .env("HOME", home);
    if let Some(p) = profile {
        cmd.env("AWS_PROFILE", p);
    }
    let docs = fixtures().join("segment-docs.json");
    let o = cmd
        .args([
            "load",
            docs.to_str().unwrap(),
            "-o",
            url,
            "--progress",
            "never",
        ])
        .output()
        .expect("run");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The Group calls of the fixture `segment-docs.json`, by id: what every load of it must hold.
fn docs_ids() -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let docs = fixtures().join("segment-docs.json");
    let (code, stderr) = load(dir.path(), &[docs.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    sorted_ids(&read_dataset(dir.path()))
}

/// A static profile in the shared credentials file, named by AWS_PROFILE, with no keys in the environment:
/// the run signs with it and the tables hold the rows. Without the profile the same run is refused (exit 2,
/// saying where credentials were looked for), and a profile that does not exist is named.
#[test]
fn a_static_profile_signs_when_the_environment_has_no_keys() {
    let moto = Moto::start();
    moto.create_bucket("warehouse");
    let home = tempfile::tempdir().unwrap();
    fs::write(
        home.path().join("credentials"),
        "[loader]\naws_access_key_id = test\naws_secret_access_key = test\n",
    )
    .unwrap();
    fs::write(
        home.path().join("config"),
        "[profile loader]\nregion = us-east-1\n",
    )
    .unwrap();

    let (code, stderr) =
        load_with_profile(&moto, home.path(), Some("loader"), "s3://warehouse/profile");
    assert_eq!(code, 0, "{stderr}");
    let mut got = ids(&state("s3://warehouse/profile", &moto.env()));
    got.sort();
    assert_eq!(got, docs_ids());

    // No profile of that name: refused before anything is read, naming it.
    let (code, stderr) =
        load_with_profile(&moto, home.path(), Some("nobody"), "s3://warehouse/other");
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("the AWS profile nobody") && stderr.contains("s3://warehouse/other"),
        "{stderr}"
    );
    // No profile files at all, no keys, metadata disabled: no credentials anywhere.
    let empty = tempfile::tempdir().unwrap();
    let (code, stderr) = load_with_profile(&moto, empty.path(), None, "s3://warehouse/other");
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("no AWS credentials found") && stderr.contains("AWS_PROFILE"),
        "{stderr}"
    );
    assert!(objects(&moto, "warehouse", "other").is_empty());
}

/// `credential_process` in the profile of `~/.aws/config`: the tool runs the command and signs with what it
/// prints (the command counts its calls in a file: once for the run's own resolution, not once per request);
/// a command that fails stops the run before anything is written, with the profile named.
#[test]
fn credential_process_is_run_and_a_failing_one_is_reported() {
    let moto = Moto::start();
    moto.create_bucket("warehouse");
    let home = tempfile::tempdir().unwrap();
    let calls = home.path().join("calls");
    let script = home.path().join("creds.sh");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\necho call >> '{}'\necho '{{\"Version\": 1, \"AccessKeyId\": \"fromprocess\", \
             \"SecretAccessKey\": \"secret\", \"SessionToken\": \"token\", \"Expiration\": \
             \"2099-01-01T00:00:00Z\"}}'\n",
            calls.display()
        ),
    )
    .unwrap();
    let failing = home.path().join("fails.sh");
    fs::write(
        &failing,
        "#!/bin/sh\necho 'the token has expired' >&2\nexit 3\n",
    )
    .unwrap();
    for s in [&script, &failing] {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(s, fs::Permissions::from_mode(0o755)).unwrap();
    }
    fs::write(
        home.path().join("config"),
        format!(
            "[default]\ncredential_process = {}\n\n[profile broken]\ncredential_process = {}\n",
            script.display(),
            failing.display()
        ),
    )
    .unwrap();

    // The default profile (no AWS_PROFILE).
    let (code, stderr) = load_with_profile(&moto, home.path(), None, "s3://warehouse/process");
    assert_eq!(code, 0, "{stderr}");
    let n = fs::read_to_string(&calls).unwrap().lines().count();
    assert_eq!(
        n, 1,
        "credentials valid until 2099 are resolved once per run"
    );
    let mut got = ids(&state("s3://warehouse/process", &moto.env()));
    got.sort();
    assert_eq!(got, docs_ids());

    let (code, stderr) = load_with_profile(&moto, home.path(), Some("broken"), "s3://warehouse/b");
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("the AWS profile broken") && stderr.contains("s3://warehouse/b"),
        "{stderr}"
    );
    assert!(objects(&moto, "warehouse", "b").is_empty());
}

/// What Glue holds for `database.table`, through boto3 (`null` when there is no such table).
fn glue_table(moto: &Moto, database: &str, table: &str) -> serde_json::Value {
    serde_json::from_str(&python_check(
        "glue_check.py",
        &["get", database, table],
        &moto.env(),
    ))
    .unwrap()
}

fn load_report(args: &[&str], env: &[(String, String)]) -> (i32, serde_json::Value, String) {
    let o = bin()
        .arg("load")
        .args(args)
        .args(["--progress", "never", "--report", "-"])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("run");
    let report = serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
    (
        o.status.code().unwrap_or(-1),
        report,
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// `--glue-database`: the first run creates the database and both tables as Athena reads Delta (an external
/// table, `table_type = DELTA`, at the table's folder, with the columns and their Hive types); a re-run and a
/// later night leave them unchanged; a table changed by hand is put back; a table of that name pointing at
/// another location is refused (after the commit: exit 6) and left as it was; and the option is refused before
/// reading for a dataset Glue cannot point at.
#[test]
fn glue_database_registers_the_delta_tables_where_athena_reads_them() {
    let moto = Moto::start();
    moto.create_bucket("warehouse");
    let env = moto.env();
    let docs = fixtures().join("segment-docs.json");
    let docs = docs.to_str().unwrap();
    let url = "s3://warehouse/segment";
    let args = ["--glue-database", "analytics", "-o", url];

    let (code, report, stderr) = load_report(&[&[docs][..], &args].concat(), &env);
    assert_eq!(code, 0, "{stderr}");
    let actions: Vec<(String, String)> = report["glue"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().into(),
                t["action"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("analytics.groups".to_string(), "created".to_string()),
            ("analytics.accounts".to_string(), "created".to_string())
        ]
    );
    assert!(
        stderr.contains("glue: analytics.groups created"),
        "{stderr}"
    );
    let groups = glue_table(&moto, "analytics", "groups");
    assert_eq!(groups["TableType"], "EXTERNAL_TABLE");
    assert_eq!(groups["Parameters"]["table_type"], "DELTA");
    assert_eq!(
        groups["StorageDescriptor"]["Location"],
        "s3://warehouse/segment/groups"
    );
    let cols = groups["StorageDescriptor"]["Columns"].as_array().unwrap();
    let col = |name: &str| {
        cols.iter()
            .find(|c| c["Name"] == name)
            .map(|c| c["Type"].clone())
    };
    assert_eq!(col("group_id"), Some("string".into()));
    assert_eq!(col("received_at"), Some("timestamp".into()));
    assert_eq!(col("dt"), Some("date".into()));
    assert_eq!(
        cols.len(),
        group_loader::schema::COLUMNS.len() + 1,
        "every column and dt"
    );
    let accounts = glue_table(&moto, "analytics", "accounts");
    assert_eq!(
        accounts["StorageDescriptor"]["Location"],
        "s3://warehouse/segment/accounts"
    );
    assert_eq!(accounts["Parameters"]["table_type"], "DELTA");

    // The same inputs again: nothing committed, the tables as they were.
    let (code, report, stderr) = load_report(&[&[docs][..], &args].concat(), &env);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["glue"][0]["action"], "unchanged", "{report}");
    assert_eq!(report["glue"][1]["action"], "unchanged", "{report}");
    assert!(
        stderr.contains("nothing to do") && stderr.contains("glue: analytics.groups unchanged"),
        "{stderr}"
    );

    // A column type changed by hand in Glue: the next run puts it back.
    python_check(
        "glue_check.py",
        &["retype", "analytics", "groups", "group_id", "int"],
        &env,
    );
    let batch = fixtures().join("batch.ndjson");
    let (code, report, stderr) = load_report(
        &[
            &[batch.to_str().unwrap(), "--max-reject-ratio", "1"][..],
            &args,
        ]
        .concat(),
        &env,
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["glue"][0]["action"], "updated", "{report}");
    let groups = glue_table(&moto, "analytics", "groups");
    let cols = groups["StorageDescriptor"]["Columns"].as_array().unwrap();
    assert!(
        cols.iter()
            .any(|c| c["Name"] == "group_id" && c["Type"] == "string")
    );

    // Another dataset registered in the same database: its tables would be taken over, so refused, and the
    // existing ones are untouched.
    let (code, _, stderr) = load_report(
        &[
            docs,
            "--glue-database",
            "analytics",
            "-o",
            "s3://warehouse/other",
        ],
        &env,
    );
    assert_eq!(code, 6, "{stderr}");
    assert!(
        stderr.contains("analytics.groups")
            && stderr.contains("s3://warehouse/segment/groups")
            && stderr.contains("another --glue-database"),
        "{stderr}"
    );
    let groups = glue_table(&moto, "analytics", "groups");
    assert_eq!(
        groups["StorageDescriptor"]["Location"],
        "s3://warehouse/segment/groups"
    );

    // A local dataset, and a name Glue does not take: refused before anything is read.
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("o");
    let (code, _, stderr) = load_report(
        &[
            docs,
            "--glue-database",
            "analytics",
            "-o",
            local.to_str().unwrap(),
        ],
        &env,
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("Delta tables on S3 only"), "{stderr}");
    assert!(!local.join("groups").exists());
    let (code, _, stderr) = load_report(&[docs, "--glue-database", "Analytics-1", "-o", url], &env);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("lower-case letters"), "{stderr}");
}
