//! What a warehouse needs to read the dataset where it lies: `group-loader schema --format sql
//! --dialect D --location URL` prints the `CREATE` statements of DuckDB, Spark, Athena, BigQuery and Snowflake,
//! for a hive dataset or Delta tables, partition columns included.
//!
//! Why this module exists: the dataset is only useful once a warehouse can query it, and each warehouse spells
//! "an external table over Parquet (or Delta) partitioned by `dt`" its own way. The column list comes from the
//! one schema ([`crate::schema`]); this module only maps its kinds to each dialect's types and wraps them in the
//! statement each warehouse documents.

use crate::layout::Format;
use crate::layout::PartitionMode;
use crate::schema::{Column, Kind, Table};

/// The warehouse whose statements are printed (`--dialect`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Dialect {
    /// A view over `read_parquet(..., hive_partitioning = true)` or `delta_scan(...)`.
    Duckdb,
    /// `CREATE TABLE ... USING parquet|delta ... LOCATION` (Spark SQL, Databricks).
    Spark,
    /// An external table with partition projection on `dt` (hive), or `table_type = 'DELTA'`.
    Athena,
    /// An external table `WITH PARTITION COLUMNS` (hive), or `format = 'DELTA_LAKE'` (BigLake).
    Bigquery,
    /// An external table over a stage, `PARTITION BY (dt)`, or `TABLE_FORMAT = DELTA`.
    Snowflake,
}

impl Dialect {
    /// The name as `--dialect` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Duckdb => "duckdb",
            Dialect::Spark => "spark",
            Dialect::Athena => "athena",
            Dialect::Bigquery => "bigquery",
            Dialect::Snowflake => "snowflake",
        }
    }
}

/// What the statements describe.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub table: Table,
    pub format: Format,
    pub partition: PartitionMode,
    /// The dataset's location (the `--output` of the loads), without a trailing `/`.
    pub location: &'a str,
}

