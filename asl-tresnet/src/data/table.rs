//! Row-per-image formats: CSV/TSV (`image,labels` with a header) and JSON Lines.
//!
//! The CSV reader is a small RFC 4180 splitter written here rather than the `csv` crate: the
//! format needs two columns, quoting and line numbers for messages, about a hundred lines.

use std::path::{Path, PathBuf};

use super::{BadRow, DataError, Entry, Mark, Parsed, RawRow, ReadOptions};

/// One CSV record: the line it starts on and its fields, or why it is malformed.
#[derive(Debug, PartialEq)]
struct Record {
    line: usize,
    fields: Result<Vec<String>, String>,
}

/// Splits CSV text into records (RFC 4180): fields separated by `delim`, records by `\n` or
/// `\r\n`; a field that starts with `"` is quoted, may hold `delim` and line breaks, and writes
/// a quote as `""`. A quote inside an unquoted field is kept as a character (as Python's `csv`
/// does); text after a closing quote is an error, and the rest of that line is skipped.
fn parse_records(text: &str, delim: char) -> Vec<Record> {
    let mut records = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while chars.peek().is_some() {
        let start = line;
        let mut fields = Vec::new();
        let mut error = None;
        'record: loop {
            let mut field = String::new();
            if chars.peek() == Some(&'"') {
                let quote_line = line;
                chars.next();
                loop {
                    match chars.next() {
                        None => {
                            error = Some(format!(
                                "unterminated quoted field (its quote opens on line {quote_line})"
                            ));
                            break 'record;
                        }
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            field.push('"');
                        }
                        Some('"') => break,
                        Some(c) => {
                            if c == '\n' {
                                line += 1;
                            }
                            field.push(c);
                        }
                    }
                }
                match chars.next() {
                    None => {}
                    Some(c) if c == delim => {
                        fields.push(field);
                        continue 'record;
                    }
                    Some('\n') => line += 1,
                    Some('\r') if chars.peek() == Some(&'\n') => {
                        chars.next();
                        line += 1;
                    }
                    Some(c) => {
                        error = Some(format!(
                            "unexpected {c:?} after the closing quote of field {} (a quote \
                             inside a quoted field is written \"\")",
                            fields.len() + 1
                        ));
                        for c in chars.by_ref() {
                            if c == '\n' {
                                line += 1;
                                break;
                            }
                        }
                        break 'record;
                    }
                }
                fields.push(field);
                break 'record;
            }
            loop {
                match chars.next() {
                    None => break,
                    Some(c) if c == delim => {
                        fields.push(field);
                        continue 'record;
                    }
                    Some('\n') => {
                        line += 1;
                        break;
                    }
                    Some('\r') if chars.peek() == Some(&'\n') => {
                        chars.next();
                        line += 1;
                        break;
                    }
                    Some(c) => field.push(c),
                }
            }
            fields.push(field);
            break 'record;
        }
        records.push(Record {
            line: start,
            fields: match error {
                Some(e) => Err(e),
                None => Ok(fields),
            },
        });
    }
    records
}

/// Splits one CSV line into its fields with the RFC 4180 rules of the dataset reader (quoted
/// fields may hold `delim`, `""` is a quote). An empty line is one empty field. Errors say what
/// is malformed (an unterminated quote, text after a closing quote, a line break).
///
/// ```
/// use asl_tresnet::data::split_csv_line;
/// let fields = split_csv_line(r#"a,"b, ""c""",d"#, ',').unwrap();
/// assert_eq!(fields, ["a", "b, \"c\"", "d"]);
/// assert!(split_csv_line(r#""a"b,c"#, ',').is_err());
/// ```
pub fn split_csv_line(line: &str, delim: char) -> Result<Vec<String>, String> {
    let mut records = parse_records(line, delim).into_iter();
    match (records.next(), records.next()) {
        (None, _) => Ok(vec![String::new()]),
        (Some(record), None) => record.fields,
        (Some(_), Some(_)) => Err("the line holds a line break outside quotes".into()),
    }
}

