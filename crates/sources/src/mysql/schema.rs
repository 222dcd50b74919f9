//! Captured tables' shapes: each column's name and how its values become JSON, and the
//! primary key — read from the catalog (`information_schema`) for the snapshot and from the
//! binlog's table map events (with `binlog_row_metadata=FULL`) for the stream.

use std::collections::HashSet;
use std::sync::Arc;

use mysql_async::binlog::events::{OptionalMetaExtractor, OptionalMetadataField, TableMapEvent};
use mysql_async::consts::ColumnType;

/// How a column's values are written as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `TINYINT` … `BIGINT`, signed or not.
    Int,
    /// `DECIMAL`/`NUMERIC`.
    Decimal,
    /// `FLOAT` (single precision: written with the digits it holds).
    Float,
    /// `DOUBLE`.
    Double,
    /// `BIT(n)`: a number.
    Bit,
    /// `YEAR`: a number.
    Year,
    Date,
    Time,
    DateTime,
    /// `TIMESTAMP`: stored in UTC, written RFC 3339 with `Z`.
    Timestamp,
    /// MySQL `JSON`, or MariaDB's `JSON` (a `LONGTEXT` with a `json_valid` check).
    Json,
    /// Character data; `latin1` marks bytes in that character set (in the binlog).
    Text {
        latin1: bool,
    },
    /// Bytes, written base64; `BINARY(n)` values are padded to `pad_to` bytes (the binlog
    /// drops trailing zero bytes).
    Binary {
        pad_to: Option<usize>,
    },
    /// `ENUM` with its labels (empty when unknown: the value is then its index).
    Enum(Arc<[String]>),
    /// `SET` with its labels (empty when unknown: the value is then its bit mask).
    Set(Arc<[String]>),
    /// Anything else: text when it is UTF-8, base64 otherwise.
    Other,
}

/// A column of a captured table.
#[derive(Debug, Clone)]
pub(crate) struct Col {
    pub(crate) name: Arc<str>,
    pub(crate) kind: Kind,
}

/// A captured table's shape.
#[derive(Debug, Clone)]
pub(crate) struct TableDef {
    pub(crate) db: Arc<str>,
    pub(crate) name: Arc<str>,
    pub(crate) columns: Vec<Col>,
    /// Indexes into `columns` of the primary key's columns, in key order.
    pub(crate) keys: Vec<usize>,
}

impl TableDef {
    /// `database.table`.
    pub(crate) fn qualified(&self) -> String {
        format!("{}.{}", self.db, self.name)
    }

    /// The key columns' names, in key order.
    pub(crate) fn key_names(&self) -> Vec<&str> {
        self.keys
            .iter()
            .filter_map(|&i| self.columns.get(i).map(|c| &*c.name))
            .collect()
    }

    /// Whether the column names are those of `other` (same count, same order).
    pub(crate) fn same_columns(&self, other: &TableDef) -> bool {
        self.columns.len() == other.columns.len()
            && self
                .columns
                .iter()
                .zip(&other.columns)
                .all(|(a, b)| a.name == b.name)
    }
}

/// A column's kind from `information_schema.COLUMNS`.
pub(crate) fn kind_from_catalog(
    data_type: &str,
    column_type: &str,
    charset: Option<&str>,
    octet_length: Option<u64>,
    is_json: bool,
) -> Kind {
    match data_type.to_ascii_lowercase().as_str() {
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" => Kind::Int,
        "decimal" | "numeric" => Kind::Decimal,
        "float" => Kind::Float,
        "double" | "real" | "double precision" => Kind::Double,
        "bit" => Kind::Bit,
        "year" => Kind::Year,
        "date" => Kind::Date,
        "time" => Kind::Time,
        "datetime" => Kind::DateTime,
        "timestamp" => Kind::Timestamp,
        "json" => Kind::Json,
        "enum" => Kind::Enum(labels(column_type).into()),
        "set" => Kind::Set(labels(column_type).into()),
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" if is_json => {
            Kind::Json
        }
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => Kind::Text {
            latin1: charset.is_some_and(|c| c.starts_with("latin1")),
        },
        "binary" => Kind::Binary {
            pad_to: octet_length.and_then(|n| usize::try_from(n).ok()),
        },
        "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" | "geometry" | "point"
        | "linestring" | "polygon" | "multipoint" | "multilinestring" | "multipolygon"
        | "geometrycollection" | "geomcollection" | "vector" => Kind::Binary { pad_to: None },
        _ => Kind::Other,
    }
}