impl Target<'_> {
    /// The table's own folder (`LOCATION/groups`).
    fn folder(&self) -> String {
        format!(
            "{}/{}",
            self.location.trim_end_matches('/'),
            self.table.name()
        )
    }

    /// The partition columns of the table, with their kind: `dt` a date, `hr` an integer.
    fn partitions(&self) -> Vec<(&'static str, Part)> {
        match (self.table, self.partition) {
            (Table::Accounts, _) | (Table::Groups, PartitionMode::None) => Vec::new(),
            (Table::Groups, PartitionMode::Day) => vec![("dt", Part::Date)],
            (Table::Groups, PartitionMode::Hour) => vec![("dt", Part::Date), ("hr", Part::Hour)],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Date,
    Hour,
}

/// The statements of `dialect` for `target`.
impl Dialect {
    /// Warehouses that read only object storage (no local files).
    pub fn cloud_only(self) -> bool {
        matches!(
            self,
            Dialect::Athena | Dialect::Bigquery | Dialect::Snowflake
        )
    }
}

pub fn render(dialect: Dialect, t: &Target<'_>) -> String {
    let body = match dialect {
        Dialect::Duckdb => duckdb(t),
        Dialect::Spark => spark(t),
        Dialect::Athena => athena(t),
        Dialect::Bigquery => bigquery(t),
        Dialect::Snowflake => snowflake(t),
    };
    format!(
        "-- group-loader {} table ({}), {} dialect, at {}\n{body}",
        t.table.name(),
        t.format.name(),
        dialect.name(),
        t.folder()
    )
}

fn columns(t: &Target<'_>) -> &'static [Column] {
    t.table.columns()
}

/// `  name TYPE,` lines, with the given type mapping and identifier quoting.
fn column_list(cols: impl Iterator<Item = (String, String)>) -> String {
    cols.map(|(name, ty)| format!("  {name} {ty}"))
        .collect::<Vec<_>>()
        .join(",\n")
}

fn duckdb(t: &Target<'_>) -> String {
    let name = t.table.name();
    match t.format {
        Format::Delta => format!(
            "CREATE OR REPLACE VIEW {name} AS SELECT * FROM delta_scan('{}');\n",
            t.folder()
        ),
        Format::Hive | Format::Parquet => {
            let parts = t.partitions();
            let glob = if parts.is_empty() {
                format!("{}/*.parquet", t.folder())
            } else {
                format!("{}/**/*.parquet", t.folder())
            };
            let types: Vec<String> = parts
                .iter()
                .map(|(p, k)| {
                    format!(
                        "'{p}': {}",
                        if *k == Part::Date { "DATE" } else { "INTEGER" }
                    )
                })
                .collect();
            let hive = if parts.is_empty() {
                String::new()
            } else {
                format!(
                    ", hive_partitioning = true, hive_types = {{{}}}",
                    types.join(", ")
                )
            };
            format!(
                "CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet('{glob}'{hive});\n"
            )
        }
    }
}

fn spark_type(k: Kind) -> &'static str {
    match k {
        Kind::Text | Kind::Json => "STRING",
        Kind::Time => "TIMESTAMP",
    }
}

fn spark(t: &Target<'_>) -> String {
    let name = t.table.name();
    match t.format {
        // The schema and partitioning come from the Delta log.
        Format::Delta => format!(
            "CREATE TABLE IF NOT EXISTS {name} USING delta LOCATION '{}';\n",
            t.folder()
        ),
        Format::Hive | Format::Parquet => {
            let parts = t.partitions();
            let cols = columns(t)
                .iter()
                .map(|c| (format!("`{}`", c.name), spark_type(c.kind).to_string()))
                .chain(parts.iter().map(|(p, k)| {
                    (
                        format!("`{p}`"),
                        if *k == Part::Date { "DATE" } else { "INT" }.to_string(),
                    )
                }));
            let mut out = format!(
                "CREATE TABLE IF NOT EXISTS {name} (\n{}\n)\nUSING parquet\n",
                column_list(cols)
            );
            if !parts.is_empty() {
                let names: Vec<&str> = parts.iter().map(|(p, _)| *p).collect();
                out.push_str(&format!("PARTITIONED BY ({})\n", names.join(", ")));
            }
            out.push_str(&format!("LOCATION '{}';\n", t.folder()));
            if !parts.is_empty() {
                // Partitions written after the table was created are found again by this statement.
                out.push_str(&format!("MSCK REPAIR TABLE {name};\n"));
            }
            out
        }
    }
}

fn athena(t: &Target<'_>) -> String {
    let name = t.table.name();
    let folder = t.folder();
    match t.format {
        Format::Delta => format!(
            "CREATE EXTERNAL TABLE {name}\nLOCATION '{folder}/'\nTBLPROPERTIES ('table_type' = 'DELTA');\n"
        ),
        Format::Hive | Format::Parquet => {
            let parts = t.partitions();
            let cols = columns(t)
                .iter()
                .map(|c| (format!("`{}`", c.name), c.kind.hive_type().to_string()));
            let mut out = format!("CREATE EXTERNAL TABLE {name} (\n{}\n)\n", column_list(cols));
            if !parts.is_empty() {
                let defs: Vec<String> = parts
                    .iter()
                    .map(|(p, k)| {
                        format!("`{p}` {}", if *k == Part::Date { "date" } else { "int" })
                    })
                    .collect();
                out.push_str(&format!("PARTITIONED BY ({})\n", defs.join(", ")));
            }
            out.push_str(&format!("STORED AS PARQUET\nLOCATION '{folder}/'\n"));
            if parts.is_empty() {
                out.push_str(";\n");
                return out;
            }
            // Partition projection: no crawler, no MSCK; every dt from 2000-01-01 to today (and every hour).
            let mut props = vec![
                ("projection.enabled", "true".to_string()),
                ("projection.dt.type", "date".to_string()),
                ("projection.dt.format", "yyyy-MM-dd".to_string()),
                ("projection.dt.range", "2000-01-01,NOW".to_string()),
                ("projection.dt.interval", "1".to_string()),
                ("projection.dt.interval.unit", "DAYS".to_string()),
            ];
            let mut template = format!("{folder}/dt=${{dt}}");
            if parts.len() > 1 {
                props.push(("projection.hr.type", "integer".to_string()));
                props.push(("projection.hr.range", "0,23".to_string()));
                props.push(("projection.hr.digits", "2".to_string()));
                template.push_str("/hr=${hr}");
            }
            props.push(("storage.location.template", template));
            let props: Vec<String> = props
                .iter()
                .map(|(k, v)| format!("  '{k}' = '{v}'"))
                .collect();
            out.push_str(&format!("TBLPROPERTIES (\n{}\n);\n", props.join(",\n")));
            out
        }
    }
}

fn bigquery_type(k: Kind) -> &'static str {
    match k {
        Kind::Text => "STRING",
        Kind::Json => "JSON",
        Kind::Time => "TIMESTAMP",
    }
}

