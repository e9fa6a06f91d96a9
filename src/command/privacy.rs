//! The privacy rules a command runs under: the pseudonymisation a dataset records (or that its first run
//! records), checked against the options and the hash key, and the ids suppressed in it.
//!
//! Why this module exists: `load` and `forget` must agree on what a dataset holds. A column loaded as a keyed
//! hash must stay one, under the same key, in every later run (else one column would mix clear and hashed
//! values, or two keys), and `forget` must hash the ids it is given the way the loads hashed the column.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::options::LoadOptions;
use crate::privacy::{self, Settings, Suppressed};
use crate::pseudonymise::AtLoad;
use crate::rejects::RawLines;
use crate::schema::{COLUMNS, Kind};
use crate::table::Table;

/// The settings a run uses: the recorded ones (an explicitly different value is refused), or, for a dataset
/// holding no rows yet, the options' (recorded now). Returns them with the hash key when columns are hashed.
pub fn settings(table: &dyn Table, opts: &LoadOptions) -> Result<(Settings, Option<Vec<u8>>)> {
    let asked = Settings {
        truncate_ip: opts.truncate_ip,
        hash_columns: match &opts.hash_columns {
            Some(cols) => columns(cols)?,
            None => Vec::new(),
        },
        key_id: None,
    };
    let dir = table.privacy_dir()?;
    let recorded = match &dir {
        Some(d) => Settings::read(d)?,
        None => None,
    };
    let out = &opts.output;
    let mut settings = match recorded {
        Some(r) => {
            if opts.truncate_ip && !r.truncate_ip {
                return Err(refused(
                    out,
                    "was loaded without --truncate-ip",
                    "leave --truncate-ip out",
                ));
            }
            if opts.hash_columns.is_some() && asked.hash_columns != r.hash_columns {
                return Err(refused(
                    out,
                    &format!("was loaded with --hash-columns {}", shown(&r.hash_columns)),
                    "give the same columns, or leave --hash-columns out (the recorded ones are used)",
                ));
            }
            r
        }
        None if asked.is_empty() => return Ok((asked, None)),
        None => {
            if table.has_rows()? {
                return Err(refused(
                    out,
                    "holds rows loaded without pseudonymisation",
                    "load into a new --output (or reload the dataset with these options)",
                ));
            }
            asked
        }
    };
    let key = if settings.hash_columns.is_empty() {
        None
    } else {
        let key = privacy::hash_key()?.ok_or_else(|| {
            Error::Usage(format!(
                "{out} hashes the columns {} with a key: set {} to it (it is never stored, and never given \
                 on the command line)",
                shown(&settings.hash_columns),
                privacy::HASH_KEY_VAR
            ))
        })?;
        let id = privacy::key_id(&key);
        match &settings.key_id {
            Some(recorded) if *recorded != id => {
                return Err(Error::Usage(format!(
                    "{} is not the key {out} was loaded with (its columns {} would mix two keys): set it to the \
                     dataset's key",
                    privacy::HASH_KEY_VAR,
                    shown(&settings.hash_columns)
                )));
            }
            _ => settings.key_id = Some(id),
        }
        Some(key)
    };
    if let Some(d) = &dir
        && Settings::read(d)?.as_ref() != Some(&settings)
    {
        settings.write(d)?;
    }
    Ok((settings, key))
}

/// The rules of a load: its settings and the dataset's suppressed ids.
pub fn at_load(table: &dyn Table, opts: &LoadOptions) -> Result<AtLoad> {
    let (settings, key) = settings(table, opts)?;
    let suppressed = match table.privacy_dir()? {
        Some(d) => Suppressed::read(&d)?,
        None => Suppressed::default(),
    };
    Ok(AtLoad {
        suppressed: Arc::new(suppressed),
        truncate_ip: settings.truncate_ip,
        hashed: settings
            .hash_columns
            .iter()
            .filter_map(|c| COLUMNS.iter().position(|col| col.name == c))
            .collect(),
        key: key.unwrap_or_default(),
    })
}

/// Which rejected lines keep their text under `rules`: none when columns are pseudonymised (a raw line holds
/// the clear values), and none of suppressed ids.
pub fn raw_lines(rules: &AtLoad) -> RawLines {
    if rules.truncate_ip || !rules.hashed.is_empty() {
        RawLines::None
    } else if rules.suppressed.is_empty() {
        RawLines::All
    } else {
        RawLines::NotSuppressed(rules.suppressed.clone())
    }
}

/// `--hash-columns` checked: text columns of the groups table, in schema order, each once.
fn columns(asked: &[String]) -> Result<Vec<String>> {
    let mut found = Vec::new();
    for name in asked {
        let name = name.trim();
        let col = COLUMNS.iter().find(|c| c.name == name).ok_or_else(|| {
            Error::Usage(format!(
                "--hash-columns: {name:?} is not a column of the groups table (see group-loader schema)"
            ))
        })?;
        if col.kind != Kind::Text {
            return Err(Error::Usage(format!(
                "--hash-columns: {name} is not a text column: only text columns can hold a hash"
            )));
        }
        if !found.contains(&col.name) {
            found.push(col.name);
        }
    }
    Ok(COLUMNS
        .iter()
        .filter(|c| found.contains(&c.name))
        .map(|c| c.name.to_string())
        .collect())
}

fn shown(cols: &[String]) -> String {
    cols.join(",")
}

fn refused(out: &impl std::fmt::Display, what: &str, fix: &str) -> Error {
    Error::Usage(format!(
        "{out} {what}: a dataset keeps its pseudonymisation, so that no column mixes clear and pseudonymised \
         values; {fix}"
    ))
}