/// The labels of `enum('a','b''c')` / `set(…)` as `information_schema` writes them.
pub(crate) fn labels(column_type: &str) -> Vec<String> {
    let Some(open) = column_type.find('(') else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut chars = column_type[open + 1..].chars().peekable();
    loop {
        match chars.next() {
            Some('\'') => {
                let mut label = String::new();
                loop {
                    match chars.next() {
                        Some('\'') if chars.peek() == Some(&'\'') => {
                            chars.next();
                            label.push('\'');
                        }
                        Some('\'') | None => break,
                        Some(c) => label.push(c),
                    }
                }
                out.push(label);
            }
            Some(',' | ' ') => {}
            _ => return out,
        }
    }
}

/// Character set ids of `latin1`'s collations.
fn is_latin1(charset: u16) -> bool {
    matches!(charset, 5 | 8 | 15 | 31 | 47 | 48 | 49 | 94)
}

/// The `binary` character set: bytes, not text.
const BINARY_CHARSET: u16 = 63;

/// A table's shape from its table map event. `json` names MariaDB `JSON` columns (the
/// binlog shows them as text); `catalog` fills column names when the event has none.
pub(crate) fn from_table_map(
    tme: &TableMapEvent<'_>,
    json: &HashSet<String>,
    catalog: Option<&TableDef>,
) -> TableDef {
    let n = usize::try_from(tme.columns_count()).unwrap_or(0);
    let extractor = OptionalMetaExtractor::new(tme.iter_optional_meta()).ok();
    let mut names: Vec<Option<String>> = Vec::with_capacity(n);
    let mut keys: Vec<usize> = Vec::new();
    let mut charsets: Vec<u16> = Vec::new();
    if let Some(x) = &extractor {
        names.extend(
            x.iter_column_name()
                .take(n)
                .map(|c| c.ok().map(|c| c.name().into_owned())),
        );
        keys.extend(
            x.iter_primary_key()
                .map_while(Result::ok)
                .filter_map(|i| usize::try_from(i).ok())
                .filter(|&i| i < n),
        );
        let character_columns = (0..n)
            .filter(|&i| {
                tme.get_column_type(i)
                    .ok()
                    .flatten()
                    .is_some_and(|t| t.is_character_type())
            })
            .count();
        charsets.extend(
            x.iter_charset()
                .take(character_columns)
                .map(|c| c.unwrap_or(0)),
        );
    }
    let (mut enums, mut sets) = (Vec::new(), Vec::new());
    for field in tme.iter_optional_meta().map_while(Result::ok) {
        match field {
            OptionalMetadataField::EnumStrValue(v) => {
                for labels in v.iter_values().map_while(Result::ok) {
                    enums.push(
                        labels
                            .values()
                            .iter()
                            .map(|l| l.value().into_owned())
                            .collect::<Vec<_>>(),
                    );
                }
            }
            OptionalMetadataField::SetStrValue(v) => {
                for labels in v.iter_values().map_while(Result::ok) {
                    sets.push(
                        labels
                            .values()
                            .iter()
                            .map(|l| l.value().into_owned())
                            .collect::<Vec<_>>(),
                    );
                }
            }
            _ => {}
        }
    }
    let (mut enums, mut sets, mut charsets) =
        (enums.into_iter(), sets.into_iter(), charsets.into_iter());
    let catalog_names = catalog.filter(|c| c.columns.len() == n);
    let mut columns = Vec::with_capacity(n);
    for i in 0..n {
        let ty = tme.get_column_type(i).ok().flatten();
        let name: String = match names.get(i).cloned().flatten() {
            Some(name) => name,
            None => catalog_names
                .and_then(|c| c.columns.get(i))
                .map_or_else(|| format!("@{}", i + 1), |c| c.name.to_string()),
        };
        let kind = match ty {
            Some(t) if t.is_character_type() => {
                let cs = charsets.next().unwrap_or(0);
                if json.contains(&name) {
                    Kind::Json
                } else if cs == BINARY_CHARSET {
                    let pad_to = (t == ColumnType::MYSQL_TYPE_STRING)
                        .then(|| tme.get_column_metadata(i).and_then(string_length))
                        .flatten();
                    Kind::Binary { pad_to }
                } else {
                    Kind::Text {
                        latin1: is_latin1(cs),
                    }
                }
            }
            Some(ColumnType::MYSQL_TYPE_ENUM) => {
                Kind::Enum(enums.next().unwrap_or_default().into())
            }
            Some(ColumnType::MYSQL_TYPE_SET) => Kind::Set(sets.next().unwrap_or_default().into()),
            Some(t) => kind_from_binlog_type(t),
            None => Kind::Other,
        };
        columns.push(Col {
            name: Arc::from(name.as_str()),
            kind,
        });
    }
    TableDef {
        db: Arc::from(tme.database_name().as_ref()),
        name: Arc::from(tme.table_name().as_ref()),
        columns,
        keys,
    }
}