fn bigquery(t: &Target<'_>) -> String {
    let name = t.table.name();
    let folder = t.folder();
    match t.format {
        Format::Delta => format!(
            "-- Delta Lake tables are read through a BigLake connection: replace PROJECT.REGION.CONNECTION.\n\
             CREATE OR REPLACE EXTERNAL TABLE `DATASET.{name}`\n\
             WITH CONNECTION `PROJECT.REGION.CONNECTION`\n\
             OPTIONS (format = 'DELTA_LAKE', uris = ['{folder}']);\n"
        ),
        Format::Hive | Format::Parquet => {
            let parts = t.partitions();
            let cols = columns(t)
                .iter()
                .map(|c| (format!("`{}`", c.name), bigquery_type(c.kind).to_string()));
            let mut out = format!(
                "CREATE OR REPLACE EXTERNAL TABLE `DATASET.{name}` (\n{}\n)\n",
                column_list(cols)
            );
            if !parts.is_empty() {
                let defs: Vec<String> = parts
                    .iter()
                    .map(|(p, k)| {
                        format!("{p} {}", if *k == Part::Date { "DATE" } else { "INT64" })
                    })
                    .collect();
                out.push_str(&format!("WITH PARTITION COLUMNS ({})\n", defs.join(", ")));
            }
            let glob = if parts.is_empty() { "*.parquet" } else { "*" };
            out.push_str(&format!(
                "OPTIONS (\n  format = 'PARQUET',\n  uris = ['{folder}/{glob}']{}\n);\n",
                if parts.is_empty() {
                    String::new()
                } else {
                    format!(",\n  hive_partition_uri_prefix = '{folder}'")
                }
            ));
            out
        }
    }
}

fn snowflake_type(k: Kind) -> &'static str {
    match k {
        Kind::Text => "VARCHAR",
        Kind::Json => "VARIANT",
        Kind::Time => "TIMESTAMP_TZ",
    }
}

