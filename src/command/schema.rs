//! `group-loader schema`: the output schema of a table as text or JSON, or the statements a warehouse runs to
//! read a dataset where it lies.
//!
//! Why this module exists: the schema is defined once ([`crate::schema`]); this command only renders it, for
//! people (text), for programs (JSON) and for warehouses ([`super::ddl`]).

use crate::error::{Error, Result};
use crate::layout::{Format, PartitionMode};
use crate::schema::{SCHEMA_VERSION, Table};

use super::ddl::Dialect;

/// Output formats of `group-loader schema`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SchemaFormat {
    /// An aligned table for people.
    Text,
    /// A JSON array of `{name, type, arrow_type, parquet_type, nullable, from}`.
    Json,
    /// The CREATE statements a warehouse needs to read the dataset where it lies (see --dialect, --location).
    Sql,
}

/// Renders the schema of a table in the requested format.
/// The schema of `table` as text for people or JSON for programs.
pub fn describe(table: Table, json: bool) -> String {
    let columns = table.columns();
    let table = table.name();
    match json {
        false => {
            let width = columns.iter().map(|c| c.name.len()).max().unwrap_or(0);
            let mut out = format!("{table} (schema version {SCHEMA_VERSION})\n");
            for c in columns {
                let null = if c.nullable { "" } else { ", never null" };
                out.push_str(&format!(
                    "  {:<width$}  {:<4}{null:<12}  from {}\n",
                    c.name,
                    c.kind.name(),
                    c.from
                ));
            }
            out
        }
        true => {
            let cols: Vec<serde_json::Value> = columns
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "name": c.name,
                        "type": c.kind.name(),
                        "arrow_type": c.kind.arrow_type().to_string(),
                        "parquet_type": c.kind.parquet_type(),
                        "nullable": c.nullable,
                        "from": c.from,
                    })
                })
                .collect();
            let doc = serde_json::json!({
                "table": table,
                "schema_version": SCHEMA_VERSION,
                "columns": cols,
            });
            // Serialising a Value built above cannot fail.
            serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
        }
    }
}

/// What `schema` was asked for, however the command line spells it.
#[derive(Debug, Clone)]
pub struct Request {
    pub table: Table,
    /// `--format` (default: text; sql when a SQL option is given).
    pub format: Option<SchemaFormat>,
    pub dialect: Option<Dialect>,
    pub location: Option<String>,
    pub table_format: Option<Format>,
    pub partition: PartitionMode,
}

impl Request {
    /// What `schema` prints: the schema as text or JSON, or a warehouse's statements. The SQL options imply
    /// `--format sql`, and are refused with another format rather than silently ignored.
    pub fn render(&self) -> Result<String> {
        let sql_options =
            self.dialect.is_some() || self.location.is_some() || self.table_format.is_some();
        let format = match (self.format, sql_options) {
            (Some(f), true) if f != SchemaFormat::Sql => {
                return Err(Error::Usage(
                    "--dialect, --location and --table-format describe SQL statements: use them with \
                     --format sql (or without --format)"
                        .into(),
                ));
            }
            (Some(f), _) => f,
            (None, true) => SchemaFormat::Sql,
            (None, false) => SchemaFormat::Text,
        };
        if format != SchemaFormat::Sql {
            return Ok(describe(self.table, format == SchemaFormat::Json));
        }
        let dialect = self.dialect.unwrap_or(Dialect::Duckdb);
        let Some(location) = self.location.as_deref() else {
            return Err(Error::Usage(
                "--format sql needs --location: where the dataset lies (the --output of the loads), e.g. \
                 --location s3://bucket/segment"
                    .into(),
            ));
        };
        let url = crate::store::is_url(location);
        if self.table_format == Some(Format::Parquet) {
            return Err(Error::Usage(
                "one Parquet file needs no statements: read it where it is (DuckDB: SELECT * FROM \
                 'file.parquet'); --table-format is hive or delta"
                    .into(),
            ));
        }
        if !url && dialect.cloud_only() {
            return Err(Error::Usage(format!(
                "{} reads tables in object storage only, not the local path {location}: give the URL the \
                 dataset was loaded into (or synced to), e.g. --location s3://bucket/segment",
                dialect.name()
            )));
        }
        let target = crate::command::ddl::Target {
            table: self.table,
            format: self
                .table_format
                .unwrap_or(if url { Format::Delta } else { Format::Hive }),
            partition: self.partition,
            location,
        };
        Ok(crate::command::ddl::render(dialect, &target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::N_COLS;

    #[test]
    fn sql_is_the_duckdb_view_by_default() {
        let sql = Request {
            table: Table::Groups,
            format: Some(SchemaFormat::Sql),
            dialect: None,
            location: Some("OUTPUT".into()),
            table_format: None,
            partition: PartitionMode::Day,
        }
        .render()
        .unwrap();
        assert!(
            sql.contains("CREATE OR REPLACE VIEW groups AS SELECT * FROM read_parquet('OUTPUT/groups/**/*.parquet', hive_partitioning = true"),
            "{sql}"
        );
    }

    #[test]
    fn json_schema_lists_every_column() {
        let v: serde_json::Value = serde_json::from_str(&describe(Table::Groups, true)).unwrap();
        let cols = v["columns"].as_array().unwrap();
        assert_eq!(cols.len(), N_COLS);
        assert_eq!(cols[4]["name"], "received_at");
        assert_eq!(cols[4]["arrow_type"], "Timestamp(µs, \"UTC\")");
    }
}