/// A blank line: one field of whitespace.
fn is_blank(record: &Record) -> bool {
    matches!(&record.fields, Ok(fields) if fields.len() == 1 && fields[0].trim().is_empty())
}

/// The folder relative image paths are resolved against.
fn image_base(file: &Path, opts: &ReadOptions) -> PathBuf {
    match &opts.image_root {
        Some(root) => root.clone(),
        None => file.parent().map(Path::to_path_buf).unwrap_or_default(),
    }
}

pub(super) fn read_csv(path: &Path, opts: &ReadOptions) -> Result<Parsed, DataError> {
    let text = super::read_text(path)?;
    let name = path.display().to_string();
    let is_tsv = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("tsv"));
    let header_has_tab = text.lines().next().is_some_and(|l| l.contains('\t'));
    let delim = if is_tsv || header_has_tab { '\t' } else { ',' };
    let base = image_base(path, opts);

    let mut records = parse_records(&text, delim)
        .into_iter()
        .filter(|r| !is_blank(r));
    let expected = if delim == '\t' {
        "image<TAB>labels"
    } else {
        "image,labels"
    };
    let header = match records.next() {
        None => {
            return Err(DataError::Parse {
                origin: name,
                reason: format!("the file is empty; expected a header row `{expected}`"),
            })
        }
        Some(Record {
            line,
            fields: Err(e),
        }) => {
            return Err(DataError::Parse {
                origin: format!("{name}:{line}"),
                reason: format!("malformed header row: {e}"),
            })
        }
        Some(Record {
            line,
            fields: Ok(fields),
        }) => (line, fields),
    };
    let column = |wanted: &str| {
        header
            .1
            .iter()
            .position(|f| f.trim().eq_ignore_ascii_case(wanted))
    };
    let (Some(image_col), Some(labels_col)) = (column("image"), column("labels")) else {
        return Err(DataError::Parse {
            origin: format!("{name}:{}", header.0),
            reason: format!(
                "the header row is {:?}; expected columns `image` and `labels` (a header row \
                 `{expected}`)",
                header.1
            ),
        });
    };
    let columns = header.1.len();

    let entries = records
        .map(|record| {
            let origin = format!("{name}:{}", record.line);
            let bad = |reason: String| {
                Entry::Bad(BadRow {
                    origin: origin.clone(),
                    reason,
                })
            };
            let fields = match record.fields {
                Err(e) => return bad(format!("malformed line: {e}")),
                Ok(fields) => fields,
            };
            if fields.len() != columns {
                let hint = if fields.len() > columns && delim == ',' {
                    "; quote a field that contains a comma"
                } else {
                    ""
                };
                let found = match fields.len() {
                    1 => "1 field".to_string(),
                    n => format!("{n} fields"),
                };
                return bad(format!(
                    "malformed line: {found} where the header has {columns}{hint}"
                ));
            }
            let image = fields[image_col].trim();
            if image.is_empty() {
                return bad("malformed line: the image path is empty".into());
            }
            let labels_field = &fields[labels_col];
            let labels: Vec<&str> = match opts.label_sep {
                None => labels_field.split_whitespace().collect(),
                Some(sep) => labels_field
                    .split(sep)
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect(),
            };
            Entry::Row(RawRow {
                image: base.join(image),
                labels: labels
                    .into_iter()
                    .map(|l| (l.to_string(), Mark::Positive))
                    .collect(),
                origin,
            })
        })
        .collect();
    Ok(table_parsed(entries, name))
}