fn snowflake(t: &Target<'_>) -> String {
    let name = t.table.name();
    let parts = t.partitions();
    let mut cols: Vec<(String, String)> = columns(t)
        .iter()
        .map(|c| {
            let expr = match c.kind {
                Kind::Json => format!("PARSE_JSON(VALUE:{}::VARCHAR)", c.name),
                _ => format!("VALUE:{}::{}", c.name, snowflake_type(c.kind)),
            };
            (
                c.name.to_string(),
                format!("{} AS ({expr})", snowflake_type(c.kind)),
            )
        })
        .collect();
    // Partition values come from the file path: .../dt=2026-11-25/hr=07/part-....parquet
    for (p, k) in &parts {
        let raw = format!("SPLIT_PART(SPLIT_PART(METADATA$FILENAME, '{p}=', 2), '/', 1)");
        let expr = match k {
            Part::Date => format!("DATE AS TO_DATE({raw}, 'YYYY-MM-DD')"),
            Part::Hour => format!("INTEGER AS TO_NUMBER({raw})"),
        };
        cols.push((p.to_string(), expr));
    }
    let mut out = format!(
        "-- A stage over the dataset's location: replace MY_INTEGRATION with your storage integration.\n\
         CREATE STAGE IF NOT EXISTS group_loader_stage\n  URL = '{}/'\n  STORAGE_INTEGRATION = MY_INTEGRATION;\n\
         CREATE OR REPLACE EXTERNAL TABLE {name} (\n{}\n)\n",
        t.location.trim_end_matches('/'),
        column_list(cols.into_iter())
    );
    if !parts.is_empty() {
        let names: Vec<&str> = parts.iter().map(|(p, _)| *p).collect();
        out.push_str(&format!("PARTITION BY ({})\n", names.join(", ")));
    }
    out.push_str(&format!(
        "LOCATION = @group_loader_stage/{}/\nFILE_FORMAT = (TYPE = PARQUET)\n",
        t.table.name()
    ));
    match t.format {
        Format::Delta => {
            out.push_str("TABLE_FORMAT = DELTA\nREFRESH_ON_CREATE = FALSE\nAUTO_REFRESH = FALSE;\n")
        }
        Format::Hive | Format::Parquet => out.push_str("AUTO_REFRESH = FALSE;\n"),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(table: Table, format: Format, partition: PartitionMode) -> Target<'static> {
        Target {
            table,
            format,
            partition,
            location: "s3://warehouse/segment/",
        }
    }

    #[test]
    fn duckdb_reads_hive_partitions_with_their_types_and_delta_with_delta_scan() {
        let day = render(
            Dialect::Duckdb,
            &t(Table::Groups, Format::Hive, PartitionMode::Day),
        );
        assert!(day.ends_with(
            "CREATE OR REPLACE VIEW groups AS SELECT * FROM read_parquet('s3://warehouse/segment/groups/**/*.parquet', hive_partitioning = true, hive_types = {'dt': DATE});\n"
        ), "{day}");
        let hour = render(
            Dialect::Duckdb,
            &t(Table::Groups, Format::Hive, PartitionMode::Hour),
        );
        assert!(
            hour.contains("hive_types = {'dt': DATE, 'hr': INTEGER}"),
            "{hour}"
        );
        let acc = render(
            Dialect::Duckdb,
            &t(Table::Accounts, Format::Hive, PartitionMode::Day),
        );
        assert!(
            acc.ends_with("read_parquet('s3://warehouse/segment/accounts/*.parquet');\n"),
            "{acc}"
        );
        let delta = render(
            Dialect::Duckdb,
            &t(Table::Groups, Format::Delta, PartitionMode::Day),
        );
        assert!(
            delta.ends_with("SELECT * FROM delta_scan('s3://warehouse/segment/groups');\n"),
            "{delta}"
        );
    }

    #[test]
    fn spark_declares_partition_columns_and_repairs() {
        let s = render(
            Dialect::Spark,
            &t(Table::Groups, Format::Hive, PartitionMode::Hour),
        );
        assert!(
            s.contains("CREATE TABLE IF NOT EXISTS groups (\n  `id` STRING,\n"),
            "{s}"
        );
        assert!(s.contains("  `timestamp` TIMESTAMP,\n"), "{s}");
        assert!(s.contains("  `dt` DATE,\n  `hr` INT\n)\nUSING parquet\nPARTITIONED BY (dt, hr)\nLOCATION 's3://warehouse/segment/groups';\nMSCK REPAIR TABLE groups;\n"), "{s}");
        let d = render(
            Dialect::Spark,
            &t(Table::Accounts, Format::Delta, PartitionMode::Day),
        );
        assert!(d.ends_with("CREATE TABLE IF NOT EXISTS accounts USING delta LOCATION 's3://warehouse/segment/accounts';\n"));
    }

    /// Athena's documented partition projection properties (docs.aws.amazon.com/athena/latest/ug/
    /// partition-projection-supported-types.html): date type with format, range, interval and unit; integer
    /// type with range and digits; storage.location.template with ${...} placeholders.
    #[test]
    fn athena_projects_dt_and_hr() {
        let s = render(
            Dialect::Athena,
            &t(Table::Groups, Format::Hive, PartitionMode::Hour),
        );
        for expected in [
            "CREATE EXTERNAL TABLE groups (\n  `id` string,",
            "  `created_at` timestamp,",
            "PARTITIONED BY (`dt` date, `hr` int)\nSTORED AS PARQUET\nLOCATION 's3://warehouse/segment/groups/'\nTBLPROPERTIES (",
            "  'projection.enabled' = 'true',",
            "  'projection.dt.type' = 'date',",
            "  'projection.dt.format' = 'yyyy-MM-dd',",
            "  'projection.dt.range' = '2000-01-01,NOW',",
            "  'projection.dt.interval.unit' = 'DAYS',",
            "  'projection.hr.type' = 'integer',",
            "  'projection.hr.range' = '0,23',",
            "  'projection.hr.digits' = '2',",
            "  'storage.location.template' = 's3://warehouse/segment/groups/dt=${dt}/hr=${hr}'\n);",
        ] {
            assert!(s.contains(expected), "{expected}\nin\n{s}");
        }
        let d = render(
            Dialect::Athena,
            &t(Table::Groups, Format::Delta, PartitionMode::Day),
        );
        assert!(d.ends_with("CREATE EXTERNAL TABLE groups\nLOCATION 's3://warehouse/segment/groups/'\nTBLPROPERTIES ('table_type' = 'DELTA');\n"));
    }

    /// BigQuery's documented external tables (cloud.google.com/bigquery/docs/reference/standard-sql/
    /// data-definition-language#create_external_table_statement): WITH PARTITION COLUMNS, uris,
    /// hive_partition_uri_prefix; format DELTA_LAKE with a connection.
    #[test]
    fn bigquery_partition_columns_and_delta_lake() {
        let s = render(
            Dialect::Bigquery,
            &t(Table::Groups, Format::Hive, PartitionMode::Day),
        );
        assert!(s.contains("  `extra` JSON\n)\nWITH PARTITION COLUMNS (dt DATE)\nOPTIONS (\n  format = 'PARQUET',\n  uris = ['s3://warehouse/segment/groups/*'],\n  hive_partition_uri_prefix = 's3://warehouse/segment/groups'\n);\n"), "{s}");
        let d = render(
            Dialect::Bigquery,
            &t(Table::Groups, Format::Delta, PartitionMode::Day),
        );
        assert!(d.contains(
            "OPTIONS (format = 'DELTA_LAKE', uris = ['s3://warehouse/segment/groups']);"
        ));
    }

    /// Snowflake's documented external tables (docs.snowflake.com/en/sql-reference/sql/
    /// create-external-table): columns as expressions over VALUE and METADATA$FILENAME, PARTITION BY, a
    /// stage LOCATION, FILE_FORMAT, TABLE_FORMAT = DELTA.
    #[test]
    fn snowflake_columns_from_value_and_partitions_from_the_path() {
        let s = render(
            Dialect::Snowflake,
            &t(Table::Groups, Format::Hive, PartitionMode::Day),
        );
        for expected in [
            "CREATE STAGE IF NOT EXISTS group_loader_stage\n  URL = 's3://warehouse/segment/'",
            "  id VARCHAR AS (VALUE:id::VARCHAR),",
            "  received_at TIMESTAMP_TZ AS (VALUE:received_at::TIMESTAMP_TZ),",
            "  extra VARIANT AS (PARSE_JSON(VALUE:extra::VARCHAR)),",
            "  dt DATE AS TO_DATE(SPLIT_PART(SPLIT_PART(METADATA$FILENAME, 'dt=', 2), '/', 1), 'YYYY-MM-DD')\n)\nPARTITION BY (dt)\nLOCATION = @group_loader_stage/groups/\nFILE_FORMAT = (TYPE = PARQUET)\nAUTO_REFRESH = FALSE;",
        ] {
            assert!(s.contains(expected), "{expected}\nin\n{s}");
        }
        let d = render(
            Dialect::Snowflake,
            &t(Table::Groups, Format::Delta, PartitionMode::Day),
        );
        assert!(d.contains("TABLE_FORMAT = DELTA\n"), "{d}");
    }
}
