//! The output schema of the `groups` table, defined once.
//!
//! Why this module exists: the schema is the product's promise to warehouses ("every file of every night has
//! the same schema"), so it must not be spread over the mapper and the writer. Everything that needs a column
//! (the mapper filling a row, the Parquet writer, `group-loader schema`) reads it from [`COLUMNS`], indexed by
//! [`Col`]. Changing a column means changing this table and bumping [`SCHEMA_VERSION`].

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Bumped whenever a column is added, removed, renamed or retyped (2: the extras columns became Parquet JSON).
pub const SCHEMA_VERSION: &str = "2";

/// The tool version written into every Parquet file's key/value metadata.
pub const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Parquet key/value metadata keys.
pub const META_TOOL_VERSION: &str = "group_loader.version";
pub const META_SCHEMA_VERSION: &str = "group_loader.schema_version";
/// Key/value metadata of a `groups` file: which rows sent a reserved trait without a value (`null`, or a value
/// that did not fit its column), as `{"column": [row, ...]}`. Invisible to SQL, read by the `accounts` merge
/// (a trait sent as `null` clears the stored value, a trait not sent keeps it), so that `accounts` can be
/// rebuilt from `groups` alone.
pub const META_CLEARED_TRAITS: &str = "group_loader.cleared_traits";

/// The logical kind of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// UTF-8 text following the text rule.
    Text,
    /// `TIMESTAMP(MICROS, isAdjustedToUTC=true)`, following the time rule.
    Time,
    /// A JSON object serialised as text (the extras columns), or null.
    Json,
}

impl Kind {
    pub fn arrow_type(self) -> DataType {
        match self {
            Kind::Text | Kind::Json => DataType::Utf8,
            Kind::Time => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        }
    }

    /// The Hive type of the column (Athena, Glue, Spark's external tables).
    pub fn hive_type(self) -> &'static str {
        match self {
            Kind::Text | Kind::Json => "string",
            Kind::Time => "timestamp",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Text => "text",
            Kind::Time => "time",
            Kind::Json => "json",
        }
    }

    /// The Parquet physical and logical type the column is written as.
    pub fn parquet_type(self) -> &'static str {
        match self {
            Kind::Text => "BYTE_ARRAY (STRING)",
            Kind::Json => "BYTE_ARRAY (JSON)",
            Kind::Time => "INT64 (TIMESTAMP(MICROS, isAdjustedToUTC=true))",
        }
    }
}

/// One column of the `groups` table.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub kind: Kind,
    pub nullable: bool,
    /// Where the value comes from in the Group call.
    pub from: &'static str,
}

/// The columns of `groups`, by position. `COLUMNS[c as usize]` describes `c`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum Col {
    Id,
    GroupId,
    UserId,
    AnonymousId,
    ReceivedAt,
    SentAt,
    OriginalTimestamp,
    Timestamp,
    Channel,
    ContextIp,
    ContextUserAgent,
    ContextLibraryName,
    ContextLibraryVersion,
    Name,
    Industry,
    Employees,
    Plan,
    Email,
    Phone,
    Website,
    Avatar,
    Description,
    CreatedAt,
    AddressStreet,
    AddressCity,
    AddressState,
    AddressPostalCode,
    AddressCountry,
    TraitId,
    ExtraTraits,
    ExtraContext,
    Extra,
}

/// Number of columns in `groups`.
pub const N_COLS: usize = Col::Extra as usize + 1;

const fn text(name: &'static str, from: &'static str) -> Column {
    Column {
        name,
        kind: Kind::Text,
        nullable: true,
        from,
    }
}
const fn time(name: &'static str, from: &'static str) -> Column {
    Column {
        name,
        kind: Kind::Time,
        nullable: true,
        from,
    }
}
const fn json(name: &'static str, from: &'static str) -> Column {
    Column {
        name,
        kind: Kind::Json,
        nullable: true,
        from,
    }
}

/// The `groups` table, in column order.
pub const COLUMNS: [Column; N_COLS] = [
    text("id", "messageId"),
    Column {
        name: "group_id",
        kind: Kind::Text,
        nullable: false,
        from: "groupId",
    },
    text("user_id", "userId"),
    text("anonymous_id", "anonymousId"),
    time("received_at", "receivedAt"),
    time("sent_at", "sentAt"),
    time("original_timestamp", "originalTimestamp"),
    Column {
        name: "timestamp",
        kind: Kind::Time,
        nullable: false,
        from: "timestamp, else derived from originalTimestamp, sentAt and receivedAt",
    },
    text("channel", "channel"),
    text("context_ip", "context.ip"),
    text("context_user_agent", "context.userAgent"),
    text("context_library_name", "context.library.name"),
    text("context_library_version", "context.library.version"),
    text("name", "traits.name (reserved)"),
    text("industry", "traits.industry (reserved)"),
    text("employees", "traits.employees (reserved)"),
    text("plan", "traits.plan (reserved)"),
    text("email", "traits.email (reserved)"),
    text("phone", "traits.phone (reserved)"),
    text("website", "traits.website (reserved)"),
    text("avatar", "traits.avatar (reserved)"),
    text("description", "traits.description (reserved)"),
    time("created_at", "traits.createdAt (reserved)"),
    text("address_street", "traits.address.street"),
    text("address_city", "traits.address.city"),
    text("address_state", "traits.address.state"),
    text("address_postal_code", "traits.address.postalCode"),
    text("address_country", "traits.address.country"),
    text("trait_id", "traits.id (reserved)"),
    json("extra_traits", "every trait not placed in a column"),
    json(
        "extra_context",
        "every context field not placed in a column",
    ),
    json(
        "extra",
        "every other top-level field, and values that did not fit their column",
    ),
];

