//! The errors of prism-data: each names the file, column or operator it is about.

use serde::{Deserialize, Serialize};

/// What went wrong in reading, transforming or writing a dataset.
///
/// Errors cross processes (a read task on another node reports its file), so they carry
/// messages rather than the underlying error values.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
pub enum DataError {
    /// A file, directory or glob that matches nothing.
    #[error("{path}: {message}")]
    NotFound {
        /// The path or pattern asked for.
        path: String,
        /// Why nothing was found.
        message: String,
    },
    /// A file that could not be read or written.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// The operating system's error.
        message: String,
    },
    /// A CSV file with a row that does not parse.
    #[error("{path}: {message}")]
    Csv {
        /// The file.
        path: String,
        /// The parser's error, with the line and column where it knows them.
        message: String,
    },
    /// A JSON file with a line that does not parse.
    #[error("{path}: {message}")]
    Json {
        /// The file.
        path: String,
        /// The parser's error.
        message: String,
    },
    /// A Parquet file that does not read or write.
    #[error("{path}: {message}")]
    Parquet {
        /// The file.
        path: String,
        /// The Parquet reader's or writer's error.
        message: String,
    },
    /// Files of one dataset whose schemas differ.
    #[error("{path} has schema {found}, but {first} has {expected}")]
    SchemaMismatch {
        /// The file that differs.
        path: String,
        /// Its schema.
        found: String,
        /// The first file of the dataset.
        first: String,
        /// The first file's schema.
        expected: String,
    },
    /// An expression or operator names a column the data does not have.
    #[error("no column {column:?} (the columns are {available:?})")]
    ColumnNotFound {
        /// The column asked for.
        column: String,
        /// The columns there are.
        available: Vec<String>,
    },
    /// An Arrow kernel refused its input (mismatched types, overflow, ...).
    #[error("{context}: {message}")]
    Arrow {
        /// The operator or expression that ran the kernel.
        context: String,
        /// Arrow's error.
        message: String,
    },
    /// A batch function that is not registered with
    /// [`register_batch_fn!`](crate::register_batch_fn), so no process can find it by name.
    #[error("the batch function {0} is not registered: add prism_data::register_batch_fn!(...) next to it")]
    Unregistered(String),
    /// A user's batch function failed or panicked.
    #[error("operator {operator}: {message}")]
    Operator {
        /// The operator, as `stats()` names it (`map_batches(double)`).
        operator: String,
        /// The function's error or panic message.
        message: String,
    },
    /// The prism runtime failed the task (not initialised, a node lost, ...).
    #[error("prism: {0}")]
    Runtime(String),
    /// A request that makes no sense (an empty dataset where one is needed, a bad option).
    #[error("{0}")]
    Invalid(String),
}

impl From<arrow::error::ArrowError> for DataError {
    fn from(e: arrow::error::ArrowError) -> Self {
        DataError::Arrow {
            context: "arrow".into(),
            message: e.to_string(),
        }
    }
}

impl From<prism::Error> for DataError {
    fn from(e: prism::Error) -> Self {
        DataError::Runtime(e.to_string())
    }
}

/// The result of prism-data's operations.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

/// Attaches `context` to an Arrow error.
pub(crate) fn arrow_err(
    context: impl Into<String>,
) -> impl FnOnce(arrow::error::ArrowError) -> DataError {
    let context = context.into();
    move |e| DataError::Arrow {
        context,
        message: e.to_string(),
    }
}

/// An I/O error on `path`.
pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |e| DataError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// [`DataError::ColumnNotFound`] for `column` in data of `schema`.
pub(crate) fn no_column(column: &str, schema: &arrow::datatypes::Schema) -> DataError {
    DataError::ColumnNotFound {
        column: column.to_string(),
        available: schema.fields().iter().map(|f| f.name().clone()).collect(),
    }
}
