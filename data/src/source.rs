//! Sources: how a dataset's blocks are read, one read unit per task.
//!
//! A CSV file is split into byte ranges cut at line ends (so a file is read by as many
//! tasks as it has ranges); a Parquet file is read one row group per unit; `range(n)` is
//! cut into runs of ids. A unit is plain data, so a read task can run in any process
//! that sees the file.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, RecordBatchReader};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use serde::{Deserialize, Serialize};

use crate::error::{io_err, DataError, Result};
use crate::expr::Expr;

/// Rows per block of `range(n)`.
pub(crate) const RANGE_BLOCK_ROWS: u64 = 1 << 20;

/// Rows per batch as CSV and Parquet units are read.
pub const READ_BATCH_ROWS: usize = 64 << 10;

/// Bytes of CSV per read task, by default.
pub const CSV_CHUNK_BYTES: u64 = 16 << 20;

/// One read task's share of a source.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Unit {
    /// Ids `start..end` as an `Int64` column `id`.
    Range {
        /// First id.
        start: i64,
        /// One past the last id.
        end: i64,
    },
    /// The lines of a CSV file that start in `start..end` (byte offsets).
    Csv {
        /// The file.
        path: PathBuf,
        /// First byte of the range.
        start: u64,
        /// One past its last byte.
        end: u64,
        /// Where the data begins (after the header).
        data_start: u64,
        /// The columns, inferred once from the file's head.
        schema: Schema,
    },
    /// The lines of a newline-delimited JSON file that start in `start..end`.
    Json {
        /// The file.
        path: PathBuf,
        /// First byte of the range.
        start: u64,
        /// One past its last byte.
        end: u64,
        /// The fields, inferred once from the file's head.
        schema: Schema,
    },
    /// The lines of a text file that start in `start..end`, one row each.
    Text {
        /// The file.
        path: PathBuf,
        /// First byte of the range.
        start: u64,
        /// One past its last byte.
        end: u64,
    },
    /// Whole files, one row each: their paths and bytes.
    Binary {
        /// The files.
        paths: Vec<PathBuf>,
    },
    /// One row group of a Parquet file.
    Parquet {
        /// The file.
        path: PathBuf,
        /// The row group.
        row_group: usize,
        /// The columns to read (all if `None`).
        columns: Option<Vec<String>>,
    },
}

impl Unit {
    /// The files the unit reads.
    pub fn files(&self) -> Vec<PathBuf> {
        match self {
            Unit::Range { .. } => Vec::new(),
            Unit::Csv { path, .. }
            | Unit::Json { path, .. }
            | Unit::Text { path, .. }
            | Unit::Parquet { path, .. } => vec![path.clone()],
            Unit::Binary { paths } => paths.clone(),
        }
    }

    /// Reads the unit into a batch: only the columns `needed` (in the source's order)
    /// where the source can skip the others, all of them for `None`.
    ///
    /// A unit comes as batches of up to [`READ_BATCH_ROWS`] rows where its reader
    /// yields them so (CSV, Parquet), small enough to stay in cache as operators run.
    ///
    /// `filters` are predicates every row kept must pass: a Parquet row group whose
    /// statistics show that no row can is not read.
    pub fn read(
        &self,
        needed: Option<&[String]>,
        filters: &[Expr],
    ) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        match self {
            Unit::Range { start, end } => {
                let ids = Int64Array::from_iter_values(*start..*end);
                let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
                Ok((
                    schema.clone(),
                    vec![RecordBatch::try_new(schema, vec![Arc::new(ids)])?],
                ))
            }
            Unit::Csv {
                path,
                start,
                end,
                data_start,
                schema,
            } => read_csv_range(path, *start, *end, *data_start, schema, needed),
            Unit::Json {
                path,
                start,
                end,
                schema,
            } => read_json_range(path, *start, *end, schema, needed),
            Unit::Text { path, start, end } => read_text_range(path, *start, *end),
            Unit::Binary { paths } => read_binary(paths),
            Unit::Parquet {
                path,
                row_group,
                columns,
            } => {
                let narrowed: Option<Vec<String>> = match (columns, needed) {
                    (Some(cols), Some(n)) => {
                        Some(cols.iter().filter(|c| n.contains(c)).cloned().collect())
                    }
                    (Some(cols), None) => Some(cols.clone()),
                    (None, Some(n)) => Some(n.to_vec()),
                    (None, None) => None,
                };
                read_row_group(path, *row_group, narrowed.as_deref(), filters)
            }
        }
    }
}