/// The trait columns of `groups` that `accounts` carries too, with the same names and types: `name` through
/// `trait_id`, in schema order.
pub const TRAIT_COLS: std::ops::RangeInclusive<usize> = Col::Name as usize..=Col::TraitId as usize;

/// The `accounts` table, in column order: one row per `group_id`, its latest state.
pub const ACCOUNT_COLUMNS: [Column; 5 + (Col::TraitId as usize - Col::Name as usize + 1)] = {
    let mut cols = [text("", ""); 5 + (Col::TraitId as usize - Col::Name as usize + 1)];
    cols[0] = Column {
        name: "group_id",
        kind: Kind::Text,
        nullable: false,
        from: "groupId",
    };
    let mut i = Col::Name as usize;
    while i <= Col::TraitId as usize {
        cols[1 + i - Col::Name as usize] = Column {
            from: "the latest value of the trait (null when the latest event sent it as null)",
            ..COLUMNS[i]
        };
        i += 1;
    }
    let n = cols.len();
    cols[n - 4] = json(
        "extra_traits",
        "every other trait, merged key by key (latest value per top-level key)",
    );
    cols[n - 3] = Column {
        name: "first_seen_at",
        kind: Kind::Time,
        nullable: false,
        from: "the earliest timestamp of the group's events",
    };
    cols[n - 2] = Column {
        name: "last_seen_at",
        kind: Kind::Time,
        nullable: false,
        from: "the latest timestamp of the group's events",
    };
    cols[n - 1] = Column {
        name: "trait_versions",
        kind: Kind::Json,
        nullable: false,
        from: "the (timestamp, received_at, id) of the event that set each trait (README, accounts)",
    };
    cols
};

/// Which table `group-loader schema` describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Table {
    Groups,
    Accounts,
}

impl Table {
    pub fn name(self) -> &'static str {
        match self {
            Table::Groups => "groups",
            Table::Accounts => "accounts",
        }
    }

    pub fn columns(self) -> &'static [Column] {
        match self {
            Table::Groups => &COLUMNS,
            Table::Accounts => &ACCOUNT_COLUMNS,
        }
    }
}

/// The Arrow schema of `accounts` (with the same file metadata as `groups`).
pub fn accounts_schema() -> SchemaRef {
    arrow_schema(&ACCOUNT_COLUMNS)
}

fn arrow_schema(columns: &[Column]) -> SchemaRef {
    let fields: Vec<Field> = columns.iter().map(Column::arrow_field).collect();
    let metadata: std::collections::HashMap<String, String> = [
        (META_TOOL_VERSION.to_string(), TOOL_VERSION.to_string()),
        (META_SCHEMA_VERSION.to_string(), SCHEMA_VERSION.to_string()),
    ]
    .into_iter()
    .collect();
    Arc::new(Schema::new_with_metadata(fields, metadata))
}

impl Column {
    /// The column as an Arrow field. JSON columns carry Arrow's canonical JSON extension type, which the Parquet
    /// writer turns into Parquet's `JSON` logical type (DuckDB and BigQuery type them as JSON; readers that do
    /// not know it read text).
    pub fn arrow_field(&self) -> Field {
        let field = Field::new(self.name, self.kind.arrow_type(), self.nullable);
        match self.kind {
            Kind::Json => field.with_extension_type(arrow_schema::extension::Json::default()),
            Kind::Text | Kind::Time => field,
        }
    }
}

impl Col {
    pub fn column(self) -> &'static Column {
        &COLUMNS[self as usize]
    }
}

/// The same schema without extension types (the JSON columns as plain text).
pub fn without_extensions(schema: &Schema) -> Schema {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| Field::new(f.name(), f.data_type().clone(), f.is_nullable()))
        .collect();
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

/// The Arrow schema of `groups`, with the tool and schema version as metadata.
pub fn groups_schema() -> SchemaRef {
    arrow_schema(&COLUMNS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn col_enum_matches_column_table() {
        // The enum and the table are written side by side; a column inserted in one and not the other
        // would shift every later column.
        assert_eq!(Col::Id.column().name, "id");
        assert_eq!(Col::Timestamp.column().name, "timestamp");
        assert_eq!(Col::CreatedAt.column().name, "created_at");
        assert_eq!(Col::AddressPostalCode.column().name, "address_postal_code");
        assert_eq!(Col::TraitId.column().name, "trait_id");
        assert_eq!(Col::Extra.column().name, "extra");
        assert_eq!(N_COLS, 32);
    }

    #[test]
    fn schema_has_spec_columns_in_order() {
        let expected = [
            "id",
            "group_id",
            "user_id",
            "anonymous_id",
            "received_at",
            "sent_at",
            "original_timestamp",
            "timestamp",
            "channel",
            "context_ip",
            "context_user_agent",
            "context_library_name",
            "context_library_version",
            "name",
            "industry",
            "employees",
            "plan",
            "email",
            "phone",
            "website",
            "avatar",
            "description",
            "created_at",
            "address_street",
            "address_city",
            "address_state",
            "address_postal_code",
            "address_country",
            "trait_id",
            "extra_traits",
            "extra_context",
            "extra",
        ];
        let schema = groups_schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, expected);
        let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        for f in schema.fields() {
            let is_time = matches!(
                f.name().as_str(),
                "received_at" | "sent_at" | "original_timestamp" | "timestamp" | "created_at"
            );
            if is_time {
                assert_eq!(f.data_type(), &ts, "{}", f.name());
            } else {
                assert_eq!(f.data_type(), &DataType::Utf8, "{}", f.name());
            }
            let required = matches!(f.name().as_str(), "group_id" | "timestamp");
            assert_eq!(f.is_nullable(), !required, "{}", f.name());
        }
        assert_eq!(schema.metadata()[META_SCHEMA_VERSION], SCHEMA_VERSION);
    }
}
