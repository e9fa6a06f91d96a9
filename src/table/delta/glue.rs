//! The Delta tables registered in the AWS Glue Data Catalog (`--glue-database NAME`), the way Athena reads
//! Delta natively: an external table with `table_type = DELTA` at the table's folder, so Athena (and whatever
//! else reads Glue) sees every commit with no DDL step.
//!
//! Why this module exists: a warehouse on AWS finds tables in Glue, not in the bucket. After a run, each
//! table (`groups`, `accounts`) is created in the database if missing (the database too), updated if its
//! location, columns or parameters differ from what this run wrote, and left alone otherwise; a table of that
//! name that points at another location is refused rather than taken over. Athena reads the schema and the
//! files from the Delta log itself, so nothing needs updating when a commit only adds files. The requests are
//! Glue's JSON API, signed (SigV4) with the credentials and region the S3 output uses.

use std::time::SystemTime;

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::layout::PartitionMode;
use crate::report::{CatalogTable, Registered};
use crate::schema::Table;
use crate::store::aws;
use crate::store::block_on;

/// A signed-request client of Glue for the credentials of an S3 dataset.
struct Glue {
    endpoint: String,
    region: String,
    credentials: object_store::aws::AwsCredentialProvider,
    http: reqwest::Client,
}

/// The Glue endpoint: `AWS_ENDPOINT_URL_GLUE`, else `AWS_ENDPOINT_URL` (a local server serving every
/// service), else the region's.
fn endpoint(region: &str) -> String {
    std::env::var("AWS_ENDPOINT_URL_GLUE")
        .ok()
        .filter(|e| !e.is_empty())
        .or_else(aws::endpoint)
        .unwrap_or_else(|| format!("https://glue.{region}.amazonaws.com"))
}

/// Refuses (exit 2) `--glue-database` where it cannot work: a name Glue would not take, or a dataset that is not
/// Delta tables on S3. Checked before anything is read.
pub fn check(database: &str, output_url: Option<&str>, delta: bool) -> Result<()> {
    let ok_name = !database.is_empty()
        && database.len() <= 255
        && database
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok_name {
        return Err(Error::Usage(format!(
            "--glue-database {database:?}: a Glue database name is lower-case letters, digits and _ (at most \
             255), as Athena spells it"
        )));
    }
    match output_url {
        Some(u) if u.starts_with("s3://") && delta => Ok(()),
        _ => Err(Error::Usage(format!(
            "--glue-database {database}: tables are registered in Glue for Delta tables on S3 only (Athena reads \
             them there); this run writes {}. Use --output s3://bucket/prefix (Delta is the format of an \
             s3:// output)",
            output_url.unwrap_or("a local dataset")
        ))),
    }
}