pub(super) fn read_jsonl(path: &Path, opts: &ReadOptions) -> Result<Parsed, DataError> {
    let text = super::read_text(path)?;
    let name = path.display().to_string();
    let base = image_base(path, opts);
    let entries = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            let origin = format!("{name}:{}", n + 1);
            match parse_json_row(line) {
                Ok((image, labels)) => Entry::Row(RawRow {
                    image: base.join(image),
                    labels: labels.into_iter().map(|l| (l, Mark::Positive)).collect(),
                    origin,
                }),
                Err(reason) => Entry::Bad(BadRow {
                    origin,
                    reason: format!("malformed line: {reason}"),
                }),
            }
        })
        .collect();
    Ok(table_parsed(entries, name))
}

/// `{"image": "...", "labels": ["a", ...]}` -> (image, labels).
fn parse_json_row(line: &str) -> Result<(String, Vec<String>), String> {
    const SHAPE: &str = r#"expected {"image": "path", "labels": ["label", ...]}"#;
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("invalid JSON ({e})"))?;
    let object = value
        .as_object()
        .ok_or_else(|| format!("not a JSON object; {SHAPE}"))?;
    let image = match object.get("image") {
        Some(serde_json::Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        Some(serde_json::Value::String(_)) => return Err("the image path is empty".into()),
        _ => return Err(format!("no \"image\" string; {SHAPE}")),
    };
    let Some(serde_json::Value::Array(items)) = object.get("labels") else {
        return Err(format!("no \"labels\" array; {SHAPE}"));
    };
    let labels = items
        .iter()
        .map(|item| match item.as_str().map(str::trim) {
            Some(label) if !label.is_empty() => Ok(label.to_string()),
            Some(_) => Err("an empty label in \"labels\"".to_string()),
            None => Err(format!("a label that is not a string: {item}")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((image, labels))
}

/// The rows of a CSV/TSV or JSON Lines file `name`: the vocabulary is the labels it uses.
fn table_parsed(entries: Vec<Entry>, name: String) -> Parsed {
    Parsed {
        entries,
        classes: None,
        vocabulary: format!("the labels of {name}"),
        source: name,
        unannotated: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: usize, fields: &[&str]) -> Record {
        Record {
            line,
            fields: Ok(fields.iter().map(|f| f.to_string()).collect()),
        }
    }

    #[test]
    fn splits_quoted_fields_and_counts_lines() {
        let text = "image,labels\r\n\"a,b.jpg\",\"x \"\"y\"\"\"\n\"multi\nline.jpg\",z\nc.jpg,\n";
        assert_eq!(
            parse_records(text, ','),
            vec![
                ok(1, &["image", "labels"]),
                ok(2, &["a,b.jpg", "x \"y\""]),
                ok(3, &["multi\nline.jpg", "z"]),
                ok(5, &["c.jpg", ""]),
            ]
        );
    }

    #[test]
    fn reports_text_after_a_closing_quote_and_goes_on() {
        let records = parse_records("\"a\"b,c\nd,e", ',');
        assert_eq!(records.len(), 2);
        assert!(records[0].fields.is_err());
        assert_eq!(records[1], ok(2, &["d", "e"]));
    }

    #[test]
    fn reports_an_unterminated_quote_at_its_line() {
        let records = parse_records("a,b\n\"c,d\ne,f\n", ',');
        assert_eq!(records[0], ok(1, &["a", "b"]));
        assert_eq!(records[1].line, 2);
        let err = records[1].fields.as_ref().unwrap_err();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn json_rows_need_an_image_string_and_a_labels_array() {
        assert_eq!(
            parse_json_row(r#"{"image": "a.jpg", "labels": ["x", "y"], "extra": 1}"#),
            Ok(("a.jpg".to_string(), vec!["x".to_string(), "y".to_string()]))
        );
        assert!(parse_json_row(r#"{"image": "a.jpg"}"#).is_err());
        assert!(parse_json_row(r#"{"image": 3, "labels": []}"#).is_err());
        assert!(parse_json_row(r#"{"image": "a.jpg", "labels": [1]}"#).is_err());
        assert!(parse_json_row(r#"["a.jpg"]"#).is_err());
    }
}