/// The units of `range(n)`.
pub(crate) fn range_units(n: u64) -> Vec<Unit> {
    (0..n.div_ceil(RANGE_BLOCK_ROWS))
        .map(|i| Unit::Range {
            start: (i * RANGE_BLOCK_ROWS) as i64,
            end: ((i + 1) * RANGE_BLOCK_ROWS).min(n) as i64,
        })
        .collect()
}

/// The files `path` names: itself, the files with extension `ext` in a directory, or
/// the files matching a `*` pattern in its last component.
pub(crate) fn expand(path: &Path, ext: &str) -> Result<Vec<PathBuf>> {
    let not_found = |message: &str| DataError::NotFound {
        path: path.display().to_string(),
        message: message.to_string(),
    };
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let files: Vec<PathBuf> = if name.contains('*') {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| not_found(&e.to_string()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| glob_match(name, n))
            })
            .collect();
        out.sort();
        out
    } else if path.is_dir() {
        let mut out: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(io_err(path))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().and_then(|e| e.to_str()) == Some(ext))
            .collect();
        out.sort();
        out
    } else if path.is_file() {
        vec![path.to_path_buf()]
    } else {
        return Err(not_found("no such file or directory"));
    };
    if files.is_empty() {
        return Err(not_found(&format!("no .{ext} files there")));
    }
    Ok(files)
}

/// Whether `name` matches `pattern`, where `*` stands for any run of characters.
fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for p in &parts[1..parts.len() - 1] {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    true
}

/// The units of the CSV files at `path`, `chunk` bytes each: the schema is inferred
/// from the first file's first 1,000 rows, and every file's header must name the same
/// columns.
pub(crate) fn csv_units(path: &Path, chunk: u64) -> Result<(SchemaRef, Vec<Unit>)> {
    let files = expand(path, "csv")?;
    let mut units = Vec::new();
    let mut first: Option<(PathBuf, Schema)> = None;
    for file in files {
        let f = File::open(&file).map_err(io_err(&file))?;
        let len = f.metadata().map_err(io_err(&file))?.len();
        let mut head = BufReader::new(&f);
        let mut header = String::new();
        head.read_line(&mut header).map_err(io_err(&file))?;
        let data_start = header.len() as u64;
        let schema = match &first {
            None => {
                let sample = BufReader::new(File::open(&file).map_err(io_err(&file))?);
                let (schema, _) = arrow::csv::reader::Format::default()
                    .with_header(true)
                    .infer_schema(sample, Some(1000))
                    .map_err(|e| DataError::Csv {
                        path: file.display().to_string(),
                        message: e.to_string(),
                    })?;
                first = Some((file.clone(), schema.clone()));
                schema
            }
            Some((first_path, schema)) => {
                let names: Vec<&str> = header
                    .trim_end_matches(['\r', '\n'])
                    .split(',')
                    .map(|n| n.trim_matches('"'))
                    .collect();
                let expected: Vec<&str> =
                    schema.fields().iter().map(|f| f.name().as_str()).collect();
                if names != expected {
                    return Err(DataError::SchemaMismatch {
                        path: file.display().to_string(),
                        found: names.join(","),
                        first: first_path.display().to_string(),
                        expected: expected.join(","),
                    });
                }
                schema.clone()
            }
        };
        for (start, end) in byte_ranges(data_start, len, chunk) {
            units.push(Unit::Csv {
                path: file.clone(),
                start,
                end,
                data_start,
                schema: schema.clone(),
            });
        }
    }
    let schema = first
        .map(|(_, s)| Arc::new(s))
        .unwrap_or_else(|| Arc::new(Schema::empty()));
    Ok((schema, units))
}

/// The schema of a text source: one `text` column of lines.
pub(crate) fn text_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("text", DataType::Utf8, false)]))
}

/// The schema of a binary source: each file's `path` and `bytes`.
pub(crate) fn binary_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("path", DataType::Utf8, false),
        Field::new("bytes", DataType::Binary, false),
    ]))
}