/// Creates or updates the Glue tables of the dataset at `root_url` (an `s3://` URL) in `database`.
pub fn register(
    database: &str,
    root_url: &str,
    partition: PartitionMode,
    tables: &[Table],
) -> Result<Vec<CatalogTable>> {
    let bucket = url::Url::parse(root_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default();
    let (credentials, region) = aws::credentials_and_region(root_url, &bucket)?;
    let http = reqwest::Client::builder()
        .timeout(crate::store::retry_timeout().max(std::time::Duration::from_secs(30)))
        .build()
        .map_err(|e| Error::Usage(format!("--glue-database: no HTTP client: {e}")))?;
    let glue = Glue {
        endpoint: endpoint(&region),
        region,
        credentials,
        http,
    };
    glue.ensure_database(database)?;
    tables
        .iter()
        .map(|t| {
            let location = format!("{}/{}", root_url.trim_end_matches('/'), t.name());
            let action = glue.ensure_table(database, *t, &location, partition)?;
            Ok(CatalogTable {
                name: format!("{database}.{}", t.name()),
                location,
                action,
            })
        })
        .collect()
}

/// The Glue columns of a Delta table: every column with its Hive type, partition columns included (Athena
/// reads partitions from the log, so none are declared as Glue partition keys).
fn columns(table: Table, partition: PartitionMode) -> Vec<Value> {
    let mut cols: Vec<Value> = table
        .columns()
        .iter()
        .map(|c| json!({"Name": c.name, "Type": c.kind.hive_type()}))
        .collect();
    if table == Table::Groups {
        for p in super::log::partition_columns(partition) {
            let ty = if p == "dt" { "date" } else { "int" };
            cols.push(json!({"Name": p, "Type": ty}));
        }
    }
    cols
}

/// The table as Glue's `TableInput`.
fn table_input(table: Table, location: &str, partition: PartitionMode) -> Value {
    json!({
        "Name": table.name(),
        "Description": format!("group-loader {} table (Delta Lake)", table.name()),
        "TableType": "EXTERNAL_TABLE",
        "Parameters": {
            "table_type": "DELTA",
            "EXTERNAL": "TRUE",
            "spark.sql.sources.provider": "delta",
            "classification": "delta",
        },
        "StorageDescriptor": {
            "Location": location,
            "Columns": columns(table, partition),
            "SerdeInfo": {"Parameters": {"path": location}},
        },
        "PartitionKeys": [],
    })
}

/// The parts of a stored table this module owns, to compare with what it would write.
fn owned(table: &Value) -> Value {
    let sd = &table["StorageDescriptor"];
    json!({
        "TableType": table["TableType"],
        "table_type": table["Parameters"]["table_type"],
        "Location": sd["Location"],
        "Columns": sd["Columns"]
            .as_array()
            .map(|cs| cs.iter().map(|c| json!({"Name": c["Name"], "Type": c["Type"]})).collect::<Vec<_>>()),
    })
}

impl Glue {
    fn ensure_database(&self, database: &str) -> Result<()> {
        match self.call("GetDatabase", &json!({"Name": database})) {
            Ok(_) => Ok(()),
            Err(Call::Glue { kind, .. }) if kind == "EntityNotFoundException" => {
                let input = json!({"DatabaseInput": {
                    "Name": database,
                    "Description": "Created by group-loader for its Delta tables",
                }});
                match self.call("CreateDatabase", &input) {
                    Ok(_) => Ok(()),
                    // Another shard created it first.
                    Err(Call::Glue { kind, .. }) if kind == "AlreadyExistsException" => Ok(()),
                    Err(e) => Err(self.error("CreateDatabase", database, e)),
                }
            }
            Err(e) => Err(self.error("GetDatabase", database, e)),
        }
    }

    fn ensure_table(
        &self,
        database: &str,
        table: Table,
        location: &str,
        partition: PartitionMode,
    ) -> Result<Registered> {
        let name = format!("{database}.{}", table.name());
        let input = table_input(table, location, partition);
        let key = json!({"DatabaseName": database, "Name": table.name()});
        match self.call("GetTable", &key) {
            Ok(found) => {
                let stored = &found["Table"];
                let at = stored["StorageDescriptor"]["Location"]
                    .as_str()
                    .unwrap_or_default()
                    .trim_end_matches('/');
                if at != location {
                    return Err(Error::Catalog {
                        catalog: "AWS Glue",
                        name,
                        detail: format!(
                            "the table exists and points at {at:?}, not at {location}: it is left as it is. \
                             Register this dataset in another --glue-database, or drop that table first"
                        ),
                    });
                }
                if owned(stored) == owned(&input) {
                    return Ok(Registered::Unchanged);
                }
                let update = json!({"DatabaseName": database, "TableInput": input});
                self.call("UpdateTable", &update)
                    .map_err(|e| self.error("UpdateTable", &name, e))?;
                Ok(Registered::Updated)
            }
            Err(Call::Glue { kind, .. }) if kind == "EntityNotFoundException" => {
                let create = json!({"DatabaseName": database, "TableInput": input});
                match self.call("CreateTable", &create) {
                    Ok(_) => Ok(Registered::Created),
                    // Another shard created it at the same moment: compare it as found.
                    Err(Call::Glue { kind, .. }) if kind == "AlreadyExistsException" => {
                        self.ensure_table(database, table, location, partition)
                    }
                    Err(e) => Err(self.error("CreateTable", &name, e)),
                }
            }
            Err(e) => Err(self.error("GetTable", &name, e)),
        }
    }

    /// The error of a failed call about `name`.
    fn error(&self, action: &str, name: &str, e: Call) -> Error {
        let detail = match e {
            Call::Glue {
                status,
                kind,
                message,
            } => format!("{action} answered {status} {kind}: {message}"),
            Call::Transport(m) => format!("{action} at {}: {m}", self.endpoint),
        };
        Error::Catalog {
            catalog: "AWS Glue",
            name: name.to_string(),
            detail: crate::error::redact(&detail),
        }
    }

    /// One signed call of Glue's JSON API (`AWSGlue.<action>`).
    fn call(&self, action: &str, body: &Value) -> std::result::Result<Value, Call> {
        block_on(self.call_async(action, body))
    }

    async fn call_async(&self, action: &str, body: &Value) -> std::result::Result<Value, Call> {
        use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};

        let cred = self
            .credentials
            .get_credential()
            .await
            .map_err(|e| Call::Transport(format!("no AWS credentials: {e}")))?;
        let body = serde_json::to_vec(body).map_err(|e| Call::Transport(e.to_string()))?;
        let target = format!("AWSGlue.{action}");
        let url = format!("{}/", self.endpoint.trim_end_matches('/'));
        let headers = [
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", target.as_str()),
        ];
        let identity = aws_credential_types::Credentials::new(
            &cred.key_id,
            &cred.secret_key,
            cred.token.clone(),
            None,
            "group-loader",
        )
        .into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("glue")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| Call::Transport(format!("signing: {e}")))?
            .into();
        let signable = SignableRequest::new(
            "POST",
            &url,
            headers.iter().copied(),
            SignableBody::Bytes(&body),
        )
        .map_err(|e| Call::Transport(format!("signing: {e}")))?;
        let (signed, _) = sign(signable, &params)
            .map_err(|e| Call::Transport(format!("signing: {e}")))?
            .into_parts();
        let mut req = self.http.post(&url).body(body.clone());
        for (k, v) in headers.iter().copied().chain(signed.headers()) {
            req = req.header(k, v);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| Call::Transport(e.to_string()))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| Call::Transport(e.to_string()))?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        // `__type` is `EntityNotFoundException`, or `com.amazonaws...#EntityNotFoundException`.
        let kind = value["__type"]
            .as_str()
            .unwrap_or_default()
            .rsplit('#')
            .next()
            .unwrap_or_default()
            .to_string();
        let message = value["message"]
            .as_str()
            .or(value["Message"].as_str())
            .map_or_else(|| text.chars().take(300).collect(), str::to_string);
        Err(Call::Glue {
            status: status.as_u16(),
            kind,
            message,
        })
    }
}