/// The byte length of a `CHAR`/`BINARY` column from its table-map metadata.
fn string_length(meta: &[u8]) -> Option<usize> {
    let (b0, b1) = (usize::from(*meta.first()?), usize::from(*meta.get(1)?));
    Some(if (b0 & 0x30) == 0x30 {
        b1
    } else {
        b1 | (((b0 & 0x30) ^ 0x30) << 4)
    })
}

fn kind_from_binlog_type(t: ColumnType) -> Kind {
    use ColumnType as T;
    match t {
        T::MYSQL_TYPE_TINY
        | T::MYSQL_TYPE_SHORT
        | T::MYSQL_TYPE_INT24
        | T::MYSQL_TYPE_LONG
        | T::MYSQL_TYPE_LONGLONG => Kind::Int,
        T::MYSQL_TYPE_DECIMAL | T::MYSQL_TYPE_NEWDECIMAL => Kind::Decimal,
        T::MYSQL_TYPE_FLOAT => Kind::Float,
        T::MYSQL_TYPE_DOUBLE => Kind::Double,
        T::MYSQL_TYPE_BIT => Kind::Bit,
        T::MYSQL_TYPE_YEAR => Kind::Year,
        T::MYSQL_TYPE_DATE | T::MYSQL_TYPE_NEWDATE => Kind::Date,
        T::MYSQL_TYPE_TIME | T::MYSQL_TYPE_TIME2 => Kind::Time,
        T::MYSQL_TYPE_DATETIME | T::MYSQL_TYPE_DATETIME2 => Kind::DateTime,
        T::MYSQL_TYPE_TIMESTAMP | T::MYSQL_TYPE_TIMESTAMP2 => Kind::Timestamp,
        T::MYSQL_TYPE_JSON => Kind::Json,
        T::MYSQL_TYPE_GEOMETRY | T::MYSQL_TYPE_VECTOR => Kind::Binary { pad_to: None },
        _ => Kind::Other,
    }
}

/// MariaDB's `JSON` columns from its `CHECK (json_valid(`col`))` constraints.
pub(crate) fn json_check_column(clause: &str) -> Option<String> {
    let inner = clause
        .trim()
        .strip_prefix("json_valid(")?
        .strip_suffix(')')?
        .trim();
    let name = inner.strip_prefix('`')?.strip_suffix('`')?;
    Some(name.replace("``", "`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_labels_with_quotes() {
        assert_eq!(labels("enum('a','b''c','d e')"), vec!["a", "b'c", "d e"]);
        assert_eq!(labels("set('x','y')"), vec!["x", "y"]);
        assert!(labels("int(11)").is_empty());
    }

    #[test]
    fn catalog_kinds() {
        assert_eq!(
            kind_from_catalog("bigint", "bigint(20) unsigned", None, None, false),
            Kind::Int
        );
        assert_eq!(
            kind_from_catalog("longtext", "longtext", Some("utf8mb4"), None, true),
            Kind::Json
        );
        assert_eq!(
            kind_from_catalog("varchar", "varchar(3)", Some("latin1"), None, false),
            Kind::Text { latin1: true }
        );
        assert_eq!(
            kind_from_catalog("binary", "binary(4)", None, Some(4), false),
            Kind::Binary { pad_to: Some(4) }
        );
    }

    #[test]
    fn json_checks() {
        assert_eq!(
            json_check_column("json_valid(`meta`)").as_deref(),
            Some("meta")
        );
        assert_eq!(json_check_column("`a` > 0"), None);
    }

    #[test]
    fn char_lengths() {
        // BINARY(4): real type 0xfe, length 4.
        assert_eq!(string_length(&[0xfe, 4]), Some(4));
        // CHAR(100) in utf8mb4 (400 bytes): the high bits ride in the type byte.
        assert_eq!(string_length(&[0xee, 0x90]), Some(400));
    }
}