/// The units of the text files at `path` (a file, a directory of `.txt` files, or a
/// `*` pattern), `chunk` bytes each, cut at line ends.
pub(crate) fn text_units(path: &Path, chunk: u64) -> Result<Vec<Unit>> {
    line_units(expand(path, "txt")?, chunk, |path, start, end| Unit::Text {
        path,
        start,
        end,
    })
}

/// The units of line-per-row `files`, `chunk` bytes each (cut at line ends when read).
fn line_units(
    files: Vec<PathBuf>,
    chunk: u64,
    unit: impl Fn(PathBuf, u64, u64) -> Unit,
) -> Result<Vec<Unit>> {
    let mut units = Vec::new();
    for file in files {
        let len = std::fs::metadata(&file).map_err(io_err(&file))?.len();
        for (start, end) in byte_ranges(0, len, chunk) {
            units.push(unit(file.clone(), start, end));
        }
    }
    Ok(units)
}

/// The units of the files at `path` (a file, every file of a directory, or a `*`
/// pattern), about `chunk` bytes of files each (a larger file alone).
pub(crate) fn binary_units(path: &Path, chunk: u64) -> Result<Vec<Unit>> {
    let files = if path.is_dir() {
        let mut out: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(io_err(path))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        out.sort();
        if out.is_empty() {
            return Err(DataError::NotFound {
                path: path.display().to_string(),
                message: "no files there".into(),
            });
        }
        out
    } else {
        expand(path, "")?
    };
    let mut units = Vec::new();
    let (mut group, mut bytes) = (Vec::new(), 0);
    for file in files {
        let len = std::fs::metadata(&file).map_err(io_err(&file))?.len();
        if !group.is_empty() && bytes + len > chunk {
            units.push(Unit::Binary {
                paths: std::mem::take(&mut group),
            });
            bytes = 0;
        }
        group.push(file);
        bytes += len;
    }
    if !group.is_empty() {
        units.push(Unit::Binary { paths: group });
    }
    Ok(units)
}

fn read_text_range(path: &Path, start: u64, end: u64) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let schema = text_schema();
    let Some((from, reader)) = line_range(path, start, end, 0)? else {
        return Ok((schema, Vec::new()));
    };
    let mut batches = Vec::new();
    let mut lines = arrow::array::StringBuilder::new();
    let mut rows = 0;
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| DataError::Io {
            path: path.display().to_string(),
            message: format!("{e} (line {} of the lines from byte {from})", i + 1),
        })?;
        lines.append_value(line.strip_suffix('\r').unwrap_or(&line));
        rows += 1;
        if rows == READ_BATCH_ROWS {
            batches.push(RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(lines.finish())],
            )?);
            rows = 0;
        }
    }
    if rows > 0 {
        batches.push(RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(lines.finish())],
        )?);
    }
    Ok((schema, batches))
}

fn read_binary(paths: &[PathBuf]) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let schema = binary_schema();
    let mut names = arrow::array::StringBuilder::new();
    let mut contents = arrow::array::BinaryBuilder::new();
    for p in paths {
        let bytes = std::fs::read(p).map_err(io_err(p))?;
        names.append_value(p.display().to_string());
        contents.append_value(&bytes);
    }
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(names.finish()), Arc::new(contents.finish())],
    )?;
    Ok((schema, vec![batch]))
}

/// The units of the newline-delimited JSON files at `path`, `chunk` bytes each: the
/// schema is inferred from the first 1,000 lines of every file and merged.
pub(crate) fn json_units(path: &Path, chunk: u64) -> Result<(SchemaRef, Vec<Unit>)> {
    let files = expand(path, "json")?;
    let mut schemas = Vec::new();
    for file in &files {
        let f = BufReader::new(File::open(file).map_err(io_err(file))?);
        let (schema, _) =
            arrow::json::reader::infer_json_schema(f, Some(1000)).map_err(|e| DataError::Json {
                path: file.display().to_string(),
                message: e.to_string(),
            })?;
        schemas.push(schema);
    }
    let schema = Schema::try_merge(schemas).map_err(|e| DataError::SchemaMismatch {
        path: path.display().to_string(),
        found: e.to_string(),
        first: files[0].display().to_string(),
        expected: "fields of one type across the files".into(),
    })?;
    let units = line_units(files, chunk, |path, start, end| Unit::Json {
        path,
        start,
        end,
        schema: schema.clone(),
    })?;
    Ok((Arc::new(schema), units))
}

