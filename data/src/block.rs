//! A block: one Arrow record batch, the unit that flows between operators.
//!
//! In one process a block is shared behind the object store's `Arc`, so every reader
//! sees the same Arrow buffers. Between processes it travels as Arrow IPC stream bytes,
//! and is read back into Arrow buffers that point into the received bytes.

use arrow::array::RecordBatch;
use arrow::buffer::Buffer;
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamDecoder;
use arrow::ipc::writer::StreamWriter;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One record batch of a dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Block(pub RecordBatch);

impl Block {
    /// The batch.
    pub fn batch(&self) -> &RecordBatch {
        &self.0
    }

    /// Its rows.
    pub fn num_rows(&self) -> usize {
        self.0.num_rows()
    }

    /// Its schema.
    pub fn schema(&self) -> SchemaRef {
        self.0.schema()
    }

    /// The bytes of the Arrow buffers it holds (what a memory budget counts).
    pub fn bytes(&self) -> usize {
        self.0.get_array_memory_size()
    }
}

impl Serialize for Block {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut out = Vec::with_capacity(self.0.get_array_memory_size() + 1024);
        let mut w =
            StreamWriter::try_new(&mut out, &self.0.schema()).map_err(serde::ser::Error::custom)?;
        w.write(&self.0).map_err(serde::ser::Error::custom)?;
        w.finish().map_err(serde::ser::Error::custom)?;
        drop(w);
        serde_bytes::Bytes::new(&out).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Block {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let bytes = serde_bytes::ByteBuf::deserialize(d)?.into_vec();
        // The decoded arrays point into this one buffer: no copy of the data.
        let mut buf = Buffer::from_vec(bytes);
        let mut decoder = StreamDecoder::new();
        let mut batch = None;
        while !buf.is_empty() {
            if let Some(b) = decoder.decode(&mut buf).map_err(serde::de::Error::custom)? {
                batch.get_or_insert(b);
            }
        }
        decoder.finish().map_err(serde::de::Error::custom)?;
        batch
            .map(Block)
            .ok_or_else(|| serde::de::Error::custom("an Arrow IPC stream without a batch"))
    }
}