/// How a call failed.
enum Call {
    /// Glue answered with an error.
    Glue {
        status: u16,
        kind: String,
        message: String,
    },
    /// No answer, or the request could not be made.
    Transport(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_compares_equal_to_its_own_input_and_not_after_a_column_changes() {
        let input = table_input(Table::Groups, "s3://b/p/groups", PartitionMode::Day);
        assert_eq!(owned(&input), owned(&input.clone()));
        let cols = input["StorageDescriptor"]["Columns"].as_array().unwrap();
        assert_eq!(cols.last().unwrap(), &json!({"Name": "dt", "Type": "date"}));
        let mut changed = input.clone();
        changed["StorageDescriptor"]["Columns"][0]["Type"] = json!("int");
        assert_ne!(owned(&input), owned(&changed));
        assert!(
            table_input(Table::Accounts, "s3://b/p/accounts", PartitionMode::Day)
                ["StorageDescriptor"]["Columns"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["Name"] != "dt")
        );
    }

    #[test]
    fn only_delta_on_s3_and_glue_names_are_accepted() {
        assert!(check("analytics_1", Some("s3://b/p"), true).is_ok());
        assert!(check("Analytics", Some("s3://b/p"), true).is_err());
        assert!(check("a-b", Some("s3://b/p"), true).is_err());
        assert!(check("a", Some("az://c/p"), true).is_err());
        assert!(check("a", None, false).is_err());
    }
}