fn read_json_range(
    path: &Path,
    start: u64,
    end: u64,
    full: &Schema,
    needed: Option<&[String]>,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    // Fields the schema leaves out are skipped by the reader: a projection is a
    // narrower schema.
    let schema = match needed {
        Some(n) => Arc::new(full.project(&projection(full, n))?),
        None => Arc::new(full.clone()),
    };
    let Some(range) = line_range(path, start, end, 0)? else {
        return Ok((schema, Vec::new()));
    };
    let (from, reader) = range;
    let json_err = |e: arrow::error::ArrowError| DataError::Json {
        path: path.display().to_string(),
        message: format!("{e} (in the lines from byte {from})"),
    };
    let reader = arrow::json::ReaderBuilder::new(schema.clone())
        .with_batch_size(READ_BATCH_ROWS)
        .build(reader)
        .map_err(json_err)?;
    let mut batches = Vec::new();
    for b in reader {
        batches.push(b.map_err(json_err)?);
    }
    Ok((schema, batches))
}

/// The lines of `path` that start in `start..end`, as a buffered reader from the
/// first of them (and its offset), or `None` if no line starts there.
fn line_range(
    path: &Path,
    start: u64,
    end: u64,
    data_start: u64,
) -> Result<Option<(u64, impl BufRead)>> {
    let mut f = File::open(path).map_err(io_err(path))?;
    let len = f.metadata().map_err(io_err(path))?.len();
    let from = line_start_from(&f, path, start, data_start, len)?;
    let to = line_start_from(&f, path, end, data_start, len)?;
    if to <= from {
        return Ok(None);
    }
    f.seek(SeekFrom::Start(from)).map_err(io_err(path))?;
    // Streamed through a buffer the size of a cache, not read whole.
    Ok(Some((
        from,
        BufReader::with_capacity(1 << 20, f.take(to - from)),
    )))
}

/// `from..len` in ranges of `chunk` bytes (the last shorter).
fn byte_ranges(from: u64, len: u64, chunk: u64) -> impl Iterator<Item = (u64, u64)> {
    let chunk = chunk.max(1);
    (from..len)
        .step_by(chunk as usize)
        .map(move |s| (s, (s + chunk).min(len)))
}

/// The first line start at or after `at` (given that the data begins at `data_start`).
fn line_start_from(f: &File, path: &Path, at: u64, data_start: u64, len: u64) -> Result<u64> {
    if at <= data_start {
        return Ok(data_start);
    }
    // A line starts at `at` if the byte before it ends a line.
    let mut pos = at - 1;
    let mut buf = vec![0u8; 64 << 10];
    while pos < len {
        let n = f.read_at(&mut buf, pos).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        if let Some(i) = buf[..n].iter().position(|&b| b == b'\n') {
            return Ok(pos + i as u64 + 1);
        }
        pos += n as u64;
    }
    Ok(len)
}

/// The indices of `needed` in `schema`, in its order; at least one column (a count needs
/// the rows of something). Names it lacks are left for the operators to report.
fn projection(schema: &Schema, needed: &[String]) -> Vec<usize> {
    let mut indices: Vec<usize> = needed
        .iter()
        .filter_map(|c| schema.index_of(c).ok())
        .collect();
    indices.sort_unstable();
    indices.dedup();
    if indices.is_empty() && !schema.fields().is_empty() {
        indices.push(0);
    }
    indices
}

fn read_csv_range(
    path: &Path,
    start: u64,
    end: u64,
    data_start: u64,
    full: &Schema,
    needed: Option<&[String]>,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let full = Arc::new(full.clone());
    let indices = needed.map(|n| projection(&full, n));
    let schema = match &indices {
        Some(i) => Arc::new(full.project(i)?),
        None => full.clone(),
    };
    let Some((from, range)) = line_range(path, start, end, data_start)? else {
        return Ok((schema, Vec::new()));
    };
    let mut builder = arrow::csv::ReaderBuilder::new(full.clone()).with_header(false);
    if let Some(i) = indices {
        builder = builder.with_projection(i);
    }
    let reader = builder
        .with_batch_size(READ_BATCH_ROWS)
        .build(range)
        .map_err(|e| csv_error(path, from, e))?;
    let mut batches = Vec::new();
    for b in reader {
        batches.push(b.map_err(|e| csv_error(path, from, e))?);
    }
    Ok((schema, batches))
}

/// A parse error of the range starting at byte `from`, with the file's own line
/// number of the range's first line (the parser counts from the range).
fn csv_error(path: &Path, from: u64, e: arrow::error::ArrowError) -> DataError {
    let lines_before = File::open(path)
        .ok()
        .map(|f| {
            let mut count = 0u64;
            let mut r = BufReader::new(f).take(from);
            let mut buf = [0u8; 64 << 10];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                count += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
            }
            count
        })
        .unwrap_or(0);
    DataError::Csv {
        path: path.display().to_string(),
        message: format!(
            "{e} (lines counted from line {} of the file)",
            lines_before + 1
        ),
    }
}

fn parquet_error(path: &Path, e: impl std::fmt::Display) -> DataError {
    DataError::Parquet {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// The units of the Parquet files at `path`: one per row group; every file's schema
/// must be the first's.
pub(crate) fn parquet_units(
    path: &Path,
    columns: Option<Vec<String>>,
) -> Result<(SchemaRef, Vec<Unit>)> {
    let files = expand(path, "parquet")?;
    let mut units = Vec::new();
    let mut first: Option<(PathBuf, SchemaRef)> = None;
    for file in files {
        let f = File::open(&file).map_err(io_err(&file))?;
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| parquet_error(&file, e))?;
        let schema = builder.schema().clone();
        match &first {
            None => first = Some((file.clone(), schema.clone())),
            Some((first_path, expected)) if expected.fields() != schema.fields() => {
                return Err(DataError::SchemaMismatch {
                    path: file.display().to_string(),
                    found: describe(&schema),
                    first: first_path.display().to_string(),
                    expected: describe(expected),
                })
            }
            Some(_) => {}
        }
        if let Some(cols) = &columns {
            for c in cols {
                if schema.field_with_name(c).is_err() {
                    return Err(crate::error::no_column(c, &schema));
                }
            }
        }
        for row_group in 0..builder.metadata().num_row_groups() {
            units.push(Unit::Parquet {
                path: file.clone(),
                row_group,
                columns: columns.clone(),
            });
        }
    }
    let (_, schema) = first.ok_or_else(|| DataError::Invalid("no Parquet files".into()))?;
    let schema = match &columns {
        Some(cols) => {
            let mut indices: Vec<usize> = cols
                .iter()
                .filter_map(|c| schema.index_of(c).ok())
                .collect();
            indices.sort_unstable();
            Arc::new(schema.project(&indices)?)
        }
        None => schema,
    };
    Ok((schema, units))
}

/// `name: type, ...` of a schema, for errors.
pub(crate) fn describe(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| format!("{}: {}", f.name(), f.data_type()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn read_row_group(
    path: &Path,
    row_group: usize,
    columns: Option<&[String]>,
    filters: &[Expr],
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let f = File::open(path).map_err(io_err(path))?;
    let mut builder = ParquetRecordBatchReaderBuilder::try_new(f)
        .map_err(|e| parquet_error(path, e))?
        .with_row_groups(vec![row_group]);
    let mut schema = builder.schema().clone();
    if let Some(cols) = columns {
        let indices = projection(builder.schema(), cols);
        schema = Arc::new(schema.project(&indices)?);
        let mask = ProjectionMask::roots(builder.parquet_schema(), indices);
        builder = builder.with_projection(mask);
    }
    if crate::prune::ruled_out(builder.metadata().row_group(row_group), filters) {
        return Ok((schema, Vec::new()));
    }
    let reader = builder
        .with_batch_size(READ_BATCH_ROWS)
        .build()
        .map_err(|e| parquet_error(path, e))?;
    let schema = reader.schema();
    let batches: Vec<RecordBatch> = reader
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| parquet_error(path, e))?;
    Ok((schema, batches))
}
